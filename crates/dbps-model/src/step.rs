//! The burn-train step traits: what one training or validation batch does.

use std::sync::{Arc, Mutex};

use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn_train::metric::{Adaptor, ItemLazy};
use burn_train::{InferenceStep, Interrupter, TrainOutput, TrainStep};

use crate::batch::ImageBatch;
use crate::classifier::ForwardOutput;
use crate::loss::LossForm;
use crate::meter::StepMeter;
use crate::{ModelError, PatchClassifier};

/// Loss and hits of one batch, still on the device.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// Mean loss over tasks `[1]`.
    pub loss: Tensor<B, 1>,
    /// Correct images per task `[T]`.
    pub hits: Tensor<B, 1, Int>,
    /// Images in the batch.
    pub batch: usize,
}

/// [`StepOutput`] read back to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Mean loss over tasks.
    pub loss: f64,
    /// Correct images per task.
    pub hits: Vec<i64>,
    /// Images in the batch.
    pub batch: usize,
}

impl StepStats {
    /// Accuracy averaged over tasks.
    pub fn mean_accuracy(&self) -> f64 {
        let tasks = self.hits.len().max(1) as f64;
        self.hits
            .iter()
            .map(|&h| h as f64 / self.batch as f64)
            .sum::<f64>()
            / tasks
    }
}

impl<B: Backend> StepOutput<B> {
    /// Reads the figures back.
    pub fn stats(self) -> StepStats {
        StepStats {
            loss: self
                .loss
                .into_data()
                .iter::<f64>()
                .next()
                .unwrap_or(f64::NAN),
            hits: self.hits.into_data().iter::<i64>().collect(),
            batch: self.batch,
        }
    }
}

impl<B: Backend> ItemLazy for StepOutput<B> {
    type ItemSync = StepStats;

    fn sync(self) -> StepStats {
        self.stats()
    }
}

impl Adaptor<StepStats> for StepStats {
    fn adapt(&self) -> StepStats {
        self.clone()
    }
}

/// Batch-weighted sums of one split's loss and accuracy over an epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct SplitSums {
    loss: f64,
    accuracy: f64,
    images: usize,
}

impl SplitSums {
    fn add(&mut self, stats: &StepStats) {
        self.loss += stats.loss * stats.batch as f64;
        self.accuracy += 100.0 * stats.mean_accuracy() * stats.batch as f64;
        self.images += stats.batch;
    }

    /// `(mean loss, mean accuracy in %)`, NaN for a split that saw no image.
    fn means(&self) -> (f64, f64) {
        if self.images == 0 {
            return (f64::NAN, f64::NAN);
        }
        let n = self.images as f64;
        (self.loss / n, self.accuracy / n)
    }
}

/// The epoch's figures as the steps saw them: mean loss and accuracy (%) of the training and
/// the validation batches, weighted by batch size (what burn-train's metrics average).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochTally {
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean training accuracy over tasks, in percent.
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Mean validation accuracy over tasks, in percent.
    pub valid_accuracy: f64,
}

/// The first error that stopped training from inside burn-train's loop, from whichever layer
/// raised it; its message is that error's.
pub type StepFailure = Box<dyn std::error::Error + Send + Sync>;

/// Watches training from inside the step: a non-finite loss stops training before it reaches
/// the weights, and the [`StepMeter`] clock starts with each step's selection (a
/// [`crate::meter::MeteredOptimizer`] sharing the meter stops it).
#[derive(Clone, Default)]
pub struct TrainingMonitor {
    interrupter: Interrupter,
    diverged: Arc<Mutex<Option<f64>>>,
    failure: Arc<Mutex<Option<StepFailure>>>,
    // Kept here rather than read back from burn-train's metric store: that store numbers the
    // first epoch of every process 1, so the first epoch after a resume would be misfiled.
    sums: Arc<Mutex<[SplitSums; 2]>>,
    meter: StepMeter,
}

impl std::fmt::Debug for TrainingMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingMonitor")
            .field("diverged", &self.diverged())
            .finish()
    }
}

impl TrainingMonitor {
    /// A monitor that stops training through `interrupter`.
    pub fn new(interrupter: Interrupter) -> Self {
        Self {
            interrupter,
            ..Self::default()
        }
    }

    /// The same monitor with its meter reading step memory from a device pool.
    pub fn with_pool(self, pool: Arc<dyn crate::meter::PoolProbe>) -> Self {
        Self {
            meter: self.meter.with_pool(pool),
            ..self
        }
    }

    /// The non-finite loss seen, if any.
    pub fn diverged(&self) -> Option<f64> {
        *self.diverged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The step meter this monitor starts.
    pub fn meter(&self) -> &StepMeter {
        &self.meter
    }

    /// Records the first error a step met (burn-train's steps cannot return one) and stops
    /// training; the runner reports it ([`TrainingMonitor::take_failure`]). Errors of layers
    /// above (a checkpoint that cannot be written, a rank that left) arrive here too.
    pub fn fail(&self, error: impl Into<StepFailure>) {
        let error = error.into();
        tracing::error!(%error, "step failed; stopping");
        self.interrupter.stop(Some("a step failed"));
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
    }

    /// The first error a step met, if any.
    pub fn take_failure(&self) -> Option<StepFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Adds a step's figures to the epoch's training (`valid == false`) or validation sums.
    pub fn tally(&self, stats: &StepStats, valid: bool) {
        self.sums.lock().unwrap_or_else(|e| e.into_inner())[usize::from(valid)].add(stats);
    }

    /// The figures of the epoch that just ended; the sums start over for the next.
    pub fn take_epoch(&self) -> EpochTally {
        let sums = std::mem::take(&mut *self.sums.lock().unwrap_or_else(|e| e.into_inner()));
        let ((train_loss, train_accuracy), (valid_loss, valid_accuracy)) =
            (sums[0].means(), sums[1].means());
        EpochTally {
            train_loss,
            train_accuracy,
            valid_loss,
            valid_accuracy,
        }
    }

    /// True for a finite loss; a non-finite one is remembered and stops training.
    pub fn check(&self, loss: f64) -> bool {
        if loss.is_finite() {
            return true;
        }
        *self.diverged.lock().unwrap_or_else(|e| e.into_inner()) = Some(loss);
        self.interrupter.stop(Some("non-finite training loss"));
        false
    }
}

/// The model as burn-train trains it: a classifier plus its training monitor.
#[derive(burn::module::Module, Debug)]
pub struct TrainedClassifier<B: Backend> {
    /// The classifier.
    pub classifier: PatchClassifier<B>,
    #[module(skip)]
    monitor: TrainingMonitor,
    #[module(skip)]
    loss: LossForm,
}

impl<B: Backend> TrainedClassifier<B> {
    /// Wraps a classifier for training, with the stable loss.
    pub fn new(classifier: PatchClassifier<B>, monitor: TrainingMonitor) -> Self {
        Self {
            classifier,
            monitor,
            loss: LossForm::Stable,
        }
    }

    /// The same model computing its training and evaluation losses in `form`.
    pub fn with_loss(self, form: LossForm) -> Self {
        Self { loss: form, ..self }
    }

    /// The loss form this model reports and trains on.
    pub fn loss_form(&self) -> LossForm {
        self.loss
    }

    /// Loss and hits of a batch in evaluation mode.
    pub fn evaluate(&self, batch: ImageBatch<B>) -> Result<StepOutput<B>, ModelError> {
        Ok(self.evaluate_with_logits(batch)?.0)
    }

    /// Loss and hits of a batch in evaluation mode, and the logits `[B, classes]` per task
    /// (for metrics over a whole split, such as AUC).
    pub fn evaluate_with_logits(
        &self,
        batch: ImageBatch<B>,
    ) -> Result<(StepOutput<B>, Vec<Tensor<B, 2>>), ModelError> {
        let size = batch.images.batch();
        let out = self.classifier.forward_eval(&batch.images)?;
        let (loss, hits) = self.loss.loss_and_hits(out.logits.clone(), &batch.targets);
        let step = StepOutput {
            loss,
            hits,
            batch: size,
        };
        Ok((step, out.logits))
    }

    /// What a failed step reports to burn-train: a NaN loss and no hits, for the one step
    /// before training stops.
    fn failed(&self, batch: &ImageBatch<B>, error: ModelError) -> StepOutput<B> {
        self.monitor.fail(error);
        let device = batch.images.device();
        StepOutput {
            loss: Tensor::from_floats([f32::NAN], &device),
            hits: Tensor::zeros([batch.targets.len()], &device),
            batch: batch.images.batch(),
        }
    }
}

/// A training batch's loss (still on the autodiff tape), its value on the host, the hits per
/// task, and what the training forward picked and computed.
struct TrainingLoss<B: AutodiffBackend> {
    loss: Tensor<B, 1>,
    value: f64,
    hits: Tensor<B, 1, Int>,
    forward: ForwardOutput<B>,
}

/// Everything one training step computes before the optimizer: the weighted gradients, the
/// figures, and the forward's picks and logits (detached) — what a test compares against
/// another implementation's step.
#[derive(Debug)]
pub struct TrainingPass<B: AutodiffBackend> {
    /// Gradients of the batch's share of the global batch's mean loss.
    pub grads: GradientsParams,
    /// Loss and hits on the host.
    pub stats: StepStats,
    /// Logits `[B, classes]` per task, off the tape.
    pub logits: Vec<Tensor<B::InnerBackend, 2>>,
    /// Grid indices of the salient patches `[B, M]`, by decreasing selection score.
    pub salient: Tensor<B::InnerBackend, 2, Int>,
    /// Grid indices of the sub-salient patches `[B, S]`, when there are any.
    pub sub_salient: Option<Tensor<B::InnerBackend, 2, Int>>,
}

impl<B: AutodiffBackend> TrainedClassifier<B> {
    fn training_loss(&self, batch: &ImageBatch<B>) -> Result<TrainingLoss<B>, ModelError> {
        let forward = self.classifier.forward_train(&batch.images, &batch.key)?;
        let (loss, hits) = self
            .loss
            .loss_and_hits(forward.logits.clone(), &batch.targets);
        let value = loss
            .clone()
            .into_data()
            .iter::<f64>()
            .next()
            .unwrap_or(f64::NAN);
        Ok(TrainingLoss {
            loss,
            value,
            hits,
            forward,
        })
    }

    /// The gradients of the batch's share of the global batch's mean loss: a part of a
    /// global batch weighs its mean loss by `images / global images`, so that the parts'
    /// gradients sum to the gradient of the global batch's mean loss.
    fn weighted_grads(&self, loss: Tensor<B, 1>, batch: &ImageBatch<B>) -> GradientsParams {
        let share = batch.key.share(batch.images.batch());
        let loss = if share == 1.0 {
            loss
        } else {
            loss.mul_scalar(share)
        };
        GradientsParams::from_grads(loss.backward(), self)
    }

    /// One rank's part of a training step when the ranks exchange their gradients themselves
    /// (several processes): the weighted gradients and the part's figures, nothing tallied
    /// and no divergence check — the exchanged figures decide both, the same on every rank.
    pub fn train_part(
        &self,
        batch: ImageBatch<B>,
    ) -> Result<(GradientsParams, StepStats), ModelError> {
        self.monitor.meter.begin();
        let pass = self.training_pass(batch)?;
        Ok((pass.grads, pass.stats))
    }

    /// The training step up to the optimizer, on one batch: selection, the gradient forward
    /// (BatchNorm on batch statistics, its running statistics updated once), the loss in this
    /// model's form, and the backward pass.
    pub fn training_pass(&self, batch: ImageBatch<B>) -> Result<TrainingPass<B>, ModelError> {
        let size = batch.images.batch();
        let TrainingLoss {
            loss,
            value,
            hits,
            forward,
        } = self.training_loss(&batch)?;
        let grads = self.weighted_grads(loss, &batch);
        let stats = StepStats {
            loss: value,
            hits: hits.into_data().iter::<i64>().collect(),
            batch: size,
        };
        Ok(TrainingPass {
            grads,
            stats,
            logits: forward.logits.into_iter().map(|l| l.inner()).collect(),
            salient: forward.salient.inner(),
            sub_salient: forward.sub_salient.map(|s| s.inner()),
        })
    }

    /// The monitor watching this model's training.
    pub fn monitor(&self) -> &TrainingMonitor {
        &self.monitor
    }
}

impl<B: AutodiffBackend> TrainStep for TrainedClassifier<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<StepOutput<B>> {
        self.monitor.meter.begin();
        let size = batch.images.batch();
        let TrainingLoss {
            loss, value, hits, ..
        } = match self.training_loss(&batch) {
            Ok(out) => out,
            Err(error) => {
                let item = self.failed(&batch, error);
                return TrainOutput {
                    grads: GradientsParams::new(),
                    item,
                };
            }
        };
        let grads = if self.monitor.check(value) {
            self.weighted_grads(loss.clone(), &batch)
        } else {
            GradientsParams::new()
        };
        let item = StepOutput {
            loss: Tensor::from_inner(loss.inner()),
            hits,
            batch: size,
        };
        // The loss is on the host already; only the hits are read back.
        let stats = StepStats {
            loss: value,
            hits: item.hits.clone().into_data().iter::<i64>().collect(),
            batch: size,
        };
        self.monitor.tally(&stats, false);
        TrainOutput { grads, item }
    }
}

impl<B: Backend> InferenceStep for TrainedClassifier<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> StepOutput<B> {
        let out = match self.evaluate(batch.clone()) {
            Ok(out) => out,
            Err(error) => self.failed(&batch, error),
        };
        self.monitor.tally(&out.clone().stats(), true);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_loss_stops_training_and_is_remembered() {
        let interrupter = Interrupter::new();
        let monitor = TrainingMonitor::new(interrupter.clone());
        assert!(monitor.check(1.5));
        assert!(!interrupter.should_stop());
        assert!(!monitor.check(f64::NAN));
        assert!(interrupter.should_stop());
        assert!(monitor.diverged().is_some_and(f64::is_nan));
    }
}
