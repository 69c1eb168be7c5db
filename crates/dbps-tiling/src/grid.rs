use serde::{Deserialize, Serialize};

use crate::TilingError;

/// What happens to pixels past the last whole patch of a row or column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemainderPolicy {
    /// Ignore them: only whole patches are cut.
    #[default]
    Drop,
    /// Pad the image with zeros so that one more (partial) patch covers them.
    ZeroPad,
}

/// The most patches one grid may hold: 2^24 (16.8 million), a 917,504² px slide cut into
/// 224 px patches — several times the largest whole-slide image. A grid index list of this
/// size takes 128 MiB; a file declaring a larger image (a few hundred bytes of TIFF header can)
/// is refused before any per-patch list is made.
pub const MAX_PATCHES: usize = 1 << 24;

/// The patches of an `H×W` image: patch side, stride, and a row-major index `row * cols + col`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGrid {
    height: usize,
    width: usize,
    patch: usize,
    stride: usize,
    rows: usize,
    cols: usize,
    remainder: RemainderPolicy,
}

impl PatchGrid {
    /// Lays a grid of `patch`×`patch` patches, `stride` apart, over an image of `[height, width]`.
    pub fn new(
        [height, width]: [usize; 2],
        patch: usize,
        stride: usize,
        remainder: RemainderPolicy,
    ) -> Result<Self, TilingError> {
        if patch == 0 || stride == 0 {
            return Err(TilingError::ZeroSize { patch, stride });
        }
        if patch > height || patch > width {
            return Err(TilingError::PatchLargerThanImage {
                patch,
                height,
                width,
            });
        }
        let count = |side: usize| {
            let whole = (side - patch) / stride + 1;
            let covered = (whole - 1) * stride + patch;
            match remainder {
                RemainderPolicy::ZeroPad if covered < side => whole + 1,
                _ => whole,
            }
        };
        let (rows, cols) = (count(height), count(width));
        if rows.checked_mul(cols).is_none_or(|n| n > MAX_PATCHES) {
            return Err(TilingError::TooManyPatches {
                rows,
                cols,
                max: MAX_PATCHES,
            });
        }
        Ok(Self {
            height,
            width,
            patch,
            stride,
            rows,
            cols,
            remainder,
        })
    }

    /// Number of patches N.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Always false: a valid grid holds at least one patch.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Patch rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Patch columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Patch side in pixels.
    pub fn patch(&self) -> usize {
        self.patch
    }

    /// Distance between the origins of neighbouring patches, in pixels.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The image size the grid was built for, `[height, width]`.
    pub fn image_size(&self) -> [usize; 2] {
        [self.height, self.width]
    }

    /// The remainder policy the grid was built with.
    pub fn remainder(&self) -> RemainderPolicy {
        self.remainder
    }

    /// Size of the zero-padded image the patches are cut from (the image size when nothing is padded).
    pub fn padded_size(&self) -> [usize; 2] {
        let side = |n: usize, image: usize| ((n - 1) * self.stride + self.patch).max(image);
        [side(self.rows, self.height), side(self.cols, self.width)]
    }

    /// Checks that an image of `[height, width]` is the one the grid was built for.
    pub fn check_image(&self, [height, width]: [usize; 2]) -> Result<(), TilingError> {
        let [want_h, want_w] = self.image_size();
        if [height, width] != [want_h, want_w] {
            return Err(TilingError::ImageSizeMismatch {
                want_h,
                want_w,
                got_h: height,
                got_w: width,
            });
        }
        Ok(())
    }

    /// Top-left pixel `[y, x]` of patch `index` (row-major).
    ///
    /// # Panics
    /// If `index >= self.len()`: indices come from the grid itself, so this is a caller bug.
    pub fn origin(&self, index: usize) -> [usize; 2] {
        assert!(
            index < self.len(),
            "patch index {index} out of a grid of {}",
            self.len()
        );
        [
            (index / self.cols) * self.stride,
            (index % self.cols) * self.stride,
        ]
    }

    /// Fraction of the image's pixels a set of pixels covers (for "evidence ≤ 5 %" checks).
    pub fn area_fraction(&self, pixels: usize) -> f64 {
        pixels as f64 / (self.height * self.width) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn remainder_policies_differ_only_when_pixels_remain() {
        let drop = PatchGrid::new([250, 300], 100, 100, RemainderPolicy::Drop).unwrap();
        assert_eq!((drop.rows(), drop.cols()), (2, 3));
        let pad = PatchGrid::new([250, 300], 100, 100, RemainderPolicy::ZeroPad).unwrap();
        assert_eq!((pad.rows(), pad.cols()), (3, 3));
        assert_eq!(pad.padded_size(), [300, 300]);
    }

    #[test]
    fn rejects_patch_larger_than_image() {
        let err = PatchGrid::new([50, 500], 64, 64, RemainderPolicy::Drop).unwrap_err();
        assert!(matches!(err, TilingError::PatchLargerThanImage { .. }));
        assert!(err.to_string().contains("smaller patches"), "{err}");
    }

    /// A 2^20 × 2^20 px level (what a 300 KB BigTIFF can declare) in 16 px patches is 2^32
    /// patches: refused; exactly [`MAX_PATCHES`] is a grid.
    #[test]
    fn a_grid_beyond_the_patch_limit_is_refused() {
        let err = PatchGrid::new([1 << 20, 1 << 20], 16, 16, RemainderPolicy::Drop).unwrap_err();
        assert!(
            matches!(
                err,
                TilingError::TooManyPatches {
                    rows: 65536,
                    cols: 65536,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("larger downsample"), "{err}");
        let side = 1 << 12;
        let grid = PatchGrid::new([side * 16, side * 16], 16, 16, RemainderPolicy::Drop).unwrap();
        assert_eq!(grid.len(), MAX_PATCHES);
        assert!(
            PatchGrid::new([side * 16 + 16, side * 16], 16, 16, RemainderPolicy::Drop).is_err()
        );
    }

    proptest! {
        #[test]
        fn every_patch_lies_inside_the_padded_image(
            h in 1usize..300, w in 1usize..300, p in 1usize..64, s in 1usize..64, pad in any::<bool>()
        ) {
            let policy = if pad { RemainderPolicy::ZeroPad } else { RemainderPolicy::Drop };
            match PatchGrid::new([h, w], p, s, policy) {
                Err(_) => prop_assert!(p > h || p > w),
                Ok(grid) => {
                    let [ph, pw] = grid.padded_size();
                    for i in 0..grid.len() {
                        let [y, x] = grid.origin(i);
                        prop_assert!(y + p <= ph && x + p <= pw);
                        if !pad { prop_assert!(y + p <= h && x + p <= w); }
                    }
                    // Row-major: index = row * cols + col.
                    let last = grid.len() - 1;
                    prop_assert_eq!(grid.origin(last), [(grid.rows() - 1) * s, (grid.cols() - 1) * s]);
                    if pad {
                        // Zero padding leaves no pixel uncovered.
                        prop_assert!((grid.rows() - 1) * s + p >= h && (grid.cols() - 1) * s + p >= w);
                    }
                }
            }
        }
    }
}
