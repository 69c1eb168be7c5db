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
}
