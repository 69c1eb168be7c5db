//! The `encoder` block of a run config: one arm per encoder, each with only its own fields,
//! and [`EncoderSpec`], what a run needs to know of an encoder before and when building it.
//!
//! Adding an encoder takes one [`crate::PatchEncoder`] impl (the network), one [`EncoderSpec`]
//! impl on its config type, one line in the [`encoders!`] list below and one in
//! [`crate::Backbone`]'s list; `docs/extending.md` walks through it with [`TinyCnn`].

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::{
    Backbone, Encoder, EncoderError, IdentityEncoder, Projector, ResNet, ResNetDepth, TinyCnn,
    TorchvisionWeights,
};

/// What a run needs to know of one encoder, implemented by its config type. Errors name the
/// encoder's own settings (`width`); the run config adds the JSON path.
pub trait EncoderSpec {
    /// Checks the settings, without reading any file.
    fn check(&self) -> Result<(), EncoderError>;

    /// Channels C of the patches the encoder reads.
    fn in_channels(&self) -> usize;

    /// Width of the backbone's features, computed without building it (settings checked).
    fn backbone_dim(&self) -> usize;

    /// Width of the linear projection after the backbone, if any.
    fn projector(&self) -> Option<usize> {
        None
    }

    /// The weight file to start from, if the encoder takes one.
    fn weights(&self) -> Option<&Path> {
        None
    }

    /// Sets (or, with `None`, drops) the weight file; encoders without weight files refuse one.
    fn set_weights(&mut self, path: Option<PathBuf>) -> Result<(), EncoderError> {
        match path {
            Some(_) => Err(EncoderError::WeightsUnused),
            None => Ok(()),
        }
    }

    /// Checks the weight file, if any, against the network from the file's header alone
    /// (names and shapes; values are checked as [`EncoderSpec::build`] loads them).
    fn check_weights(&self) -> Result<(), EncoderError> {
        Ok(())
    }

    /// The network, with fresh weights or those of [`EncoderSpec::weights`].
    fn build<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>, EncoderError>
    where
        Self: Sized;
}

/// The JSON key and config type of every encoder: the one list of encoders.
macro_rules! encoders {
    ($( $(#[$doc:meta])* $key:literal => $variant:ident($config:ty), )*) => {
        /// Which encoder embeds the patches, tagged by its name:
        /// `{"resnet18": {"stages": 2, "in_channels": 1, "width": 16}}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub enum EncoderConfig {
            $( $(#[$doc])* #[serde(rename = $key)] $variant($config), )*
        }

        impl EncoderConfig {
            /// The tag of this arm, as written in a config (`resnet18`, `tiny_cnn`, …).
            pub fn name(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $key, )*
                }
            }

            /// The encoder's settings as what a run needs to know of them.
            pub fn spec(&self) -> &dyn EncoderSpec {
                match self {
                    $( Self::$variant(config) => config, )*
                }
            }

            fn spec_mut(&mut self) -> &mut dyn EncoderSpec {
                match self {
                    $( Self::$variant(config) => config, )*
                }
            }

            fn build_backbone<B: Backend>(
                &self,
                device: &B::Device,
            ) -> Result<Backbone<B>, EncoderError> {
                match self {
                    $( Self::$variant(config) => config.build::<B>(device), )*
                }
            }
        }
    };
}

encoders! {
    /// torchvision's ResNet-18 (basic blocks).
    "resnet18" => Resnet18(Resnet18Config),
    /// torchvision's ResNet-34 (basic blocks).
    "resnet34" => Resnet34(Resnet34Config),
    /// torchvision's ResNet-50 (bottleneck blocks, 4× wider output).
    "resnet50" => Resnet50(Resnet50Config),
    /// Precomputed features `[n, feature_dim, 1, 1]` passed through (CAMELYON16-style bags),
    /// optionally projected.
    "identity" => Identity(IdentityConfig),
    /// Two strided 3×3 convolutions and average pooling: a cheap encoder, and the worked
    /// example of `docs/extending.md`.
    "tiny_cnn" => TinyCnn(TinyCnnConfig),
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
        Self::Resnet18(ResNetConfig::default().into())
    }
}

/// Checks that a size is positive and within its documented limit.
fn positive(field: &'static str, value: usize) -> Result<(), EncoderError> {
    if value == 0 {
        return Err(EncoderError::Zero { field });
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
            field,
            value,
            max,
            why,
        });
    }
    Ok(())
}

/// A projector width, when one is asked for, within its limits.
fn check_projector(projector: Option<usize>) -> Result<(), EncoderError> {
    match projector {
        Some(width) => positive("projector", width),
        None => Ok(()),
    }
}

/// The widest a ResNet's stem may be (`width`; torchvision's is 64, a wide ResNet's 128).
pub const MAX_ENCODER_WIDTH: usize = 1024;
/// The most input channels an encoder may read (multispectral images have a dozen or so).
pub const MAX_IN_CHANNELS: usize = 1024;
/// The widest a feature vector or projector output may be.
pub const MAX_FEATURES: usize = 65_536;

/// The settings of a ResNet of one depth: a [`ResNetConfig`] under the key naming the depth.
macro_rules! resnet_depth {
    ($(#[$doc:meta])* $name:ident, $depth:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub ResNetConfig);

        impl From<ResNetConfig> for $name {
            fn from(config: ResNetConfig) -> Self {
                Self(config)
            }
        }

        impl Deref for $name {
            type Target = ResNetConfig;
            fn deref(&self) -> &ResNetConfig {
                &self.0
            }
        }

        impl DerefMut for $name {
            fn deref_mut(&mut self) -> &mut ResNetConfig {
                &mut self.0
            }
        }

        impl EncoderSpec for $name {
            fn check(&self) -> Result<(), EncoderError> {
                self.0.check()
            }

            fn in_channels(&self) -> usize {
                self.0.in_channels
            }

            fn backbone_dim(&self) -> usize {
                (self.0.width << (self.0.stages - 1)) * $depth.expansion()
            }

            fn projector(&self) -> Option<usize> {
                self.0.projector
            }

            fn weights(&self) -> Option<&Path> {
                self.0.weights.as_deref()
            }

            fn set_weights(&mut self, path: Option<PathBuf>) -> Result<(), EncoderError> {
                self.0.weights = path;
                Ok(())
            }

            fn check_weights(&self) -> Result<(), EncoderError> {
                self.0.check_weights($depth)
            }

            fn build<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>, EncoderError> {
                self.0.build($depth, device)
            }
        }
    };
}

resnet_depth!(
    /// Settings of a ResNet-18.
    Resnet18Config,
    ResNetDepth::R18
);
resnet_depth!(
    /// Settings of a ResNet-34.
    Resnet34Config,
    ResNetDepth::R34
);
resnet_depth!(
    /// Settings of a ResNet-50.
    Resnet50Config,
    ResNetDepth::R50
);

impl ResNetConfig {
    fn check(&self) -> Result<(), EncoderError> {
        if self.stages != 2 && self.stages != 4 {
            return Err(EncoderError::Stages {
                stages: self.stages,
            });
        }
        positive("in_channels", self.in_channels)?;
        positive("width", self.width)?;
        check_projector(self.projector)
    }

    /// The weight file's names and shapes against this ResNet's, no weight allocated: the
    /// network's parameters are initialised lazily, and weights from a header are shapes only.
    fn check_weights(&self, depth: ResNetDepth) -> Result<(), EncoderError> {
        let Some(path) = &self.weights else {
            return Ok(());
        };
        let header = TorchvisionWeights::header(path)?;
        let net = ResNet::<burn::backend::Flex>::new(
            depth,
            self.stages,
            self.in_channels,
            self.width,
            &Default::default(),
        );
        net.load_torchvision(&header)?;
        Ok(())
    }

    fn build<B: Backend>(
        &self,
        depth: ResNetDepth,
        device: &B::Device,
    ) -> Result<Backbone<B>, EncoderError> {
        let net = ResNet::new(depth, self.stages, self.in_channels, self.width, device);
        Ok(Backbone::ResNet(match &self.weights {
            Some(path) => net.load_torchvision(&TorchvisionWeights::open(path)?)?,
            None => net,
        }))
    }
}

impl EncoderSpec for IdentityConfig {
    fn check(&self) -> Result<(), EncoderError> {
        positive("feature_dim", self.feature_dim)?;
        check_projector(self.projector)
    }

    fn in_channels(&self) -> usize {
        self.feature_dim
    }

    fn backbone_dim(&self) -> usize {
        self.feature_dim
    }

    fn projector(&self) -> Option<usize> {
        self.projector
    }

    fn build<B: Backend>(&self, _: &B::Device) -> Result<Backbone<B>, EncoderError> {
        Ok(Backbone::Identity(IdentityEncoder::new(self.feature_dim)))
    }
}

impl EncoderSpec for TinyCnnConfig {
    fn check(&self) -> Result<(), EncoderError> {
        positive("in_channels", self.in_channels)?;
        positive("width", self.width)
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn backbone_dim(&self) -> usize {
        self.width
    }

    fn build<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>, EncoderError> {
        Ok(Backbone::TinyCnn(TinyCnn::new(
            self.in_channels,
            self.width,
            device,
        )))
    }
}

impl EncoderConfig {
    /// Checks the settings, and a weight file's names and shapes from its header, so that a
    /// missing, foreign or misshaped file fails before any run directory exists.
    pub fn validate(&self) -> Result<(), EncoderError> {
        self.spec().check()?;
        self.spec().check_weights()
    }

    /// The weight file to start from, if any.
    pub fn weights(&self) -> Option<&Path> {
        self.spec().weights()
    }

    /// The same encoder starting from the weight file `path`; an error for encoders that take
    /// no weight file.
    pub fn with_weights(mut self, path: PathBuf) -> Result<Self, EncoderError> {
        self.spec_mut().set_weights(Some(path))?;
        Ok(self)
    }

    /// The same encoder with fresh weights (a trained model's checkpoint holds its own).
    pub fn without_weights(mut self) -> Self {
        // Dropping a weight file cannot fail: `set_weights(None)` refuses nothing.
        let _ = self.spec_mut().set_weights(None);
        self
    }

    /// Channels C of the patches the encoder reads.
    pub fn in_channels(&self) -> usize {
        self.spec().in_channels()
    }

    /// The embedding width D the built encoder will have, computed without building it.
    pub fn embed_dim(&self) -> Result<usize, EncoderError> {
        let spec = self.spec();
        spec.check()?;
        Ok(spec.projector().unwrap_or(spec.backbone_dim()))
    }

    /// Builds the encoder (and loads its weight file, if any) on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Encoder<B>, EncoderError> {
        self.spec().check()?;
        let backbone = self.build_backbone::<B>(device)?;
        let projector = self
            .spec()
            .projector()
            .map(|out| Projector::new(backbone.out_dim(), out, device));
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
            configs.push(EncoderConfig::Resnet18(c.clone().into()));
            configs.push(EncoderConfig::Resnet34(c.clone().into()));
            configs.push(EncoderConfig::Resnet50(c.into()));
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
    fn rejects_three_stages_and_zero_widths_naming_the_setting() {
        let three = EncoderConfig::Resnet50(
            ResNetConfig {
                stages: 3,
                ..ResNetConfig::default()
            }
            .into(),
        );
        let err = three.validate().unwrap_err();
        assert_eq!(err.field(), Some("stages"));
        assert!(err.to_string().starts_with("`stages` = 3"), "{err}");
        let zero = EncoderConfig::TinyCnn(TinyCnnConfig {
            in_channels: 1,
            width: 0,
        });
        let err = zero.validate().unwrap_err();
        assert_eq!(err.field(), Some("width"));
        assert_eq!(err.to_string(), "`width` must be at least 1");
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
        let err = tiny.with_weights(path).unwrap_err();
        assert_eq!(err, EncoderError::WeightsUnused);
    }
}
