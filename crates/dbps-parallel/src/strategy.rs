//! The training loop of one rank among several processes: burn-train's learner, checkpointer,
//! metrics and renderer, with every step's gradients and figures exchanged through
//! burn-collective before the optimizer steps.

use std::sync::Arc;

use burn::data::dataloader::Progress;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn_train::{
    EventProcessorTraining, Learner, LearnerEvent, LearningComponentsTypes,
    SupervisedLearningStrategy, SupervisedTrainingEventProcessor, TrainLoader, TrainingComponents,
    TrainingItem, ValidLoader,
};

use super::CollectiveSession;
use super::exchange::{ExchangeLayout, StepSums, parameter_digest};
use dbps_model::step::{StepOutput, StepStats, TrainedClassifier, TrainingMonitor};

use crate::ParallelError;

/// One rank's training loop: every global step, this rank trains on its part of the global
/// batch (or none: an epoch's last batch may hold fewer images than there are ranks), the ranks
/// sum their weighted gradients, flags, rank 0's running statistics and their figures in one
/// all-reduce, and every rank takes the same optimizer step. Validation is split among the
/// ranks the same way and its sums exchanged, so every rank records the figures of the whole
/// split; only rank 0's checkpointer writes.
pub struct CollectiveStrategy<B: AutodiffBackend> {
    session: Arc<CollectiveSession<B::InnerBackend>>,
    monitor: TrainingMonitor,
    method: String,
    tasks: usize,
    steps: usize,
    start_epoch: Arc<dyn Fn(usize) + Send + Sync>,
}

impl<B: AutodiffBackend> CollectiveStrategy<B> {
    /// The loop of `method`'s training on `session`: `steps` global steps per epoch,
    /// `start_epoch(e)` called before epoch `e` (data order, seeds), `monitor` the training
    /// monitor of the model.
    pub fn new(
        session: Arc<CollectiveSession<B::InnerBackend>>,
        monitor: TrainingMonitor,
        method: &str,
        tasks: usize,
        steps: usize,
        start_epoch: Arc<dyn Fn(usize) + Send + Sync>,
    ) -> Self {
        Self {
            session,
            monitor,
            method: method.to_string(),
            tasks,
            steps,
            start_epoch,
        }
    }

    /// Sums the ranks' validation figures of the epoch; a rank that failed is named.
    fn validate<LC>(
        &self,
        learner: &Learner<LC>,
        loader: &ValidLoader<LC>,
        epoch: usize,
        epochs: usize,
        processor: &mut SupervisedTrainingEventProcessor<LC>,
    ) -> Result<(), ParallelError>
    where
        LC: LearningComponentsTypes<
                Backend = B,
                TrainingModel = TrainedClassifier<B>,
                InferenceModel = TrainedClassifier<B::InnerBackend>,
            >,
    {
        let model: TrainedClassifier<B::InnerBackend> = learner.model().valid();
        let mut total = StepSums::of(None, self.tasks);
        let mut failed = false;
        let mut parts = loader.iter();
        for batch in parts.by_ref() {
            match model.evaluate(batch) {
                Ok(out) => {
                    let stats = out.stats();
                    total.loss += stats.loss * stats.batch as f64;
                    total.images += stats.batch;
                    total
                        .hits
                        .iter_mut()
                        .zip(&stats.hits)
                        .for_each(|(t, h)| *t += h);
                }
                Err(error) => {
                    self.monitor.fail(error);
                    failed = true;
                    break;
                }
            }
        }
        let during = format!("validation of epoch {epoch} of {}", self.method);
        let mut values = vec![total.loss as f32, total.images as f32];
        values.extend(total.hits.iter().map(|&h| h as f32));
        values.extend(
            (0..self.session.nodes())
                .map(|r| f32::from(u8::from(failed && r == self.session.rank()))),
        );
        let summed = self.session.all_reduce_sum(values, &during)?;
        let tasks = self.tasks;
        let stats = StepStats {
            loss: f64::from(summed[0]) / f64::from(summed[1]).max(1.0),
            hits: summed[2..2 + tasks]
                .iter()
                .map(|&h| h.round() as i64)
                .collect(),
            batch: summed[1].round() as usize,
        };
        if let Some(rank) = summed[2 + tasks..].iter().position(|&f| f > 0.5) {
            return Err(rank_failed(rank, &during));
        }
        self.monitor.tally(&stats, true);
        let device = self.session.device().clone();
        let item = StepOutput {
            loss: Tensor::from_floats([stats.loss as f32], &device),
            hits: Tensor::from_ints(stats.hits.as_slice(), &device),
            batch: stats.batch,
        };
        processor.process_valid(LearnerEvent::ProcessedItem(TrainingItem::new(
            item,
            Progress::new(1, 1),
            Progress::new(epoch, epochs),
            Some(1),
            None,
        )));
        processor.process_valid(LearnerEvent::EndEpoch(epoch));
        Ok(())
    }
}

fn rank_failed(rank: usize, during: &str) -> ParallelError {
    ParallelError::Collective {
        reason: format!(
            "rank {rank} failed during {during} (its log names the cause); every rank stopped at the same step, and the last complete checkpoint is intact"
        ),
    }
}

impl<B, LC> SupervisedLearningStrategy<LC> for CollectiveStrategy<B>
where
    B: AutodiffBackend,
    LC: LearningComponentsTypes<
            Backend = B,
            TrainingModel = TrainedClassifier<B>,
            InferenceModel = TrainedClassifier<B::InnerBackend>,
        >,
{
    fn fit(
        &self,
        components: TrainingComponents<LC>,
        mut learner: Learner<LC>,
        loader_train: TrainLoader<LC>,
        loader_valid: ValidLoader<LC>,
        starting_epoch: usize,
    ) -> (TrainedClassifier<B>, SupervisedTrainingEventProcessor<LC>) {
        let mut processor = components.event_processor;
        let mut checkpointer = components.checkpointer;
        let interrupter = components.interrupter;
        let epochs = components.num_epochs;
        let layout = ExchangeLayout::of(&learner.model(), self.tasks, self.session.nodes());
        tracing::info!(
            method = %self.method,
            parameters = layout.parameters(),
            values = layout.len(),
            megabytes = 4.0 * layout.len() as f64 / 1e6,
            "each step all-reduces one tensor"
        );
        let stop = |error: ParallelError| {
            self.monitor.fail(error);
        };
        let mut iteration = 0;
        'epochs: for epoch in starting_epoch..=epochs {
            (self.start_epoch)(epoch);
            let mut parts = loader_train.iter().peekable();
            for step in 0..self.steps {
                let batch = parts.next_if(|b| b.key.step == step);
                learner.lr_step();
                let model = learner.model();
                let (grads, sums, failed) = match batch {
                    None => (
                        GradientsParams::new(),
                        StepSums::of(None, self.tasks),
                        false,
                    ),
                    Some(batch) => match model.train_part(batch) {
                        Ok((grads, stats)) => {
                            (grads, StepSums::of(Some(&stats), self.tasks), false)
                        }
                        Err(error) => {
                            self.monitor.fail(error);
                            (GradientsParams::new(), StepSums::of(None, self.tasks), true)
                        }
                    },
                };
                let failed = failed || interrupter.should_stop();
                let during = format!("step {} of epoch {epoch} of {}", step + 1, self.method);
                let reduced =
                    match layout.exchange(&self.session, &model, &grads, &sums, failed, &during) {
                        Ok(reduced) => reduced,
                        Err(error) => {
                            stop(error);
                            break 'epochs;
                        }
                    };
                if let Some(&rank) = reduced
                    .sums
                    .failed
                    .iter()
                    .find(|&&r| r != self.session.rank())
                {
                    stop(rank_failed(rank, &during));
                    break 'epochs;
                }
                if !reduced.sums.failed.is_empty() {
                    // This rank's own failure, already recorded by the monitor.
                    break 'epochs;
                }
                let stats = reduced.sums.stats();
                if !self.monitor.check(stats.loss) {
                    break 'epochs;
                }
                learner.optimizer_step(reduced.grads);
                self.monitor.tally(&stats, false);
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(
                        rank = self.session.rank(),
                        epoch,
                        step = step + 1,
                        digest = %format!("{:016x}", parameter_digest(&learner.model())),
                        "parameters after the step"
                    );
                }
                iteration += 1;
                let device = self.session.device().clone();
                let item = StepOutput {
                    loss: Tensor::<B, 1>::from_floats([stats.loss as f32], &device),
                    hits: Tensor::from_ints(stats.hits.as_slice(), &device),
                    batch: stats.batch,
                };
                processor.process_train(LearnerEvent::ProcessedItem(TrainingItem::new(
                    item,
                    Progress::new(step + 1, self.steps),
                    Progress::new(epoch, epochs),
                    Some(iteration),
                    Some(learner.lr_current()),
                )));
            }
            processor.process_train(LearnerEvent::EndEpoch(epoch));
            if let Err(error) =
                self.validate(&learner, &loader_valid, epoch, epochs, &mut processor)
            {
                stop(error);
                break;
            }
            match &mut checkpointer {
                Some(checkpointer) if self.session.rank() == 0 => {
                    checkpointer.checkpoint(&learner, epoch, &components.event_store)
                }
                // Ranks other than 0 record nothing (their checkpointer only loads, to
                // resume): their sums start over each epoch.
                _ => {
                    let _ = self.monitor.take_epoch();
                    self.monitor.meter().clear();
                }
            }
            if interrupter.should_stop() {
                break;
            }
        }
        (learner.model(), processor)
    }
}
