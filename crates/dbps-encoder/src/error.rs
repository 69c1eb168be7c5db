use thiserror::Error;

/// Why an encoder could not be built from its configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncoderError {
    /// The `encoder.name` is not one dbps knows.
    #[error(
        "unknown encoder `{0}`; set `encoder.name` to one of resnet18, resnet34, resnet50, identity"
    )]
    UnknownName(String),
    /// ResNets can be cut after layer2 or layer4 only.
    #[error("`encoder.stages` = {0} is not supported; use 2 (cut after layer2) or 4 (full ResNet)")]
    Stages(usize),
    /// A size that must be positive is zero.
    #[error("`encoder.{0}` must be at least 1")]
    Zero(&'static str),
    /// `encoder.weights` names a file for an encoder that takes none.
    #[error(
        "`encoder.weights` is set for encoder `{0}`, which has no weights to load: remove it, or use a ResNet"
    )]
    WeightsUnused(String),
    /// The weight file could not be read or does not fit the model.
    #[error(transparent)]
    Weights(#[from] crate::WeightsError),
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
