//! `dbps eval`: the best checkpoint of every method of a run directory on the test split.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dbps_model::atomic_write::write_json_atomic;
use dbps_model::step::{TrainedClassifier, TrainingMonitor};
use dbps_train::Result;
use dbps_train::backend::{DeviceChoice, OnBackend};
use dbps_train::checkpoint::method_dirs;
use dbps_train::datasets::Splits;
use dbps_train::eval::evaluate;
use dbps_train::report::EvalFigures;
use dbps_train::trained::TrainedMethod;
use serde::{Deserialize, Serialize};

/// Test figures of one method's best checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEval {
    /// Method name.
    pub method: String,
    /// The checkpoint's epoch.
    pub epoch: usize,
    /// The weight file.
    pub checkpoint: PathBuf,
    /// Its test figures.
    pub test: EvalFigures,
}

/// What `dbps eval` found, written to `eval.json` beside the checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Backend and device.
    pub device: String,
    /// One entry per method directory.
    pub methods: Vec<CheckpointEval>,
}

impl EvalReport {
    /// One row per method and task.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<10} {:<10} {:>6} {:>10} {:>9}\n",
            "method", "task", "epoch", "test acc", "test loss"
        );
        for m in &self.methods {
            for t in &m.test.tasks {
                out += &format!(
                    "{:<10} {:<10} {:>6} {:>9.2}% {:>9.4}\n",
                    m.method,
                    t.task,
                    m.epoch,
                    100.0 * t.accuracy,
                    m.test.loss
                );
            }
        }
        out
    }
}

/// Evaluates the best checkpoint of every method under `dir` on the test split and writes `eval.json`.
pub fn eval_checkpoints<B: Backend>(
    dir: &Path,
    device: &B::Device,
    device_name: &str,
) -> Result<EvalReport> {
    let mut report = EvalReport {
        device: device_name.to_string(),
        methods: Vec::new(),
    };
    for method_dir in method_dirs(dir)? {
        let method = TrainedMethod::<B>::open(&method_dir, device)?;
        let config = &method.manifest.config;
        let splits = Splits::open(config)?;
        let checkpoint = method.manifest.best_checkpoint(&method_dir)?;
        let model = TrainedClassifier::new(method.model, TrainingMonitor::default())
            .with_loss(config.train.loss_form());
        let name = method.manifest.name().to_string();
        let test = evaluate(
            &model,
            &splits.test,
            &splits.tasks,
            config.train.batch_size,
            device,
            &format!("{name} test"),
        )?;
        if let Some(error) = splits.take_failure() {
            return Err(error.into());
        }
        report.methods.push(CheckpointEval {
            method: name,
            epoch: method.manifest.best_epoch,
            checkpoint,
            test,
        });
    }
    write_json_atomic(&dir.join("eval.json"), &report)?;
    Ok(report)
}

/// Evaluates the checkpoints under `dir` on the backend `device` names.
pub fn eval_on(device: DeviceChoice, dir: &Path) -> Result<EvalReport> {
    struct EvalRun<'a>(&'a Path);
    impl OnBackend for EvalRun<'_> {
        type Output = Result<EvalReport>;
        fn run<B: Backend>(self, device: B::Device, name: &str) -> Self::Output {
            eval_checkpoints::<B>(self.0, &device, name)
        }
    }
    device.dispatch(EvalRun(dir))
}
