//! [`Slide`]: one whole-slide image behind either reader — the built-in tiled-TIFF reader or,
//! with the `openslide` feature, OpenSlide — with the same levels, regions and thumbnails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SlideError;
use crate::tiff_pyramid::{RESAVE, TiffPyramid};

/// One level of the pyramid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlideLevel {
    /// `[height, width]` in pixels.
    pub size: [usize; 2],
    /// `[height, width]` of a tile.
    pub tile: [usize; 2],
    /// Level 0's width over this level's width.
    pub downsample: f64,
    /// TIFF compression code of its tiles (0 when OpenSlide decodes them).
    pub compression: u16,
}

impl SlideLevel {
    /// Tiles per row.
    pub fn tiles_across(&self) -> usize {
        self.size[1].div_ceil(self.tile[1])
    }

    /// Tiles in the level.
    pub fn tile_count(&self) -> usize {
        self.tiles_across() * self.size[0].div_ceil(self.tile[0])
    }
}

/// Which reader opens slides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlideReader {
    /// The built-in reader; OpenSlide (when built in) for files the built-in reader does not
    /// support — never for files it found damaged.
    #[default]
    Auto,
    /// The built-in reader only.
    Builtin,
    /// OpenSlide for every slide (needs the `openslide` feature).
    Openslide,
}

impl FromStr for SlideReader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "builtin" => Ok(Self::Builtin),
            "openslide" => Ok(Self::Openslide),
            other => Err(format!(
                "`{other}` is not a slide reader; use auto, builtin or openslide"
            )),
        }
    }
}

/// Whether this build can open slides with OpenSlide (the `openslide` feature).
pub const HAS_OPENSLIDE: bool = cfg!(feature = "openslide");

/// How to get OpenSlide into a build without it.
const BUILD_WITH_OPENSLIDE: &str = "build dbps with `--features openslide` (needs the system library: `apt-get install libopenslide-dev libclang-dev`)";

/// The reader behind a slide.
enum Reader {
    Tiff(TiffPyramid),
    #[cfg(feature = "openslide")]
    OpenSlide(Box<crate::openslide_reader::OpenSlideReader>),
}

/// A whole-slide image read a region at a time, never whole.
pub struct Slide {
    path: PathBuf,
    reader: Reader,
}

impl std::fmt::Debug for Slide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slide")
            .field("path", &self.path)
            .field("reader", &self.reader_name())
            .field("channels", &self.channels())
            .field("levels", &self.levels())
            .finish_non_exhaustive()
    }
}

/// Whether `path` starts like a TIFF or BigTIFF file (`II*\0`, `MM\0*`, `II+\0`, `MM\0+`).
pub fn is_tiff(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && matches!(&magic, b"II*\0" | b"MM\0*" | b"II+\0" | b"MM\0+")
}

impl Slide {
    /// Opens a slide with the default reader choice ([`SlideReader::Auto`]); a file that is
    /// not a slide (an ordinary image, a TIFF stored in strips) is an error. Decoded tiles of
    /// the built-in reader are cached up to `cache_bytes` (OpenSlide keeps its own cache).
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, SlideError> {
        Self::open_with(path, SlideReader::Auto, cache_bytes)
    }

    /// [`Slide::open`] with the reader `reader`.
    pub fn open_with(
        path: &Path,
        reader: SlideReader,
        cache_bytes: usize,
    ) -> Result<Self, SlideError> {
        Self::open_if_slide(path, reader, cache_bytes)?.ok_or_else(|| SlideError::Unsupported {
            path: path.to_path_buf(),
            problem: if is_tiff(path) {
                "holds no tiled image (its images are stored in strips); dbps streams tiles so that a slide is never decoded whole".into()
            } else if HAS_OPENSLIDE {
                "is not a readable TIFF file (no TIFF header), nor a format OpenSlide recognises".into()
            } else {
                "is not a readable TIFF file (no TIFF header)".into()
            },
            fix: if HAS_OPENSLIDE {
                format!("OpenSlide does not recognise it either; {RESAVE}")
            } else {
                format!("{RESAVE}, or {BUILD_WITH_OPENSLIDE} to read other scanners' formats")
            },
        })
    }

    /// The file as a slide, or `None` when it is an ordinary image for its readers: a file
    /// that is not a TIFF, or a TIFF stored in strips, that OpenSlide (when built in and
    /// allowed) does not recognise either.
    pub fn open_if_slide(
        path: &Path,
        reader: SlideReader,
        cache_bytes: usize,
    ) -> Result<Option<Self>, SlideError> {
        let slide = |reader| Self {
            path: path.to_path_buf(),
            reader,
        };
        if reader == SlideReader::Openslide {
            return open_openslide(path, String::new()).map(|r| Some(slide(r)));
        }
        let builtin = if is_tiff(path) {
            TiffPyramid::open_tiled(path, cache_bytes)
        } else {
            Ok(None)
        };
        match (builtin, reader) {
            (Ok(Some(pyramid)), _) => Ok(Some(slide(Reader::Tiff(pyramid)))),
            (Ok(None), SlideReader::Builtin) => Ok(None),
            (Ok(None), _) if HAS_OPENSLIDE && openslide_recognises(path) => {
                open_openslide(path, String::new()).map(|r| Some(slide(r)))
            }
            (Ok(None), _) => Ok(None),
            (Err(SlideError::Unsupported { problem, .. }), SlideReader::Auto) if HAS_OPENSLIDE => {
                let context =
                    format!(" (tried because the built-in reader found that the file {problem})");
                open_openslide(path, context).map(|r| Some(slide(r)))
            }
            (Err(SlideError::Unsupported { path, problem, fix }), _) => {
                Err(SlideError::Unsupported {
                    path,
                    problem,
                    fix: if HAS_OPENSLIDE {
                        format!(
                            "{fix}, or read it with OpenSlide (`--reader openslide`, `dataset.slides.reader`)"
                        )
                    } else {
                        format!("{fix}, or {BUILD_WITH_OPENSLIDE}")
                    },
                })
            }
            (Err(e), _) => Err(e),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which reader reads it: `builtin` or `openslide`.
    pub fn reader_name(&self) -> &'static str {
        match &self.reader {
            Reader::Tiff(_) => "builtin",
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(_) => "openslide",
        }
    }

    /// Channels of [`Slide::read_region`]'s pixels: 1 (gray) or 3 (RGB; OpenSlide always).
    pub fn channels(&self) -> usize {
        match &self.reader {
            Reader::Tiff(t) => t.channels(),
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(_) => 3,
        }
    }

    /// The pyramid, largest level first.
    pub fn levels(&self) -> &[SlideLevel] {
        match &self.reader {
            Reader::Tiff(t) => t.levels(),
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(o) => o.levels(),
        }
    }

    /// µm per level-0 pixel, when the file states it (TIFF resolution tags, Aperio `MPP`,
    /// OpenSlide's `openslide.mpp-x`).
    pub fn mpp(&self) -> Option<f64> {
        match &self.reader {
            Reader::Tiff(t) => t.mpp,
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(o) => o.mpp(),
        }
    }

    /// The format OpenSlide detected (`openslide.vendor`: `aperio`, `hamamatsu`, `mirax`,
    /// `generic-tiff`, …); `None` for the built-in reader, which reads one format.
    pub fn vendor(&self) -> Option<&str> {
        match &self.reader {
            Reader::Tiff(_) => None,
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(o) => o.vendor(),
        }
    }

    /// Tiles the built-in reader decoded so far (cache misses; 0 under OpenSlide, whose
    /// cache is its own).
    pub fn tiles_decoded(&self) -> u64 {
        match &self.reader {
            Reader::Tiff(t) => t.tiles_decoded(),
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(_) => 0,
        }
    }

    /// The level to read for a requested downsample of level 0: the most reduced level that
    /// is not coarser than asked (so patches never see less detail than requested).
    pub fn level_for(&self, downsample: f64) -> usize {
        self.levels()
            .iter()
            .enumerate()
            .filter(|(_, l)| l.downsample <= downsample * (1.0 + 1e-6))
            .max_by(|a, b| a.1.downsample.total_cmp(&b.1.downsample))
            .map_or(0, |(i, _)| i)
    }

    /// The interleaved 8-bit pixels `[h, w, channels]` of level `level` from `[y, x]`; pixels
    /// past the level's edge are 0.
    pub fn read_region(
        &self,
        level: usize,
        at: [usize; 2],
        size: [usize; 2],
    ) -> Result<Vec<u8>, SlideError> {
        match &self.reader {
            Reader::Tiff(t) => t.read_region(level, at, size),
            #[cfg(feature = "openslide")]
            Reader::OpenSlide(o) => o.read_region(&self.path, level, at, size),
        }
    }

    /// A gray thumbnail of at most `max_side` pixels on its longer side, `(pixels, [h, w])`,
    /// read from the smallest level that is at least that large (each thumbnail pixel is
    /// the level pixel at its centre).
    pub fn thumbnail(&self, max_side: usize) -> Result<(Vec<u8>, [usize; 2]), SlideError> {
        let (pixels, size) = self.thumbnail_color(max_side)?;
        if self.channels() == 1 {
            return Ok((pixels, size));
        }
        let gray = pixels
            .chunks_exact(3)
            .map(|px| {
                (0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2]))
                    .round() as u8
            })
            .collect();
        Ok((gray, size))
    }

    /// [`Slide::thumbnail`] in the slide's own channels (interleaved).
    pub fn thumbnail_color(&self, max_side: usize) -> Result<(Vec<u8>, [usize; 2]), SlideError> {
        let level = self
            .levels()
            .iter()
            .rposition(|l| l.size[0].max(l.size[1]) >= max_side)
            .unwrap_or(self.levels().len() - 1);
        let [lh, lw] = self.levels()[level].size;
        let scale = (max_side as f64 / lh.max(lw) as f64).min(1.0);
        let (h, w) = (
            ((lh as f64 * scale).round() as usize).max(1),
            ((lw as f64 * scale).round() as usize).max(1),
        );
        let c = self.channels();
        let mut out = Vec::with_capacity(h * w * c);
        for ty in 0..h {
            let sy = (((ty as f64 + 0.5) / scale) as usize).min(lh - 1);
            // One row of the level at a time: a thumbnail never holds more than a band of tiles.
            let row = self.read_region(level, [sy, 0], [1, lw])?;
            for tx in 0..w {
                let sx = (((tx as f64 + 0.5) / scale) as usize).min(lw - 1);
                out.extend_from_slice(&row[sx * c..sx * c + c]);
            }
        }
        Ok((out, [h, w]))
    }
}

#[cfg(feature = "openslide")]
fn openslide_recognises(path: &Path) -> bool {
    crate::openslide_reader::recognises(path)
}

#[cfg(not(feature = "openslide"))]
fn openslide_recognises(_: &Path) -> bool {
    false
}

#[cfg(feature = "openslide")]
fn open_openslide(path: &Path, context: String) -> Result<Reader, SlideError> {
    crate::openslide_reader::OpenSlideReader::open(path, context)
        .map(|r| Reader::OpenSlide(Box::new(r)))
}

#[cfg(not(feature = "openslide"))]
fn open_openslide(path: &Path, _context: String) -> Result<Reader, SlideError> {
    Err(SlideError::ReaderMissing {
        what: format!("reading {} with OpenSlide", path.display()),
        reason: format!("this dbps was built without OpenSlide; {BUILD_WITH_OPENSLIDE}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PyramidSpec, TileCompression, write_tiled_tiff};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dbps-slide-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Level-0 pixel value of a test pattern (what the reader must give back).
    fn pattern(y: usize, x: usize, c: usize) -> u8 {
        ((y * 7 + x * 3 + c * 50) % 251) as u8
    }

    /// Writes a 2-level slide of `[h, w]` whose level-1 pixels sample level 0 at twice the step.
    fn write(
        path: &Path,
        [h, w]: [usize; 2],
        channels: usize,
        compression: TileCompression,
        big: bool,
    ) {
        let spec = PyramidSpec {
            levels: vec![[h, w], [h / 2, w / 2]],
            tile: 32,
            channels,
            compression,
            big,
            description: None,
            mpp: None,
        };
        let levels = spec.levels.clone();
        write_tiled_tiff(path, &spec, |level, [y0, x0], side| {
            let [lh, lw] = levels[level];
            let d = 1 << level;
            let mut out = vec![0u8; side * side * channels];
            for y in 0..side {
                for x in 0..side {
                    for c in 0..channels {
                        if y0 + y < lh && x0 + x < lw {
                            out[(y * side + x) * channels + c] =
                                pattern((y0 + y) * d, (x0 + x) * d, c);
                        }
                    }
                }
            }
            out
        })
        .unwrap();
    }

    /// Every compression, classic and BigTIFF, gray and RGB: regions that cross tile edges
    /// and the image's edge read back the written pixels (JPEG within its loss).
    #[test]
    fn regions_read_back_across_tiles_levels_and_formats() {
        let dir = scratch("roundtrip");
        for (i, (compression, big, channels)) in [
            (TileCompression::None, false, 1),
            (TileCompression::Deflate, true, 3),
            (TileCompression::Lzw, false, 3),
            (TileCompression::Lzw, true, 1),
            (TileCompression::Jpeg { quality: 95 }, false, 1),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.join(format!("s{i}.tif"));
            write(&path, [100, 75], channels, compression, big);
            assert!(is_tiff(&path));
            let slide = Slide::open(&path, 1 << 20).unwrap();
            assert_eq!(slide.channels(), channels);
            assert_eq!(slide.levels().len(), 2);
            assert_eq!(slide.levels()[1].size, [50, 37]);
            assert_eq!(slide.level_for(1.0), 0);
            assert_eq!(slide.level_for(3.0), 1);
            let tolerance = if matches!(compression, TileCompression::Jpeg { .. }) {
                40
            } else {
                0
            };
            for (level, at, size) in [
                (0, [20, 25], [30, 40]),
                (0, [90, 60], [16, 16]),
                (1, [10, 5], [40, 32]),
            ] {
                let region = slide.read_region(level, at, size).unwrap();
                let d = 1 << level;
                let lsize = slide.levels()[level].size;
                for y in 0..size[0] {
                    for x in 0..size[1] {
                        for c in 0..channels {
                            let (py, px) = (at[0] + y, at[1] + x);
                            let want = if py < lsize[0] && px < lsize[1] {
                                pattern(py * d, px * d, c)
                            } else {
                                0
                            };
                            let got = region[(y * size[1] + x) * channels + c];
                            assert!(
                                (i32::from(got) - i32::from(want)).abs() <= tolerance,
                                "{compression:?} level {level} ({py}, {px}, {c}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_slides_are_named_with_the_fix() {
        let dir = scratch("bad");
        let text = dir.join("notes.tif");
        std::fs::write(&text, b"not a tiff at all").unwrap();
        let err = Slide::open(&text, 1 << 20).unwrap_err().to_string();
        assert!(
            err.contains("notes.tif") && err.contains("not a readable TIFF"),
            "{err}"
        );

        // Compression 34712 (JPEG 2000) patched into the IFD.
        let path = dir.join("j2k.tif");
        write(&path, [64, 64], 1, TileCompression::None, false);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == [3, 1, 3, 0, 1, 0, 0, 0])
            .expect("the compression entry (tag 259, SHORT, 1 value)");
        bytes[at + 8..at + 10].copy_from_slice(&34712u16.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = Slide::open(&path, 1 << 20).unwrap_err().to_string();
        assert!(
            err.contains("compression 34712") && err.contains("re-save"),
            "{err}"
        );

        // A damaged tile: opening works (the IFDs are whole), the tile read names the tile.
        let path = dir.join("cut.tif");
        write(&path, [64, 64], 1, TileCompression::Deflate, false);
        let slide_len = std::fs::metadata(&path).unwrap().len();
        let bytes = std::fs::read(&path).unwrap();
        let mut cut = bytes.clone();
        // Break the zlib header of the first stored tile (at byte 8, after the TIFF header):
        // every inflater rejects it, and the file stays parseable. (Garbage inside the deflate
        // data is not enough: it can decode to wrong pixels without an error.)
        cut[8..10].fill(0xff);
        std::fs::write(&path, &cut).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), slide_len);
        let slide = Slide::open(&path, 1 << 20).unwrap();
        let err = slide
            .read_region(0, [0, 0], [8, 8])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tile 0 of level 0") && err.contains("damaged"),
            "{err}"
        );
    }

    /// A JPEG tile whose stream lost its end, a tile whose bytes lie past the end of the
    /// file, and a level whose shape is not its pyramid's are refused, naming what is wrong.
    #[test]
    fn truncated_tiles_and_misshapen_levels_are_refused() {
        let dir = scratch("truncated");
        let path = dir.join("jpeg.tif");
        write(
            &path,
            [64, 64],
            3,
            TileCompression::Jpeg { quality: 90 },
            false,
        );
        let mut bytes = std::fs::read(&path).unwrap();
        // The first tile's end-of-image marker (the first FF D9 after byte 8) overwritten:
        // the tile is the stream of a JPEG cut short before its end.
        let eoi = 8 + bytes[8..]
            .windows(2)
            .position(|w| w == [0xFF, 0xD9])
            .unwrap();
        bytes[eoi..eoi + 2].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let slide = Slide::open(&path, 1 << 20).unwrap();
        let err = slide
            .read_region(0, [0, 0], [8, 8])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tile 0 of level 0") && err.contains("truncated"),
            "{err}"
        );

        // Uncompressed gray pyramids of uniform 32 px tiles, levels as given.
        let flat = |name: &str, levels: Vec<[usize; 2]>| {
            let path = dir.join(name);
            let spec = PyramidSpec {
                levels,
                tile: 32,
                channels: 1,
                compression: TileCompression::None,
                big: false,
                description: None,
                mpp: None,
            };
            write_tiled_tiff(&path, &spec, |_, _, side| vec![7; side * side]).unwrap();
            path
        };
        // One 32 × 32 tile: its byte count (1,024, a LONG held in its IFD entry) raised past
        // the end of the file.
        let path = flat("long.tif", vec![[32, 32]]);
        let mut bytes = std::fs::read(&path).unwrap();
        let entry = [0x45, 0x01, 4, 0, 1, 0, 0, 0, 0, 4, 0, 0];
        let at = bytes
            .windows(12)
            .position(|w| w == entry)
            .expect("the TileByteCounts entry (tag 325, LONG, 1 value: 1024)");
        bytes[at + 8..at + 12].copy_from_slice(&(1u32 << 31).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = Slide::open(&path, 1 << 20).unwrap_err().to_string();
        assert!(
            err.contains("tile 0 of image 0") && err.contains("truncated"),
            "{err}"
        );

        // A second level half as wide as level 0 but a quarter as high.
        let path = flat("shape.tif", vec![[64, 64], [16, 32]]);
        let err = Slide::open(&path, 1 << 20).unwrap_err().to_string();
        assert!(
            err.contains("image 1") && err.contains("not a level of this pyramid"),
            "{err}"
        );
        // Rounding either way is a level: 65 × 65 over 33 × 32.
        let path = flat("odd.tif", vec![[65, 65], [33, 32]]);
        assert_eq!(Slide::open(&path, 1 << 20).unwrap().levels().len(), 2);
    }
}
