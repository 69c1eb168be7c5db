use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::{
    Backbone, Encoder, EncoderError, IdentityEncoder, Projector, ResNet, ResNetDepth,
    TorchvisionWeights,
};

/// Which backbone an [`EncoderConfig`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderName {
    /// A ResNet of the given depth.
    ResNet(ResNetDepth),
    /// Precomputed features `[n, D, 1, 1]` passed through unchanged.
    Identity,
}

impl std::str::FromStr for EncoderName {
    type Err = EncoderError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "resnet18" => Ok(Self::ResNet(ResNetDepth::R18)),
            "resnet34" => Ok(Self::ResNet(ResNetDepth::R34)),
            "resnet50" => Ok(Self::ResNet(ResNetDepth::R50)),
            "identity" => Ok(Self::Identity),
            other => Err(EncoderError::UnknownName(other.to_string())),
        }
    }
}

/// Serialisable description of an [`Encoder`] (the `encoder` block of a dbps config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// `resnet18`, `resnet34`, `resnet50` or `identity`.
    pub name: String,
    /// ResNet stages kept: 2 (cut after layer2) or 4.
    pub stages: usize,
    /// Input channels; anything but 3 gets a fresh conv1.
    pub in_channels: usize,
    /// Channels of the stem and layer1 (64 in torchvision); smaller widths make fast toy encoders.
    pub width: usize,
    /// Output width of the projector, if any (method.md §2: ResNet-50 and precomputed features).
    pub projector: Option<usize>,
    /// Feature width of precomputed features (identity encoder only).
    pub feature_dim: usize,
    /// torchvision weights to start from (`.pth` or `.safetensors`, ResNets only); fresh
    /// Kaiming-initialised weights when absent.
    pub weights: Option<std::path::PathBuf>,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            name: "resnet18".into(),
            stages: 4,
            in_channels: 3,
            width: 64,
            projector: None,
            feature_dim: 512,
            weights: None,
        }
    }
}

impl EncoderConfig {
    /// Checks the configuration; with `weights` set, also reads the file and loads it into a
    /// CPU copy of the model, so a missing, unreadable or mismatched weight file fails here,
    /// before any run directory exists.
    pub fn validate(&self) -> Result<EncoderName, EncoderError> {
        let name = self.validate_fields()?;
        if self.weights.is_some() {
            self.build::<burn::backend::Flex>(name, &Default::default())?;
        }
        Ok(name)
    }

    /// The checks that need no file.
    fn validate_fields(&self) -> Result<EncoderName, EncoderError> {
        let name: EncoderName = self.name.parse()?;
        if let EncoderName::ResNet(_) = name {
            if self.stages != 2 && self.stages != 4 {
                return Err(EncoderError::Stages(self.stages));
            }
            if self.in_channels == 0 {
                return Err(EncoderError::Zero("in_channels"));
            }
            if self.width == 0 {
                return Err(EncoderError::Zero("width"));
            }
        } else if self.feature_dim == 0 {
            return Err(EncoderError::Zero("feature_dim"));
        } else if self.weights.is_some() {
            return Err(EncoderError::WeightsUnused(self.name.clone()));
        }
        if self.projector == Some(0) {
            return Err(EncoderError::Zero("projector"));
        }
        Ok(name)
    }

    /// Width D of the embeddings the encoder will produce, computed without building it (what
    /// the aggregator's widths are checked against before a run starts).
    pub fn embed_dim(&self) -> Result<usize, EncoderError> {
        let backbone = match self.validate_fields()? {
            EncoderName::ResNet(depth) => (self.width << (self.stages - 1)) * depth.expansion(),
            EncoderName::Identity => self.feature_dim,
        };
        Ok(self.projector.unwrap_or(backbone))
    }

    /// Builds the encoder: freshly initialised weights, or those of `weights`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Encoder<B>, EncoderError> {
        self.build(self.validate_fields()?, device)
    }

    fn build<B: Backend>(
        &self,
        name: EncoderName,
        device: &B::Device,
    ) -> Result<Encoder<B>, EncoderError> {
        let backbone = match name {
            EncoderName::ResNet(depth) => {
                let resnet = ResNet::new(depth, self.stages, self.in_channels, self.width, device);
                Backbone::ResNet(match &self.weights {
                    Some(path) => resnet.load_torchvision(&TorchvisionWeights::open(path)?)?,
                    None => resnet,
                })
            }
            EncoderName::Identity => Backbone::Identity(IdentityEncoder::new(self.feature_dim)),
        };
        let projector = self
            .projector
            .map(|out| Projector::new(backbone.out_dim(), out, device));
        Ok(Encoder::new(backbone, projector))
    }
}

#[cfg(test)]
mod tests {
    /// The width computed from the config is the width of the encoder it builds.
    #[test]
    fn embed_dim_without_building_equals_the_built_encoders() {
        use crate::PatchEncoder;
        let device = Default::default();
        for name in ["resnet18", "resnet34", "resnet50", "identity"] {
            for (stages, width, projector) in [(2, 4, None), (4, 2, None), (4, 4, Some(6))] {
                let cfg = EncoderConfig {
                    name: name.into(),
                    stages,
                    width,
                    projector,
                    feature_dim: 5,
                    ..EncoderConfig::default()
                };
                let built = cfg.init::<burn::backend::Flex>(&device).unwrap();
                assert_eq!(cfg.embed_dim().unwrap(), built.embed_dim(), "{cfg:?}");
            }
        }
    }

    use super::*;

    #[test]
    fn unknown_name_names_the_choices() {
        let cfg = EncoderConfig {
            name: "resnet19".into(),
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("resnet19") && err.contains("resnet18"),
            "{err}"
        );
    }

    #[test]
    fn rejects_three_stages() {
        let cfg = EncoderConfig {
            stages: 3,
            ..Default::default()
        };
        assert_eq!(cfg.validate(), Err(EncoderError::Stages(3)));
    }
}
