//! Whether a JPEG stream reaches its end-of-image marker.
//!
//! JPEG decoders (zune-jpeg through `image` and `tiff`) decode a truncated stream "as browsers
//! do": the missing rows come out grey and the decode succeeds. A truncated photograph or slide
//! tile would then be trained on or predicted as if whole, so dbps walks the stream's structure
//! first: marker segments by their lengths, entropy-coded data up to the next marker, until the
//! end-of-image marker (EOI, `FF D9`). A stream that ends before it is truncated.

/// Start of image.
const SOI: u8 = 0xD8;
/// End of image.
const EOI: u8 = 0xD9;
/// Start of scan: entropy-coded data follows its header.
const SOS: u8 = 0xDA;

/// `Ok` when `bytes` is a JPEG stream (SOI first) whose segments and scans lead to an EOI
/// marker; otherwise what is missing, in words. Bytes after EOI (camera trailers) are allowed.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 2 || bytes[0] != 0xFF || bytes[1] != SOI {
        return Err("does not start with a JPEG start-of-image marker".into());
    }
    let truncated = |at: usize| {
        Err(format!(
            "the JPEG stream ends at byte {at} of {} without its end-of-image marker (truncated)",
            bytes.len()
        ))
    };
    let mut at = 2;
    loop {
        // Fill bytes (FF FF …) may precede a marker.
        while at < bytes.len() && bytes[at] == 0xFF && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&ff), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            return truncated(bytes.len());
        };
        if ff != 0xFF {
            return Err(format!(
                "byte {at} should start a JPEG marker but is {ff:#04x} (damaged stream)"
            ));
        }
        at += 2;
        match marker {
            EOI => return Ok(()),
            // Markers without a length: restart markers, SOI, TEM.
            0xD0..=0xD7 | SOI | 0x01 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(at..at + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return truncated(bytes.len());
        };
        if len < 2 {
            return Err(format!(
                "the JPEG segment at byte {} declares length {len} (at least 2)",
                at - 2
            ));
        }
        at += len;
        if at > bytes.len() {
            return truncated(bytes.len());
        }
        if marker == SOS {
            let Some(end) = entropy_data_end(bytes, at) else {
                return truncated(bytes.len());
            };
            at = end;
        }
    }
}

/// Where the entropy-coded data that starts at `from` ends: the position of the next marker
/// (`FF` followed by neither a stuffed `00` nor a restart marker `D0`–`D7`), or `None` when the
/// stream ends first.
fn entropy_data_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 1 < bytes.len() {
        if bytes[at] != 0xFF {
            at += 1;
            continue;
        }
        match bytes[at + 1] {
            // A fill byte: the marker starts at the next FF.
            0xFF => at += 1,
            0x00 | 0xD0..=0xD7 => at += 2,
            _ => return Some(at),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real baseline JPEG written by the `image` crate (independent of the checker).
    fn jpeg() -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 9, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_whole_jpeg_passes_and_a_trailer_is_allowed() {
        let mut bytes = jpeg();
        assert_eq!(check_jpeg_complete(&bytes), Ok(()));
        bytes.extend_from_slice(b"camera trailer");
        assert_eq!(check_jpeg_complete(&bytes), Ok(()));
    }

    #[test]
    fn every_truncation_is_found() {
        let bytes = jpeg();
        for cut in 0..bytes.len() - 1 {
            let err = check_jpeg_complete(&bytes[..cut]).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("start-of-image"),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn an_end_marker_inside_a_segment_does_not_count() {
        // An APP1 segment whose payload holds FF D9 (as an EXIF thumbnail does), then nothing.
        let bytes = [0xFF, SOI, 0xFF, 0xE1, 0x00, 0x06, 0xFF, EOI, 0x00, 0x00];
        assert!(
            check_jpeg_complete(&bytes)
                .unwrap_err()
                .contains("truncated")
        );
    }

    /// The end marker after fill bytes (`FF FF D9`) ends the scan.
    #[test]
    fn fill_bytes_before_the_end_marker_are_skipped() {
        let bytes = jpeg();
        let mut filled = bytes[..bytes.len() - 2].to_vec();
        filled.extend([0xFF, 0xFF, EOI]);
        assert_eq!(check_jpeg_complete(&filled), Ok(()));
    }

    #[test]
    fn a_declared_length_below_two_is_refused() {
        let bytes = [0xFF, SOI, 0xFF, 0xE0, 0x00, 0x01, 0xFF, EOI];
        assert!(
            check_jpeg_complete(&bytes)
                .unwrap_err()
                .contains("length 1")
        );
    }
}
