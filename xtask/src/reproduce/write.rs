//! The reproduction's files: per table Markdown, CSV and a PNG chart; the manifest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::paper::{Metric, PaperTables, Table};
use super::row::{Cost, Effort, MetricCell, RowResult};
use super::{ReproduceArgs, git_revision, locked_version, rustc_version, workspace_root};
use crate::bench::{Machine, machine};
use crate::chart::{Bar, DBPS, TORCH, bar_chart};

/// A results folder that holds nothing yet (`-2`, `-3`, … appended when taken).
pub fn fresh_dir(wanted: &Path) -> Result<PathBuf> {
    Ok(dbps_train::run_dir::fresh_run_dir(wanted)?)
}

/// JSON through a temporary file and a rename.
pub fn json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    Ok(dbps_model::atomic_write::write_json_atomic(path, value)?)
}

/// What produced a results folder.
#[derive(Debug, Serialize)]
pub struct Manifest {
    command: String,
    started_utc: String,
    git_revision: String,
    backend: String,
    machine: Machine,
    versions: BTreeMap<&'static str, String>,
    data_root: PathBuf,
    effort: Effort,
    /// Where each row's config is; the config as it ran (seed included) is in `results.json`.
    configs: &'static str,
}

impl Manifest {
    /// The facts of this invocation.
    pub fn new(args: &ReproduceArgs, backend: &str, stamp: &str, effort: &Effort) -> Result<Self> {
        let root = workspace_root();
        let mut versions = BTreeMap::new();
        versions.insert("dbps", env!("CARGO_PKG_VERSION").to_string());
        versions.insert("burn", locked_version(&root, "burn")?);
        versions.insert("rustc", rustc_version());
        Ok(Self {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started_utc: stamp.to_string(),
            git_revision: git_revision(&root),
            backend: backend.to_string(),
            machine: machine(),
            versions,
            data_root: args.data_root.clone(),
            effort: *effort,
            configs: "configs/paper/<dataset>/<row>.json; results.json holds each as it ran",
        })
    }
}

fn mb(cost: &Cost) -> Option<f64> {
    cost.peak_bytes.map(|b| b as f64 / (1024.0 * 1024.0))
}

/// One line for the log.
pub fn summary(r: &RowResult) -> String {
    let mut parts = Vec::new();
    for (what, cost) in [("step", &r.train_cost), ("inference", &r.inference_cost)] {
        if let Some(c) = cost {
            parts.push(format!(
                "{what} {:.0} ms, peak {}",
                c.ms,
                mb(c).map_or_else(|| "-".into(), |m| format!("{m:.0} MiB"))
            ));
        }
    }
    match &r.metric {
        MetricCell::Measured { mean, .. } => parts.push(format!("test {mean:.1} %")),
        MetricCell::Missing(why) => parts.push(why.clone()),
    }
    if let Some(e) = &r.error {
        parts.push(format!("ERROR {e}"));
    }
    parts.join("; ")
}

/// One written row: every cell as text, in `COLUMNS` order, plus the two ratios the chart
/// draws.
struct Line {
    cells: Vec<String>,
    ours_ratio: Option<f64>,
    paper_ratio: Option<f64>,
}

const COLUMNS: [&str; 17] = [
    "dataset",
    "row",
    "M",
    "M′",
    "S",
    "r",
    "aggregator",
    "metric ours",
    "metric paper",
    "Δ metric",
    "peak MiB ours",
    "peak paper",
    "ms ours",
    "ms paper",
    "ms ÷ first row, ours",
    "ms ÷ first row, paper",
    "note",
];

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// The cells of every row of one table; ratios against the first row of the same dataset.
fn lines(tables: &PaperTables, rows: &[&RowResult]) -> Vec<Line> {
    let mut first: BTreeMap<&str, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut out = Vec::new();
    for r in rows {
        let row = &r.row;
        let paper = row.paper.clone().unwrap_or_default();
        let cost = r.train_cost.as_ref().or(r.inference_cost.as_ref());
        let ours_ms = cost.map(|c| c.ms);
        let base = first
            .entry(row.dataset.as_str())
            .or_insert((ours_ms, paper.ms));
        let ratio = |v: Option<f64>, b: Option<f64>| match (v, b) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        };
        let ours_ratio = ratio(ours_ms, base.0);
        let paper_ratio = ratio(paper.ms, base.1);
        let metric_name =
            tables
                .datasets
                .get(&row.dataset)
                .map_or("accuracy", |d| match d.metric {
                    Metric::Accuracy => "acc",
                    Metric::Auc => "AUC",
                });
        let (ours_metric, note) = match &r.metric {
            MetricCell::Measured {
                mean,
                tasks,
                test_images,
                epochs,
            } => {
                let per_task = if tasks.len() > 1 {
                    tasks
                        .iter()
                        .map(|(t, a)| format!("{t} {a:.1}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                        + "; "
                } else {
                    String::new()
                };
                (
                    Some(*mean),
                    format!(
                        "{per_task}{metric_name} on {test_images} test images after {epochs} epochs"
                    ),
                )
            }
            MetricCell::Missing(why) => (None, why.clone()),
        };
        let note = match &r.error {
            Some(e) => format!("{note}; error: {e}"),
            None => note,
        };
        let delta = ours_metric.zip(paper.metric).map(|(o, p)| o - p);
        let peak_paper = match (paper.vram_gb, paper.memory_mb) {
            (Some(gb), _) => format!("{gb} GB"),
            (None, Some(mb)) => format!("{mb} MB"),
            _ => "–".into(),
        };
        let count = |v: Option<usize>| v.map_or_else(|| "–".into(), |v| v.to_string());
        out.push(Line {
            cells: vec![
                row.dataset.clone(),
                row.row.clone(),
                count(row.m),
                count(row.m_eval),
                count(row.s),
                opt(row.drop, 2),
                row.aggregator.clone().unwrap_or_else(|| "–".into()),
                opt(ours_metric, 1),
                opt(paper.metric, 1),
                delta.map_or_else(|| "–".into(), |d| format!("{d:+.1}")),
                opt(cost.and_then(mb), 0),
                peak_paper,
                opt(ours_ms, 0),
                opt(paper.ms, 0),
                opt(ours_ratio, 2),
                opt(paper_ratio, 2),
                note,
            ],
            ours_ratio,
            paper_ratio,
        });
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `tableN.md`, `tableN.csv` and `tableN.png` for every table with rows.
pub fn tables(
    out: &Path,
    tables: &PaperTables,
    results: &[RowResult],
    device: &str,
    quick: bool,
) -> Result<()> {
    for table in [Table::One, Table::Two, Table::Three, Table::MegapixelMnist] {
        let rows: Vec<&RowResult> = results.iter().filter(|r| r.table == table).collect();
        if rows.is_empty() {
            continue;
        }
        let lines = lines(tables, &rows);
        let stem = table.stem();

        let mut csv = COLUMNS.join(",") + "\n";
        for line in &lines {
            csv += &(line
                .cells
                .iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(",")
                + "\n");
        }
        let csv_path = out.join(format!("{stem}.csv"));
        std::fs::write(&csv_path, csv)
            .with_context(|| format!("cannot write {}", csv_path.display()))?;

        let what = if table == Table::Three {
            "one inference batch of 16"
        } else {
            "one training step of a batch of 16"
        };
        let memory = if device.starts_with("cpu") {
            "peak heap growth during the step (tracking allocator)"
        } else {
            "growth of the device memory pool during the step (an upper bound on the peak)"
        };
        let mut md = format!("# {}\n\n", table.title());
        let _ = writeln!(
            md,
            "Ours: {device}{}. Cost columns time {what} on generated input of the row's geometry (cost does not depend on pixel values); memory is the {memory}. The paper's figures were taken on a GPU: compare the ratios to each dataset's first row, not the absolute numbers. Metric: test accuracy (or AUC) of the best-on-validation weights, mean over tasks.\n",
            if quick {
                ", `--quick` (few timed steps; 2 epochs on at most 192 images per split)"
            } else {
                ""
            }
        );
        let _ = writeln!(md, "Paper figures: {}.\n", tables.source);
        md += &format!(
            "| {} |\n|{}\n",
            COLUMNS.join(" | "),
            "---|".repeat(COLUMNS.len())
        );
        for line in &lines {
            md += &format!("| {} |\n", line.cells.join(" | "));
        }
        let md_path = out.join(format!("{stem}.md"));
        std::fs::write(&md_path, md)
            .with_context(|| format!("cannot write {}", md_path.display()))?;

        let mut bars = Vec::new();
        for (line, r) in lines.iter().zip(&rows) {
            let label = format!("{} {}", r.row.dataset, r.row.row);
            if let Some(v) = line.ours_ratio {
                bars.push(Bar {
                    label: format!("{label} (dbps)"),
                    value: v,
                    color: DBPS,
                });
            }
            if let Some(v) = line.paper_ratio {
                bars.push(Bar {
                    label: format!("{label} (paper)"),
                    value: v,
                    color: TORCH,
                });
            }
        }
        if !bars.is_empty() {
            bar_chart(
                &out.join(format!("{stem}.png")),
                &format!("{}: ms relative to each dataset's first row", table.title()),
                "x",
                &bars,
            )?;
        }
    }
    Ok(())
}
