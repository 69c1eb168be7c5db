//! The built-in reader and OpenSlide read the same files alike: a generic tiled TIFF (lossless
//! tiles: equal to the byte) and an Aperio-style SVS (JPEG tiles: two decoders, within a
//! stated tolerance), at every level, with the same levels and resolution.
#![cfg(feature = "openslide")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dbps_slide::{
    PyramidSpec, Resolution, Slide, SlideReader, SlideView, TileCompression, TissueMask,
    write_tiled_tiff,
};

/// The largest difference allowed between two JPEG decoders (zune-jpeg in the built-in
/// reader, libjpeg under OpenSlide) on one 8-bit sample: their IDCT and upsampling round
/// differently (measured on this file: at most 1, mean 0.0006).
const JPEG_TOLERANCE: u8 = 4;
/// The largest mean absolute difference allowed over a JPEG region.
const JPEG_MEAN_TOLERANCE: f64 = 0.05;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-readers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A smooth RGB pattern with a dark blob (tissue) on white, at level-0 pixel `[y, x]`.
fn pixel(y: usize, x: usize) -> [u8; 3] {
    let (cy, cx) = (y as f64 - 200.0, x as f64 - 260.0);
    if cy * cy + cx * cx < 120.0 * 120.0 {
        [
            (90 + (y / 3 + x / 5) % 60) as u8,
            (40 + (x / 4) % 50) as u8,
            (120 + (y / 6) % 70) as u8,
        ]
    } else {
        [250, 250, 248]
    }
}

/// Writes a 3-level RGB pyramid of 384 × 512 px (each level half the last: downsamples of
/// exactly 2 and 4, so both readers agree on every level's geometry).
fn write(path: &Path, compression: TileCompression, description: Option<String>, big: bool) {
    let spec = PyramidSpec {
        levels: vec![[384, 512], [192, 256], [96, 128]],
        tile: 64,
        channels: 3,
        compression,
        big,
        description,
        mpp: Some(0.25),
    };
    write_tiled_tiff(path, &spec, |level, [y0, x0], side| {
        let d = 1 << level;
        let [h, w] = [384 >> level, 512 >> level];
        let mut out = vec![0u8; side * side * 3];
        for y in 0..side {
            for x in 0..side {
                if y0 + y < h && x0 + x < w {
                    let px = pixel((y0 + y) * d, (x0 + x) * d);
                    out[(y * side + x) * 3..(y * side + x) * 3 + 3].copy_from_slice(&px);
                }
            }
        }
        out
    })
    .unwrap();
}

fn both(path: &Path) -> (Slide, Slide) {
    let builtin = Slide::open_with(path, SlideReader::Builtin, 16 << 20).unwrap();
    let openslide = Slide::open_with(path, SlideReader::Openslide, 16 << 20).unwrap();
    assert_eq!(builtin.reader_name(), "builtin");
    assert_eq!(openslide.reader_name(), "openslide");
    (builtin, openslide)
}

/// Every level read whole by both readers; returns the largest and mean absolute difference.
fn compare_levels(builtin: &Slide, openslide: &Slide) -> (u8, f64) {
    assert_eq!(builtin.levels().len(), openslide.levels().len());
    let (mut worst, mut sum, mut count) = (0u8, 0f64, 0usize);
    for (level, (a, b)) in builtin.levels().iter().zip(openslide.levels()).enumerate() {
        assert_eq!(a.size, b.size, "level {level}");
        assert!((a.downsample - b.downsample).abs() < 1e-9, "level {level}");
        // Whole level, and a region straddling tiles and the right and bottom edges.
        for (at, size) in [
            ([0, 0], a.size),
            ([a.size[0] - 40, a.size[1] - 50], [64, 64]),
        ] {
            let x = builtin.read_region(level, at, size).unwrap();
            let y = openslide.read_region(level, at, size).unwrap();
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(&y) {
                let d = p.abs_diff(*q);
                worst = worst.max(d);
                sum += f64::from(d);
                count += 1;
            }
        }
    }
    (worst, sum / count as f64)
}

#[test]
fn a_generic_tiled_tiff_reads_the_same_to_the_byte() {
    let dir = scratch("generic");
    for (name, compression, big) in [
        ("none.tif", TileCompression::None, false),
        ("deflate.tif", TileCompression::Deflate, true),
        ("lzw.tif", TileCompression::Lzw, false),
    ] {
        let path = dir.join(name);
        write(&path, compression, None, big);
        let (builtin, openslide) = both(&path);
        assert_eq!(openslide.vendor(), Some("generic-tiff"), "{name}");
        assert_eq!(compare_levels(&builtin, &openslide), (0, 0.0), "{name}");
        assert_eq!(builtin.mpp(), Some(0.25), "{name}: resolution tags");
        let os_mpp = openslide.mpp().unwrap();
        assert!((os_mpp - 0.25).abs() < 1e-6, "{name}: {os_mpp}");
        // The same tissue mask, the same µm view.
        let (ma, mb) = (
            TissueMask::of_slide(&builtin).unwrap(),
            TissueMask::of_slide(&openslide).unwrap(),
        );
        assert_eq!(ma, mb, "{name}");
        let view = |s: Slide| SlideView::new(Arc::new(s), Resolution::MicronsPerPixel(0.75));
        let (va, vb) = (view(builtin).unwrap(), view(openslide).unwrap());
        assert_eq!((va.level(), va.size()), (vb.level(), vb.size()));
        assert_eq!(
            va.read_region([10, 20], [32, 32]).unwrap(),
            vb.read_region([10, 20], [32, 32]).unwrap()
        );
    }
}

#[test]
fn an_aperio_svs_reads_alike_within_the_jpeg_tolerance() {
    let dir = scratch("aperio");
    let path = dir.join("slide.svs");
    let description = "Aperio Image Library v12.0.15 \r\n512x384 [0,0 512x384] (64x64) JPEG/RGB Q=90|AppMag = 40|MPP = 0.2500|Filename = slide".to_string();
    write(
        &path,
        TileCompression::Jpeg { quality: 90 },
        Some(description),
        false,
    );
    let (builtin, openslide) = both(&path);
    assert_eq!(
        openslide.vendor(),
        Some("aperio"),
        "OpenSlide's own format detection"
    );
    let (worst, mean) = compare_levels(&builtin, &openslide);
    // The figure docs/slides.md quotes.
    eprintln!(
        "Aperio JPEG tiles, built-in vs OpenSlide: largest difference {worst}, mean {mean:.4}"
    );
    assert!(
        worst <= JPEG_TOLERANCE && mean <= JPEG_MEAN_TOLERANCE,
        "largest difference {worst}, mean {mean:.3}"
    );
    assert_eq!(builtin.mpp(), Some(0.25), "Aperio MPP");
    assert_eq!(openslide.mpp(), Some(0.25), "openslide.mpp-x");
    // The default reader keeps the built-in one for what it reads.
    assert_eq!(
        Slide::open(&path, 1 << 20).unwrap().reader_name(),
        "builtin"
    );
}

#[test]
fn files_the_builtin_reader_does_not_read_go_to_openslide_and_damaged_ones_do_not() {
    let dir = scratch("fallback");
    // An RGB pyramid stored in strips by OpenSlide's own test formats is out of reach here;
    // a tiled TIFF whose IFD names old-style JPEG (6) is a compression the built-in reader
    // refuses as unsupported — OpenSlide is asked and its refusal is quoted with both reasons.
    let path = dir.join("ojpeg.tif");
    write(&path, TileCompression::None, None, false);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == [3, 1, 3, 0, 1, 0, 0, 0])
        .unwrap();
    bytes[at + 8..at + 10].copy_from_slice(&34712u16.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = Slide::open(&path, 1 << 20).unwrap_err().to_string();
    assert!(
        err.contains("OpenSlide cannot read it") && err.contains("compression 34712"),
        "{err}"
    );
    // A damaged tile table stays the built-in reader's error: OpenSlide is not asked.
    let path = dir.join("cut.tif");
    write(&path, TileCompression::Deflate, None, false);
    let len = std::fs::metadata(&path).unwrap().len();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..(len as usize) / 2]).unwrap();
    let err = Slide::open(&path, 1 << 20).unwrap_err().to_string();
    assert!(!err.contains("OpenSlide"), "{err}");
    // A file nobody reads.
    let path = dir.join("notes.svs");
    std::fs::write(&path, b"plain text").unwrap();
    let err = Slide::open(&path, 1 << 20).unwrap_err().to_string();
    assert!(err.contains("nor a format OpenSlide recognises"), "{err}");
}
