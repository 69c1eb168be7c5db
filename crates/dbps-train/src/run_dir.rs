//! Run directories that never overwrite an earlier result.

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
