//! `cargo xtask reproduce`: the paper's rows measured and written beside the paper's numbers.
//!
//! Every selected row gets its cost (ms per training step, peak memory; Table 3: per inference
//! batch of 16) measured on generated input of the row's geometry — cost does not depend on
//! pixel values — and, when its data (and ImageNet weights) sit under `--data-root`, its
//! accuracy trained on the real data. Writes `results/<UTC timestamp>/`: `tableN.md`,
//! `tableN.csv`, `tableN.png` per table, `results.json` (rewritten after every row) and
//! `manifest.json`.

mod paper;
mod row;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use paper::PaperTables;
use row::{Effort, RowResult};

/// Options of `cargo xtask reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// One table (1, 2 or 3); all tables and the megapixel-MNIST rows when absent.
    #[arg(long)]
    table: Option<u8>,
    /// One dataset: cqu-bpdd, fmow, ddr, mame, traffic-signs, camelyon16, megapixel-mnist.
    #[arg(long)]
    dataset: Option<String>,
    /// Where the datasets and weights are: the configs' `data/…` paths are taken relative to it
    /// (`DIR/cqu-bpdd`, `DIR/mnist`, `DIR/weights/resnet18-f37072fd.pth`, …).
    #[arg(long, default_value = "data")]
    data_root: PathBuf,
    /// Shrinks the work for 2 CPU cores: 3 timed steps per row, 2 epochs on at most 192 images
    /// per split where data is present.
    #[arg(long)]
    quick: bool,
    /// `cpu`, or `cuda` (GPU 0; `cargo xtask-cuda reproduce --device cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Parent of the timestamped results folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

fn log(msg: impl AsRef<str>) {
    dbps_model::progress::suspend_bars(|| eprintln!("[reproduce] {}", msg.as_ref()));
}

/// Runs the selected rows and writes the tables.
pub fn run(args: ReproduceArgs) -> Result<()> {
    match args.device.as_str() {
        "cpu" => reproduce::<Autodiff<Flex>>(&args, "cpu (burn-flex)", &Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => reproduce::<Autodiff<dbps_train::backend::CudaBackend>>(
            &args,
            "cuda:0 (burn-cuda)",
            &burn_cuda::CudaDevice::new(0),
        ),
        #[cfg(not(feature = "cuda"))]
        "cuda" => bail!(
            "--device cuda: this xtask was built without CUDA; run `cargo xtask-cuda reproduce --device cuda`"
        ),
        other => bail!("--device {other}: use cpu or cuda"),
    }
}

/// The workspace root (configs are named relative to it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reproduce<B: AutodiffBackend>(
    args: &ReproduceArgs,
    device_name: &str,
    device: &B::Device,
) -> Result<()> {
    let root = workspace_root();
    let tables = PaperTables::read(&root)?;
    let rows = tables.select(args.table, args.dataset.as_deref())?;
    let effort = Effort::new(args.quick);
    let stamp = utc_stamp(SystemTime::now());
    let out = write::fresh_dir(&args.out.join(&stamp))?;
    let runs = out.join("runs");
    log(format!(
        "{} rows on {device_name}{}; writing {}",
        rows.len(),
        if args.quick { ", quick" } else { "" },
        out.display()
    ));
    let manifest = write::Manifest::new(args, device_name, &stamp, &effort)?;
    write::json(&out.join("manifest.json"), &manifest)?;

    let context = row::RowContext::<B> {
        effort: &effort,
        runs: &runs,
        device,
        device_name,
    };
    let start = Instant::now();
    let mut results: Vec<RowResult> = Vec::new();
    // Rows of several tables share configs: each config's cost and accuracy are measured once.
    let mut done: BTreeMap<(bool, PathBuf), RowResult> = BTreeMap::new();
    let bar = dbps_model::progress::progress_bar(rows.len(), "reproduction rows");
    for (i, (table, row)) in rows.iter().enumerate() {
        bar.set_position(i as u64);
        let dataset = tables.dataset(row)?;
        let inference = *table == paper::Table::Three;
        let key = row.config.clone().map(|c| (inference, c));
        if let Some(earlier) = key.as_ref().and_then(|k| done.get(k)) {
            let mut again = earlier.clone();
            again.table = *table;
            again.row = (*row).clone();
            results.push(again);
            log(format!(
                "[{}/{}] {} {}: measured above (same config)",
                i + 1,
                rows.len(),
                row.dataset,
                row.row
            ));
            continue;
        }
        log(format!(
            "[{}/{}] {} {} ({:.0} s so far)",
            i + 1,
            rows.len(),
            row.dataset,
            row.row,
            start.elapsed().as_secs_f64()
        ));
        let resolved = match &row.config {
            Some(path) => {
                let resolved = row::resolve(&root, path, &args.data_root, &effort)?;
                let n = resolved.config.grid().len();
                let grid_agrees = resolved.config.bags() || Some(n) == dataset.patches;
                if resolved.config.patch.size != dataset.patch || !grid_agrees {
                    bail!(
                        "{}: {n} patches of {} px, but the paper's {} has {} of {} px ({}); fix the config",
                        path.display(),
                        resolved.config.patch.size,
                        dataset.title,
                        dataset
                            .patches
                            .map_or_else(|| "–".into(), |p| p.to_string()),
                        dataset.patch,
                        paper::TABLES
                    );
                }
                Some(resolved)
            }
            None => None,
        };
        let result = row::measure_row::<B>(*table, row, dataset, resolved.as_ref(), &context);
        log(format!("    {}", write::summary(&result)));
        if let Some(key) = key {
            done.insert(key, result.clone());
        }
        results.push(result);
        write::json(&out.join("results.json"), &results)?;
    }
    bar.finish_and_clear();
    write::tables(&out, &tables, &results, device_name, args.quick)?;
    log(format!(
        "done in {:.0} s: {}",
        start.elapsed().as_secs_f64(),
        out.display()
    ));
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` of a UTC time (days to civil date after Howard Hinnant's algorithm).
fn utc_stamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The run's facts for the manifest: `git rev-parse HEAD` and whether the tree had changes.
fn git_revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain"]) {
            Some(changes) if !changes.is_empty() => format!("{rev} (with uncommitted changes)"),
            _ => rev,
        },
        None => "unknown (not a git checkout)".into(),
    }
}

/// `rustc --version`, for the manifest.
fn rustc_version() -> String {
    std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The version of `crate` in the workspace's `Cargo.lock`.
fn locked_version(root: &Path, name: &str) -> Result<String> {
    let lock =
        std::fs::read_to_string(root.join("Cargo.lock")).context("cannot read Cargo.lock")?;
    let needle = format!("name = \"{name}\"\nversion = \"");
    let at = lock
        .find(&needle)
        .with_context(|| format!("Cargo.lock has no package {name}"))?
        + needle.len();
    Ok(lock[at..].split('"').next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamps_are_civil_dates() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        // 2000-02-29 12:34:56, a leap day.
        assert_eq!(at(951_827_696), "20000229T123456Z");
        // 2026-11-24 01:48:39.
        assert_eq!(at(1_795_484_919), "20261124T014839Z");
    }

    #[test]
    fn burn_is_pinned_in_the_lock_file() {
        assert_eq!(locked_version(&workspace_root(), "burn").unwrap(), "0.21.0");
    }
}
