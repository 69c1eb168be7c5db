//! Data parallelism: every global batch split among replicas — devices of one process
//! (burn-train's multi-device strategy) or ranks on several machines (burn-collective) — with
//! the random draws, the loss weights and the learning-rate schedule of one process reading the
//! whole batch.

#![warn(missing_docs)]

mod engine;
mod error;
mod exchange;
mod loader;
mod session;
mod shard;
mod strategy;

pub use engine::MultiDeviceEngine;
#[cfg(feature = "distributed")]
pub use engine::ddp_engine;
pub use error::{ParallelError, Result};
pub use exchange::{ExchangeLayout, Reduced, StepSums, broadcast_model, parameter_digest};
pub use loader::ShardLoader;
pub use session::{CollectiveSession, NodeSpec, PEER_LOST_EXIT_CODE, PeerLost, fnv1a};
pub use shard::ShardPlan;
pub use strategy::CollectiveStrategy;
