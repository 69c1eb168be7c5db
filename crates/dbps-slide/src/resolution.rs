//! A slide's resolution in µm per pixel, and the level and resampling that give a patch a
//! requested resolution.

use std::fs::File;
use std::io::BufReader;

use tiff::decoder::Decoder;
use tiff::tags::{ResolutionUnit, Tag};

/// Where a patch's pixels come from: a downsample of level 0, or a physical resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolution {
    /// The most reduced level not coarser than this downsample of level 0, read as it is
    /// (1 = full resolution).
    Downsample(f64),
    /// This many µm per pixel: the level closest to it from the finer side, resampled to it
    /// exactly (the slide must state its own resolution).
    MicronsPerPixel(f64),
}

/// µm per pixel stated by an Aperio `ImageDescription` (`… |MPP = 0.4990|…`).
pub fn aperio_mpp(description: &str) -> Option<f64> {
    if !description.starts_with("Aperio") {
        return None;
    }
    description.split('|').find_map(|field| {
        let (key, value) = field.split_once('=')?;
        (key.trim() == "MPP")
            .then(|| value.trim().parse::<f64>().ok())
            .flatten()
    })
}

/// µm per pixel from TIFF resolution tags: `XResolution` pixels per `ResolutionUnit` (inch or
/// centimetre; a unit of "none" states no physical size).
pub fn mpp_of_resolution(pixels_per_unit: f64, unit: ResolutionUnit) -> Option<f64> {
    let microns_per_unit = match unit {
        ResolutionUnit::Inch => 25_400.0,
        ResolutionUnit::Centimeter => 10_000.0,
        _ => return None,
    };
    plausible_mpp(microns_per_unit / pixels_per_unit)
}

/// `mpp` when it is a resolution a microscope scanner could have (0.01–100 µm/px): TIFF
/// writers that know nothing of physical size put 72 dpi (352.8 µm/px) or 1 dpi, which must
/// not pass as a slide's resolution.
pub(crate) fn plausible_mpp(mpp: f64) -> Option<f64> {
    (mpp.is_finite() && (0.01..=100.0).contains(&mpp)).then_some(mpp)
}

/// The µm per pixel of the TIFF's image `ifd` (level 0): the Aperio description's `MPP`, else
/// its resolution tags.
pub(crate) fn tiff_mpp(decoder: &mut Decoder<BufReader<File>>, ifd: usize) -> Option<f64> {
    let from_first = decoder
        .get_tag_ascii_string(Tag::ImageDescription)
        .ok()
        .as_deref()
        .and_then(aperio_mpp);
    if from_first.is_some() {
        return from_first.and_then(plausible_mpp);
    }
    decoder.seek_to_image(ifd).ok()?;
    let per_unit = match decoder.find_tag(Tag::XResolution).ok()?? {
        tiff::decoder::ifd::Value::Rational(n, d) if d > 0 => f64::from(n) / f64::from(d),
        other => other.into_f64().ok()?,
    };
    let unit = decoder
        .find_tag_unsigned::<u16>(Tag::ResolutionUnit)
        .ok()
        .flatten()
        .and_then(ResolutionUnit::from_u16)
        .unwrap_or(ResolutionUnit::Inch);
    mpp_of_resolution(per_unit, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aperio_descriptions_and_resolution_tags_give_microns() {
        let aperio = "Aperio Image Library v12.0.15 \r\n46000x32914 [0,100 46000x32914] (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990|Filename = x";
        assert_eq!(aperio_mpp(aperio), Some(0.499));
        assert_eq!(aperio_mpp("Aperio Image Library|AppMag = 20"), None);
        assert_eq!(aperio_mpp("Generic pyramid|MPP = 0.5"), None);
        // 40,000 px per cm is 0.25 µm/px; 101,600 px per inch too.
        assert_eq!(
            mpp_of_resolution(40_000.0, ResolutionUnit::Centimeter),
            Some(0.25)
        );
        assert_eq!(
            mpp_of_resolution(101_600.0, ResolutionUnit::Inch),
            Some(0.25)
        );
        // 72 dpi (an image editor's default) is 352.8 µm/px: no microscope's resolution.
        assert_eq!(mpp_of_resolution(72.0, ResolutionUnit::Inch), None);
        assert_eq!(mpp_of_resolution(5.0, ResolutionUnit::None), None);
    }
}
