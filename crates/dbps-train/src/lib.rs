//! Training and evaluation of IPS and DBPS classifiers, wired through a burn-train `Learner`.
//!
//! A run ([`runner::run`]) reads a [`RunConfig`], opens the dataset's splits
//! ([`datasets::Splits`]), builds one [`dbps_model::PatchClassifier`] per method
//! ([`build::build_classifier`]) and trains each with burn-train's `Learner` — on one device,
//! several devices of the process, or several machines ([`dbps_parallel`]) — writing a
//! checkpoint every epoch ([`checkpoint`]) so that [`runner::resume`] continues a killed run
//! exactly. What one step does lives in `dbps-model`; the command line in `dbps-app`.
//!
//! ```
//! use dbps_train::RunConfig;
//!
//! // The embedded default, checked once: IPS and DBPS side by side on which of two digits
//! // leads, over a grid of 256 patches.
//! let config = RunConfig::quickstart().unwrap();
//! assert_eq!(config.grid().len(), 256);
//! assert_eq!(config.methods.len(), 2);
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod build;
pub mod checkpoint;
pub mod config;
pub mod datasets;
mod error;
pub mod eval;
pub mod renderer;
pub mod report;
pub mod run_dir;
pub mod runner;
pub mod schedule;
pub mod trained;

pub use config::RunConfig;
pub use error::{Result, TrainError};
