//! Training runs: one burn-train `Learner` per method in a fresh run directory, then the
//! method's test figures and reports.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::AdamWConfig;
use burn::tensor::backend::AutodiffBackend;
use burn_train::{Interrupter, Learner, SupervisedTraining};

use crate::build::build_classifier;
use crate::checkpoint::{
    CheckpointRecorder, EveryEpoch, MANIFEST, MethodManifest, checkpoint_path, load_weights,
};
use crate::config::RunConfig;
use crate::datasets::Splits;
use crate::eval::evaluate;
use crate::metrics::TaskMetric;
use crate::report::{EpochFigures, MethodReport, RunReport, SelectionFigures, write_json_atomic};
use crate::run_dir::fresh_run_dir;
use crate::{
    ImageBatcher, MeteredOptimizer, ProgressRenderer, Result, TrainError, TrainedClassifier,
    TrainingMonitor, WarmupCosine,
};

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

    let batcher = ImageBatcher::for_split(splits.tasks.clone(), &splits.train);
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
    let test_last = evaluate(
        &last,
        &splits.test,
        &splits.tasks,
        train.batch_size,
        &inner_device,
        &format!("{} test (last)", method.name),
    )?;
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
        )?
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
            // Bags of features have no one N.
            n: if config.bags() { 0 } else { plan.grid.len() },
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
