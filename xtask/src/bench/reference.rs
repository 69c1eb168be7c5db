//! PyTorch figures written by `../shared/bench/torch_step_bench.py` on the same machine, read
//! only (the project runs no Python).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

/// One PyTorch result: a training step or an encoder throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// The harness's config name (`mnist_ips`, `cqu_ips_m12`, `enc_r18_4stage_100px`, …).
    pub config: String,
    /// Median milliseconds per training step.
    pub ms_per_step: Option<f64>,
    /// Median milliseconds of the selection part of a step.
    pub ms_selection: Option<f64>,
    /// Growth of the process's peak resident memory over the steps, MB.
    pub peak_rss_delta_mb: Option<f64>,
    /// Median no-gradient encoder throughput.
    pub patches_per_s: Option<f64>,
    /// Which file it came from.
    pub file: PathBuf,
}

/// Reads the harness's JSON files, keyed by config name.
pub fn read(files: &[PathBuf]) -> Result<BTreeMap<String, Reference>> {
    let mut out = BTreeMap::new();
    for file in files {
        let r = read_one(file)?;
        out.insert(r.config.clone(), r);
    }
    Ok(out)
}

fn read_one(file: &Path) -> Result<Reference> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read reference file {}: pass a JSON file that torch_step_bench.py wrote with --json-out",
            file.display()
        )
    })?;
    let v: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the JSON of one torch_step_bench.py run (write it with --json-out)",
            file.display()
        )
    })?;
    let Some(config) = v.get("config").and_then(Value::as_str) else {
        bail!(
            "{} has no \"config\" field: it is not a torch_step_bench.py result",
            file.display()
        );
    };
    let num = |key: &str| v.get(key).and_then(Value::as_f64);
    Ok(Reference {
        config: config.to_string(),
        ms_per_step: num("ms_median"),
        ms_selection: num("ms_select_median"),
        peak_rss_delta_mb: num("peak_rss_delta_mb"),
        patches_per_s: num("patches_per_s_median"),
        file: file.to_path_buf(),
    })
}
