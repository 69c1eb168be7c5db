//! The dbps application: what the `dbps` binary's commands do beyond the training engine.
//!
//! - [`orchestrator`]: `dbps orchestrator --port P`, the rendezvous of a multi-machine run
//!   (burn-collective's global orchestrator).
//! - [`shards`]: `dbps predict --list LIST --shard K/N --out DIR` and `dbps predict --merge DIR`,
//!   slide lists predicted in shards (a Slurm array), one result file per slide.
//! - [`import`]: `dbps import-ips CHECKPOINT.pth --config CONFIG --out RUN_DIR`, a model trained
//!   with the official IPS code as a dbps run directory.

#![warn(missing_docs)]

mod error;
pub mod import;
pub mod orchestrator;
pub mod shards;

pub use error::{AppError, Result};
