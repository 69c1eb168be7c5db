//! PyTorch figures written by `../shared/bench/torch_step_bench.py` on the same machine, read
//! only (the project runs no Python), and checked against the rows they are compared with: a
//! figure of another geometry, batch, thread count or statistic would make the ratio a lie.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::row::{HarnessTerms, Row};

/// The harness configs dbps has a row for: (config, the row it is compared with, patch side
/// the config's name stands for).
const COMPARED: [(&str, &str, usize); 5] = [
    ("mnist_ips", "step/mnist-ips", 50),
    ("cqu_ips_m12", "step/cqu-ips-m12", 100),
    ("cqu_ips_m108", "step/cqu-ips-m108", 100),
    ("enc_r18_2stage_1ch_50px", "encoder/mnist-native", 50),
    ("enc_r18_4stage_100px", "encoder/cqu-native", 100),
];

/// Timed steps (after at least one warm-up) the comparison's median needs on both sides.
pub const MIN_TIMED_STEPS: usize = 3;

/// One PyTorch result: a training step or an encoder throughput.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// The harness's config name (`mnist_ips`, `cqu_ips_m12`, `enc_r18_4stage_100px`, …).
    pub config: String,
    /// Run with `--tuned` (channels-last; a frozen TorchScript graph for the encoder).
    pub tuned: bool,
    /// The dbps row it is compared with.
    pub row: String,
    /// Intra-op threads of the PyTorch run.
    pub threads: usize,
    /// Median milliseconds per training step.
    pub ms_per_step: Option<f64>,
    /// Median milliseconds of the selection part of a step.
    pub ms_selection: Option<f64>,
    /// Growth of the process's peak resident memory from before the warm-up step, MB.
    pub peak_rss_delta_mb: Option<f64>,
    /// Median no-gradient encoder throughput.
    pub patches_per_s: Option<f64>,
    /// Which file it came from.
    pub file: PathBuf,
}

impl Reference {
    /// `mnist_ips` or `mnist_ips --tuned`: how results and summaries name it.
    pub fn key(&self) -> String {
        key(&self.config, self.tuned)
    }
}

/// The key of a harness config, tuned or not.
pub fn key(config: &str, tuned: bool) -> String {
    if tuned {
        format!("{config} --tuned")
    } else {
        config.to_string()
    }
}

/// The references of a sitting and the thread count they ran on (which dbps's rows use).
#[derive(Debug, Clone, Default)]
pub struct References {
    /// Keyed by [`Reference::key`].
    pub by_key: BTreeMap<String, Reference>,
    /// The threads every reference ran on (`None` without references).
    pub threads: Option<usize>,
}

/// Reads the harness's JSON files and checks each against the dbps row it will be compared
/// with (`rows`: this sitting's rows); any difference is an error naming the file and field.
pub fn read(files: &[PathBuf], rows: &[Row]) -> Result<References> {
    let mut out = References::default();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!(
                "cannot read reference file {}: pass a JSON file that torch_step_bench.py wrote with --json-out",
                file.display()
            )
        })?;
        let value: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not the JSON of one torch_step_bench.py run (write it with --json-out)",
                file.display()
            )
        })?;
        let r = check(file, &value, rows)?;
        match out.threads {
            None => out.threads = Some(r.threads),
            Some(t) if t != r.threads => bail!(
                "{}: threads = {} but the other reference files ran on {t}: run every harness config with the same --threads",
                file.display(),
                r.threads
            ),
            Some(_) => {}
        }
        if let Some(previous) = out.by_key.get(&r.key()) {
            bail!(
                "{} and {} are both {}: pass one file per config (and per --tuned)",
                previous.file.display(),
                file.display(),
                r.key()
            );
        }
        out.by_key.insert(r.key(), r);
    }
    Ok(out)
}

/// One file's fields against the row it is compared with.
fn check(file: &Path, v: &Value, rows: &[Row]) -> Result<Reference> {
    let name = file.display();
    let Some(config) = v.get("config").and_then(Value::as_str) else {
        bail!("{name} has no \"config\" field: it is not a torch_step_bench.py result");
    };
    let Some(&(_, row_id, patch)) = COMPARED.iter().find(|(c, ..)| *c == config) else {
        bail!(
            "{name}: config {config} has no dbps row to compare with (use {}; DBPS is compared with IPS inside dbps)",
            COMPARED.map(|c| c.0).join(", ")
        );
    };
    let Some(row) = rows.iter().find(|r| r.id == row_id) else {
        bail!(
            "{name}: config {config} is compared with row {row_id}, which this sitting does not run"
        );
    };
    let int = |key: &str| -> Result<usize> {
        v.get(key)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .with_context(|| format!("{name}: no whole-number \"{key}\" field (a result of an older harness? rerun it)"))
    };
    let expect = |field: &str, theirs: usize, ours: usize| -> Result<()> {
        if theirs != ours {
            bail!(
                "{name}: {field} = {theirs}, but dbps's row {row_id} runs {field} = {ours}: rerun the harness config {config} with its defaults"
            );
        }
        Ok(())
    };
    let terms: HarnessTerms = row.harness_terms();
    expect("batch", int("batch")?, terms.batch)?;
    let step = v.get("family").and_then(Value::as_str) != Some("enc");
    if step {
        for (field, ours) in [("M", terms.m), ("I", terms.l), ("n_patches_in", terms.n)] {
            let ours = ours.with_context(|| format!("row {row_id} has no {field}"))?;
            expect(field, int(field)?, ours)?;
        }
        let (warmup, timed) = (int("warmup")?, int("steps_timed")?);
        if warmup < 1 || timed < MIN_TIMED_STEPS {
            bail!(
                "{name}: {timed} timed steps after {warmup} warm-up; the comparison takes the median of at least {MIN_TIMED_STEPS} timed steps after 1 warm-up on both sides: rerun with --warmup 1 --steps {MIN_TIMED_STEPS}"
            );
        }
    }
    // The harness's patch sizes live in its config table; the config's name stands for them.
    expect("patch side", patch, terms.patch)?;
    let tuned = v.get("tuned").and_then(Value::as_bool).with_context(|| {
        format!("{name}: no \"tuned\" field (a result of an older harness? rerun it)")
    })?;
    let num = |key: &str| v.get(key).and_then(Value::as_f64);
    Ok(Reference {
        config: config.to_string(),
        tuned,
        row: row_id.to_string(),
        threads: int("threads")?,
        ms_per_step: num("ms_median"),
        ms_selection: num("ms_select_median"),
        peak_rss_delta_mb: num("peak_rss_delta_mb"),
        patches_per_s: num("patches_per_s_median"),
        file: file.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::row::catalogue;
    use super::*;
    use serde_json::json;

    fn mnist() -> Value {
        json!({"config": "mnist_ips", "family": "ips", "tuned": false, "threads": 2,
               "batch": 16, "n_patches_in": 900, "M": 100, "I": 100, "steps_timed": 3,
               "warmup": 1, "ms_median": 80000.0, "peak_rss_delta_mb": 1758.9})
    }

    fn check_value(v: &Value) -> Result<Reference> {
        check(Path::new("r.json"), v, &catalogue(true))
    }

    #[test]
    fn a_matching_file_is_read() {
        let r = check_value(&mnist()).unwrap();
        assert_eq!(
            (r.key(), r.row.as_str(), r.threads),
            ("mnist_ips".into(), "step/mnist-ips", 2)
        );
        let mut tuned = mnist();
        tuned["tuned"] = json!(true);
        assert_eq!(check_value(&tuned).unwrap().key(), "mnist_ips --tuned");
    }

    #[test]
    fn every_mismatch_names_its_field() {
        for (field, value) in [
            ("batch", json!(8)),
            ("M", json!(50)),
            ("I", json!(32)),
            ("n_patches_in", json!(400)),
        ] {
            let mut v = mnist();
            v[field] = value;
            let err = check_value(&v).unwrap_err().to_string();
            assert!(err.contains(&format!("{field} = ")), "{field}: {err}");
        }
        let mut v = mnist();
        v["steps_timed"] = json!(1);
        assert!(
            check_value(&v)
                .unwrap_err()
                .to_string()
                .contains("median of at least 3")
        );
        let mut v = mnist();
        v["config"] = json!("cqu_dbps_m12_s60");
        assert!(
            check_value(&v)
                .unwrap_err()
                .to_string()
                .contains("no dbps row")
        );
        let mut v = mnist();
        v.as_object_mut().unwrap().remove("tuned");
        assert!(
            check_value(&v)
                .unwrap_err()
                .to_string()
                .contains("\"tuned\"")
        );
    }

    #[test]
    fn files_of_other_thread_counts_or_twice_one_config_are_refused() {
        let dir = std::env::temp_dir().join(format!("dbps-reference-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, v: &Value| {
            let path = dir.join(name);
            std::fs::write(&path, v.to_string()).unwrap();
            path
        };
        let rows = catalogue(true);
        let a = write("a.json", &mnist());
        let mut cqu = mnist();
        cqu["config"] = json!("cqu_ips_m12");
        cqu["n_patches_in"] = json!(108);
        cqu["M"] = json!(12);
        cqu["I"] = json!(32);
        let b = write("b.json", &cqu);
        let both = read(&[a.clone(), b.clone()], &rows).unwrap();
        assert_eq!((both.by_key.len(), both.threads), (2, Some(2)));
        cqu["threads"] = json!(4);
        let c = write("c.json", &cqu);
        let err = read(&[a.clone(), c], &rows).unwrap_err().to_string();
        assert!(err.contains("threads = 4"), "{err}");
        let err = read(&[a.clone(), a], &rows).unwrap_err().to_string();
        assert!(err.contains("one file per config"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
