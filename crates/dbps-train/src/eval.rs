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
use crate::parallel::CollectiveSession;
use crate::renderer::progress_bar;
use crate::report::{EvalFigures, TaskAccuracy, write_json_atomic};
use crate::trained::TrainedMethod;
use crate::{ImageBatcher, Result, StepStats, TrainedClassifier, TrainingMonitor};

/// A split's evaluation figures as sums, so that parts evaluated apart (by the ranks of a
/// multi-process run) add up to the figures of the whole split.
#[derive(Debug, Clone, PartialEq)]
struct EvalSums {
    loss: f64,
    images: usize,
    hits: Vec<i64>,
    /// Per two-class task: the second class's probability of every image of the split (0 for
    /// images another part holds), and whether it is the truth.
    scores: Vec<Option<(Vec<f64>, Vec<bool>)>>,
}

impl EvalSums {
    /// Values for an all-reduce: each f64 sum as a high and a low f32 (their sums add up to
    /// the f64 sum far below f32's rounding), the counts, and the scores in their slots.
    fn encode(&self) -> Vec<f32> {
        let split = |x: f64| {
            let hi = x as f32;
            [hi, (x - f64::from(hi)) as f32]
        };
        let mut v = split(self.loss).to_vec();
        v.push(self.images as f32);
        v.extend(self.hits.iter().map(|&h| h as f32));
        for (scores, truth) in self.scores.iter().flatten() {
            v.extend(scores.iter().map(|&s| s as f32));
            v.extend(truth.iter().map(|&t| f32::from(u8::from(t))));
        }
        v
    }

    fn decode(&self, values: &[f32]) -> Self {
        let tasks = self.hits.len();
        let mut at = 3 + tasks;
        let scores = self
            .scores
            .iter()
            .map(|task| {
                task.as_ref().map(|(scores, _)| {
                    let n = scores.len();
                    let s = values[at..at + n].iter().map(|&v| f64::from(v)).collect();
                    let t = values[at + n..at + 2 * n]
                        .iter()
                        .map(|&v| v > 0.5)
                        .collect();
                    at += 2 * n;
                    (s, t)
                })
            })
            .collect();
        Self {
            loss: f64::from(values[0]) + f64::from(values[1]),
            images: values[2].round() as usize,
            hits: values[3..3 + tasks]
                .iter()
                .map(|&h| h.round() as i64)
                .collect(),
            scores,
        }
    }

    fn figures(&self, tasks: &[TaskSpec], seconds: f64) -> EvalFigures {
        let n = self.images.max(1) as f64;
        EvalFigures {
            loss: self.loss / n,
            tasks: tasks
                .iter()
                .zip(&self.hits)
                .zip(&self.scores)
                .map(|((t, &h), scored)| TaskAccuracy {
                    task: t.name.clone(),
                    accuracy: h as f64 / n,
                    auc: scored.as_ref().and_then(|(s, truth)| binary_auc(s, truth)),
                })
                .collect(),
            images: self.images,
            seconds,
        }
    }
}

/// Evaluates images `part` of a split of `dataset.len()` images, batch by batch, in inference
/// mode; the scores land at the images' places in the whole split.
fn evaluate_part<B: Backend>(
    model: &TrainedClassifier<B>,
    dataset: &ImageDataset,
    tasks: &[TaskSpec],
    batch_size: usize,
    device: &B::Device,
    label: &str,
    part: std::ops::Range<usize>,
) -> Result<EvalSums> {
    let batcher = ImageBatcher::for_split(tasks.to_vec(), dataset);
    let total = dataset.len();
    let bar = progress_bar(part.len(), label);
    let mut sums = EvalSums {
        loss: 0.0,
        images: 0,
        hits: vec![0; tasks.len()],
        scores: tasks
            .iter()
            .map(|t| {
                (t.kind == TaskKind::Softmax && t.classes == 2)
                    .then(|| (vec![0.0; total], vec![false; total]))
            })
            .collect(),
    };
    for start_index in part.clone().step_by(batch_size.max(1)) {
        let indices = start_index..(start_index + batch_size).min(part.end);
        let items: Vec<Sample> = indices.clone().filter_map(|i| dataset.get(i)).collect();
        for (t, scored) in sums.scores.iter_mut().enumerate() {
            if let Some((_, truth)) = scored {
                for (i, s) in indices.clone().zip(&items) {
                    truth[i] = matches!(s.targets.get(t), Some(Target::Class(1)));
                }
            }
        }
        let batch =
            burn::data::dataloader::batcher::Batcher::<B, _, _>::batch(&batcher, items, device);
        let (step, logits) = model.evaluate_with_logits(batch)?;
        for (logits, scored) in logits.into_iter().zip(&mut sums.scores) {
            if let Some((scores, _)) = scored {
                let probabilities = softmax(logits, 1).into_data();
                let second = probabilities.iter::<f64>().skip(1).step_by(2);
                for (i, p) in indices.clone().zip(second) {
                    scores[i] = p;
                }
            }
        }
        let stats: StepStats = step.stats();
        sums.loss += stats.loss * stats.batch as f64;
        sums.images += stats.batch;
        sums.hits
            .iter_mut()
            .zip(&stats.hits)
            .for_each(|(h, s)| *h += s);
        bar.inc(stats.batch as u64);
    }
    bar.finish_and_clear();
    Ok(sums)
}

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
    let sums = evaluate_part(
        model,
        dataset,
        tasks,
        batch_size,
        device,
        label,
        0..dataset.len(),
    )?;
    Ok(sums.figures(tasks, start.elapsed().as_secs_f64()))
}

/// [`evaluate`] with the split divided among the ranks of `session`: each evaluates a
/// contiguous part and the sums (and every image's score, for the AUC) are exchanged, so
/// every rank gets the figures of the whole split.
pub fn evaluate_shared<B: Backend>(
    model: &TrainedClassifier<B>,
    dataset: &ImageDataset,
    tasks: &[TaskSpec],
    batch_size: usize,
    session: &CollectiveSession<B>,
    label: &str,
) -> Result<EvalFigures> {
    let start = Instant::now();
    let (n, ranks, rank) = (dataset.len(), session.nodes(), session.rank());
    let part = n * rank / ranks..n * (rank + 1) / ranks;
    let device = session.device().clone();
    let mine = evaluate_part(model, dataset, tasks, batch_size, &device, label, part)?;
    let summed = session.all_reduce_sum(mine.encode(), &format!("evaluation ({label})"))?;
    Ok(mine
        .decode(&summed)
        .figures(tasks, start.elapsed().as_secs_f64()))
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
