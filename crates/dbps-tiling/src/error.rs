use thiserror::Error;

/// Why a patch grid, a patch extraction or a patch drop could not be set up.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TilingError {
    /// The patch size or the stride is zero.
    #[error(
        "patch size and stride must be at least 1 pixel (got patch {patch}, stride {stride}); use positive values"
    )]
    ZeroSize {
        /// The patch side in pixels.
        patch: usize,
        /// The stride in pixels.
        stride: usize,
    },
    /// The patch does not fit inside the image.
    #[error(
        "a patch of {patch}×{patch} px is larger than the {height}×{width} px image; use smaller patches or larger images"
    )]
    PatchLargerThanImage {
        /// The patch side in pixels.
        patch: usize,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
    },
    /// The grid would hold more than [`crate::MAX_PATCHES`] patches.
    #[error(
        "the image cuts into {rows}×{cols} patches, more than the {max} one image may hold; read a more reduced level (a larger downsample) or use larger patches"
    )]
    TooManyPatches {
        /// Patch rows.
        rows: usize,
        /// Patch columns.
        cols: usize,
        /// The limit.
        max: usize,
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
    /// The pixel buffer does not hold `B·C·H·W` values.
    #[error(
        "image batch of dims {dims:?} needs {} pixel values but {got} were given; decode every image to the same C×H×W before batching",
        dims.iter().product::<usize>()
    )]
    PixelCount {
        /// `[B, C, H, W]`.
        dims: [usize; 4],
        /// Values given.
        got: usize,
    },
    /// The normalisation has statistics for another number of channels.
    #[error(
        "images have {channels} channel(s) but the normalisation has statistics for {norm}; give one mean and one std per channel"
    )]
    NormChannels {
        /// Image channels.
        channels: usize,
        /// Channels of the normalisation.
        norm: usize,
    },
    /// A normalisation with mismatched lengths, a std that is not positive, or a scale that is
    /// not finite.
    #[error(
        "pixel normalisation (scale {scale}, mean {mean:?}, std {std:?}) is invalid; give as many means as stds, every std positive and a finite scale"
    )]
    Normalisation {
        /// Means per channel.
        mean: Vec<f32>,
        /// Standard deviations per channel.
        std: Vec<f32>,
        /// Factor applied to raw values first.
        scale: f32,
    },
    /// A patch asked for lies outside the batch or the grid.
    #[error(
        "patch {index} of image {image} asked for, but the batch has {batch} image(s) of {patches} patches; pick indices from the batch's grid"
    )]
    PickOutside {
        /// Image asked for.
        image: usize,
        /// Grid index asked for.
        index: usize,
        /// Images in the batch.
        batch: usize,
        /// Patches per image.
        patches: usize,
    },
}
