//! Multiple-instance aggregation of patch embeddings (method.md §3, §7).
//!
//! - [`MultiHeadCrossAttention`]: learnable queries attend over patch embeddings; it exposes the
//!   per-head logits, from which [`MultiHeadCrossAttention::salience`] computes the selection
//!   scores of method.md §4.
//! - [`IpsAggregator`]: the IPS cross-attention transformer layer.
//! - [`DualAttentionMil`]: the DBPS dual-attention MIL of paper eq. 5–8.
//! - [`Aggregator`]: either, plus one linear head per task and the optional [`PositionalEncoding`].
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Int, Tensor};
//! use dbps_mil::{AggregatorConfig, AggregatorKind};
//!
//! let device = Default::default();
//! let config = AggregatorConfig::new(16, vec![10]).with_kind(AggregatorKind::DualAttention);
//! let mil = config.init::<Flex>(&device).unwrap();
//! let salient = Tensor::<Flex, 3>::ones([2, 4, 16], &device);
//! let sub_salient = Tensor::<Flex, 3>::ones([2, 6, 16], &device);
//! let logits = mil.forward(salient, Some(sub_salient));
//! assert_eq!(logits[0].dims(), [2, 10]);
//! ```

#![warn(missing_docs)]

mod aggregator;
mod attention;
mod config;
mod dual;
mod error;
mod ips;
mod positional;

pub use aggregator::Aggregator;
pub(crate) use aggregator::AggregatorCore;
pub use attention::{MultiHeadCrossAttention, MultiHeadCrossAttentionConfig};
pub use config::{AggregatorConfig, AggregatorKind, AttentionSettings, MAX_HEADS, MAX_WIDTH};
pub use dual::DualAttentionMil;
pub use error::MilError;
pub use ips::{FeedForward, IpsAggregator};
pub use positional::PositionalEncoding;
