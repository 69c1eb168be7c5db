//! OpenSlide as a second reader (feature `openslide`): every format the system library reads
//! (Hamamatsu, MIRAX, Leica, Ventana, Philips, Aperio with JPEG 2000 tiles, …), giving the
//! same levels and regions as the built-in reader.
//!
//! OpenSlide returns premultiplied ARGB; regions are composited over the slide's background
//! colour (white unless `openslide.background-color` says otherwise), as OpenSlide's own
//! thumbnails are, and pixels past a level's edge are 0, as the built-in reader gives them.

use std::path::Path;

use openslide_rs::{Address, OpenSlide, Region, Size};

use crate::resolution::{mpp_of_resolution, plausible_mpp};
use crate::tiff_pyramid::RESAVE;
use crate::{SlideError, SlideLevel};

/// Tile side assumed for a level whose tile size OpenSlide does not report (only used to
/// count the tiles a read touched).
const DEFAULT_TILE: usize = 256;

/// The longest side a level may have: 2^24 px (a row of it, which a thumbnail reads, takes
/// 64 MiB of ARGB), far beyond any scanner's 200,000 px.
const MAX_SIDE: usize = 1 << 24;

/// The largest tile side believed from OpenSlide's properties: tiles are only counted and, by
/// `slides check`, read one at a time.
const MAX_TILE: usize = 8192;

/// The fix for a region OpenSlide cannot decode.
const DAMAGED: &str = "the file is truncated or damaged; copy or export it again";

/// A slide opened by OpenSlide.
pub(crate) struct OpenSlideReader {
    slide: OpenSlide,
    levels: Vec<SlideLevel>,
    mpp: Option<f64>,
    background: [u8; 3],
    vendor: Option<String>,
}

/// Whether OpenSlide recognises the file's format (a quick look at its header).
pub(crate) fn recognises(path: &Path) -> bool {
    OpenSlide::detect_vendor(path).is_ok_and(|vendor| !vendor.is_empty())
}

impl OpenSlideReader {
    /// Opens `path`; `context` (empty, or why OpenSlide was asked) ends any error message.
    pub(crate) fn open(path: &Path, context: String) -> Result<Self, SlideError> {
        let failed = |message: String| SlideError::OpenSlide {
            path: path.to_path_buf(),
            message,
            context: context.clone(),
            fix: RESAVE.into(),
        };
        let slide = OpenSlide::new(path).map_err(|e| failed(e.to_string()))?;
        let property = |name: &str| slide.property_value(name).ok();
        let count = slide.level_count() as usize;
        if count == 0 {
            return Err(failed("the file has no pyramid level".into()));
        }
        let mut levels = Vec::with_capacity(count);
        for level in 0..count {
            let size = slide
                .level_dimensions(level as u32)
                .map_err(|e| failed(format!("level {level}: {e}")))?;
            let downsample = slide
                .level_downsample(level as u32)
                .map_err(|e| failed(format!("level {level}: {e}")))?;
            let tile = |side: &str| {
                property(&format!("openslide.level[{level}].tile-{side}"))
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&v| v > 0)
                    .unwrap_or(DEFAULT_TILE)
            };
            if size.w == 0 || size.h == 0 || size.w.max(size.h) as usize > MAX_SIDE {
                return Err(failed(format!(
                    "level {level} is {}×{} px; a level's sides must lie in 1..={MAX_SIDE}",
                    size.w, size.h
                )));
            }
            levels.push(SlideLevel {
                size: [size.h as usize, size.w as usize],
                tile: [tile("height").min(MAX_TILE), tile("width").min(MAX_TILE)],
                downsample,
                compression: 0,
            });
        }
        let mpp = property("openslide.mpp-x")
            .and_then(|v| v.parse::<f64>().ok())
            .and_then(plausible_mpp)
            .or_else(|| {
                let per_unit = property("tiff.XResolution")?.parse::<f64>().ok()?;
                let unit = match property("tiff.ResolutionUnit")?.as_str() {
                    "centimeter" => tiff::tags::ResolutionUnit::Centimeter,
                    "inch" => tiff::tags::ResolutionUnit::Inch,
                    _ => return None,
                };
                mpp_of_resolution(per_unit, unit)
            });
        let background = property("openslide.background-color")
            .and_then(|hex| {
                let v = u32::from_str_radix(&hex, 16).ok()?;
                Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
            })
            .unwrap_or([255; 3]);
        let vendor = property("openslide.vendor");
        Ok(Self {
            slide,
            levels,
            mpp,
            background,
            vendor,
        })
    }

    pub(crate) fn levels(&self) -> &[SlideLevel] {
        &self.levels
    }

    pub(crate) fn mpp(&self) -> Option<f64> {
        self.mpp
    }

    pub(crate) fn vendor(&self) -> Option<&str> {
        self.vendor.as_deref()
    }

    /// RGB pixels `[h, w, 3]` of `level` from `[y, x]` (level pixels), 0 past the level's edge.
    pub(crate) fn read_region(
        &self,
        path: &Path,
        level: usize,
        [y, x]: [usize; 2],
        [h, w]: [usize; 2],
    ) -> Result<Vec<u8>, SlideError> {
        let l = self.levels[level];
        let mut out = vec![0u8; h * w * 3];
        let (y1, x1) = ((y + h).min(l.size[0]), (x + w).min(l.size[1]));
        if y >= y1 || x >= x1 {
            return Ok(out);
        }
        let (rh, rw) = (y1 - y, x1 - x);
        // OpenSlide addresses a region by its level-0 corner.
        let to_level0 = |v: usize| (v as f64 * l.downsample).round() as u32;
        let region = Region {
            address: Address {
                x: to_level0(x),
                y: to_level0(y),
            },
            level: level as u32,
            size: Size {
                w: rw as u32,
                h: rh as u32,
            },
        };
        let argb = self
            .slide
            .read_region(&region)
            .map_err(|e| SlideError::OpenSlide {
                path: path.to_path_buf(),
                message: format!("level {level} region at [{y}, {x}] of {rh}×{rw} px: {e}"),
                context: String::new(),
                fix: DAMAGED.into(),
            })?;
        if argb.len() != rh * rw * 4 {
            return Err(SlideError::OpenSlide {
                path: path.to_path_buf(),
                message: format!("returned {} bytes for a {rh}×{rw} px region", argb.len()),
                context: String::new(),
                fix: DAMAGED.into(),
            });
        }
        for (i, bytes) in argb.chunks_exact(4).enumerate() {
            let (row, col) = (i / rw, i % rw);
            let px = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let alpha = px >> 24;
            let dst = (row * w + col) * 3;
            for (c, shift) in [16, 8, 0].into_iter().enumerate() {
                let premultiplied = (px >> shift) & 0xff;
                // Premultiplied colour over the background: c + (1 − α)·bg.
                let over =
                    premultiplied + ((255 - alpha) * u32::from(self.background[c]) + 127) / 255;
                out[dst + c] = over.min(255) as u8;
            }
        }
        Ok(out)
    }
}
