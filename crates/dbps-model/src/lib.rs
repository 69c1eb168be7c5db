//! The IPS / DBPS patch classifier as one Burn module, and what one training step of it needs.
//!
//! [`PatchClassifier`] holds the encoder, the cross-attention scorer and the MIL aggregator.
//! Its passes follow `docs/method.md` §5–6: cut the batch into patches, pick the M salient
//! and S sub-salient patches with the encoder and scorer in inference mode on the inner
//! backend (no autodiff graph), re-embed the M salient patches with gradients, add the S
//! sub-salient embeddings as constants and aggregate. [`step::TrainedClassifier`] is that
//! pass as burn-train's train and valid step, watched by a [`step::TrainingMonitor`] and
//! timed by a [`meter::StepMeter`].
//!
//! This crate knows nothing of run configs, run directories or the learner loop
//! (`dbps-train`), nor of the command line (`dbps-app`).

#![warn(missing_docs)]

pub mod atomic_write;
pub mod batch;
pub mod candidates;
pub mod classifier;
pub mod epoch_order;
mod error;
pub mod heap;
pub mod image_dataset;
pub mod loss;
pub mod meter;
pub mod metrics;
pub mod named_weights;
pub mod official_ips;
pub mod progress;
pub mod slide_source;
pub mod step;
pub mod trace;

pub use classifier::PatchClassifier;
pub use error::{ModelError, Result};
