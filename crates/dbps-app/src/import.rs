//! `dbps import-ips CHECKPOINT.pth --config CONFIG --out RUN_DIR`: a model trained with the
//! official IPS code becomes a dbps run directory that `predict`, `explain`, `eval` and
//! `train --resume` accept.
//!
//! The run directory holds `config.json` (the config with the imported method alone) and one
//! method folder with its manifest and `checkpoint/model-0.mpk`, the imported weights: no
//! epoch has been trained by dbps, so prediction uses them, and `--resume` trains the config's
//! epochs from them with a fresh optimizer and schedule (the official checkpoint holds neither).

use std::path::{Path, PathBuf};

use burn::module::Module;
use dbps_encoder::TorchvisionWeights;
use dbps_mil::AggregatorKind;
use dbps_model::atomic_write::write_json_atomic;
use dbps_model::named_weights::load_named;
use dbps_model::official_ips::from_official_ips;
use dbps_model::step::{TrainedClassifier, TrainingMonitor};
use dbps_train::RunConfig;
use dbps_train::TrainError;
use dbps_train::backend::CpuBackend;
use dbps_train::build::build_classifier;
use dbps_train::checkpoint::{CheckpointRecorder, MANIFEST, MethodManifest, initial_weights_path};
use dbps_train::config::CheckedRun;
use dbps_train::datasets::Splits;
use dbps_train::run_dir::fresh_run_dir;

use crate::{AppError, Result};

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The new run directory.
    pub run_dir: PathBuf,
    /// The method folder inside it.
    pub method_dir: PathBuf,
    /// Tensors taken from the official file.
    pub tensors: usize,
}

/// The index of the method to import into: the one named `wanted`, or the config's only one;
/// it must be an IPS method (the official code trains IPS only).
fn ips_method(config: &RunConfig, wanted: Option<&str>) -> Result<usize> {
    let names = || {
        config
            .methods
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let index = match wanted {
        Some(name) => config
            .methods
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| AppError::Option {
                option: "--method",
                reason: format!("the config has no method `{name}`; it lists {}", names()),
            })?,
        None if config.methods.len() == 1 => 0,
        None => {
            return Err(AppError::Option {
                option: "--method",
                reason: format!(
                    "the config lists several methods ({}); name the IPS method to import into",
                    names()
                ),
            });
        }
    };
    let method = &config.methods[index];
    if method.s != 0 || method.aggregator != AggregatorKind::Ips {
        return Err(AppError::Option {
            option: "--method",
            reason: format!(
                "method `{}` is not IPS (s = {}, aggregator {:?}); the official IPS code trains IPS models only: pick a method with s = 0 and the ips aggregator",
                method.name, method.s, method.aggregator
            ),
        });
    }
    Ok(index)
}

/// Imports the official state dict `checkpoint` into a fresh run directory named after
/// `out` (a taken name gets a suffix, as with `dbps train`). Nothing is written unless every
/// tensor of the file maps onto the model `config` builds and every tensor of the model is
/// in the file.
pub fn import_ips(
    checkpoint: &Path,
    config: &CheckedRun,
    method: Option<&str>,
    out: &Path,
) -> Result<Imported> {
    let index = ips_method(config, method)?;
    let splits = Splits::open(config)?;
    let foreign = |reason: String| {
        AppError::Train(TrainError::ForeignWeights {
            path: checkpoint.to_path_buf(),
            reason,
        })
    };
    let state = TorchvisionWeights::open(checkpoint).map_err(|e| foreign(e.to_string()))?;
    let tensors = from_official_ips(&state, &splits.tasks).map_err(|e| foreign(e.to_string()))?;
    let device = Default::default();
    let built = build_classifier::<CpuBackend>(config, index, &splits.tasks, &device)?;
    let classifier = load_named(built, &tensors).map_err(|e| foreign(e.to_string()))?;

    let mut single = RunConfig::clone(config);
    single.methods = vec![config.methods[index].clone()];
    let run_dir = fresh_run_dir(out)?;
    write_json_atomic(&run_dir.join("config.json"), &single)?;
    let method_dir = run_dir.join(&single.methods[0].name);
    let manifest = MethodManifest {
        config: single,
        method: 0,
        best_epoch: 0,
        epochs: 0,
        tasks: splits.tasks.clone(),
    };
    TrainedClassifier::new(classifier, TrainingMonitor::default())
        .save_file(
            initial_weights_path(&method_dir).with_extension(""),
            &CheckpointRecorder::new(),
        )
        .map_err(|e| {
            AppError::Train(TrainError::Checkpoint {
                what: "imported weights",
                path: initial_weights_path(&method_dir),
                reason: format!("cannot be written ({e}); check the --out folder"),
            })
        })?;
    // The manifest last: a method folder without one is not mistaken for a usable model.
    write_json_atomic(&method_dir.join(MANIFEST), &manifest)?;
    tracing::info!(run_dir = %run_dir.display(), tensors = tensors.len(), "imported official IPS weights");
    Ok(Imported {
        run_dir,
        method_dir,
        tensors: tensors.len(),
    })
}
