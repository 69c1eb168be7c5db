//! Training runs: one burn-train `Learner` per method, test evaluation, checkpoints and reports.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn_train::metric::store::{Aggregate, EventStoreClient, Split};
use burn_train::{Interrupter, Learner, SupervisedTraining};
use dbps_data::{Sample, TaskSpec};
use dbps_encoder::PatchEncoder;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::datasets::{ImageDataset, Splits};
use crate::metrics::{ACCURACY, LOSS, TaskMetric};
use crate::report::{
    EpochFigures, EvalFigures, MethodReport, RunReport, SelectionFigures, TaskAccuracy,
    write_json_atomic,
};
use crate::{
    ImageBatcher, MeteredOptimizer, PatchClassifier, ProgressRenderer, Result, SelectionPlan,
    StepMeter, StepStats, TrainError, TrainedClassifier, TrainingMonitor, WarmupCosine,
};

/// The recorder of every checkpoint dbps writes.
pub type CheckpointRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// What a method directory holds besides burn-train's files: enough to rebuild the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodManifest {
    /// The run's whole config.
    pub config: RunConfig,
    /// Index of the method in `config.methods`.
    pub method: usize,
    /// Epoch whose weights did best on validation.
    pub best_epoch: usize,
    /// Epochs completed.
    pub epochs: usize,
}

/// File name of a [`MethodManifest`] inside a method directory.
pub const MANIFEST: &str = "method.json";

/// Builds the classifier of method `index` with fresh weights.
pub fn build_classifier<B: Backend>(
    config: &RunConfig,
    index: usize,
    tasks: &[TaskSpec],
    device: &B::Device,
) -> Result<PatchClassifier<B>> {
    let grid = config.grid()?;
    let plan = config.method_plan(index, grid.len())?;
    let encoder = config.encoder.init::<B>(device)?;
    let classes = tasks.iter().map(|t| t.classes).collect();
    let aggregator = config
        .aggregator_config(plan.aggregator, encoder.embed_dim(), classes)
        .init(device)?;
    let selection = SelectionPlan::new(
        grid,
        plan.buffer,
        plan.drop,
        config.train.shuffle_patches,
        config.train.seed,
    )
    .with_engine(config.train.selection_engine);
    let model = PatchClassifier::new(encoder, aggregator, selection);
    // Burn initialises parameters lazily, and every clone (such as the `valid()` copy that runs
    // selection) would draw its own values: materialise them once so all copies agree.
    let record = model.clone().into_record();
    Ok(model.load_record(record))
}

/// Records per-epoch figures and saves a checkpoint after every epoch.
struct EveryEpoch {
    history: Arc<Mutex<Vec<EpochFigures>>>,
    method: String,
    meter: StepMeter,
}

impl CheckpointingStrategy for EveryEpoch {
    fn checkpointing(
        &mut self,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let get = |name: &str, split: Split| {
            store
                .find_metric(name, epoch, Aggregate::Mean, &split)
                .unwrap_or(f64::NAN)
        };
        let figures = EpochFigures {
            epoch,
            train_loss: get(LOSS, Split::Train),
            train_accuracy: get(ACCURACY, Split::Train),
            valid_loss: get(LOSS, Split::Valid),
            valid_accuracy: get(ACCURACY, Split::Valid),
            efficiency: self.meter.figures(),
        };
        self.meter.clear();
        tracing::info!(
            method = %self.method,
            epoch,
            train_loss = figures.train_loss,
            train_acc = figures.train_accuracy,
            valid_loss = figures.valid_loss,
            valid_acc = figures.valid_accuracy,
            ms_per_step = figures.efficiency.as_ref().map(|e| e.ms_per_step),
            peak_step_mb = figures.efficiency.as_ref().and_then(|e| e.peak_step_bytes).map(|b| b as f64 / 1e6),
            "epoch done"
        );
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(figures);
        vec![CheckpointingAction::Save]
    }
}

/// Evaluates a model on a dataset split, batch by batch, in inference mode.
pub fn evaluate<B: Backend>(
    model: &TrainedClassifier<B>,
    dataset: &ImageDataset,
    tasks: &[TaskSpec],
    batch_size: usize,
    device: &B::Device,
    label: &str,
) -> EvalFigures {
    let start = Instant::now();
    let batcher = ImageBatcher::new(tasks.to_vec());
    let total = dataset.len();
    let bar = ProgressBar::new(total as u64).with_prefix(label.to_string());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({elapsed}<{eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut hits = vec![0i64; tasks.len()];
    let mut loss_sum = 0.0;
    for start_index in (0..total).step_by(batch_size.max(1)) {
        let items: Vec<Sample> = (start_index..(start_index + batch_size).min(total))
            .filter_map(|i| dataset.get(i))
            .collect();
        let batch =
            burn::data::dataloader::batcher::Batcher::<B, _, _>::batch(&batcher, items, device);
        let stats: StepStats = model.evaluate(batch).stats();
        loss_sum += stats.loss * stats.batch as f64;
        hits.iter_mut().zip(&stats.hits).for_each(|(h, s)| *h += s);
        bar.inc(stats.batch as u64);
    }
    bar.finish_and_clear();
    EvalFigures {
        loss: loss_sum / total.max(1) as f64,
        tasks: tasks
            .iter()
            .zip(hits)
            .map(|(t, h)| TaskAccuracy {
                task: t.name.clone(),
                accuracy: h as f64 / total.max(1) as f64,
            })
            .collect(),
        images: total,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Path of the model checkpoint of `epoch` in a method directory.
pub fn checkpoint_path(method_dir: &Path, epoch: usize) -> PathBuf {
    method_dir
        .join("checkpoint")
        .join(format!("model-{epoch}.mpk"))
}

/// Loads the weights of `path` into a freshly built model, naming the file on mismatch.
pub fn load_weights<B: Backend>(
    model: TrainedClassifier<B>,
    path: &Path,
    device: &B::Device,
) -> Result<TrainedClassifier<B>> {
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            what: "checkpoint",
            path: path.to_path_buf(),
            reason: "does not exist; pass the run or method directory that `dbps train` wrote"
                .into(),
        });
    }
    model
        .load_file(path.with_extension(""), &CheckpointRecorder::new(), device)
        .map_err(|e| TrainError::Checkpoint {
            what: "weight file",
            path: path.to_path_buf(),
            reason: format!(
                "does not fit this model ({e}); it was written by another config or is damaged"
            ),
        })
}

/// Trains method `index` of a config into `method_dir` and evaluates it on the test split.
pub fn train_method<B: AutodiffBackend>(
    config: &RunConfig,
    index: usize,
    splits: &Splits,
    method_dir: &Path,
    device: &B::Device,
) -> Result<MethodReport> {
    let method = &config.methods[index];
    let train = &config.train;
    B::seed(device, train.seed);
    let classifier = build_classifier::<B>(config, index, &splits.tasks, device)?;
    let plan = classifier.plan().clone();
    let interrupter = Interrupter::new();
    let monitor = match crate::backend::pool_probe::<B>(device) {
        Some(pool) => TrainingMonitor::new(interrupter.clone()).with_pool(pool),
        None => TrainingMonitor::new(interrupter.clone()),
    };
    let model = TrainedClassifier::new(classifier, monitor.clone());
    splits.watch(&interrupter);

    let batcher = ImageBatcher::new(splits.tasks.clone());
    let loader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(train.batch_size)
        .shuffle(train.seed)
        .num_workers(train.workers)
        .set_device(device.clone())
        .build(splits.train.clone());
    let loader_valid = DataLoaderBuilder::<B::InnerBackend, _, _>::new(batcher)
        .batch_size(train.batch_size)
        .num_workers(train.workers)
        .set_device(device.clone())
        .build(splits.valid.clone());

    let steps_per_epoch = splits.train.len().div_ceil(train.batch_size);
    let total_steps = steps_per_epoch * train.epochs;
    let warmup = (train.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let optimizer = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(train.weight_decay as f32)
        .init();
    let learner = Learner::new(
        model,
        MeteredOptimizer::<_, B>::new(optimizer, monitor.meter().clone(), device.clone()),
        WarmupCosine::new(train.lr, warmup, total_steps),
    );
    let history = Arc::new(Mutex::new(Vec::new()));

    tracing::info!(method = %method.name, patches = plan.grid.len(), m = plan.buffer.salient(), s = plan.buffer.sub_salient(), l = plan.buffer.chunk(), drop = plan.drop.ratio(), dir = %method_dir.display(), "training");
    let start = Instant::now();
    let result = SupervisedTraining::new(method_dir, loader_train, loader_valid)
        .metrics((TaskMetric::loss(), TaskMetric::accuracy()))
        .num_epochs(train.epochs)
        .with_file_checkpointer(CheckpointRecorder::new())
        .with_checkpointing_strategy(EveryEpoch {
            history: history.clone(),
            method: method.name.clone(),
            meter: monitor.meter().clone(),
        })
        .with_interrupter(interrupter)
        .with_application_logger(None)
        .renderer(ProgressRenderer::new(&method.name))
        .launch(learner);
    let train_seconds = start.elapsed().as_secs_f64();
    let history = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(error) = splits.take_failure() {
        return Err(error.into());
    }
    if let Some(value) = monitor.diverged() {
        return Err(TrainError::NonFiniteLoss {
            method: method.name.clone(),
            epoch: history.len() + 1,
            value,
        });
    }

    let inner_device = device.clone();
    let last = result.model;
    let test_last = evaluate(
        &last,
        &splits.test,
        &splits.tasks,
        train.batch_size,
        &inner_device,
        &format!("{} test (last)", method.name),
    );
    let best_epoch = history
        .iter()
        .fold(None::<&EpochFigures>, |best, e| match best {
            Some(b) if b.valid_accuracy >= e.valid_accuracy || e.valid_accuracy.is_nan() => Some(b),
            _ => Some(e),
        })
        .map_or(train.epochs, |e| e.epoch);
    // The best epoch is often the last: its weights are the ones just evaluated.
    let test_best_valid = if history.last().is_some_and(|e| e.epoch == best_epoch) {
        test_last.clone()
    } else {
        let best = load_weights(
            last.clone(),
            &checkpoint_path(method_dir, best_epoch),
            &inner_device,
        )?;
        evaluate(
            &best,
            &splits.test,
            &splits.tasks,
            train.batch_size,
            &inner_device,
            &format!("{} test (best)", method.name),
        )
    };
    // A test image that could not be loaded was scored as a blank: no figure is reported.
    if let Some(error) = splits.take_failure() {
        return Err(error.into());
    }

    write_json_atomic(
        &method_dir.join(MANIFEST),
        &MethodManifest {
            config: config.clone(),
            method: index,
            best_epoch,
            epochs: history.len(),
        },
    )?;
    Ok(MethodReport {
        method: method.name.clone(),
        selection: SelectionFigures {
            n: plan.grid.len(),
            m: plan.buffer.salient(),
            s: plan.buffer.sub_salient(),
            l: plan.buffer.chunk(),
            drop: plan.drop.ratio(),
        },
        epochs: history.len(),
        train_seconds,
        efficiency: history.last().and_then(|e| e.efficiency.clone()),
        best_epoch,
        history,
        test_last,
        test_best_valid,
    })
}

/// A run directory that holds nothing yet: `wanted`, or `wanted-2`, `wanted-3`, … if it is taken,
/// so that no earlier result is ever overwritten.
pub fn fresh_run_dir(wanted: &Path) -> Result<PathBuf> {
    let taken = |p: &Path| {
        p.exists()
            && std::fs::read_dir(p)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
    };
    let mut dir = wanted.to_path_buf();
    let mut k = 2;
    while taken(&dir) {
        let name = wanted
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        dir = wanted.with_file_name(format!("{name}-{k}"));
        k += 1;
    }
    std::fs::create_dir_all(&dir).map_err(|source| TrainError::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Trains every method of a config side by side in a fresh directory named after `wanted`
/// (see [`fresh_run_dir`]), writing `config.json` and `metrics.json` there.
///
/// The config and the dataset are checked first: bad input creates no directory.
pub fn run<B: AutodiffBackend>(
    config: &RunConfig,
    wanted: &Path,
    device: &B::Device,
    device_name: &str,
) -> Result<RunReport> {
    config.validate()?;
    let splits = Splits::open(config)?;
    let run_dir = fresh_run_dir(wanted)?;
    tracing::info!(run_dir = %run_dir.display(), device = device_name, "starting run");
    write_json_atomic(&run_dir.join("config.json"), config)?;
    let mut report = RunReport {
        run: config.name.clone(),
        dir: run_dir.clone(),
        device: device_name.to_string(),
        methods: Vec::new(),
    };
    let run_dir = run_dir.as_path();
    for index in 0..config.methods.len() {
        let method_dir = run_dir.join(&config.methods[index].name);
        report.methods.push(train_method::<B>(
            config,
            index,
            &splits,
            &method_dir,
            device,
        )?);
        write_json_atomic(&run_dir.join("metrics.json"), &report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_run_directories_get_a_suffix() {
        let base = std::env::temp_dir().join(format!("dbps-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(
            base.with_file_name(format!("dbps-fresh-{}-2", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&base);
        let first = fresh_run_dir(&base).unwrap();
        assert_eq!(first, base);
        std::fs::write(first.join("metrics.json"), "{}").unwrap();
        let second = fresh_run_dir(&base).unwrap();
        assert_ne!(second, first);
        assert!(second.to_string_lossy().ends_with("-2"));
        assert_eq!(
            std::fs::read_to_string(first.join("metrics.json")).unwrap(),
            "{}"
        );
    }
}
