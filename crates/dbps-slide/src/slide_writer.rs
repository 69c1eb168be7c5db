//! Writes tiled TIFF and BigTIFF pyramids: the test slides and the gigapixel bench input.
//!
//! Tiles come from a callback, one at a time, so a slide of any size is written in the memory
//! of one tile. Tiles whose pixels all share one value (blank background) are stored once and
//! referenced by every tile offset that needs them, so a mostly empty gigapixel slide takes a
//! few megabytes on disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use crate::SlideError;

/// How the writer compresses tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileCompression {
    /// Raw bytes (TIFF compression 1).
    None,
    /// zlib deflate (TIFF compression 8).
    Deflate,
    /// LZW, MSB-first with the TIFF code-size switch (TIFF compression 5).
    Lzw,
    /// One baseline JPEG stream per tile (TIFF compression 7).
    Jpeg {
        /// JPEG quality, 1–100.
        quality: u8,
    },
}

impl TileCompression {
    fn code(self) -> u16 {
        match self {
            Self::None => 1,
            Self::Lzw => 5,
            Self::Jpeg { .. } => 7,
            Self::Deflate => 8,
        }
    }
}

/// The geometry of a pyramid to write.
#[derive(Debug, Clone, PartialEq)]
pub struct PyramidSpec {
    /// `[height, width]` per level, largest first.
    pub levels: Vec<[usize; 2]>,
    /// Tile side (a multiple of 16, as TIFF requires).
    pub tile: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Tile compression.
    pub compression: TileCompression,
    /// BigTIFF (64-bit offsets) instead of classic TIFF.
    pub big: bool,
    /// ImageDescription of level 0 (an Aperio SVS starts it with "Aperio Image Library").
    pub description: Option<String>,
    /// µm per level-0 pixel, written as resolution tags (pixels per centimetre) on every
    /// level, scaled by its downsample.
    pub mpp: Option<f64>,
}

impl PyramidSpec {
    /// A classic TIFF of `levels` (`[height, width]`, largest first) in `tile` px tiles, with
    /// no description and no resolution.
    pub fn new(
        levels: Vec<[usize; 2]>,
        tile: usize,
        channels: usize,
        compression: TileCompression,
    ) -> Self {
        Self {
            levels,
            tile,
            channels,
            compression,
            big: false,
            description: None,
            mpp: None,
        }
    }
}

/// What the writer stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenSlide {
    /// Tiles over all levels.
    pub tiles: usize,
    /// Tiles whose bytes were stored (the rest reuse a blank tile).
    pub stored: usize,
    /// File size in bytes.
    pub bytes: u64,
}

const ASCII: u16 = 2;
const SHORT: u16 = 3;
const LONG: u16 = 4;
const RATIONAL: u16 = 5;
const LONG8: u16 = 16;

/// One IFD entry before layout: tag, type and values.
struct Entry {
    tag: u16,
    kind: u16,
    values: Vec<u64>,
}

impl Entry {
    fn new(tag: u16, kind: u16, values: Vec<u64>) -> Self {
        Self { tag, kind, values }
    }

    fn value_bytes(&self, le: &mut Vec<u8>) {
        for &v in &self.values {
            match self.kind {
                ASCII => le.push(v as u8),
                // Numerator in the high half, denominator in the low half.
                RATIONAL => {
                    le.extend_from_slice(&((v >> 32) as u32).to_le_bytes());
                    le.extend_from_slice(&(v as u32).to_le_bytes());
                }
                SHORT => le.extend_from_slice(&(v as u16).to_le_bytes()),
                LONG => le.extend_from_slice(&(v as u32).to_le_bytes()),
                _ => le.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }
}

/// Little-endian TIFF writing with classic or BigTIFF offsets.
struct TiffFile {
    out: BufWriter<File>,
    big: bool,
    pos: u64,
}

impl TiffFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<u64> {
        let at = self.pos;
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(at)
    }

    fn offset_bytes(&self, v: u64) -> Vec<u8> {
        if self.big {
            v.to_le_bytes().to_vec()
        } else {
            (v as u32).to_le_bytes().to_vec()
        }
    }

    /// Writes an IFD (arrays that do not fit inline first) and returns the position of its
    /// next-IFD pointer, to be patched when the next IFD is known.
    fn ifd(&mut self, mut entries: Vec<Entry>) -> std::io::Result<(u64, u64)> {
        entries.sort_by_key(|e| e.tag);
        let inline = if self.big { 8 } else { 4 };
        let mut fields = Vec::with_capacity(entries.len());
        for e in &entries {
            let mut bytes = Vec::new();
            e.value_bytes(&mut bytes);
            if bytes.len() <= inline {
                bytes.resize(inline, 0);
                fields.push(bytes);
            } else {
                if self.pos % 2 == 1 {
                    self.write(&[0])?;
                }
                let at = self.write(&bytes)?;
                fields.push(self.offset_bytes(at));
            }
        }
        if self.pos % 2 == 1 {
            self.write(&[0])?;
        }
        let start = self.pos;
        let mut ifd = Vec::new();
        if self.big {
            ifd.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        } else {
            ifd.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        }
        for (e, field) in entries.iter().zip(fields) {
            ifd.extend_from_slice(&e.tag.to_le_bytes());
            ifd.extend_from_slice(&e.kind.to_le_bytes());
            if self.big {
                ifd.extend_from_slice(&(e.values.len() as u64).to_le_bytes());
            } else {
                ifd.extend_from_slice(&(e.values.len() as u32).to_le_bytes());
            }
            ifd.extend_from_slice(&field);
        }
        self.write(&ifd)?;
        let next = self.write(&self.offset_bytes(0))?;
        Ok((start, next))
    }

    fn patch(&mut self, at: u64, value: u64) -> std::io::Result<()> {
        let bytes = self.offset_bytes(value);
        self.out.seek(SeekFrom::Start(at))?;
        self.out.write_all(&bytes)?;
        self.out.seek(SeekFrom::Start(self.pos))?;
        Ok(())
    }
}

fn compress(data: &[u8], spec: &PyramidSpec) -> std::io::Result<Vec<u8>> {
    match spec.compression {
        TileCompression::None => Ok(data.to_vec()),
        TileCompression::Deflate => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(data)?;
            z.finish()
        }
        TileCompression::Lzw => {
            weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                .encode(data)
                .map_err(std::io::Error::other)
        }
        TileCompression::Jpeg { quality } => {
            let mut out = Vec::new();
            let color = if spec.channels == 3 {
                image::ExtendedColorType::Rgb8
            } else {
                image::ExtendedColorType::L8
            };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .encode(data, spec.tile as u32, spec.tile as u32, color)
                .map_err(std::io::Error::other)?;
            Ok(out)
        }
    }
}

/// Writes the pyramid `spec` to `path`; `tile(level, [y, x], side)` returns the interleaved
/// pixels `[side, side, C]` of the tile whose top-left pixel is `[y, x]` (0 beyond the level).
pub fn write_tiled_tiff(
    path: &Path,
    spec: &PyramidSpec,
    mut tile: impl FnMut(usize, [usize; 2], usize) -> Vec<u8>,
) -> Result<WrittenSlide, SlideError> {
    let io = |source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut tf = TiffFile {
        out: BufWriter::new(file),
        big: spec.big,
        pos: 0,
    };
    let header: Vec<u8> = if spec.big {
        [
            b"II+\0".as_slice(),
            &8u16.to_le_bytes(),
            &0u16.to_le_bytes(),
            &0u64.to_le_bytes(),
        ]
        .concat()
    } else {
        [b"II*\0".as_slice(), &0u32.to_le_bytes()].concat()
    };
    tf.write(&header).map_err(io)?;
    let mut pointer = 4u64 + if spec.big { 4 } else { 0 };
    let (mut tiles, mut stored) = (0, 0);
    let side = spec.tile;
    for (level, &[h, w]) in spec.levels.iter().enumerate() {
        let mut offsets = Vec::new();
        let mut counts = Vec::new();
        // (uniform value) → (offset, length) of the stored blank tile.
        let mut blank: HashMap<u8, (u64, u64)> = HashMap::new();
        for ty in 0..h.div_ceil(side) {
            for tx in 0..w.div_ceil(side) {
                let data = tile(level, [ty * side, tx * side], side);
                debug_assert_eq!(data.len(), side * side * spec.channels);
                tiles += 1;
                let uniform = data.iter().all(|&v| v == data[0]).then_some(data[0]);
                if let Some(&(at, len)) = uniform.and_then(|v| blank.get(&v)) {
                    offsets.push(at);
                    counts.push(len);
                    continue;
                }
                let bytes = compress(&data, spec).map_err(io)?;
                let at = tf.write(&bytes).map_err(io)?;
                stored += 1;
                if let Some(v) = uniform {
                    blank.insert(v, (at, bytes.len() as u64));
                }
                offsets.push(at);
                counts.push(bytes.len() as u64);
            }
        }
        let array = if spec.big { LONG8 } else { LONG };
        let c = spec.channels as u64;
        let mut entries = vec![
            Entry::new(254, LONG, vec![u64::from(level > 0)]),
            Entry::new(256, LONG, vec![w as u64]),
            Entry::new(257, LONG, vec![h as u64]),
            Entry::new(258, SHORT, vec![8; spec.channels]),
            Entry::new(259, SHORT, vec![u64::from(spec.compression.code())]),
            Entry::new(262, SHORT, vec![if c == 3 { 2 } else { 1 }]),
            Entry::new(277, SHORT, vec![c]),
            Entry::new(284, SHORT, vec![1]),
            Entry::new(322, LONG, vec![side as u64]),
            Entry::new(323, LONG, vec![side as u64]),
            Entry::new(324, array, offsets),
            Entry::new(325, array, counts),
        ];
        if let (0, Some(text)) = (level, &spec.description) {
            let bytes = text.bytes().chain([0]).map(u64::from).collect();
            entries.push(Entry::new(270, ASCII, bytes));
        }
        if let Some(mpp) = spec.mpp {
            // Pixels per centimetre of this level, as a fraction over 1,000.
            let downsample = spec.levels[0][1] as f64 / w as f64;
            let per_cm = (10_000.0 / (mpp * downsample) * 1_000.0).round() as u64;
            let rational = (per_cm << 32) | 1_000;
            entries.push(Entry::new(282, RATIONAL, vec![rational]));
            entries.push(Entry::new(283, RATIONAL, vec![rational]));
            entries.push(Entry::new(296, SHORT, vec![3]));
        }
        let (start, next) = tf.ifd(entries).map_err(io)?;
        tf.patch(pointer, start).map_err(io)?;
        pointer = next;
    }
    tf.out.flush().map_err(io)?;
    Ok(WrittenSlide {
        tiles,
        stored,
        bytes: tf.pos,
    })
}
