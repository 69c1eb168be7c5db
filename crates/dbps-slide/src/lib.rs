//! Whole-slide images for dbps, without a deep-learning framework: open a slide, stream its
//! patches, find its tissue.
//!
//! - [`Slide`]: a tiled TIFF/BigTIFF pyramid read by the built-in reader (tiles uncompressed,
//!   deflate, LZW or JPEG; a byte-budgeted [`TileCache`]), or — with the `openslide` feature —
//!   any format OpenSlide reads (Hamamatsu, MIRAX, Leica, Ventana, Philips, Aperio JPEG 2000),
//!   behind the same levels, regions and thumbnails. [`SlideReader`] chooses.
//! - [`SlideView`]: the level a [`Resolution`] asks for (a downsample, or µm per pixel
//!   resampled exactly), what a patch grid is laid over.
//! - [`TissueMask`]: Otsu's threshold on a thumbnail, and its outline as polygons
//!   ([`TissuePolygon`]).
//! - [`write_tiled_tiff`]: writes tiled pyramids (test slides, benchmark input), with an
//!   Aperio-style description and resolution when asked.
//!
//! ```
//! use std::sync::Arc;
//! use dbps_slide::{PyramidSpec, Resolution, Slide, SlideView, TileCompression, write_tiled_tiff};
//!
//! let path = std::env::temp_dir().join(format!("dbps-slide-doc-{}.tif", std::process::id()));
//! let spec = PyramidSpec::new(vec![[64, 96], [32, 48]], 16, 1, TileCompression::Deflate);
//! write_tiled_tiff(&path, &spec, |_, [y, x], side| vec![(y + x) as u8; side * side]).unwrap();
//! let slide = Arc::new(Slide::open(&path, 1 << 20).unwrap());
//! let view = SlideView::new(Arc::clone(&slide), Resolution::Downsample(2.0)).unwrap();
//! assert_eq!((view.level(), view.size()), (1, [32, 48]));
//! assert_eq!(view.read_region([0, 0], [2, 2]).unwrap(), vec![0, 0, 0, 0]);
//! # std::fs::remove_file(&path).unwrap();
//! ```

#![warn(missing_docs)]

mod error;
pub mod jpeg_end;
#[cfg(feature = "openslide")]
mod openslide_reader;
mod resolution;
mod slide;
mod slide_writer;
mod tiff_pyramid;
mod tile_cache;
mod tissue_contour;
mod tissue_mask;
mod view;

pub use error::SlideError;
pub use resolution::{Resolution, aperio_mpp};
pub use slide::{HAS_OPENSLIDE, Slide, SlideLevel, SlideReader, is_tiff};
pub use slide_writer::{PyramidSpec, TileCompression, WrittenSlide, write_tiled_tiff};
pub use tile_cache::TileCache;
pub use tissue_contour::{TissuePolygon, ring_area2};
pub use tissue_mask::{MASK_THUMBNAIL, TissueMask, otsu_threshold};
pub use view::SlideView;
