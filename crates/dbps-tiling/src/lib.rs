//! Cutting huge images into patches: the [`PatchGrid`] geometry, [`HostImages`] (a batch in
//! host memory, 8-bit where the data is, cut and normalised patch by patch: the patch source of
//! selection), [`cut_patches`] (the same on image tensors), whole-grid extraction from
//! image tensors, and the training-time [`PatchDrop`] of DBPS (method.md §1 and §8).
//!
//! This crate knows tensors but no Burn modules: it is geometry and index bookkeeping only.
//!
//! ```
//! use dbps_tiling::{PatchGrid, RemainderPolicy};
//!
//! // A 1000×1000 image cut into 100×100 patches gives a 10×10 grid, indexed row-major.
//! let grid = PatchGrid::new([1000, 1000], 100, 100, RemainderPolicy::Drop).unwrap();
//! assert_eq!(grid.len(), 100);
//! assert_eq!(grid.origin(12), [100, 200]);
//! ```

#![warn(missing_docs)]

mod cut;
mod drop;
mod error;
mod extract;
mod grid;
mod host;

pub use cut::cut_patches;
pub use drop::PatchDrop;
pub use error::TilingError;
pub use extract::extract_patches;
pub use grid::{MAX_PATCHES, PatchGrid, RemainderPolicy};
pub use host::{HostImages, HostPixels, PixelNorm};
