//! Whole-slide images: tiled TIFF and BigTIFF pyramids read tile by tile, never whole.
//!
//! A [`Slide`] holds one decoder per pyramid level and a [`TileCache`] of decoded tiles with
//! a byte budget, so host memory is bounded by that budget plus what the caller reads (a
//! chunk of patches), whatever the size of the image. Tiles may be uncompressed, deflate, LZW
//! or JPEG (the layouts of most scanners' pyramidal TIFF exports); 8-bit gray or RGB.
//! [`TissueMask`] finds the patches worth encoding on a thumbnail (Otsu's threshold, as CLAM
//! does), so that blank background is never decoded at full resolution.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tiff::decoder::{ChunkType, Decoder, DecodingResult};
use tiff::tags::Tag;

use crate::DataError;
use crate::jpeg_end::check_jpeg_complete;

/// TIFF compression codes dbps reads: none, LZW, JPEG, deflate (Adobe and old-style).
const COMPRESSIONS: [(u16, &str); 5] = [
    (1, "none"),
    (5, "LZW"),
    (7, "JPEG"),
    (8, "deflate"),
    (32946, "deflate"),
];

/// How to fix a slide dbps cannot read.
const RESAVE: &str = "re-save the slide as a tiled pyramidal TIFF with 8-bit gray or RGB tiles compressed with none, deflate, LZW or JPEG (e.g. `vips tiffsave in out.tif --tile --pyramid --compression jpeg` or `tiffcp -t -c lzw`)";

/// One level of the pyramid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlideLevel {
    /// `[height, width]` in pixels.
    pub size: [usize; 2],
    /// `[height, width]` of a tile.
    pub tile: [usize; 2],
    /// Level 0's width over this level's width.
    pub downsample: f64,
    /// TIFF compression code of its tiles.
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

/// A decoded tile and the clock tick it was last used at.
type CachedTile = (u64, Arc<Vec<u8>>);

/// Decoded tiles, least recently used evicted first once the byte budget is spent.
#[derive(Debug)]
pub struct TileCache {
    budget: usize,
    bytes: usize,
    clock: u64,
    tiles: HashMap<(usize, usize), CachedTile>,
    decoded: u64,
}

impl TileCache {
    /// A cache holding at most `budget` bytes of decoded tiles (always at least one tile).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            clock: 0,
            tiles: HashMap::new(),
            decoded: 0,
        }
    }

    fn get(&mut self, key: (usize, usize)) -> Option<Arc<Vec<u8>>> {
        self.clock += 1;
        let clock = self.clock;
        self.tiles.get_mut(&key).map(|(used, tile)| {
            *used = clock;
            Arc::clone(tile)
        })
    }

    fn insert(&mut self, key: (usize, usize), tile: Arc<Vec<u8>>) {
        self.decoded += 1;
        self.bytes += tile.len();
        while self.bytes > self.budget && !self.tiles.is_empty() {
            let oldest = self
                .tiles
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k);
            if let Some((_, (_, evicted))) = oldest.and_then(|k| self.tiles.remove_entry(&k)) {
                self.bytes -= evicted.len();
            }
        }
        self.clock += 1;
        self.tiles.insert(key, (self.clock, tile));
    }
}

/// TIFF compression code of JPEG tiles.
const JPEG: u16 = 7;

/// The most bytes one decoded tile may take: the tiff crate's own decoding buffer limit, so
/// a tile size is refused when the slide is opened rather than when its first tile is read.
const MAX_TILE_BYTES: u64 = 256 << 20;

/// Checks that `level`, whose downsample was derived from its width, has the height that
/// downsample implies of level 0 (`full`, `[height, width]`): each side of a pyramid level is
/// level 0's divided by the downsample and rounded either way, so
/// `|h·W − w·H| < W + H`. A level of another shape would map patches to the wrong place.
fn check_level_shape(full: [usize; 2], level: &SlideLevel) -> Result<(), String> {
    let [big_h, big_w] = full.map(|v| v as u128);
    let [h, w] = level.size.map(|v| v as u128);
    if (h * big_w).abs_diff(w * big_h) >= big_w + big_h {
        return Err(format!(
            "is {}×{} px (width × height): at its downsample {:.3} of the {}×{} px level 0 its height should be about {:.0} px; it is not a level of this pyramid",
            w,
            h,
            level.downsample,
            big_w,
            big_h,
            big_h as f64 / level.downsample
        ));
    }
    Ok(())
}

/// A tiled TIFF or BigTIFF pyramid, read a tile at a time.
pub struct Slide {
    path: PathBuf,
    channels: usize,
    levels: Vec<SlideLevel>,
    /// Per level: where each tile's bytes lie (`(offset, length)`) and the predictor, for
    /// decoding LZW tiles whose end the tiff crate rejects (see [`Slide::decode_lzw`]).
    raw: Vec<(Vec<(u64, u64)>, u16)>,
    decoders: Vec<Mutex<Decoder<BufReader<File>>>>,
    cache: Mutex<TileCache>,
}

impl std::fmt::Debug for Slide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slide")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .field("levels", &self.levels)
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
    /// Opens every tiled image of the file as a pyramid level, largest first. Tile bytes are
    /// cached up to `cache_bytes`. A TIFF without tiled images is an error.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, DataError> {
        Self::open_tiled(path, cache_bytes)?.ok_or_else(|| DataError::Folder {
            path: path.to_path_buf(),
            problem: "holds no tiled image (its images are stored in strips); dbps streams tiles so that a slide is never decoded whole".into(),
            fix: RESAVE.into(),
        })
    }

    /// [`Slide::open`], with `None` for a valid TIFF whose images are all stored in strips
    /// (an ordinary image, to be decoded whole).
    pub fn open_tiled(path: &Path, cache_bytes: usize) -> Result<Option<Self>, DataError> {
        let bad = |problem: String| DataError::Folder {
            path: path.to_path_buf(),
            problem,
            fix: RESAVE.into(),
        };
        let open = || -> Result<Decoder<BufReader<File>>, DataError> {
            let file = File::open(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            Decoder::new(BufReader::new(file))
                .map_err(|e| bad(format!("is not a readable TIFF file: {e}")))
        };
        let mut first = open()?;
        let mut found: Vec<(usize, SlideLevel, usize)> = Vec::new();
        let mut ifd = 0;
        loop {
            if first.get_chunk_type() == ChunkType::Tile {
                let (w, h) = first
                    .dimensions()
                    .map_err(|e| bad(format!("image {ifd}: {e}")))?;
                let (tw, th) = first.chunk_dimensions();
                if w == 0 || h == 0 || tw == 0 || th == 0 {
                    return Err(bad(format!(
                        "image {ifd} is {w}×{h} px in {tw}×{th} px tiles; no side may be 0"
                    )));
                }
                let channels = match first.colortype() {
                    Ok(tiff::ColorType::Gray(8)) => 1,
                    Ok(tiff::ColorType::RGB(8)) => 3,
                    Ok(other) => {
                        return Err(bad(format!(
                            "image {ifd} has {other:?} pixels; dbps reads 8-bit gray or RGB"
                        )));
                    }
                    Err(e) => return Err(bad(format!("image {ifd}: {e}"))),
                };
                let compression = first
                    .find_tag_unsigned::<u16>(Tag::Compression)
                    .ok()
                    .flatten()
                    .unwrap_or(1);
                if !COMPRESSIONS.iter().any(|(c, _)| *c == compression) {
                    return Err(bad(format!(
                        "image {ifd} has tiles with compression {compression}, which dbps does not read (it reads none, deflate, LZW and JPEG)"
                    )));
                }
                if u64::from(tw) * u64::from(th) * channels as u64 > MAX_TILE_BYTES {
                    return Err(bad(format!(
                        "image {ifd} declares {tw}×{th} px tiles, more than the {} MiB a decoded tile may take",
                        MAX_TILE_BYTES >> 20
                    )));
                }
                let level = SlideLevel {
                    size: [h as usize, w as usize],
                    tile: [th as usize, tw as usize],
                    downsample: 1.0,
                    compression,
                };
                found.push((ifd, level, channels));
            }
            if !first.more_images() {
                break;
            }
            first
                .next_image()
                .map_err(|e| bad(format!("image {}: {e}", ifd + 1)))?;
            ifd += 1;
        }
        if found.is_empty() {
            return Ok(None);
        }
        found.sort_by_key(|(_, level, _)| std::cmp::Reverse(level.size[1]));
        let channels = found[0].2;
        let full = found[0].1.size;
        let file_len = std::fs::metadata(path)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut levels = Vec::with_capacity(found.len());
        let mut raw = Vec::with_capacity(found.len());
        let mut decoders = Vec::with_capacity(found.len());
        for (ifd, mut level, c) in found {
            if c != channels {
                return Err(bad(format!(
                    "its levels mix {channels}- and {c}-channel pixels"
                )));
            }
            level.downsample = full[1] as f64 / level.size[1] as f64;
            check_level_shape(full, &level).map_err(|p| bad(format!("image {ifd} {p}")))?;
            let mut decoder = open()?;
            decoder
                .seek_to_image(ifd)
                .map_err(|e| bad(format!("image {ifd}: {e}")))?;
            let tag = |d: &mut Decoder<BufReader<File>>, t: Tag| {
                d.get_tag_u64_vec(t)
                    .map_err(|e| bad(format!("image {ifd}: {e}")))
            };
            let offsets = tag(&mut decoder, Tag::TileOffsets)?;
            let counts = tag(&mut decoder, Tag::TileByteCounts)?;
            if offsets.len() < level.tile_count() || counts.len() < level.tile_count() {
                return Err(bad(format!(
                    "image {ifd} lists {} tile offsets for {} tiles",
                    offsets.len(),
                    level.tile_count()
                )));
            }
            if let Some((i, (offset, count))) = offsets
                .iter()
                .zip(&counts)
                .take(level.tile_count())
                .enumerate()
                .find(|(_, (o, c))| o.checked_add(**c).is_none_or(|end| end > file_len))
            {
                return Err(DataError::Folder {
                    path: path.to_path_buf(),
                    problem: format!(
                        "tile {i} of image {ifd} lies at bytes {offset}..{} but the file holds {file_len} bytes",
                        u128::from(*offset) + u128::from(*count)
                    ),
                    fix: "the file is truncated or damaged; copy or export it again".into(),
                });
            }
            let predictor = decoder
                .find_tag_unsigned::<u16>(Tag::Predictor)
                .ok()
                .flatten()
                .unwrap_or(1);
            raw.push((offsets.into_iter().zip(counts).collect(), predictor));
            levels.push(level);
            decoders.push(Mutex::new(decoder));
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            channels,
            levels,
            raw,
            decoders,
            cache: Mutex::new(TileCache::new(cache_bytes)),
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Channels: 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The pyramid, largest level first.
    pub fn levels(&self) -> &[SlideLevel] {
        &self.levels
    }

    /// The level to read for a requested downsample of level 0: the most reduced level that
    /// is not coarser than asked (so patches never see less detail than requested).
    pub fn level_for(&self, downsample: f64) -> usize {
        self.levels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.downsample <= downsample * (1.0 + 1e-6))
            .max_by(|a, b| a.1.downsample.total_cmp(&b.1.downsample))
            .map_or(0, |(i, _)| i)
    }

    /// Tiles decoded so far (cache misses).
    pub fn tiles_decoded(&self) -> u64 {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decoded
    }

    fn tile(&self, level: usize, index: usize) -> Result<Arc<Vec<u8>>, DataError> {
        if let Some(tile) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get((level, index))
        {
            return Ok(tile);
        }
        if self.levels[level].compression == JPEG {
            self.raw_tile(level, index)
                .and_then(|raw| check_jpeg_complete(&raw))
                .map_err(|reason| DataError::Folder {
                    path: self.path.clone(),
                    problem: format!("tile {index} of level {level} cannot be read: {reason}"),
                    fix: "the file is truncated or damaged; copy or export it again".into(),
                })?;
        }
        let decoded = {
            let mut decoder = self.decoders[level]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            decoder.read_chunk(index as u32)
        };
        let bytes = match decoded {
            Ok(DecodingResult::U8(bytes)) => bytes,
            Ok(_) => unreachable!("8-bit levels decode to bytes"),
            Err(e) if self.levels[level].compression == 5 && self.raw[level].1 == 1 => self
                .decode_lzw(level, index)
                .map_err(|reason| DataError::Folder {
                    path: self.path.clone(),
                    problem: format!(
                        "tile {index} of level {level} cannot be read: {e} ({reason})"
                    ),
                    fix: "the file is truncated or damaged; copy or export it again".into(),
                })?,
            Err(e) => {
                return Err(DataError::Folder {
                    path: self.path.clone(),
                    problem: format!("tile {index} of level {level} cannot be read: {e}"),
                    fix: "the file is truncated or damaged; copy or export it again".into(),
                });
            }
        };
        let tile = Arc::new(bytes);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((level, index), Arc::clone(&tile));
        Ok(tile)
    }

    /// Decodes LZW tile `index` of `level` from its raw bytes, cropped to the level like the
    /// tiff crate's tiles. tiff 0.11 rejects a valid stream whose last code arrives exactly when
    /// the last row's padding is skipped ("no lzw end code found"); the whole tile decoded at
    /// once has no such edge.
    fn decode_lzw(&self, level: usize, index: usize) -> Result<Vec<u8>, String> {
        let raw = self.raw_tile(level, index)?;
        let full = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .decode(&raw)
            .map_err(|e| e.to_string())?;
        let l = self.levels[level];
        let [th, tw] = l.tile;
        let c = self.channels;
        let (ty, tx) = (index / l.tiles_across(), index % l.tiles_across());
        let (dh, dw) = (th.min(l.size[0] - ty * th), tw.min(l.size[1] - tx * tw));
        if full.len() < ((dh - 1) * tw + dw) * c {
            return Err(format!("{} of {} bytes", full.len(), th * tw * c));
        }
        Ok((0..dh)
            .flat_map(|y| full[y * tw * c..(y * tw + dw) * c].iter().copied())
            .collect())
    }

    /// The stored (compressed) bytes of tile `index` of `level`; their extent was checked
    /// against the file's length when it was opened.
    fn raw_tile(&self, level: usize, index: usize) -> Result<Vec<u8>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let (offset, length) = self.raw[level].0[index];
        let mut raw = Vec::new();
        File::open(&self.path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(offset))?;
                f.take(length).read_to_end(&mut raw)
            })
            .map_err(|e| e.to_string())?;
        if raw.len() as u64 != length {
            return Err(format!(
                "{} of its {length} bytes are in the file",
                raw.len()
            ));
        }
        Ok(raw)
    }

    /// Pixels `[h, w, C]` (interleaved) of the region at `[y, x]` of `level`; what lies
    /// outside the level is 0.
    pub fn read_region(
        &self,
        level: usize,
        [y, x]: [usize; 2],
        [h, w]: [usize; 2],
    ) -> Result<Vec<u8>, DataError> {
        let l = self.levels[level];
        let c = self.channels;
        let [th, tw] = l.tile;
        let mut out = vec![0u8; h * w * c];
        let (y1, x1) = ((y + h).min(l.size[0]), (x + w).min(l.size[1]));
        if y >= y1 || x >= x1 {
            return Ok(out);
        }
        for ty in y / th..=(y1 - 1) / th {
            for tx in x / tw..=(x1 - 1) / tw {
                let tile = self.tile(level, ty * l.tiles_across() + tx)?;
                // Edge tiles decode to their data size only.
                let data_w = tw.min(l.size[1] - tx * tw);
                let (ry0, ry1) = (y.max(ty * th), y1.min((ty + 1) * th));
                let (rx0, rx1) = (x.max(tx * tw), x1.min((tx + 1) * tw));
                for ry in ry0..ry1 {
                    let src = ((ry - ty * th) * data_w + (rx0 - tx * tw)) * c;
                    let dst = ((ry - y) * w + (rx0 - x)) * c;
                    let len = (rx1 - rx0) * c;
                    if src + len > tile.len() {
                        return Err(DataError::Folder {
                            path: self.path.clone(),
                            problem: format!(
                                "tile {} of level {level} holds fewer pixels than its size",
                                ty * l.tiles_across() + tx
                            ),
                            fix: "the file is truncated or damaged; copy or export it again".into(),
                        });
                    }
                    out[dst..dst + len].copy_from_slice(&tile[src..src + len]);
                }
            }
        }
        Ok(out)
    }

    /// A gray thumbnail of at most `max_side` pixels on its longer side, `(pixels, [h, w])`,
    /// read from the smallest level that is at least that large (each thumbnail pixel is
    /// the level pixel at its centre).
    pub fn thumbnail(&self, max_side: usize) -> Result<(Vec<u8>, [usize; 2]), DataError> {
        let (pixels, size) = self.thumbnail_color(max_side)?;
        if self.channels == 1 {
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
    pub fn thumbnail_color(&self, max_side: usize) -> Result<(Vec<u8>, [usize; 2]), DataError> {
        let level = self
            .levels
            .iter()
            .rposition(|l| l.size[0].max(l.size[1]) >= max_side)
            .unwrap_or(self.levels.len() - 1);
        let [lh, lw] = self.levels[level].size;
        let scale = (max_side as f64 / lh.max(lw) as f64).min(1.0);
        let (h, w) = (
            ((lh as f64 * scale).round() as usize).max(1),
            ((lw as f64 * scale).round() as usize).max(1),
        );
        let c = self.channels;
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

/// Otsu's threshold of an 8-bit histogram: the t maximising the between-class variance
/// σ_B²(t) = ω₀(t) ω₁(t) (μ₀(t) − μ₁(t))², with ω the class weights and μ the class means of
/// the values ≤ t and > t.
pub fn otsu_threshold(histogram: &[u64; 256]) -> u8 {
    let total: u64 = histogram.iter().sum();
    let sum: f64 = histogram
        .iter()
        .enumerate()
        .map(|(v, &n)| v as f64 * n as f64)
        .sum();
    let (mut weight0, mut sum0) = (0u64, 0f64);
    let (mut best, mut best_var) = (0u8, -1f64);
    for (t, &n) in histogram.iter().enumerate() {
        weight0 += n;
        sum0 += t as f64 * n as f64;
        let weight1 = total - weight0;
        if weight0 == 0 || weight1 == 0 {
            continue;
        }
        let (w0, w1) = (weight0 as f64, weight1 as f64);
        let (mu0, mu1) = (sum0 / w0, (sum - sum0) / w1);
        let var = w0 * w1 * (mu0 - mu1) * (mu0 - mu1);
        if var > best_var {
            best_var = var;
            best = t as u8;
        }
    }
    best
}

/// Which thumbnail pixels are tissue: Otsu's threshold splits the gray values in two, and the
/// side that does not hold the most common value (the background, which fills most of a
/// slide) is tissue. Bright-field slides (dark tissue on white) and dark-field images (bright
/// objects on black) both work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TissueMask {
    /// `[h, w]` of the thumbnail.
    pub size: [usize; 2],
    /// Tissue per thumbnail pixel, row-major, one bit each (bit `i % 64` of word `i / 64`): a
    /// slide dataset keeps every slide's mask, at most 128 KiB apiece.
    bits: Vec<u64>,
    /// The threshold.
    pub threshold: u8,
}

/// Longest side of the thumbnail a slide's tissue mask is computed on.
pub const MASK_THUMBNAIL: usize = 1024;

impl TissueMask {
    /// The mask of `slide`, from its gray thumbnail of at most [`MASK_THUMBNAIL`] pixels a side.
    pub fn of_slide(slide: &Slide) -> Result<Self, DataError> {
        let (thumbnail, size) = slide.thumbnail(MASK_THUMBNAIL)?;
        Ok(Self::otsu(&thumbnail, size))
    }

    /// A mask from one flag per thumbnail pixel of `size`, row-major.
    pub fn from_flags(size: [usize; 2], flags: &[bool], threshold: u8) -> Self {
        let mut bits = vec![0u64; (size[0] * size[1]).div_ceil(64)];
        for (i, _) in flags.iter().enumerate().filter(|(_, t)| **t) {
            bits[i / 64] |= 1 << (i % 64);
        }
        Self {
            size,
            bits,
            threshold,
        }
    }

    /// Whether thumbnail pixel `[y, x]` is tissue.
    pub fn is_tissue(&self, [y, x]: [usize; 2]) -> bool {
        let i = y * self.size[1] + x;
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// The columns of row `y` that are tissue, in order, found a 64-bit word at a time.
    fn tissue_columns(&self, y: usize) -> impl Iterator<Item = usize> + '_ {
        let w = self.size[1];
        let (start, end) = (y * w, (y + 1) * w);
        (start / 64..end.div_ceil(64)).flat_map(move |k| {
            let mut word = self.bits[k];
            std::iter::from_fn(move || {
                while word != 0 {
                    let i = k * 64 + word.trailing_zeros() as usize;
                    word &= word - 1;
                    if (start..end).contains(&i) {
                        return Some(i - start);
                    }
                }
                None
            })
        })
    }

    /// Thumbnail pixels that are tissue.
    pub fn tissue_pixels(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether any thumbnail pixel is tissue.
    pub fn any(&self) -> bool {
        self.bits.iter().any(|&w| w != 0)
    }

    /// The mask of a gray thumbnail `[h, w]`.
    pub fn otsu(thumbnail: &[u8], size: [usize; 2]) -> Self {
        let mut histogram = [0u64; 256];
        for &v in thumbnail {
            histogram[v as usize] += 1;
        }
        let threshold = otsu_threshold(&histogram);
        let background = (0..256).max_by_key(|&v| histogram[v]).unwrap_or(0) as u8;
        let background_low = background <= threshold;
        let tissue: Vec<bool> = thumbnail
            .iter()
            .map(|&v| (v <= threshold) != background_low)
            .collect();
        Self::from_flags(size, &tissue, threshold)
    }

    /// The cells of a patch grid over an image of `image_size` that overlap tissue, as
    /// row-major indices `row · xs.len() + col`: `ys` and `xs` are the top-left rows and
    /// columns of the grid's patches, `[h, w]` their size. The same cells as [`TissueMask::covers`]
    /// finds one by one, but the mask is collapsed row band by row band first, so a grid of
    /// millions of patches costs little more than its rows with tissue.
    pub fn covered_cells(
        &self,
        image_size: [usize; 2],
        ys: &[usize],
        xs: &[usize],
        [h, w]: [usize; 2],
    ) -> Vec<usize> {
        let [mh, mw] = self.size;
        let to_mask = |v: usize, full: usize, m: usize| (v * m / full.max(1)).min(m - 1);
        let span = |v: usize, len: usize, full: usize, m: usize| {
            (to_mask(v, full, m), to_mask(v + len - 1, full, m))
        };
        let columns: Vec<(usize, usize)> =
            xs.iter().map(|&x| span(x, w, image_size[1], mw)).collect();
        // Mask rows with tissue, as a prefix count: a band without any is skipped at once.
        let mut rows_before = vec![0usize; mh + 1];
        for my in 0..mh {
            let any = self.tissue_columns(my).next().is_some();
            rows_before[my + 1] = rows_before[my] + usize::from(any);
        }
        let mut band = vec![false; mw];
        let mut cols_before = vec![0usize; mw + 1];
        let mut cells = Vec::new();
        for (r, &y) in ys.iter().enumerate() {
            let (y0, y1) = span(y, h, image_size[0], mh);
            if rows_before[y1 + 1] == rows_before[y0] {
                continue;
            }
            band.fill(false);
            for my in y0..=y1 {
                for mx in self.tissue_columns(my) {
                    band[mx] = true;
                }
            }
            for (mx, &b) in band.iter().enumerate() {
                cols_before[mx + 1] = cols_before[mx] + usize::from(b);
            }
            cells.extend(
                columns
                    .iter()
                    .enumerate()
                    .filter(|(_, (x0, x1))| cols_before[x1 + 1] > cols_before[*x0])
                    .map(|(c, _)| r * xs.len() + c),
            );
        }
        cells
    }

    /// Whether the region `[y, x]`, `[h, w]` of an image of `image_size` overlaps tissue.
    pub fn covers(&self, image_size: [usize; 2], [y, x]: [usize; 2], [h, w]: [usize; 2]) -> bool {
        let [mh, mw] = self.size;
        let to_mask = |v: usize, full: usize, m: usize| (v * m / full.max(1)).min(m - 1);
        let (y0, y1) = (
            to_mask(y, image_size[0], mh),
            to_mask(y + h - 1, image_size[0], mh),
        );
        let (x0, x1) = (
            to_mask(x, image_size[1], mw),
            to_mask(x + w - 1, image_size[1], mw),
        );
        (y0..=y1).any(|my| (x0..=x1).any(|mx| self.is_tissue([my, mx])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `covered_cells` finds what `covers` finds patch by patch, on masks and grids of
        /// every shape (thumbnails smaller and larger than the image, overlapping and
        /// strided patches, the last one past the edge).
        #[test]
        fn covered_cells_agree_with_covers(
            mh in 1usize..40,
            mw in 1usize..40,
            bits in proptest::collection::vec(proptest::bool::weighted(0.1), 1600),
            image in (8usize..300, 8usize..300),
            p_frac in 0.0f64..1.0,
            extra in 0usize..4,
        ) {
            let mask = TissueMask::from_flags([mh, mw], &bits[..mh * mw], 0);
            let image = [image.0, image.1];
            let p = 1 + (p_frac * (image[0].min(image[1]) - 1) as f64) as usize;
            let stride = (p + extra).max(1);
            let ys: Vec<usize> = (0..image[0]).step_by(stride).collect();
            let xs: Vec<usize> = (0..image[1]).step_by(stride).collect();
            let mut naive = Vec::new();
            for (r, &y) in ys.iter().enumerate() {
                for (c, &x) in xs.iter().enumerate() {
                    if mask.covers(image, [y, x], [p, p]) {
                        naive.push(r * xs.len() + c);
                    }
                }
            }
            proptest::prop_assert_eq!(mask.covered_cells(image, &ys, &xs, [p, p]), naive);
        }
    }

    /// Two clusters: the threshold lands between them (any t in [10, 199] separates them;
    /// σ_B² is flat there, and the first maximum is kept).
    #[test]
    fn otsu_splits_two_clusters() {
        let mut histogram = [0u64; 256];
        histogram[10] = 700;
        histogram[200] = 300;
        let t = otsu_threshold(&histogram);
        assert!((10..200).contains(&t), "{t}");
        // By hand for 0/1/2 with counts 1, 1, 2: t = 0 gives ω = (1/4, 3/4), μ = (0, 5/3),
        // σ² ∝ 1·3·(5/3)² = 8.33; t = 1 gives ω = (2/4, 2/4), μ = (1/2, 2), σ² ∝ 2·2·(3/2)² = 9.
        let mut h = [0u64; 256];
        h[0] = 1;
        h[1] = 1;
        h[2] = 2;
        assert_eq!(otsu_threshold(&h), 1);
    }

    #[test]
    fn tissue_is_the_side_without_the_background() {
        // Bright field: white background, one dark blob.
        let mut thumb = vec![240u8; 16];
        thumb[5] = 60;
        let mask = TissueMask::otsu(&thumb, [4, 4]);
        assert_eq!(mask.tissue_pixels(), 1);
        assert!(mask.is_tissue([1, 1]));
        // Dark field: black background, one bright blob.
        let mut thumb = vec![5u8; 16];
        thumb[10] = 220;
        let mask = TissueMask::otsu(&thumb, [4, 4]);
        assert!(mask.is_tissue([2, 2]) && mask.tissue_pixels() == 1);
        // Regions of a 400×400 image on this 4×4 mask: pixel (2, 2) covers 200..300 × 200..300.
        assert!(mask.covers([400, 400], [250, 250], [16, 16]));
        assert!(!mask.covers([400, 400], [0, 0], [16, 16]));
        assert!(
            mask.covers([400, 400], [190, 190], [16, 16]),
            "straddles into tissue"
        );
    }

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

    #[test]
    fn the_cache_keeps_its_budget_and_evicts_the_oldest() {
        let mut cache = TileCache::new(250);
        for i in 0..3 {
            cache.insert((0, i), Arc::new(vec![0; 100]));
        }
        assert!(cache.bytes <= 250);
        assert!(cache.get((0, 0)).is_none(), "the oldest went first");
        assert!(cache.get((0, 2)).is_some());
        assert_eq!(cache.decoded, 3);
    }
}
