use thiserror::Error;

/// Why a patch grid, a patch extraction or a patch drop could not be set up.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TilingError {
    /// The patch size or the stride is zero.
    #[error(
        "patch size and stride must be at least 1 pixel (got patch {patch}, stride {stride}); set `patch_size` and `stride` to positive values"
    )]
    ZeroSize {
        /// The patch side in pixels.
        patch: usize,
        /// The stride in pixels.
        stride: usize,
    },
    /// The patch does not fit inside the image.
    #[error(
        "patch of {patch}×{patch} px is larger than the {height}×{width} px image; use a smaller `patch_size` or larger images"
    )]
    PatchLargerThanImage {
        /// The patch side in pixels.
        patch: usize,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
    },
    /// The image tensor does not have the size the grid was built for.
    #[error(
        "image tensor is {got_h}×{got_w} px but the patch grid was built for {want_h}×{want_w} px; build the grid from the image size"
    )]
    ImageSizeMismatch {
        /// Height the grid expects.
        want_h: usize,
        /// Width the grid expects.
        want_w: usize,
        /// Height of the given tensor.
        got_h: usize,
        /// Width of the given tensor.
        got_w: usize,
    },
    /// The patch-drop ratio is outside [0, 1).
    #[error(
        "patch-drop ratio r = {0} is outside [0, 1); use 0 to disable the drop, or a value below 1"
    )]
    DropRatio(f64),
}
