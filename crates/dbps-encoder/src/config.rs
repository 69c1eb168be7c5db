//! The `encoder` block of a run config: one arm per backbone, each with only its own fields.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::{
    Backbone, Encoder, EncoderError, IdentityEncoder, Projector, ResNet, ResNetDepth, TinyCnn,
    TorchvisionWeights,
};

/// Which encoder embeds the patches, tagged by its name:
/// `{"resnet18": {"stages": 2, "in_channels": 1, "width": 16}}`.
///
/// Adding an encoder is one [`crate::PatchEncoder`] impl, one arm here (with its settings) and
/// one in [`Backbone`]; `docs/extending.md` walks through it with [`TinyCnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderConfig {
    /// torchvision's ResNet-18 (basic blocks).
    Resnet18(ResNetConfig),
    /// torchvision's ResNet-34 (basic blocks).
    Resnet34(ResNetConfig),
    /// torchvision's ResNet-50 (bottleneck blocks, 4× wider output).
    Resnet50(ResNetConfig),
    /// Precomputed features `[n, feature_dim, 1, 1]` passed through (CAMELYON16-style bags),
    /// optionally projected.
    Identity(IdentityConfig),
    /// Two strided 3×3 convolutions and average pooling: a cheap encoder, and the worked
    /// example of `docs/extending.md`.
    TinyCnn(TinyCnnConfig),
}

/// Settings of a ResNet encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    /// Stages kept: 2 (cut after layer2, as IPS does on megapixel MNIST) or 4.
    pub stages: usize,
    /// Input channels (1: conv1 of a torchvision file is summed over RGB).
    pub in_channels: usize,
    /// Width of the stem; 64 in torchvision's networks (needed to load their weights).
    pub width: usize,
    /// A torchvision state dict (`.pth` or `.safetensors`) to start from.
    pub weights: Option<PathBuf>,
    /// A linear projection of the pooled features to this width.
    pub projector: Option<usize>,
}

impl Default for ResNetConfig {
    /// torchvision's full network on RGB patches: 4 stages, width 64.
    fn default() -> Self {
        Self {
            stages: 4,
            in_channels: 3,
            width: 64,
            weights: None,
            projector: None,
        }
    }
}

/// Settings of the identity encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Width of the precomputed features.
    pub feature_dim: usize,
    /// A linear projection of the features to this width.
    #[serde(default)]
    pub projector: Option<usize>,
}

/// Settings of [`TinyCnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyCnnConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Channels of both convolutions, which is the embedding width.
    pub width: usize,
}

impl Default for EncoderConfig {
    /// ResNet-18 as torchvision builds it.
    fn default() -> Self {
        Self::Resnet18(ResNetConfig::default())
    }
}

fn positive(encoder: &'static str, field: &'static str, value: usize) -> Result<(), EncoderError> {
    if value == 0 {
        return Err(EncoderError::Zero { encoder, field });
    }
    let (max, why) = match field {
        "width" => (MAX_ENCODER_WIDTH, "torchvision's ResNets have 64"),
        "in_channels" => (MAX_IN_CHANNELS, "1 for gray images, 3 for RGB"),
        _ => (
            MAX_FEATURES,
            "foundation-model features are 512 to 2,560 wide",
        ),
    };
    if value > max {
        return Err(EncoderError::TooLarge {
            encoder,
            field,
            value,
            max,
            why,
        });
    }
    Ok(())
}

/// The widest a ResNet's stem may be (`width`; torchvision's is 64, a wide ResNet's 128).
pub const MAX_ENCODER_WIDTH: usize = 1024;
/// The most input channels an encoder may read (multispectral images have a dozen or so).
pub const MAX_IN_CHANNELS: usize = 1024;
/// The widest a feature vector or projector output may be.
pub const MAX_FEATURES: usize = 65_536;

impl EncoderConfig {
    /// The tag of this arm, as written in a config (`resnet18`, `tiny_cnn`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Resnet18(_) => "resnet18",
            Self::Resnet34(_) => "resnet34",
            Self::Resnet50(_) => "resnet50",
            Self::Identity(_) => "identity",
            Self::TinyCnn(_) => "tiny_cnn",
        }
    }

    /// Checks the settings; a weight file is loaded into a CPU copy of the model, so that a
    /// missing, foreign or misshaped file fails before any run directory exists.
    pub fn validate(&self) -> Result<(), EncoderError> {
        self.validate_fields()?;
        if self.weights().is_some() {
            self.init::<burn::backend::Flex>(&Default::default())?;
        }
        Ok(())
    }

    /// The checks that need no file.
    fn validate_fields(&self) -> Result<(), EncoderError> {
        let name = self.name();
        let projector = match self {
            Self::Resnet18(c) | Self::Resnet34(c) | Self::Resnet50(c) => {
                if c.stages != 2 && c.stages != 4 {
                    return Err(EncoderError::Stages {
                        encoder: name,
                        stages: c.stages,
                    });
                }
                positive(name, "in_channels", c.in_channels)?;
                positive(name, "width", c.width)?;
                c.projector
            }
            Self::Identity(c) => {
                positive(name, "feature_dim", c.feature_dim)?;
                c.projector
            }
            Self::TinyCnn(c) => {
                positive(name, "in_channels", c.in_channels)?;
                positive(name, "width", c.width)?;
                None
            }
        };
        if let Some(width) = projector {
            positive(name, "projector", width)?;
        }
        Ok(())
    }

    /// The torchvision file to start from, if any.
    pub fn weights(&self) -> Option<&Path> {
        match self {
            Self::Resnet18(c) | Self::Resnet34(c) | Self::Resnet50(c) => c.weights.as_deref(),
            Self::Identity(_) | Self::TinyCnn(_) => None,
        }
    }

    /// The same encoder starting from the torchvision file `path` (what `--weights` sets); an
    /// error for encoders that have no such weights.
    pub fn with_weights(self, path: PathBuf) -> Result<Self, EncoderError> {
        match self {
            Self::Resnet18(c) => Ok(Self::Resnet18(ResNetConfig {
                weights: Some(path),
                ..c
            })),
            Self::Resnet34(c) => Ok(Self::Resnet34(ResNetConfig {
                weights: Some(path),
                ..c
            })),
            Self::Resnet50(c) => Ok(Self::Resnet50(ResNetConfig {
                weights: Some(path),
                ..c
            })),
            other => Err(EncoderError::WeightsUnused(other.name())),
        }
    }

    /// The same encoder without a torchvision file to start from: how a trained model is
    /// rebuilt, its checkpoint holding every weight (the file may have moved since).
    pub fn without_weights(self) -> Self {
        match self {
            Self::Resnet18(c) => Self::Resnet18(ResNetConfig { weights: None, ..c }),
            Self::Resnet34(c) => Self::Resnet34(ResNetConfig { weights: None, ..c }),
            Self::Resnet50(c) => Self::Resnet50(ResNetConfig { weights: None, ..c }),
            other => other,
        }
    }

    /// Channels C of the patches `[n, C, p, p]` the encoder takes.
    pub fn in_channels(&self) -> usize {
        match self {
            Self::Resnet18(c) | Self::Resnet34(c) | Self::Resnet50(c) => c.in_channels,
            Self::Identity(c) => c.feature_dim,
            Self::TinyCnn(c) => c.in_channels,
        }
    }

    /// Width D of the embeddings the encoder will produce, computed without building it (what
    /// the aggregator's widths are checked against before a run starts).
    pub fn embed_dim(&self) -> Result<usize, EncoderError> {
        self.validate_fields()?;
        let resnet =
            |depth: ResNetDepth, c: &ResNetConfig| (c.width << (c.stages - 1)) * depth.expansion();
        Ok(match self {
            Self::Resnet18(c) => c.projector.unwrap_or(resnet(ResNetDepth::R18, c)),
            Self::Resnet34(c) => c.projector.unwrap_or(resnet(ResNetDepth::R34, c)),
            Self::Resnet50(c) => c.projector.unwrap_or(resnet(ResNetDepth::R50, c)),
            Self::Identity(c) => c.projector.unwrap_or(c.feature_dim),
            Self::TinyCnn(c) => c.width,
        })
    }

    /// Builds the encoder: freshly initialised weights, or those of the weight file.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Encoder<B>, EncoderError> {
        self.validate_fields()?;
        let resnet = |depth: ResNetDepth, c: &ResNetConfig| -> Result<_, EncoderError> {
            let net = ResNet::new(depth, c.stages, c.in_channels, c.width, device);
            let net = match &c.weights {
                Some(path) => net.load_torchvision(&TorchvisionWeights::open(path)?)?,
                None => net,
            };
            Ok((Backbone::ResNet(net), c.projector))
        };
        let (backbone, projector) = match self {
            Self::Resnet18(c) => resnet(ResNetDepth::R18, c)?,
            Self::Resnet34(c) => resnet(ResNetDepth::R34, c)?,
            Self::Resnet50(c) => resnet(ResNetDepth::R50, c)?,
            Self::Identity(c) => (
                Backbone::Identity(IdentityEncoder::new(c.feature_dim)),
                c.projector,
            ),
            Self::TinyCnn(c) => (
                Backbone::TinyCnn(TinyCnn::new(c.in_channels, c.width, device)),
                None,
            ),
        };
        let projector = projector.map(|out| Projector::new(backbone.out_dim(), out, device));
        Ok(Encoder::new(backbone, projector))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PatchEncoder;

    fn parse(json: &str) -> Result<EncoderConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The width computed from the config is the width of the encoder it builds.
    #[test]
    fn embed_dim_without_building_equals_the_built_encoders() {
        let device = Default::default();
        let mut configs = vec![
            EncoderConfig::Identity(IdentityConfig {
                feature_dim: 5,
                projector: None,
            }),
            EncoderConfig::Identity(IdentityConfig {
                feature_dim: 5,
                projector: Some(3),
            }),
            EncoderConfig::TinyCnn(TinyCnnConfig {
                in_channels: 2,
                width: 7,
            }),
        ];
        for (stages, width, projector) in [(2, 4, None), (4, 2, None), (4, 4, Some(6))] {
            let c = ResNetConfig {
                stages,
                width,
                projector,
                ..ResNetConfig::default()
            };
            configs.push(EncoderConfig::Resnet18(c.clone()));
            configs.push(EncoderConfig::Resnet34(c.clone()));
            configs.push(EncoderConfig::Resnet50(c));
        }
        for cfg in configs {
            let built = cfg.init::<burn::backend::Flex>(&device).unwrap();
            assert_eq!(cfg.embed_dim().unwrap(), built.embed_dim(), "{cfg:?}");
        }
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = parse(r#"{"resnet19": {"stages": 2}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resnet19") && err.contains("resnet18") && err.contains("tiny_cnn"),
            "{err}"
        );
    }

    #[test]
    fn each_arm_takes_only_its_own_fields() {
        let err = parse(r#"{"tiny_cnn": {"in_channels": 1, "width": 4, "stages": 2}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("stages"), "{err}");
        let cfg = parse(r#"{"resnet18": {"stages": 2, "in_channels": 1, "width": 16}}"#).unwrap();
        assert_eq!(cfg.in_channels(), 1);
        assert_eq!(cfg.embed_dim().unwrap(), 32);
    }

    #[test]
    fn rejects_three_stages_and_zero_widths_naming_the_key() {
        let three = EncoderConfig::Resnet50(ResNetConfig {
            stages: 3,
            ..ResNetConfig::default()
        });
        let err = three.validate().unwrap_err().to_string();
        assert!(err.contains("`encoder.resnet50.stages`"), "{err}");
        let zero = EncoderConfig::TinyCnn(TinyCnnConfig {
            in_channels: 1,
            width: 0,
        });
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("`encoder.tiny_cnn.width`"), "{err}");
    }

    #[test]
    fn weights_only_for_resnets() {
        let path = PathBuf::from("r18.pth");
        let cfg = EncoderConfig::default().with_weights(path.clone()).unwrap();
        assert_eq!(cfg.weights(), Some(path.as_path()));
        let tiny = EncoderConfig::TinyCnn(TinyCnnConfig {
            in_channels: 1,
            width: 4,
        });
        let err = tiny.with_weights(path).unwrap_err().to_string();
        assert!(err.contains("tiny_cnn"), "{err}");
    }
}
