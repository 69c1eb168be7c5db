use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::{IdentityEncoder, PatchEncoder, Projector, ResNet};

/// The feature extractor of an [`Encoder`].
// Built once per model and never moved in a hot loop: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone<B: Backend> {
    /// A torchvision-layout ResNet with global average pooling.
    ResNet(ResNet<B>),
    /// Precomputed features.
    Identity(IdentityEncoder),
}

impl<B: Backend> Backbone<B> {
    /// Width of the backbone's features, before any projector.
    pub fn out_dim(&self) -> usize {
        match self {
            Self::ResNet(net) => net.out_dim(),
            Self::Identity(id) => PatchEncoder::<B>::embed_dim(id),
        }
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
        let features = match &self.backbone {
            Backbone::ResNet(net) => net.embed(patches),
            Backbone::Identity(id) => id.embed(patches),
        };
        match &self.projector {
            Some(p) => p.forward(features),
            None => features,
        }
    }
}
