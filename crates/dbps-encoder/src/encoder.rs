// `Backbone` (and the record enum its derive makes) is built once per model and never moved
// in a hot loop: boxing its large variant would only add an indirection.
#![allow(clippy::large_enum_variant)]

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::{IdentityEncoder, PatchEncoder, Projector, ResNet, TinyCnn};

/// The network type of every encoder: the one list of backbones (a config type's
/// [`crate::EncoderSpec::build`] returns one of them).
macro_rules! backbones {
    ($( $(#[$doc:meta])* $variant:ident($network:ty), )*) => {
        /// The feature extractor of an [`Encoder`].
        #[derive(Module, Debug)]
        pub enum Backbone<B: Backend> {
            $( $(#[$doc])* $variant($network), )*
        }

        impl<B: Backend> Backbone<B> {
            /// The one place that dispatches on the backbone: everything else goes through
            /// the trait.
            pub fn as_patch_encoder(&self) -> &dyn PatchEncoder<B> {
                match self {
                    $( Self::$variant(net) => net, )*
                }
            }
        }
    };
}

backbones! {
    /// A torchvision-layout ResNet with global average pooling.
    ResNet(ResNet<B>),
    /// Precomputed features.
    Identity(IdentityEncoder),
    /// The small convolutional encoder of `docs/extending.md`.
    TinyCnn(TinyCnn<B>),
}

impl<B: Backend> Backbone<B> {
    /// Width of the backbone's features, before any projector.
    pub fn out_dim(&self) -> usize {
        self.as_patch_encoder().embed_dim()
    }
}

/// A backbone, optionally followed by the [`Projector`]: the encoder F of method.md §2.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// The feature extractor.
    pub backbone: Backbone<B>,
    /// The optional projector to width D.
    pub projector: Option<Projector<B>>,
    dim: usize,
}

impl<B: Backend> Encoder<B> {
    /// Joins a backbone and an optional projector.
    pub fn new(backbone: Backbone<B>, projector: Option<Projector<B>>) -> Self {
        let dim = projector
            .as_ref()
            .map_or_else(|| backbone.out_dim(), Projector::out_dim);
        Self {
            backbone,
            projector,
            dim,
        }
    }
}

impl<B: Backend> PatchEncoder<B> for Encoder<B> {
    fn embed_dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.backbone.as_patch_encoder().embed(patches);
        match &self.projector {
            Some(p) => p.forward(features),
            None => features,
        }
    }
}
