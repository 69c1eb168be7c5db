//! Run directories that never overwrite an earlier result, and the lock that keeps two
//! processes from writing one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::{Result, TrainError};

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

/// File name of a run directory's lock (empty; what is locked is the open file).
pub const LOCK: &str = "run.lock";

/// An exclusive lock on a run directory, held while a process trains into it: an operating
/// system file lock on `run.lock`, so it ends with the process however the process ends
/// (`kill -9` included) and never needs removing by hand. A second process trying to write the
/// directory is refused instead of interleaving its checkpoints with the first's.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir`, or says which process-held lock stands in the way.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| TrainError::Write {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(TrainError::Checkpoint {
                what: "run directory",
                path: run_dir.to_path_buf(),
                reason: format!(
                    "is being written by another dbps process (it holds {LOCK}); wait for it to end, or train into a new directory (--output)"
                ),
            }),
            Err(TryLockError::Error(source)) => Err(TrainError::Write { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One holder at a time; the lock is free again once its holder is dropped.
    #[test]
    fn a_run_directory_has_one_writer() {
        let dir = std::env::temp_dir().join(format!("dbps-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err();
        assert!(err.to_string().contains("another dbps process"), "{err}");
        drop(first);
        RunLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
