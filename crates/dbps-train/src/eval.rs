//! Evaluation: scoring a model on one split ([`evaluate`]), and `dbps eval`, which re-evaluates
//! the best checkpoints of a finished run on its test split.

use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use dbps_data::{Sample, Target, TaskKind, TaskSpec};

use dbps_model::batch::ImageBatcher;
use dbps_model::image_dataset::ImageDataset;
use dbps_model::metrics::binary_auc;
use dbps_model::progress::progress_bar;
use dbps_model::step::{StepStats, TrainedClassifier};
use dbps_parallel::CollectiveSession;

use crate::Result;
use crate::report::{EvalFigures, TaskAccuracy};

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
