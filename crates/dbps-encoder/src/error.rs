use thiserror::Error;

/// Why an encoder could not be built from its configuration. Settings are named as the
/// encoder knows them (`width`); the run config adds their JSON path ([`EncoderError::field`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncoderError {
    /// ResNets can be cut after layer2 or layer4 only.
    #[error("`stages` = {stages} is not supported; use 2 (cut after layer2) or 4 (full ResNet)")]
    Stages {
        /// Stages asked for.
        stages: usize,
    },
    /// A size that must be positive is zero.
    #[error("`{field}` must be at least 1")]
    Zero {
        /// The setting.
        field: &'static str,
    },
    /// A width or channel count beyond the encoder's documented limit.
    #[error("`{field}` is {value}, more than the {max} an encoder may have; {why}")]
    TooLarge {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The limit.
        max: usize,
        /// What is usual.
        why: &'static str,
    },
    /// Weights were given for an encoder that takes none.
    #[error(
        "a weight file was given for an encoder that has no torchvision weights to load: drop --weights, or use a ResNet"
    )]
    WeightsUnused,
    /// The weight file could not be read or does not fit the model.
    #[error(transparent)]
    Weights(#[from] crate::WeightsError),
}

impl EncoderError {
    /// The encoder's setting at fault, if one is: `stages`, `width`, `weights`, …
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Stages { .. } => Some("stages"),
            Self::Zero { field } | Self::TooLarge { field, .. } => Some(field),
            Self::WeightsUnused | Self::Weights(_) => Some("weights"),
        }
    }
}

/// Why the native inference path could not run.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NativeError {
    /// A kernel rejected its input (shape, channels, size).
    #[error("native inference path: {0}")]
    Kernel(#[from] dbps_kernels::KernelError),
    /// A weight tensor could not be read as f32.
    #[error(
        "native inference path: weight `{0}` is not f32 on the host; use the burn path for other dtypes"
    )]
    Dtype(&'static str),
}
