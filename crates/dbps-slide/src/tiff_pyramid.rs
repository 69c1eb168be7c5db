//! The built-in reader: tiled TIFF and BigTIFF pyramids read tile by tile, never whole.
//!
//! It holds one decoder per pyramid level and a [`TileCache`] of decoded tiles with a byte
//! budget, so host memory is bounded by that budget plus what the caller reads (a chunk of
//! patches), whatever the size of the image. Tiles may be uncompressed, deflate, LZW or JPEG
//! (the layouts of most scanners' pyramidal TIFF exports); 8-bit gray or RGB. Anything else
//! is [`SlideError::Unsupported`] (OpenSlide's to try), a damaged file
//! [`SlideError::Damaged`].

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tiff::decoder::{ChunkType, Decoder, DecodingResult};
use tiff::tags::Tag;

use crate::jpeg_end::check_jpeg_complete;
use crate::resolution::tiff_mpp;
use crate::tile_cache::TileCache;
use crate::{SlideError, SlideLevel};

/// TIFF compression codes dbps reads: none, LZW, JPEG, deflate (Adobe and old-style).
const COMPRESSIONS: [(u16, &str); 5] = [
    (1, "none"),
    (5, "LZW"),
    (7, "JPEG"),
    (8, "deflate"),
    (32946, "deflate"),
];

/// How to fix a slide dbps cannot read.
pub(crate) const RESAVE: &str = "re-save the slide as a tiled pyramidal TIFF with 8-bit gray or RGB tiles compressed with none, deflate, LZW or JPEG (e.g. `vips tiffsave in out.tif --tile --pyramid --compression jpeg` or `tiffcp -t -c lzw`)";

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
pub(crate) struct TiffPyramid {
    path: PathBuf,
    channels: usize,
    levels: Vec<SlideLevel>,
    /// Per level: where each tile's bytes lie (`(offset, length)`) and the predictor, for
    /// decoding LZW tiles whose end the tiff crate rejects (see [`Slide::decode_lzw`]).
    raw: Vec<(Vec<(u64, u64)>, u16)>,
    decoders: Vec<Mutex<Decoder<BufReader<File>>>>,
    cache: Mutex<TileCache>,
    /// µm per level-0 pixel, when the file states it.
    pub(crate) mpp: Option<f64>,
}

impl std::fmt::Debug for TiffPyramid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffPyramid")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .field("levels", &self.levels)
            .finish_non_exhaustive()
    }
}

impl TiffPyramid {
    /// Opens every tiled image of the file as a pyramid level, largest first, with tile bytes
    /// cached up to `cache_bytes`; `None` for a valid TIFF whose images are all stored in
    /// strips (an ordinary image, to be decoded whole, or a format for OpenSlide).
    pub(crate) fn open_tiled(path: &Path, cache_bytes: usize) -> Result<Option<Self>, SlideError> {
        let bad = |problem: String| SlideError::Damaged {
            path: path.to_path_buf(),
            problem,
            fix: RESAVE.into(),
        };
        let unsupported = |problem: String| SlideError::Unsupported {
            path: path.to_path_buf(),
            problem,
            fix: RESAVE.into(),
        };
        let open = || -> Result<Decoder<BufReader<File>>, SlideError> {
            let file = File::open(path).map_err(|source| SlideError::Io {
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
                        return Err(unsupported(format!(
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
                    return Err(unsupported(format!(
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
        let found_first_ifd = found[0].0;
        let file_len = std::fs::metadata(path)
            .map_err(|source| SlideError::Io {
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
                return Err(SlideError::damaged(
                    path,
                    format!(
                        "tile {i} of image {ifd} lies at bytes {offset}..{} but the file holds {file_len} bytes",
                        u128::from(*offset) + u128::from(*count)
                    ),
                ));
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
        let mpp = tiff_mpp(&mut open()?, found_first_ifd);
        Ok(Some(Self {
            path: path.to_path_buf(),
            channels,
            levels,
            raw,
            decoders,
            cache: Mutex::new(TileCache::new(cache_bytes)),
            mpp,
        }))
    }

    /// Channels: 1 (gray) or 3 (RGB).
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// The pyramid, largest level first.
    pub(crate) fn levels(&self) -> &[SlideLevel] {
        &self.levels
    }

    /// Tiles decoded so far (cache misses).
    pub(crate) fn tiles_decoded(&self) -> u64 {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decoded()
    }

    fn tile(&self, level: usize, index: usize) -> Result<Arc<Vec<u8>>, SlideError> {
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
                .map_err(|reason| {
                    SlideError::damaged(
                        &self.path,
                        format!("tile {index} of level {level} cannot be read: {reason}"),
                    )
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
            Err(e) if self.levels[level].compression == 5 && self.raw[level].1 == 1 => {
                self.decode_lzw(level, index).map_err(|reason| {
                    SlideError::damaged(
                        &self.path,
                        format!("tile {index} of level {level} cannot be read: {e} ({reason})"),
                    )
                })?
            }
            Err(e) => {
                return Err(SlideError::damaged(
                    &self.path,
                    format!("tile {index} of level {level} cannot be read: {e}"),
                ));
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
    pub(crate) fn read_region(
        &self,
        level: usize,
        [y, x]: [usize; 2],
        [h, w]: [usize; 2],
    ) -> Result<Vec<u8>, SlideError> {
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
                        return Err(SlideError::damaged(
                            &self.path,
                            format!(
                                "tile {} of level {level} holds fewer pixels than its size",
                                ty * l.tiles_across() + tx
                            ),
                        ));
                    }
                    out[dst..dst + len].copy_from_slice(&tile[src..src + len]);
                }
            }
        }
        Ok(out)
    }
}
