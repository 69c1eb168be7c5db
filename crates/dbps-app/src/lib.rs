//! The dbps application: what the `dbps` binary's commands do beyond the training engine.
//!
//! - [`launch`]: `dbps train` and `dbps resume` on the devices and rank the command line
//!   names ([`launch::TrainLaunch`]).
//! - [`evaluate`]: `dbps eval`, the best checkpoint of every method on the test split.
//! - [`orchestrator`]: `dbps orchestrator --port P`, the rendezvous of a multi-machine run
//!   (burn-collective's global orchestrator).
//! - [`shards`]: `dbps predict --list LIST --shard K/N --out DIR` and `dbps predict --merge DIR`,
//!   slide lists predicted in shards (a Slurm array), one result file per slide.
//! - [`predict`]: `dbps predict`, class probabilities of images and slides from a run's best
//!   checkpoints ([`predict::Predict`] on the engine's `TrainedMethod`).
//! - [`explain`]: `dbps explain`, the figure of where a model looked and its JSON sidecar;
//!   [`figure`] is its framebuffer (also the bench's charts).
//! - [`geojson`]: `dbps predict … --geojson DIR` and `dbps explain … --geojson FILE`, picks,
//!   attention and the tissue outline in level-0 coordinates for QuPath.
//! - [`slide_check`]: `dbps slides check LIST --out DIR`, a thumbnail, mask and patch grid per
//!   slide and a CSV of what would go wrong, before a run.
//! - [`import`]: `dbps import-ips CHECKPOINT.pth --config CONFIG --out RUN_DIR`, a model trained
//!   with the official IPS code as a dbps run directory.

#![warn(missing_docs)]

mod error;
pub mod evaluate;
pub mod explain;
pub mod figure;
pub mod geojson;
pub mod import;
pub mod launch;
pub mod orchestrator;
pub mod predict;
pub mod shards;
pub mod slide_check;

pub use error::{AppError, Result};
