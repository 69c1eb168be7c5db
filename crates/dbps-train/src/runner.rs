//! Training runs: one burn-train `Learner` per method in a fresh run directory (or the
//! directory of an interrupted run, resumed), then the method's test figures and reports.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::AdamWConfig;
use burn::tensor::backend::AutodiffBackend;
use burn_train::logger::InMemoryMetricLogger;
use burn_train::{Interrupter, Learner, SupervisedTraining};

use crate::build::build_classifier;
use crate::checkpoint::{
    CheckpointRecorder, EveryEpoch, MANIFEST, MethodManifest, best_epoch, checkpoint_path,
    complete_epochs, load_weights, prune_checkpoints, read_history,
};
use crate::config::RunConfig;
use crate::datasets::Splits;
use crate::epoch_order::{EpochOrder, epoch_seed};
use crate::eval::evaluate;
use crate::metrics::TaskMetric;
use crate::report::{EpochFigures, MethodReport, RunReport, SelectionFigures, write_json_atomic};
use crate::run_dir::fresh_run_dir;
use crate::{
    ImageBatcher, MeteredOptimizer, ProgressRenderer, Result, TrainError, TrainedClassifier,
    TrainingMonitor, WarmupCosine,
};

/// The epoch a resumed method continues from: the newest whose model, optimizer and schedule
/// files all exist and whose figures were recorded (0: none, start over), with the figures of
/// the epochs up to it.
fn resume_point(method_dir: &Path) -> Result<(usize, Vec<EpochFigures>)> {
    let recorded = read_history(method_dir, usize::MAX)?;
    let in_order = recorded
        .iter()
        .enumerate()
        .take_while(|(i, e)| e.epoch == i + 1)
        .count();
    let epoch = complete_epochs(method_dir)
        .into_iter()
        .filter(|&e| e <= in_order)
        .max()
        .unwrap_or(0);
    Ok((epoch, recorded.into_iter().take(epoch).collect()))
}

/// Trains method `index` of a config into `method_dir` and evaluates it on the test split.
/// With `resume`, training continues from the method directory's last complete checkpoint
/// (model, optimizer, schedule position, epoch; data order and random draws are functions
/// of the seed and the epoch, so the run ends as an uninterrupted one would).
pub fn train_method<B: AutodiffBackend>(
    config: &RunConfig,
    index: usize,
    splits: &Splits,
    method_dir: &Path,
    device: &B::Device,
    resume: bool,
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

    let (done, history) = if resume {
        resume_point(method_dir)?
    } else {
        (0, Vec::new())
    };
    let saved: BTreeSet<usize> = complete_epochs(method_dir)
        .into_iter()
        .filter(|&e| e <= done)
        .collect();
    // Files of epochs after the resume point (or half-written ones) would be mistaken for
    // the epochs about to be trained again.
    prune_checkpoints(method_dir, &saved.iter().copied().collect::<Vec<_>>())?;
    if done > 0 {
        // burn-train panics on a checkpoint it cannot read: find a damaged one first.
        load_weights(model.clone(), &checkpoint_path(method_dir, done), device)?;
        tracing::info!(method = %method.name, epoch = done, "resuming after the last complete checkpoint");
    }
    let manifest = MethodManifest {
        config: config.clone(),
        method: index,
        best_epoch: best_epoch(&history).unwrap_or(0),
        epochs: history.len(),
        tasks: splits.tasks.clone(),
    };
    std::fs::create_dir_all(method_dir).map_err(|source| TrainError::Write {
        path: method_dir.to_path_buf(),
        source,
    })?;
    write_json_atomic(&method_dir.join(MANIFEST), &manifest)?;

    let order = EpochOrder::new(splits.train.clone(), train.seed);
    let start_epoch = {
        let (plan, order, device, seed) = (plan.clone(), order.clone(), device.clone(), train.seed);
        move |epoch: usize| {
            B::seed(&device, epoch_seed(seed, epoch));
            plan.start_epoch(epoch);
            order.start_epoch(epoch);
        }
    };
    start_epoch(done + 1);

    let batcher = ImageBatcher::for_split(splits.tasks.clone(), &splits.train);
    let loader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(train.batch_size)
        .num_workers(train.workers)
        .set_device(device.clone())
        .build(order);
    let loader_valid = DataLoaderBuilder::<B::InnerBackend, _, _>::new(batcher)
        .batch_size(train.batch_size)
        .num_workers(train.workers)
        .set_device(device.clone())
        .build(splits.valid.clone());

    let steps_per_epoch = splits.train.source().len().div_ceil(train.batch_size);
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
    let history = Arc::new(Mutex::new(history));

    tracing::info!(method = %method.name, patches = plan.grid.len(), m = plan.buffer.salient(), s = plan.buffer.sub_salient(), l = plan.buffer.chunk(), drop = plan.drop.ratio(), dir = %method_dir.display(), "training");
    let start = Instant::now();
    let mut training = SupervisedTraining::new(method_dir, loader_train, loader_valid)
        .metrics((TaskMetric::loss(), TaskMetric::accuracy()))
        // history.json is the record of the epochs (written by `EveryEpoch` from the steps'
        // own sums); burn-train's file logs would misnumber the epochs after a resume.
        .with_metric_logger(InMemoryMetricLogger::new())
        .num_epochs(train.epochs)
        .with_file_checkpointer(CheckpointRecorder::new())
        .with_checkpointing_strategy(EveryEpoch {
            history: history.clone(),
            meter: monitor.meter().clone(),
            monitor: monitor.clone(),
            method_dir: method_dir.to_path_buf(),
            manifest: manifest.clone(),
            saved,
            start_epoch: Box::new(start_epoch),
        })
        .with_interrupter(interrupter)
        .with_application_logger(None)
        .renderer(ProgressRenderer::new(&method.name));
    if done > 0 {
        training = training.checkpoint(done);
    }
    let result = training.launch(learner);
    let train_seconds = start.elapsed().as_secs_f64();
    let history = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(error) = splits.take_failure() {
        return Err(error.into());
    }
    if let Some(error) = monitor.take_failure() {
        return Err(error);
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
    let last_epoch = history.last().map_or(0, |e| e.epoch);
    let best_epoch = best_epoch(&history).unwrap_or(last_epoch);
    prune_checkpoints(method_dir, &[last_epoch, best_epoch])?;
    let test_last = evaluate(
        &last,
        &splits.test,
        &splits.tasks,
        train.batch_size,
        &inner_device,
        &format!("{} test (last)", method.name),
    )?;
    // The best epoch is often the last: its weights are the ones just evaluated.
    let test_best_valid = if best_epoch == last_epoch {
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
        )?
    };
    // A test image that could not be loaded was scored as a blank: no figure is reported.
    if let Some(error) = splits.take_failure() {
        return Err(error.into());
    }

    Ok(MethodReport {
        method: method.name.clone(),
        selection: SelectionFigures {
            // Bags of features and slides have no one N.
            n: if config.grid_per_image() {
                0
            } else {
                plan.grid.len()
            },
            m: plan.buffer.salient(),
            m_eval: plan.eval_buffer.salient(),
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

/// Trains the methods of `report.dir` that `report` does not hold yet, writing `metrics.json`
/// after each.
fn train_methods<B: AutodiffBackend>(
    config: &RunConfig,
    splits: &Splits,
    mut report: RunReport,
    device: &B::Device,
    resume: bool,
) -> Result<RunReport> {
    for index in report.methods.len()..config.methods.len() {
        let method_dir = report.dir.join(&config.methods[index].name);
        report.methods.push(train_method::<B>(
            config,
            index,
            splits,
            &method_dir,
            device,
            resume,
        )?);
        write_json_atomic(&report.dir.join("metrics.json"), &report)?;
    }
    Ok(report)
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
    let report = RunReport {
        run: config.name.clone(),
        dir: run_dir,
        device: device_name.to_string(),
        methods: Vec::new(),
    };
    train_methods::<B>(config, &splits, report, device, false)
}

/// Continues the run in `run_dir` that `dbps train` started: methods already in its
/// `metrics.json` are kept, the first unfinished one continues from its last complete
/// checkpoint, the rest train from the start.
pub fn resume<B: AutodiffBackend>(
    run_dir: &Path,
    device: &B::Device,
    device_name: &str,
) -> Result<RunReport> {
    let not_a_run = |reason: String| TrainError::Checkpoint {
        what: "run directory",
        path: run_dir.to_path_buf(),
        reason,
    };
    let config_path = run_dir.join("config.json");
    if !config_path.is_file() {
        return Err(not_a_run(
            "holds no run (no config.json); pass a directory that `dbps train` wrote, such as runs/quickstart".into(),
        ));
    }
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| not_a_run(format!("config.json cannot be read ({e})")))?;
    let config = RunConfig::from_json(&text, &config_path.display().to_string())?;
    let splits = Splits::open(&config)?;
    let metrics = run_dir.join("metrics.json");
    let mut report = RunReport {
        run: config.name.clone(),
        dir: run_dir.to_path_buf(),
        device: device_name.to_string(),
        methods: Vec::new(),
    };
    if metrics.is_file() {
        let text = std::fs::read_to_string(&metrics)
            .map_err(|e| not_a_run(format!("metrics.json cannot be read ({e})")))?;
        let done: RunReport = serde_json::from_str(&text).map_err(|e| {
            not_a_run(format!(
                "metrics.json is damaged ({e}); move it aside to train every method again"
            ))
        })?;
        let in_config = done
            .methods
            .iter()
            .zip(&config.methods)
            .all(|(report, method)| report.method == method.name);
        if !in_config || done.methods.len() > config.methods.len() {
            return Err(not_a_run(
                "metrics.json names methods that config.json does not list in that order; it belongs to another run".into(),
            ));
        }
        report.methods = done.methods;
    }
    tracing::info!(run_dir = %run_dir.display(), device = device_name, finished = report.methods.len(), of = config.methods.len(), "resuming run");
    train_methods::<B>(&config, &splits, report, device, true)
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
