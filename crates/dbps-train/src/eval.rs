//! Evaluation: scoring a model on one split ([`evaluate`]), and `dbps eval`, which re-evaluates
//! the best checkpoints of a finished run on its test split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use dbps_data::{Sample, Target, TaskKind, TaskSpec};
use serde::{Deserialize, Serialize};

use crate::checkpoint::method_dirs;
use crate::datasets::{ImageDataset, Splits};
use crate::metrics::binary_auc;
use crate::predict::TrainedMethod;
use crate::renderer::progress_bar;
use crate::report::{EvalFigures, TaskAccuracy, write_json_atomic};
use crate::{ImageBatcher, Result, StepStats, TrainedClassifier, TrainingMonitor};

/// Evaluates a model on a dataset split, batch by batch, in inference mode.
pub fn evaluate<B: Backend>(
    model: &TrainedClassifier<B>,
    dataset: &ImageDataset,
    tasks: &[TaskSpec],
    batch_size: usize,
    device: &B::Device,
    label: &str,
) -> Result<EvalFigures> {
    let start = Instant::now();
    let batcher = ImageBatcher::for_split(tasks.to_vec(), dataset);
    let total = dataset.len();
    let bar = progress_bar(total, label);
    let mut hits = vec![0i64; tasks.len()];
    let mut loss_sum = 0.0;
    // Per two-class task: the second class's probability and whether it is the truth.
    let binary: Vec<bool> = tasks
        .iter()
        .map(|t| t.kind == TaskKind::Softmax && t.classes == 2)
        .collect();
    let mut scored: Vec<(Vec<f64>, Vec<bool>)> = vec![Default::default(); tasks.len()];
    for start_index in (0..total).step_by(batch_size.max(1)) {
        let items: Vec<Sample> = (start_index..(start_index + batch_size).min(total))
            .filter_map(|i| dataset.get(i))
            .collect();
        for (t, (_, truth)) in scored.iter_mut().enumerate() {
            if binary[t] {
                truth.extend(
                    items
                        .iter()
                        .map(|s| matches!(s.targets.get(t), Some(Target::Class(1)))),
                );
            }
        }
        let batch =
            burn::data::dataloader::batcher::Batcher::<B, _, _>::batch(&batcher, items, device);
        let (step, logits) = model.evaluate_with_logits(batch)?;
        for (t, logits) in logits.into_iter().enumerate() {
            if binary[t] {
                let probabilities = softmax(logits, 1).into_data();
                let second = probabilities.iter::<f64>().skip(1).step_by(2);
                scored[t].0.extend(second);
            }
        }
        let stats: StepStats = step.stats();
        loss_sum += stats.loss * stats.batch as f64;
        hits.iter_mut().zip(&stats.hits).for_each(|(h, s)| *h += s);
        bar.inc(stats.batch as u64);
    }
    bar.finish_and_clear();
    Ok(EvalFigures {
        loss: loss_sum / total.max(1) as f64,
        tasks: tasks
            .iter()
            .zip(hits)
            .zip(scored)
            .map(|((t, h), (scores, truth))| TaskAccuracy {
                task: t.name.clone(),
                accuracy: h as f64 / total.max(1) as f64,
                auc: binary_auc(&scores, &truth),
            })
            .collect(),
        images: total,
        seconds: start.elapsed().as_secs_f64(),
    })
}

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
        let model = TrainedClassifier::new(method.model, TrainingMonitor::default());
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
