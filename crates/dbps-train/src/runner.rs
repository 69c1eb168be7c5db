//! Training runs: one burn-train `Learner` per method in a fresh run directory (or the
//! directory of an interrupted run, resumed), then the method's test figures and reports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::data::dataloader::DataLoader;
use burn::data::dataset::Dataset;
use burn::tensor::backend::AutodiffBackend;
use burn_train::logger::InMemoryMetricLogger;
use burn_train::{Interrupter, Learner, SupervisedTraining, TrainingStrategy};

use crate::build::build_classifier;
use serde_json::Value;

use crate::checkpoint::{
    CheckpointRecorder, EveryEpoch, HISTORY, MANIFEST, MethodManifest, best_epoch, checkpoint_path,
    complete_epochs, initial_weights_path, load_weights, prune_checkpoints, read_history,
    set_aside, unreadable_part,
};
use crate::config::{CheckedRun, RunConfig};
use crate::datasets::Splits;
use crate::eval::{evaluate, evaluate_shared};
use crate::renderer::ProgressRenderer;
use crate::report::{EpochFigures, MethodReport, RunReport, SelectionFigures};
use crate::run_dir::{RunLock, fresh_run_dir};
use crate::schedule::WarmupCosine;
use crate::{Result, TrainError};
use dbps_model::atomic_write::write_json_atomic;
use dbps_model::batch::{ImageBatch, ImageBatcher};
use dbps_model::epoch_order::{EpochOrder, epoch_seed};
use dbps_model::meter::MeteredOptimizer;
use dbps_model::metrics::TaskMetric;
use dbps_model::step::{TrainedClassifier, TrainingMonitor};
use dbps_model::trace::GradientTrace;
use dbps_parallel::{
    CollectiveSession, CollectiveStrategy, MultiDeviceEngine, NodeSpec, ShardLoader, ShardPlan,
    broadcast_model, fnv1a,
};

/// The epoch a resumed method continues from: the newest whose model, optimizer and schedule
/// files all exist and whose figures were recorded (0: none, start over), with the figures of
/// the epochs up to it.
///
/// The figures of an epoch are written before its checkpoint, so a complete checkpoint newer
/// than the recorded figures means `history.json` was lost or damaged: resuming would train
/// those epochs again and prune their checkpoints, so that is refused instead. An epoch with a
/// file that cannot be read whole is passed over for the one before, with a warning; the
/// process that writes the run (`writes`) moves its files into `checkpoint/damaged/`.
fn resume_point(method_dir: &Path, writes: bool) -> Result<(usize, Vec<EpochFigures>)> {
    let recorded = read_history(method_dir, usize::MAX)?;
    let in_order = recorded
        .iter()
        .enumerate()
        .take_while(|(i, e)| e.epoch == i + 1)
        .count();
    let complete = complete_epochs(method_dir);
    if let Some(&newest) = complete.last()
        && newest > in_order
    {
        return Err(TrainError::Checkpoint {
            what: "history",
            path: method_dir.join(HISTORY),
            reason: format!(
                "records the figures of epochs 1–{in_order} in order, but the checkpoint of epoch {newest} is complete: the file was lost or damaged, and resuming would train those epochs again and delete their checkpoints. Restore history.json, or train into a new directory (--output)"
            ),
        });
    }
    let mut epoch = 0;
    for &e in complete.iter().rev().filter(|&&e| e <= in_order) {
        let Some((file, reason)) = unreadable_part(method_dir, e) else {
            epoch = e;
            break;
        };
        let kept = if writes {
            set_aside(method_dir, e)?.display().to_string()
        } else {
            "where they are".into()
        };
        tracing::warn!(
            file = %file.display(),
            reason,
            kept,
            "the checkpoint of epoch {e} cannot be read; resuming from the epoch before it"
        );
    }
    Ok((epoch, recorded.into_iter().take(epoch).collect()))
}

/// Where a run trains: one replica per device of this process (the first is the main
/// device: it validates and its model is the one recorded), and, when this process is one rank
/// of several, how it joins them.
#[derive(Debug, Clone)]
pub struct Placement<B: AutodiffBackend> {
    /// This process's devices, one replica each; at least one.
    pub devices: Vec<B::Device>,
    /// This process's place among several (one device each), or `None` for a run of one process.
    pub node: Option<NodeSpec>,
    /// Where to record the gradients of every optimizer step (a debugging aid, see
    /// [`GradientTrace`]); rank 0 records, the gradients being the same on every rank.
    pub trace: Option<GradientTrace>,
    /// The engine that trains several devices of this process; burn-train's multi-device
    /// strategy when `None`.
    pub engine: Option<MultiDeviceEngine<B>>,
}

impl<B: AutodiffBackend> Placement<B> {
    /// One process, one device.
    pub fn single(device: B::Device) -> Self {
        Self {
            devices: vec![device],
            node: None,
            trace: None,
            engine: None,
        }
    }

    fn main(&self) -> &B::Device {
        &self.devices[0]
    }
}

/// A run's placement once joined: the devices, the session among ranks, and who writes.
struct Joined<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    session: Option<Arc<CollectiveSession<B::InnerBackend>>>,
    trace: Option<GradientTrace>,
    engine: MultiDeviceEngine<B>,
}

impl<B: AutodiffBackend> Joined<B> {
    /// Opens the session when this process is one rank of several: after the config and the
    /// dataset were checked, so that every rank checks its own before waiting for the others.
    fn join(placement: &Placement<B>, config: &RunConfig, splits: &Splits) -> Result<Self> {
        if placement.devices.is_empty() {
            return Err(TrainError::Collective {
                reason:
                    "no device given; pass --device cpu, cuda:0 or a list such as cuda:0,cuda:1"
                        .into(),
            });
        }
        let session = match &placement.node {
            None => None,
            Some(spec) => {
                if placement.devices.len() > 1 {
                    return Err(TrainError::Collective {
                        reason: format!(
                            "--nodes runs one process per device, but this rank was given {} devices; start one rank per GPU, each with --device cuda:N",
                            placement.devices.len()
                        ),
                    });
                }
                let fingerprint = run_fingerprint(config, splits);
                let session =
                    CollectiveSession::join(spec.clone(), placement.main().clone(), fingerprint)?;
                Some(Arc::new(session))
            }
        };
        Ok(Self {
            devices: placement.devices.clone(),
            session,
            trace: placement.trace.clone(),
            engine: placement.engine.clone().unwrap_or_default(),
        })
    }

    fn main(&self) -> &B::Device {
        &self.devices[0]
    }

    /// True on the process that writes the run's files (rank 0, or the only process).
    fn writes(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.rank() == 0)
    }

    /// Replicas over every rank, and the global index of this process's first.
    fn parts(&self) -> (usize, usize) {
        let local = self.devices.len();
        match &self.session {
            None => (local, 0),
            Some(s) => (local * s.nodes(), local * s.rank()),
        }
    }

    /// What every rank must agree on before two ranks' results can be added.
    fn agree(&self, value: usize, what: &str) -> Result<()> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let mut slots = vec![0f32; session.nodes()];
        slots[session.rank()] = value as f32;
        let all = session.all_reduce_sum(slots, &format!("start-up ({what})"))?;
        match all.iter().position(|&v| v != all[0]) {
            None => Ok(()),
            Some(rank) => Err(TrainError::Collective {
                reason: format!(
                    "rank {rank} sees {what} = {} but rank 0 sees {}; every rank must read the same run directory (a shared filesystem)",
                    all[rank], all[0]
                ),
            }),
        }
    }
}

/// What the ranks of a run must agree on: the config, the dataset's splits and tasks, and this
/// dbps's version.
fn run_fingerprint(config: &RunConfig, splits: &Splits) -> u64 {
    let mut text = serde_json::to_string(config).unwrap_or_default();
    text += &format!(
        "|{}|{}|{}|{:?}|{}",
        splits.train.len(),
        splits.valid.len(),
        splits.test.len(),
        splits.tasks,
        env!("CARGO_PKG_VERSION")
    );
    fnv1a(text.as_bytes())
}

/// The seed an epoch starts the backend's generator (dropout) from: the run's epoch seed,
/// mixed with the rank so that ranks draw different masks for their different images.
fn dropout_seed(seed: u64, epoch: usize, rank: usize) -> u64 {
    epoch_seed(seed, epoch) ^ (rank as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)
}

/// Engines whose devices all wait for each other every step cannot take an epoch whose last
/// batch holds fewer images than there are devices (or a batch smaller than the devices).
fn check_every_part_filled(shards: &ShardPlan, images: usize) -> Result<()> {
    let (batch, parts) = (shards.batch_size(), shards.parts());
    let last = match images % batch {
        0 => batch.min(images),
        short => short,
    };
    if last < parts {
        return Err(TrainError::Collective {
            reason: format!(
                "{parts} devices each need an image at every step, but the training split's {images} images leave {last} for the last batch of {batch}; set `train.batch_size` to a multiple of {parts} that divides {images}, or to one that leaves at least {parts} images for the last batch"
            ),
        });
    }
    Ok(())
}

/// A checkpointing strategy that saves nothing: ranks other than 0 load checkpoints (to
/// resume) but never write them.
struct NeverSave;

impl burn_train::checkpoint::CheckpointingStrategy for NeverSave {
    fn checkpointing(
        &mut self,
        _epoch: usize,
        _store: &burn_train::metric::store::EventStoreClient,
    ) -> Vec<burn_train::checkpoint::CheckpointingAction> {
        Vec::new()
    }
}

/// Trains method `index` of a config into `method_dir` and evaluates it on the test split.
/// With `resume`, training continues from the method directory's last complete checkpoint
/// (model, optimizer, schedule position, epoch; data order and random draws are functions
/// of the seed and the epoch, so the run ends as an uninterrupted one would).
fn train_method<B: AutodiffBackend>(
    config: &CheckedRun,
    index: usize,
    splits: &Splits,
    method_dir: &Path,
    joined: &Joined<B>,
    resume: bool,
) -> Result<MethodReport> {
    let method = &config.methods[index];
    let train = &config.train;
    let device = joined.main();
    let writes = joined.writes();
    let rank = joined.session.as_ref().map_or(0, |s| s.rank());
    B::seed(device, train.seed);
    let classifier = build_classifier::<B>(config, index, &splits.tasks, device)?;
    let plan = classifier.plan().clone();
    let interrupter = Interrupter::new();
    let monitor = match crate::backend::pool_probe::<B>(device) {
        Some(pool) => TrainingMonitor::new(interrupter.clone()).with_pool(pool),
        None => TrainingMonitor::new(interrupter.clone()),
    };
    let mut model =
        TrainedClassifier::new(classifier, monitor.clone()).with_loss(train.loss_form());
    splits.watch(&interrupter);

    let (done, history) = if resume {
        resume_point(method_dir, writes)?
    } else {
        (0, Vec::new())
    };
    joined.agree(done, &format!("the last complete epoch of {}", method.name))?;
    let saved: BTreeSet<usize> = complete_epochs(method_dir)
        .into_iter()
        .filter(|&e| e <= done)
        .collect();
    if writes {
        // Files of epochs after the resume point (or half-written ones) would be mistaken for
        // the epochs about to be trained again.
        prune_checkpoints(method_dir, &saved.iter().copied().collect::<Vec<_>>())?;
    }
    let initial = initial_weights_path(method_dir);
    if done > 0 {
        // burn-train panics on a checkpoint it cannot read: find a damaged one first.
        load_weights(model.clone(), &checkpoint_path(method_dir, done), device)?;
        tracing::info!(method = %method.name, epoch = done, "resuming after the last complete checkpoint");
    } else if resume && initial.is_file() {
        // Imported weights: every rank reads them from the shared run directory.
        model = load_weights(model, &initial, device)?;
        tracing::info!(method = %method.name, weights = %initial.display(), "starting from imported weights, with a fresh optimizer and schedule");
    } else if let Some(session) = &joined.session {
        // Every rank starts from rank 0's initial weights.
        model = broadcast_model(session, model)?;
    }
    let manifest = MethodManifest {
        config: RunConfig::clone(config),
        method: index,
        best_epoch: best_epoch(&history).unwrap_or(0),
        epochs: history.len(),
        tasks: splits.tasks.clone(),
    };
    if writes {
        std::fs::create_dir_all(method_dir).map_err(|source| TrainError::Write {
            path: method_dir.to_path_buf(),
            source,
        })?;
        write_json_atomic(&method_dir.join(MANIFEST), &manifest)?;
    }

    let order = EpochOrder::new(splits.train.clone(), train.seed);
    let start_epoch: Arc<dyn Fn(usize) + Send + Sync> = {
        let (order, device, seed) = (order.clone(), device.clone(), train.seed);
        Arc::new(move |epoch: usize| {
            B::seed(&device, dropout_seed(seed, epoch, rank));
            order.start_epoch(epoch);
        })
    };
    start_epoch(done + 1);

    let (parts, first) = joined.parts();
    let shards = ShardPlan::new(train.batch_size, parts);
    let batcher = ImageBatcher::for_split(splits.tasks.clone(), &splits.train);
    let loader_train = ShardLoader::<B>::new(
        order,
        batcher.clone(),
        shards,
        first..first + joined.devices.len(),
        train.workers,
        device.clone(),
    );
    let steps_per_epoch = loader_train.steps();
    if joined.devices.len() > 1 && joined.engine.needs_every_part {
        check_every_part_filled(&shards, splits.train.len())?;
    }
    // Validation: the main device reads the whole split, or each rank its part of it.
    let (valid_parts, valid_part) = match &joined.session {
        Some(s) => (s.nodes(), s.rank()),
        None => (1, 0),
    };
    let loader_valid = ShardLoader::<B::InnerBackend>::new(
        EpochOrder::new(splits.valid.clone(), train.seed),
        batcher,
        ShardPlan::new(train.batch_size, valid_parts),
        valid_part..valid_part + 1,
        train.workers,
        device.clone(),
    );

    let total_steps = steps_per_epoch * train.epochs;
    let warmup = (train.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let optimizer = train.adamw().init();
    let mut optimizer =
        MeteredOptimizer::<_, B>::new(optimizer, monitor.meter().clone(), device.clone());
    if writes && let Some(trace) = &joined.trace {
        optimizer = optimizer.with_trace(trace.for_method(&method.name)?);
    }
    let mut schedule = WarmupCosine::new(train.lr, warmup, total_steps);
    if joined.devices.len() > 1 && joined.engine.schedule_per_device {
        schedule = schedule.with_calls_per_step(joined.devices.len());
    }
    let learner = Learner::new(model, optimizer, schedule);
    let history = Arc::new(Mutex::new(history));

    tracing::info!(method = %method.name, patches = plan.grid.len(), m = plan.buffer.salient(), s = plan.buffer.sub_salient(), l = plan.buffer.chunk(), drop = plan.drop.ratio(), replicas = parts, dir = %method_dir.display(), "training");
    let start = Instant::now();
    let mut training = SupervisedTraining::new(
        method_dir,
        Arc::new(loader_train) as Arc<dyn DataLoader<B, ImageBatch<B>>>,
        Arc::new(loader_valid) as Arc<dyn DataLoader<B::InnerBackend, ImageBatch<B::InnerBackend>>>,
    )
    .metrics((TaskMetric::loss(), TaskMetric::accuracy()))
    // history.json is the record of the epochs (written by `EveryEpoch` from the steps'
    // own sums); burn-train's file logs would misnumber the epochs after a resume.
    .with_metric_logger(InMemoryMetricLogger::new())
    .num_epochs(train.epochs)
    .with_interrupter(interrupter.clone())
    .with_application_logger(None)
    .renderer(ProgressRenderer::new(&method.name));
    if writes {
        let start_epoch = Arc::clone(&start_epoch);
        training = training
            .with_file_checkpointer(CheckpointRecorder::new())
            .with_checkpointing_strategy(EveryEpoch {
                history: history.clone(),
                meter: monitor.meter().clone(),
                monitor: monitor.clone(),
                method_dir: method_dir.to_path_buf(),
                manifest: manifest.clone(),
                saved,
                start_epoch: Box::new(move |epoch| start_epoch(epoch)),
            });
    } else if done > 0 {
        // Loads rank 0's checkpoint; writes nothing.
        training = training
            .with_file_checkpointer(CheckpointRecorder::new())
            .with_checkpointing_strategy(NeverSave);
    }
    if done > 0 {
        training = training.checkpoint(done);
    }
    training = match &joined.session {
        Some(session) => training.with_training_strategy(TrainingStrategy::Custom(Arc::new(
            CollectiveStrategy::<B>::new(
                Arc::clone(session),
                monitor.clone(),
                &method.name,
                splits.tasks.len(),
                steps_per_epoch,
                Arc::clone(&start_epoch),
            ),
        ))),
        None if joined.devices.len() > 1 => {
            training.with_training_strategy((joined.engine.strategy)(joined.devices.clone()).into())
        }
        None => training,
    };
    let result = training.launch(learner);
    let train_seconds = start.elapsed().as_secs_f64();
    let history = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(error) = splits.take_failure() {
        return Err(error.into());
    }
    if let Some(error) = monitor.take_failure() {
        return Err(TrainError::stopped(error));
    }
    if let Some(value) = monitor.diverged() {
        return Err(TrainError::NonFiniteLoss {
            method: method.name.clone(),
            epoch: history.len() + 1,
            value,
        });
    }
    // burn-train's checkpointer stops training through the interrupter when it cannot save a
    // checkpoint (a full disk), and the learner then returns as if training had ended.
    if interrupter.should_stop() {
        return Err(TrainError::Checkpoint {
            what: "checkpoint folder",
            path: method_dir.join("checkpoint"),
            reason: format!(
                "training of {} stopped after epoch {}: {}; free space (or fix the folder), then continue with `dbps train --resume`",
                method.name,
                history.len(),
                interrupter
                    .get_message()
                    .unwrap_or_else(|| "a checkpoint could not be saved".into())
            ),
        });
    }

    let inner_device = device.clone();
    let last = result.model;
    let last_epoch = history.last().map_or(0, |e| e.epoch);
    // Only rank 0 keeps the history; the others learn the epochs from it.
    let (last_epoch, best_epoch) = match &joined.session {
        Some(session) => {
            let mine = [
                last_epoch as f32,
                best_epoch(&history).unwrap_or(last_epoch) as f32,
            ];
            let epochs = session.broadcast(mine.to_vec(), "the best epoch")?;
            (epochs[0] as usize, epochs[1] as usize)
        }
        None => (last_epoch, best_epoch(&history).unwrap_or(last_epoch)),
    };
    if writes {
        prune_checkpoints(method_dir, &[last_epoch, best_epoch])?;
    }
    let test = |model: &TrainedClassifier<B::InnerBackend>, which: &str| {
        let label = format!("{} test ({which})", method.name);
        match &joined.session {
            Some(session) => evaluate_shared(
                model,
                &splits.test,
                &splits.tasks,
                train.batch_size,
                session,
                &label,
            ),
            None => evaluate(
                model,
                &splits.test,
                &splits.tasks,
                train.batch_size,
                &inner_device,
                &label,
            ),
        }
    };
    let test_last = test(&last, "last")?;
    // The best epoch is often the last: its weights are the ones just evaluated.
    let test_best_valid = if best_epoch == last_epoch {
        test_last.clone()
    } else {
        if let Some(session) = &joined.session {
            // Rank 0 has pruned; its best checkpoint is on disk for every rank.
            session.barrier("loading the best epoch's weights")?;
        }
        let best = load_weights(
            last.clone(),
            &checkpoint_path(method_dir, best_epoch),
            &inner_device,
        )?;
        test(&best, "best")?
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
/// after each (rank 0 only).
fn train_methods<B: AutodiffBackend>(
    config: &CheckedRun,
    splits: &Splits,
    mut report: RunReport,
    joined: &Joined<B>,
    resume: bool,
) -> Result<RunReport> {
    for index in report.methods.len()..config.methods.len() {
        let method_dir = report.dir.join(&config.methods[index].name);
        report.methods.push(train_method::<B>(
            config,
            index,
            splits,
            &method_dir,
            joined,
            resume,
        )?);
        if joined.writes() {
            write_json_atomic(&report.dir.join("metrics.json"), &report)?;
        }
    }
    if let Some(session) = &joined.session {
        let (bytes, exchanges) = session.traffic();
        tracing::info!(
            rank = session.rank(),
            exchanges,
            megabytes = bytes as f64 / 1e6,
            "all-reduce traffic of this rank"
        );
        session.finish();
    }
    Ok(report)
}

/// The name a report gives where a run trained.
fn placement_name(device_name: &str, joined: &Joined<impl AutodiffBackend>) -> String {
    match (&joined.session, joined.devices.len()) {
        (Some(s), _) => format!("{device_name}, rank {} of {}", s.rank(), s.nodes()),
        (None, 1) => device_name.to_string(),
        (None, n) => format!("{device_name} × {n} replicas"),
    }
}

/// Trains every method of a config side by side in a fresh directory named after `wanted`
/// (see [`fresh_run_dir`]), writing `config.json` and `metrics.json` there.
///
/// The config was checked when it was read ([`CheckedRun`]); the dataset is checked against it
/// first: bad input creates no directory. With
/// several ranks, rank 0 creates the directory and tells the others its name.
pub fn run<B: AutodiffBackend>(
    config: &CheckedRun,
    wanted: &Path,
    placement: &Placement<B>,
    device_name: &str,
) -> Result<RunReport> {
    let splits = Splits::open(config)?;
    let joined = Joined::join(placement, config, &splits)?;
    let (run_dir, _lock) = if joined.writes() {
        let dir = fresh_run_dir(wanted)?;
        let lock = RunLock::acquire(&dir)?;
        write_json_atomic(&dir.join("config.json"), config)?;
        (dir, Some(lock))
    } else {
        (PathBuf::new(), None)
    };
    let run_dir = match &joined.session {
        Some(session) => PathBuf::from(
            session.broadcast_text(&run_dir.to_string_lossy(), "start-up (the run directory)")?,
        ),
        None => run_dir,
    };
    if let Some(session) = &joined.session {
        session.set_run_dir(&run_dir);
    }
    let device = placement_name(device_name, &joined);
    tracing::info!(run_dir = %run_dir.display(), device, "starting run");
    let report = RunReport {
        run: config.name.clone(),
        dir: run_dir,
        device,
        methods: Vec::new(),
    };
    let writes = joined.writes();
    let run_dir = report.dir.clone();
    let result = train_methods::<B>(config, &splits, report, &joined, false);
    if result.is_err() && writes {
        discard_unstarted(&run_dir, config);
    }
    result
}

/// Removes the directory of a fresh run that failed before any method completed an epoch: it
/// holds nothing to resume or read (the error says why the run failed), and left behind it
/// would send the next run to `NAME-2`. A run with a complete epoch is kept for `--resume`.
fn discard_unstarted(run_dir: &Path, config: &RunConfig) {
    let started = run_dir.join("metrics.json").exists()
        || config
            .methods
            .iter()
            .any(|m| !complete_epochs(&run_dir.join(&m.name)).is_empty());
    if started {
        return;
    }
    match std::fs::remove_dir_all(run_dir) {
        Ok(()) => tracing::info!(
            run_dir = %run_dir.display(),
            "removed the run directory: the run failed before any epoch completed"
        ),
        Err(e) => tracing::warn!(
            run_dir = %run_dir.display(),
            "the run failed before any epoch completed, and its directory could not be removed: {e}"
        ),
    }
}

/// Continues the run in `run_dir` that `dbps train` started: methods already in its
/// `metrics.json` are kept, the first unfinished one continues from its last complete
/// checkpoint, the rest train from the start. Every rank of a multi-process run resumes from
/// rank 0's directory.
pub fn resume<B: AutodiffBackend>(
    run_dir: &Path,
    placement: &Placement<B>,
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
        device: String::new(),
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
    check_manifests(run_dir, &config)?;
    let joined = Joined::join(placement, &config, &splits)?;
    let _lock = joined
        .writes()
        .then(|| RunLock::acquire(run_dir))
        .transpose()?;
    if let Some(session) = &joined.session {
        session.set_run_dir(run_dir);
    }
    joined.agree(report.methods.len(), "the methods finished")?;
    report.device = placement_name(device_name, &joined);
    tracing::info!(run_dir = %run_dir.display(), device = %report.device, finished = report.methods.len(), of = config.methods.len(), "resuming run");
    train_methods::<B>(&config, &splits, report, &joined, true)
}

/// Checks that every method folder's manifest was written from this `config.json`: a config
/// edited between a run and its resume would continue the checkpoints with other settings
/// (and the manifests, rewritten from it, would no longer say what the weights were trained
/// with).
fn check_manifests(run_dir: &Path, config: &RunConfig) -> Result<()> {
    let as_json = |c: &RunConfig| {
        serde_json::to_value(c).map_err(|e| TrainError::Checkpoint {
            what: "run directory",
            path: run_dir.to_path_buf(),
            reason: format!("its config cannot be compared with the manifests ({e})"),
        })
    };
    let ours = as_json(config)?;
    for method in &config.methods {
        let dir = run_dir.join(&method.name);
        if !dir.join(MANIFEST).is_file() {
            continue;
        }
        let manifest = MethodManifest::read(&dir)?;
        if let Some((field, here, there)) = first_difference(&ours, &as_json(&manifest.config)?, "")
        {
            return Err(TrainError::Checkpoint {
                what: "run directory",
                path: run_dir.to_path_buf(),
                reason: format!(
                    "config.json sets `{field}` to {here}, but {} says the checkpoints were trained with {there}; restore config.json, or train into a new directory (--output)",
                    dir.join(MANIFEST).display()
                ),
            });
        }
    }
    Ok(())
}

/// The first place, in key order, where two JSON values differ: its path (`train.lr`,
/// `methods[1].s`) and the two values (`absent` where one side lacks the key).
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, String, String)> {
    let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_string(), Value::to_string);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, &path),
                    (p, q) => Some((path, show(p), show(q))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_json_path() {
        let a =
            serde_json::json!({"train": {"lr": 0.1, "epochs": 3}, "methods": [{"s": 0}, {"s": 4}]});
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b, ""), None);
        b["methods"][1]["s"] = 5.into();
        assert_eq!(
            first_difference(&a, &b, ""),
            Some(("methods[1].s".into(), "4".into(), "5".into()))
        );
        b["train"]["seed"] = 3.into();
        assert_eq!(
            first_difference(&a, &b, ""),
            Some(("methods[1].s".into(), "4".into(), "5".into())),
            "keys in order: methods before train"
        );
        b["methods"][1]["s"] = 4.into();
        assert_eq!(
            first_difference(&a, &b, ""),
            Some(("train.seed".into(), "absent".into(), "3".into()))
        );
    }

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
