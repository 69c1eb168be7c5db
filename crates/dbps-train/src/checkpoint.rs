//! Checkpoint files: the recorder (every file written whole under a temporary name, then
//! renamed), where each epoch's weights go, the manifest that rebuilds a method's model, the
//! per-epoch history a resumed run continues, loading weights back, and the strategy that
//! saves after every epoch and prunes what is no longer needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn_train::metric::store::EventStoreClient;
use dbps_data::TaskSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{CheckedRun, RunConfig};
use dbps_model::atomic_write::{write_atomic, write_json_atomic};
use dbps_model::meter::StepMeter;
use dbps_model::step::{TrainedClassifier, TrainingMonitor};

use crate::report::EpochFigures;
use crate::{Result, TrainError};

/// The recorder of every checkpoint dbps writes: burn's named MessagePack format at full
/// precision, written to `NAME.mpk.tmp`, synced and renamed, so that a run killed while it
/// saves leaves no half-written file under a checkpoint's name.
#[derive(Debug, Default, Clone)]
pub struct CheckpointRecorder {
    format: NamedMpkFileRecorder<FullPrecisionSettings>,
}

impl CheckpointRecorder {
    /// The recorder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<B: Backend> Recorder<B> for CheckpointRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(
        &self,
        item: I,
        mut file: PathBuf,
    ) -> std::result::Result<(), RecorderError> {
        file.set_extension(<Self as FileRecorder<B>>::file_extension());
        let fail = |e: &dyn std::fmt::Display| {
            RecorderError::Unknown(format!("cannot write {}: {e}", file.display()))
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(&e))?;
        }
        let bytes = rmp_serde::to_vec_named(&item).map_err(|e| fail(&e))?;
        write_atomic(&file, &bytes).map_err(|e| fail(&e))
    }

    fn load_item<I: DeserializeOwned>(
        &self,
        file: &mut PathBuf,
    ) -> std::result::Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.format, file)
    }
}

impl<B: Backend> FileRecorder<B> for CheckpointRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// What a method directory holds besides burn-train's files: enough to rebuild the model, to
/// name its outputs and to find its best weights. Written before the first epoch and after
/// every epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodManifest {
    /// The run's whole config.
    pub config: RunConfig,
    /// Index of the method in `config.methods`.
    pub method: usize,
    /// Epoch whose weights did best on validation (0 before the first epoch ends).
    pub best_epoch: usize,
    /// Epochs completed.
    pub epochs: usize,
    /// The dataset's tasks, so that prediction needs no dataset (empty in manifests of
    /// earlier dbps versions: the dataset is opened instead).
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
}

/// File name of a [`MethodManifest`] inside a method directory.
pub const MANIFEST: &str = "method.json";

/// File name of the per-epoch figures inside a method directory (what `--resume` continues).
pub const HISTORY: &str = "history.json";

impl MethodManifest {
    /// Reads the manifest of a method directory, naming the file and the fix on failure.
    pub fn read(method_dir: &Path) -> Result<Self> {
        Ok(Self::read_checked(method_dir)?.0)
    }

    /// Reads the manifest of a method directory and checks the config the model is rebuilt
    /// from ([`MethodManifest::trained_config`]) once, returning both.
    pub fn read_checked(method_dir: &Path) -> Result<(Self, CheckedRun)> {
        let path = method_dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Checkpoint {
            what: "manifest",
            path: path.clone(),
            reason: format!(
                "cannot be read ({e}); pass a run directory written by `dbps train` or one of its method folders"
            ),
        })?;
        let manifest: Self = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            what: "manifest",
            path: path.clone(),
            reason: format!("is damaged ({e}); re-run `dbps train` to rewrite it"),
        })?;
        // The checkpoints hold every weight: the torchvision file the run started from is not
        // needed (nor read) to use them, and may have moved.
        let trained = manifest.trained_config().check()?;
        if manifest.method >= manifest.config.methods.len() {
            return Err(TrainError::Checkpoint {
                what: "manifest",
                path,
                reason: format!(
                    "names method {} but its config lists {}",
                    manifest.method,
                    manifest.config.methods.len()
                ),
            });
        }
        Ok((manifest, trained))
    }

    /// The config as a trained model is rebuilt from it: the run's, without the torchvision
    /// file the encoder started from (the checkpoints replace those weights).
    pub fn trained_config(&self) -> RunConfig {
        let mut config = self.config.clone();
        config.encoder = config.encoder.without_weights();
        config
    }

    /// The method's name in its config.
    pub fn name(&self) -> &str {
        &self.config.methods[self.method].name
    }

    /// The weight file of the best epoch — before any epoch has finished, the initial weights
    /// an import wrote ([`initial_weights_path`]) — or an error naming the directory when
    /// there are neither.
    pub fn best_checkpoint(&self, method_dir: &Path) -> Result<PathBuf> {
        let initial = initial_weights_path(method_dir);
        if self.best_epoch == 0 && initial.is_file() {
            return Ok(initial);
        }
        if self.best_epoch == 0 {
            return Err(TrainError::Checkpoint {
                what: "method directory",
                path: method_dir.to_path_buf(),
                reason: "holds no finished epoch yet; wait for the first epoch to end or resume the run with `dbps train --resume RUN_DIR`".into(),
            });
        }
        Ok(checkpoint_path(method_dir, self.best_epoch))
    }
}

/// Method directories under `dir`: `dir` itself if it holds a manifest, else its sub-folders
/// that do, in name order.
pub fn method_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join(MANIFEST).is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::Checkpoint {
        what: "checkpoint directory",
        path: dir.to_path_buf(),
        reason: format!("cannot be read ({e}); pass the run directory `dbps train` printed"),
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(MANIFEST).is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(TrainError::Checkpoint {
            what: "checkpoint directory",
            path: dir.to_path_buf(),
            reason: format!(
                "holds no {MANIFEST}; pass a run directory written by `dbps train` or one of its method folders"
            ),
        });
    }
    Ok(dirs)
}

/// Path of the model checkpoint of `epoch` in a method directory.
pub fn checkpoint_path(method_dir: &Path, epoch: usize) -> PathBuf {
    method_dir
        .join("checkpoint")
        .join(format!("model-{epoch}.mpk"))
}

/// Path of the weights a method starts from instead of a fresh initialisation (`model-0.mpk`,
/// written by `dbps import-ips`): what prediction uses before an epoch has finished and what
/// `--resume` trains on from epoch 1, with a fresh optimizer and schedule. Never pruned.
pub fn initial_weights_path(method_dir: &Path) -> PathBuf {
    checkpoint_path(method_dir, 0)
}

/// The three files burn-train writes per epoch: model, optimizer state, schedule position.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// Epochs whose model, optimizer and schedule files all exist in a method directory.
pub(crate) fn complete_epochs(method_dir: &Path) -> BTreeSet<usize> {
    let folder = method_dir.join("checkpoint");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return BTreeSet::new();
    };
    let names: BTreeSet<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names
        .iter()
        .filter_map(|n| n.strip_prefix("model-")?.strip_suffix(".mpk")?.parse().ok())
        .filter(|epoch: &usize| {
            PARTS
                .iter()
                .all(|part| names.contains(&format!("{part}-{epoch}.mpk")))
        })
        .collect()
}

/// The first of an epoch's three checkpoint files that cannot be read whole, with the reason.
///
/// A file is read whole when it decodes as one MessagePack value (its structure only: whether
/// the values fit the model is [`load_weights`]'s check). burn-train panics on an optimizer or
/// schedule file it cannot read, so `--resume` asks this first.
pub(crate) fn unreadable_part(method_dir: &Path, epoch: usize) -> Option<(PathBuf, String)> {
    PARTS.iter().find_map(|part| {
        let path = method_dir
            .join("checkpoint")
            .join(format!("{part}-{epoch}.mpk"));
        read_whole(&path).err().map(|reason| (path, reason))
    })
}

/// `Ok` when the file at `path` decodes as one whole MessagePack value; else why not, in
/// words ("is truncated or damaged (…)").
fn read_whole(path: &Path) -> std::result::Result<(), String> {
    match std::fs::read(path) {
        Err(e) => Err(format!("cannot be read ({e})")),
        Ok(bytes) => match rmp_serde::from_slice::<serde::de::IgnoredAny>(&bytes) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "is truncated or damaged ({} bytes: {e})",
                bytes.len()
            )),
        },
    }
}

/// Folder, inside a method's `checkpoint` folder, where `--resume` keeps the files of an epoch
/// it could not read (never pruned: they are evidence, and the epoch is trained again).
pub const DAMAGED: &str = "damaged";

/// Moves an epoch's checkpoint files into [`DAMAGED`], returning that folder.
pub(crate) fn set_aside(method_dir: &Path, epoch: usize) -> Result<PathBuf> {
    let folder = method_dir.join("checkpoint");
    let aside = folder.join(DAMAGED);
    std::fs::create_dir_all(&aside).map_err(|source| TrainError::Write {
        path: aside.clone(),
        source,
    })?;
    for part in PARTS {
        let name = format!("{part}-{epoch}.mpk");
        let from = folder.join(&name);
        if from.exists() {
            std::fs::rename(&from, aside.join(&name)).map_err(|source| TrainError::Write {
                path: from.clone(),
                source,
            })?;
        }
    }
    Ok(aside)
}

/// Deletes the checkpoint files of every epoch but `keep`, and leftover temporary files.
pub(crate) fn prune_checkpoints(method_dir: &Path, keep: &[usize]) -> Result<()> {
    let folder = method_dir.join("checkpoint");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let epoch = name
            .split_once('-')
            .and_then(|(_, rest)| rest.split('.').next()?.parse::<usize>().ok());
        let initial = name == "model-0.mpk";
        let stale = name.ends_with(".tmp") || epoch.is_some_and(|e| !initial && !keep.contains(&e));
        if stale {
            std::fs::remove_file(entry.path()).map_err(|source| TrainError::Write {
                path: entry.path(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The epoch with the highest validation accuracy (the earliest of ties), if any has one.
pub(crate) fn best_epoch(history: &[EpochFigures]) -> Option<usize> {
    history
        .iter()
        .fold(None::<&EpochFigures>, |best, e| match best {
            Some(b) if b.valid_accuracy >= e.valid_accuracy || e.valid_accuracy.is_nan() => Some(b),
            _ => Some(e),
        })
        .map(|e| e.epoch)
}

/// Reads the per-epoch figures a method directory recorded, keeping epochs up to `last`.
pub(crate) fn read_history(method_dir: &Path, last: usize) -> Result<Vec<EpochFigures>> {
    let path = method_dir.join(HISTORY);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Checkpoint {
        what: "history",
        path: path.clone(),
        reason: format!("cannot be read ({e})"),
    })?;
    let history: Vec<EpochFigures> =
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            what: "history",
            path: path.clone(),
            reason: format!(
                "is damaged ({e}); start a new run, the checkpoints cannot be resumed without it"
            ),
        })?;
    Ok(history.into_iter().filter(|e| e.epoch <= last).collect())
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
    // burn reports a file cut short as "the internal data format has changed since 0.14".
    read_whole(path).map_err(|reason| TrainError::Checkpoint {
        what: "weight file",
        path: path.to_path_buf(),
        reason: format!("{reason}; copy the run directory again, or train it again"),
    })?;
    let expected = ParamShapes::of(&model);
    let loaded = model
        .load_file(path.with_extension(""), &CheckpointRecorder::new(), device)
        .map_err(|e| TrainError::Checkpoint {
            what: "weight file",
            path: path.to_path_buf(),
            reason: format!(
                "does not fit this model ({e}); it was written by another config or is damaged"
            ),
        })?;
    // burn takes a recorded tensor whatever its shape: compare before anything runs on it.
    let found = ParamShapes::of(&loaded);
    let mismatch = expected
        .iter()
        .zip(&found)
        .find(|(a, b)| a != b)
        .map(|((name, want), (_, got))| format!("parameter `{name}` is {want:?} in the model the config builds but {got:?} in the file"))
        .or_else(|| (expected.len() != found.len()).then(|| format!("the model has {} parameters, the file {}", expected.len(), found.len())));
    match mismatch {
        Some(what) => Err(TrainError::Checkpoint {
            what: "weight file",
            path: path.to_path_buf(),
            reason: format!(
                "does not fit this model: {what}; it was written by another config (check the method.json beside it)"
            ),
        }),
        None => Ok(loaded),
    }
}

/// Every float parameter of a module, by path, with its shape, in visiting order.
struct ParamShapes {
    path: Vec<String>,
    shapes: Vec<(String, Vec<usize>)>,
}

impl ParamShapes {
    fn of<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
        let mut visitor = Self {
            path: Vec::new(),
            shapes: Vec::new(),
        };
        module.visit(&mut visitor);
        visitor.shapes
    }
}

impl<B: Backend> ModuleVisitor<B> for ParamShapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.shapes
            .push((self.path.join("."), param.val().dims().to_vec()));
    }
}

/// Records each epoch's figures (`history.json`, `method.json`), saves its checkpoint, prunes
/// older ones and starts the next epoch's randomness.
///
/// While training, the last two epochs and the best are kept: burn-train writes the model,
/// optimizer and schedule files on three threads, so the newest epoch may be incomplete when
/// a run is killed, and the one before is then the epoch a resumed run starts from. The
/// runner prunes to the last and the best once training ends.
pub(crate) struct EveryEpoch {
    pub(crate) history: Arc<Mutex<Vec<EpochFigures>>>,
    pub(crate) meter: StepMeter,
    pub(crate) monitor: TrainingMonitor,
    pub(crate) method_dir: PathBuf,
    pub(crate) manifest: MethodManifest,
    /// Epochs whose checkpoints are on disk.
    pub(crate) saved: BTreeSet<usize>,
    /// Called with the number of the epoch about to start.
    pub(crate) start_epoch: Box<dyn Fn(usize) + Send>,
}

impl EveryEpoch {
    fn record(&mut self, figures: EpochFigures) -> Result<Option<usize>> {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.push(figures);
        write_json_atomic(&self.method_dir.join(HISTORY), &*history)?;
        let best = best_epoch(&history);
        self.manifest.best_epoch = best.unwrap_or(0);
        self.manifest.epochs = history.len();
        write_json_atomic(&self.method_dir.join(MANIFEST), &self.manifest)?;
        Ok(best)
    }
}

impl CheckpointingStrategy for EveryEpoch {
    fn checkpointing(
        &mut self,
        epoch: usize,
        _store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let tally = self.monitor.take_epoch();
        let figures = EpochFigures {
            epoch,
            train_loss: tally.train_loss,
            train_accuracy: tally.train_accuracy,
            valid_loss: tally.valid_loss,
            valid_accuracy: tally.valid_accuracy,
            efficiency: self.meter.figures(),
        };
        self.meter.clear();
        tracing::info!(
            method = %self.manifest.name(),
            epoch,
            train_loss = figures.train_loss,
            train_acc = figures.train_accuracy,
            valid_loss = figures.valid_loss,
            valid_acc = figures.valid_accuracy,
            ms_per_step = figures.efficiency.as_ref().map(|e| e.ms_per_step),
            peak_step_mb = figures.efficiency.as_ref().and_then(|e| e.peak_step_bytes).map(|b| b as f64 / 1e6),
            "epoch done"
        );
        let best = match self.record(figures) {
            Ok(best) => best,
            Err(error) => {
                self.monitor.fail(error);
                return Vec::new();
            }
        };
        let mut actions = vec![CheckpointingAction::Save];
        self.saved.insert(epoch);
        let keep = |e: usize| e + 1 >= epoch || Some(e) == best;
        let stale: Vec<usize> = self.saved.iter().copied().filter(|&e| !keep(e)).collect();
        for e in stale {
            self.saved.remove(&e);
            actions.push(CheckpointingAction::Delete(e));
        }
        (self.start_epoch)(epoch + 1);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dbps-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        dir
    }

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join("checkpoint").join(name), b"x").unwrap();
    }

    /// An epoch counts only when all three of its files exist; a half-written file never has
    /// a checkpoint's name.
    #[test]
    fn an_epoch_is_complete_when_all_its_files_exist() {
        let dir = scratch("complete");
        for part in PARTS {
            touch(&dir, &format!("{part}-1.mpk"));
        }
        touch(&dir, "model-2.mpk");
        touch(&dir, "optim-2.mpk");
        touch(&dir, "scheduler-2.mpk.tmp");
        assert_eq!(complete_epochs(&dir), BTreeSet::from([1]));
        prune_checkpoints(&dir, &[1]).unwrap();
        let left: BTreeSet<String> = std::fs::read_dir(dir.join("checkpoint"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            BTreeSet::from(["model-1.mpk", "optim-1.mpk", "scheduler-1.mpk"].map(String::from))
        );
    }

    #[test]
    fn the_best_epoch_is_the_earliest_of_the_highest() {
        let epoch = |epoch, valid_accuracy| EpochFigures {
            epoch,
            train_loss: 0.0,
            train_accuracy: 0.0,
            valid_loss: 0.0,
            valid_accuracy,
            efficiency: None,
        };
        let history = [
            epoch(1, 50.0),
            epoch(2, 70.0),
            epoch(3, f64::NAN),
            epoch(4, 70.0),
        ];
        assert_eq!(best_epoch(&history), Some(2));
        assert_eq!(best_epoch(&[]), None);
    }
}
