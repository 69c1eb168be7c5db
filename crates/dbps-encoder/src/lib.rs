//! Patch encoders F: patches `[n, C, p, p]` → embeddings `[n, D]` (method.md §2).
//!
//! Anything implementing [`PatchEncoder`] can drive patch selection; [`Encoder`] is the
//! configurable one dbps ships, built from the tagged [`EncoderConfig`]: a torchvision-layout
//! [`ResNet`] (parameter names match torchvision's state dict), an [`IdentityEncoder`] for
//! precomputed features, or the small [`TinyCnn`], optionally followed by the [`Projector`].
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use dbps_encoder::{EncoderConfig, PatchEncoder};
//!
//! let device = Default::default();
//! let config: EncoderConfig =
//!     serde_json::from_str(r#"{"resnet18": {"stages": 2, "in_channels": 1, "width": 8}}"#).unwrap();
//! let encoder = config.init::<Flex>(&device).unwrap();
//! let patches = Tensor::<Flex, 4>::zeros([3, 1, 32, 32], &device);
//! assert_eq!(encoder.embed(patches).dims(), [3, encoder.embed_dim()]);
//! ```

#![warn(missing_docs)]

mod batchnorm;
mod config;
mod encoder;
mod error;
mod fast_batchnorm;
mod fast_conv;
mod fast_pool;
mod fast_relu;
mod flex_host;
mod identity;
mod inference;
mod native;
mod projector;
mod pth_archive;
mod resnet;
mod tiny_cnn;
mod weights;

pub use batchnorm::{BatchNorm2d, conv_bn};
pub use config::{
    EncoderConfig, EncoderSpec, IdentityConfig, MAX_ENCODER_WIDTH, MAX_FEATURES, MAX_IN_CHANNELS,
    ResNetConfig, Resnet18Config, Resnet34Config, Resnet50Config, TinyCnnConfig,
};
pub use encoder::{Backbone, Encoder};
pub use error::{EncoderError, NativeError};
pub use fast_conv::conv2d;
pub use identity::IdentityEncoder;
pub use inference::{in_inference, inference_forced};
pub use native::{NativeEncoder, NativeResNet};
pub use projector::Projector;
pub use resnet::{Downsample, ResNet, ResNetBlock, ResNetDepth};
pub use tiny_cnn::TinyCnn;
pub use weights::{HostTensor, TorchvisionWeights, WeightsError};

use burn::tensor::{Tensor, backend::Backend};

/// Maps a batch of patches to one embedding each; implement it to plug a new encoder into selection.
pub trait PatchEncoder<B: Backend> {
    /// Embedding width D.
    fn embed_dim(&self) -> usize;

    /// Embeds patches `[n, C, p, p]` into `[n, D]`.
    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2>;
}
