//! `cargo xtask bench`: every figure of `docs/performance.md`, measured in one sitting.
//!
//! Each row runs in a fresh process (`xtask bench-row`, [`row`]) on the thread count of the
//! PyTorch reference files, and reports the median of its timed steps after one warm-up and
//! the growth of its peak resident set from before the warm-up — the harness's statistic and
//! meter — with the heap meter beside it. Writes `results.json`, `summary.md` (every check
//! marked passed or FAILED), the rows' own JSON under `rows/` and PNG charts. With
//! `--reference` it reads PyTorch's figures from the same machine, checks that each was taken
//! on the geometry, batch, thread count and statistic of the row it is compared with, and
//! prints the ratios.

mod chart;
pub(crate) mod measure;
mod reference;
mod resident;
pub(crate) mod row;
pub(crate) mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::{Autodiff, Flex};
use clap::Args;
use dbps_model::classifier::SelectionEngine;
use serde::Serialize;

use measure::{EncoderResult, InferenceResult, SelectionResult, StepResult};
use reference::{Reference, References};
use row::{Row, RowResult};
use scenario::{Geometry, Method};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The reduced set: 3 timed steps a row instead of 5, shorter encoder timing, no training
    /// step at N = 14,400 (its selection phase is still measured).
    #[arg(long)]
    quick: bool,
    /// Where to run: `cpu`, or `cuda` (GPU 0; needs xtask built with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// JSON files written by `../shared/bench/torch_step_bench.py --json-out` on this machine,
    /// with and without `--tuned`; dbps's rows run on their thread count.
    #[arg(long, num_args = 1..)]
    reference: Vec<PathBuf>,
    /// Run only these rows (ids as in `rows/`, e.g. `step/cqu-ips-m12`); checks whose rows
    /// did not run are marked not measured.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output folder.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Profile one setting and stop: training steps of `mnist`, `cqu-ips`, `cqu-dbps`,
    /// `cqu-drop`; the gradient pass alone, `cqu-grad` (192 patches) or `mnist-grad` (1,600);
    /// `encoders` (for `perf record`; writes nothing).
    #[arg(long)]
    profile: Option<String>,
}

/// A dbps figure beside PyTorch's.
#[derive(Debug, Clone, Serialize)]
struct Comparison {
    what: String,
    /// The reference's key (`mnist_ips`, `mnist_ips --tuned`, …).
    reference: String,
    dbps: f64,
    pytorch: f64,
    unit: &'static str,
    /// Time: PyTorch's over dbps's (how many times faster dbps is); rate: dbps's over
    /// PyTorch's; memory: dbps's over PyTorch's.
    ratio: f64,
}

/// One target of the sitting: a measured ratio against its bound.
#[derive(Debug, Clone, Serialize)]
struct Check {
    what: String,
    /// The ratio, `None` when a row or reference it needs was not measured.
    value: Option<f64>,
    /// `≥ 1.5`, `≤ 1.05`, ….
    bound: String,
    /// `None`: not measured.
    passed: Option<bool>,
}

impl Check {
    fn at_least(what: impl Into<String>, value: Option<f64>, bound: f64) -> Self {
        Self {
            what: what.into(),
            value,
            bound: format!("≥ {bound}"),
            passed: value.map(|v| v >= bound),
        }
    }

    fn at_most(what: impl Into<String>, value: Option<f64>, bound: f64) -> Self {
        Self {
            what: what.into(),
            value,
            bound: format!("≤ {bound}"),
            passed: value.map(|v| v <= bound),
        }
    }

    /// How the summary marks it: a failed check stands out, a missing one is never a pass.
    fn verdict(&self) -> &'static str {
        match self.passed {
            Some(true) => "passed",
            Some(false) => "**FAILED**",
            None => "not measured",
        }
    }
}

/// The machine a measurement ran on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) threads: usize,
    kernel_isa: String,
    os: String,
}

#[derive(Debug, Clone, Serialize)]
struct Results {
    command: String,
    machine: Machine,
    /// Threads of every row's rayon pool (the references' count).
    row_threads: usize,
    /// Backend and device measured.
    device: String,
    unix_time: u64,
    quick: bool,
    seconds: f64,
    steps: Vec<StepResult>,
    selection: Vec<SelectionResult>,
    encoders: Vec<EncoderResult>,
    inference: Vec<InferenceResult>,
    reference: BTreeMap<String, Reference>,
    comparisons: Vec<Comparison>,
    checks: Vec<Check>,
}

/// CPU model, threads and the kernels' instruction set.
pub(crate) fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel_isa: dbps_kernels::Isa::detect()
            .map_or_else(|e| e.to_string(), |isa| isa.to_string()),
        os: std::env::consts::OS.into(),
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Runs the bench and writes its files.
pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(name) = &args.profile {
        if args.device != "cpu" {
            bail!(
                "--profile runs on the CPU only (for perf); drop --device {}",
                args.device
            );
        }
        return profile(name);
    }
    let device = match args.device.as_str() {
        "cpu" => "cpu (burn-flex)",
        #[cfg(feature = "cuda")]
        "cuda" => "cuda:0 (burn-cuda)",
        #[cfg(not(feature = "cuda"))]
        "cuda" => bail!(
            "--device cuda: this xtask was built without CUDA; run `cargo xtask-cuda bench --device cuda` (xtask built with --features cuda)"
        ),
        other => bail!("--device {other}: use cpu or cuda"),
    };
    measure_all(&args, device)
}

/// Every row in a process of its own, then the comparisons, checks and files.
fn measure_all(args: &BenchArgs, device: &str) -> Result<()> {
    let mut rows = row::catalogue(args.quick);
    for id in &args.only {
        if !rows.iter().any(|r| r.id == id) {
            bail!(
                "--only {id}: no such row (ids: {})",
                rows.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let references = reference::read(&args.reference, &rows)?;
    if !args.only.is_empty() {
        rows.retain(|r| args.only.iter().any(|id| id == r.id));
    }
    let threads = references
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rows_dir = args.out.join("rows");
    std::fs::create_dir_all(&rows_dir)
        .with_context(|| format!("cannot create output folder {}", rows_dir.display()))?;
    let start = Instant::now();
    let mut results = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        log(format!(
            "[{}/{}] {} ({threads} threads)",
            i + 1,
            rows.len(),
            row.id
        ));
        let r = run_row(args, row, threads, &rows_dir)?;
        log(format!("  {}", row_line(&r)));
        results.push(r);
    }
    let results = assemble(args, device, threads, start, results, references);
    write(&args.out, &results)
}

/// Runs `row` in a fresh `xtask bench-row` process and reads what it wrote.
fn run_row(args: &BenchArgs, row: &Row, threads: usize, dir: &Path) -> Result<RowResult> {
    let json = dir.join(format!("{}.json", row.id.replace('/', "-")));
    let exe = std::env::current_exe().context("cannot find this xtask binary to start a row")?;
    let mut command = Command::new(exe);
    command
        .args(["bench-row", "--row", row.id, "--device", &args.device])
        .args(["--threads", &threads.to_string()])
        .arg("--json-out")
        .arg(&json)
        // burn-flex and the kernels share rayon's global pool; the variable also reaches any
        // pool a dependency builds on its own.
        .env("RAYON_NUM_THREADS", threads.to_string());
    if args.quick {
        command.arg("--quick");
    }
    let status = command
        .status()
        .with_context(|| format!("cannot start the process of row {}", row.id))?;
    if !status.success() {
        bail!("row {} failed ({status}); its log is above", row.id);
    }
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("row {} wrote no {}", row.id, json.display()))?;
    let result: RowResult = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a row result", json.display()))?;
    if result.threads != threads {
        bail!(
            "row {} ran on {} threads, not the {threads} asked for",
            row.id,
            result.threads
        );
    }
    Ok(result)
}

/// One line of a row's figures for the log.
fn row_line(r: &RowResult) -> String {
    if let Some(s) = &r.step {
        format!(
            "median {:.0} ms/step of {:?}, peak-RSS growth {} MB, step heap {} MB",
            s.ms_median,
            s.timed_ms,
            mb(Some(s.peak_rss_growth_bytes)),
            mb(s.peak_heap_step_bytes)
        )
    } else if let Some(s) = &r.selection {
        format!(
            "{:.0} ms, peak-RSS growth {} MB, heap {} MB",
            s.ms,
            mb(Some(s.peak_rss_growth_bytes)),
            mb(s.peak_heap_bytes)
        )
    } else if let Some(e) = &r.encoder {
        format!("{:.0} patches/s", e.patches_per_s)
    } else if let Some(i) = &r.inference {
        format!(
            "{:.0} ms/batch, peak {} MB",
            i.ms_per_batch,
            mb(i.peak_bytes)
        )
    } else {
        "no figures".into()
    }
}

fn assemble(
    args: &BenchArgs,
    device: &str,
    threads: usize,
    start: Instant,
    rows: Vec<RowResult>,
    references: References,
) -> Results {
    let comparisons = compare(&rows, &references.by_key);
    let checks = checks(&rows, &references.by_key);
    let mut out = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        row_threads: threads,
        device: device.into(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: args.quick,
        seconds: start.elapsed().as_secs_f64(),
        steps: Vec::new(),
        selection: Vec::new(),
        encoders: Vec::new(),
        inference: Vec::new(),
        reference: references.by_key,
        comparisons,
        checks,
    };
    for r in rows {
        out.steps.extend(r.step);
        out.selection.extend(r.selection);
        out.encoders.extend(r.encoder);
        out.inference.extend(r.inference);
    }
    out
}

/// MB the harness means: it reports MiB (`ru_maxrss / 1024`).
fn harness_bytes(mib: f64) -> f64 {
    mib * 1024.0 * 1024.0
}

/// Every dbps row beside each reference compared with it: time (or rate) and, for steps, the
/// peak resident growth on both sides.
fn compare(rows: &[RowResult], references: &BTreeMap<String, Reference>) -> Vec<Comparison> {
    let mut out = Vec::new();
    for (key, r) in references {
        let Some(row) = rows.iter().find(|x| x.id == r.row) else {
            continue;
        };
        if let (Some(s), Some(ms)) = (&row.step, r.ms_per_step) {
            out.push(Comparison {
                what: format!("training step, {} {}", s.geometry, s.method),
                reference: key.clone(),
                dbps: s.ms_median,
                pytorch: ms,
                unit: "ms/step (median)",
                ratio: ms / s.ms_median,
            });
            if let Some(mib) = r.peak_rss_delta_mb {
                let (ours, theirs) = (s.peak_rss_growth_bytes as f64, harness_bytes(mib));
                out.push(Comparison {
                    what: format!("step memory, {} {}", s.geometry, s.method),
                    reference: key.clone(),
                    dbps: ours / 1e6,
                    pytorch: theirs / 1e6,
                    unit: "MB peak-RSS growth",
                    ratio: ours / theirs,
                });
            }
        }
        if let (Some(e), Some(rate)) = (&row.encoder, r.patches_per_s) {
            out.push(Comparison {
                what: format!("no-gradient encoder, {}", e.geometry),
                reference: key.clone(),
                dbps: e.patches_per_s,
                pytorch: rate,
                unit: "patches/s",
                ratio: e.patches_per_s / rate,
            });
        }
    }
    out
}

/// The targets of issue 18, each a ratio within this sitting.
fn checks(rows: &[RowResult], references: &BTreeMap<String, Reference>) -> Vec<Check> {
    let find = |id: &str| rows.iter().find(|r| r.id == id);
    let step = |id: &str| find(id)?.step.as_ref();
    let torch = |config: &str, tuned: bool| references.get(&reference::key(config, tuned));
    let mut out = Vec::new();
    for (config, id) in [
        ("mnist_ips", "step/mnist-ips"),
        ("cqu_ips_m12", "step/cqu-ips-m12"),
        ("cqu_ips_m108", "step/cqu-ips-m108"),
    ] {
        let speed = |tuned| Some(torch(config, tuned)?.ms_per_step? / step(id)?.ms_median);
        out.push(Check::at_least(
            format!("step speed-up over the official code, {id}"),
            speed(false),
            1.5,
        ));
        out.push(Check::at_least(
            format!("step speed-up over PyTorch --tuned, {id}"),
            speed(true),
            1.0,
        ));
        let memory = || {
            let theirs = harness_bytes(torch(config, false)?.peak_rss_delta_mb?);
            Some(step(id)?.peak_rss_growth_bytes as f64 / theirs)
        };
        out.push(Check::at_most(
            format!("step memory over the official code's (peak-RSS growth), {id}"),
            memory(),
            0.8,
        ));
    }
    for (config, id) in [
        ("enc_r18_2stage_1ch_50px", "encoder/mnist-native"),
        ("enc_r18_4stage_100px", "encoder/cqu-native"),
    ] {
        let ratio = || {
            Some(find(id)?.encoder.as_ref()?.patches_per_s / torch(config, true)?.patches_per_s?)
        };
        out.push(Check::at_least(
            format!("no-gradient encoder over PyTorch --tuned, {id}"),
            ratio(),
            1.0,
        ));
    }
    let time = |a: &str, b: &str| Some(step(a)?.ms_median / step(b)?.ms_median);
    let rss = |a: &str, b: &str| {
        Some(step(a)?.peak_rss_growth_bytes as f64 / step(b)?.peak_rss_growth_bytes as f64)
    };
    let heap = |a: &str, b: &str| {
        Some(step(a)?.peak_heap_step_bytes? as f64 / step(b)?.peak_heap_step_bytes? as f64)
    };
    let (ips, dbps, drop) = ("step/cqu-ips-m12", "step/cqu-dbps", "step/cqu-drop");
    for (what, value, bound) in [
        ("DBPS / IPS time (CQU)", time(dbps, ips), 1.05),
        (
            "DBPS / IPS memory, peak-RSS growth (CQU)",
            rss(dbps, ips),
            1.05,
        ),
        ("DBPS / IPS memory, step heap (CQU)", heap(dbps, ips), 1.05),
        ("DBPS r=0.3 / IPS time (CQU)", time(drop, ips), 0.85),
    ] {
        out.push(Check::at_most(what, value, bound));
    }
    for big in ["step/mnist-ips-3600", "step/mnist-ips-14400"] {
        if find(big).is_some() {
            out.push(Check::at_most(
                format!("step heap, {big} / N = 900"),
                heap(big, "step/mnist-ips"),
                1.05,
            ));
            out.push(Check::at_most(
                format!("step peak-RSS growth, {big} / N = 900"),
                rss(big, "step/mnist-ips"),
                1.05,
            ));
        }
    }
    let selection = |id: &str| find(id)?.selection.as_ref();
    for big in ["selection/mnist-3600", "selection/mnist-14400"] {
        let heap = || {
            Some(
                selection(big)?.peak_heap_bytes? as f64
                    / selection("selection/mnist-900")?.peak_heap_bytes? as f64,
            )
        };
        let rss = || {
            Some(
                selection(big)?.peak_rss_growth_bytes as f64
                    / selection("selection/mnist-900")?.peak_rss_growth_bytes as f64,
            )
        };
        out.push(Check::at_most(
            format!("selection-phase heap, {big} / N = 900"),
            heap(),
            1.05,
        ));
        out.push(Check::at_most(
            format!("selection-phase peak-RSS growth, {big} / N = 900"),
            rss(),
            1.05,
        ));
    }
    out
}

/// One warm-up and two timed training steps of one setting, for a profiler.
fn profile(name: &str) -> Result<()> {
    let (geometry, method) = match name {
        "mnist" => (Geometry::megapixel_mnist(1500), Method::ips(100, 100)),
        "cqu-ips" => (Geometry::cqu(), Method::ips(12, 32)),
        "cqu-dbps" => (Geometry::cqu(), Method::dbps(12, 60, 32, 0.0)),
        "cqu-drop" => (Geometry::cqu(), Method::dbps(12, 60, 32, 0.3)),
        "cqu-grad" => {
            let r = measure::gradient_pass(&Geometry::cqu(), 12 * measure::BATCH, 3)?;
            log_passes("cqu-grad", &r);
            return Ok(());
        }
        "mnist-grad" => {
            let g = Geometry::megapixel_mnist(1500);
            let r = measure::gradient_pass(&g, 100 * measure::BATCH, 3)?;
            log_passes("mnist-grad", &r);
            return Ok(());
        }
        "encoders" => {
            for g in [Geometry::megapixel_mnist(1500), Geometry::cqu()] {
                let r = measure::encoder_throughput::<Flex>(&g, true, 5.0, &Default::default())?;
                log(format!(
                    "{}: {:.0} patches/s native",
                    g.name, r.patches_per_s
                ));
            }
            return Ok(());
        }
        other => {
            bail!(
                "--profile {other}: use mnist, cqu-ips, cqu-dbps, cqu-drop, cqu-grad, mnist-grad or encoders"
            )
        }
    };
    let device = Default::default();
    let r = measure::train_steps::<Autodiff<Flex>>(
        &geometry,
        &method,
        SelectionEngine::Auto,
        2,
        &device,
    )?;
    log(format!(
        "{name}: steps {:?} + {:?} ms",
        r.warmup_ms, r.timed_ms
    ));
    Ok(())
}

fn log_passes(name: &str, passes: &[measure::GradientPass]) {
    for p in passes {
        log(format!(
            "{name}: forward {:.0} ms, backward {:.0} ms, heap peak {} MB",
            p.forward_ms,
            p.backward_ms,
            p.peak_heap_mb
                .map_or_else(|| "—".into(), |m| format!("{m:.1}"))
        ));
    }
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "—".into(), |b| format!("{:.1}", b as f64 / 1e6))
}

fn summary(r: &Results) -> String {
    let mut s = String::new();
    s += &format!(
        "# dbps bench\n\n`{}` — {} ({} threads, kernels: {}; every row in its own process on {} threads), {:.0} s{}.\n\n",
        r.command,
        r.machine.cpu,
        r.machine.threads,
        r.machine.kernel_isa,
        r.row_threads,
        r.seconds,
        if r.quick { ", quick set" } else { "" }
    );
    s += "## Checks\n\n| check | value | bound | result |\n|---|---|---|---|\n";
    for c in &r.checks {
        let value = c.value.map_or_else(|| "—".into(), |v| format!("{v:.3}"));
        s += &format!("| {} | {value} | {} | {} |\n", c.what, c.bound, c.verdict());
    }
    s += "\n## Training steps (batch 16; median of the timed steps after one warm-up, from the start of selection to the end of the optimizer step)\n\n";
    s += "Peak-RSS growth: the process's peak resident set after the last step minus its resident set before the warm-up (the harness's meter). Step heap: the largest heap peak above a timed step's start. Inputs included: the heap's highest level above the process's level before the model was built (weights, optimizer state, the batch).\n\n";
    s += "| geometry | method | N | ms/step (median) | timed steps ms | warm-up ms | peak-RSS growth MB | step heap MB | inputs included MB | trainable parameters |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for row in &r.steps {
        s += &format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            row.geometry,
            row.method,
            row.n,
            row.ms_median,
            ms_list(&row.timed_ms),
            ms_list(&row.warmup_ms),
            mb(Some(row.peak_rss_growth_bytes)),
            mb(row.peak_heap_step_bytes),
            mb(row.inputs_included_bytes),
            row.parameters,
        );
    }
    if !r.selection.is_empty() {
        s += "\n## Selection phase alone (one batch of 16 through `forward_eval`, fresh process)\n\n| geometry | method | N | ms | peak-RSS growth MB | heap MB |\n|---|---|---|---|---|---|\n";
        for x in &r.selection {
            s += &format!(
                "| {} | {} | {} | {:.0} | {} | {} |\n",
                x.geometry,
                x.method,
                x.n,
                x.ms,
                mb(Some(x.peak_rss_growth_bytes)),
                mb(x.peak_heap_bytes)
            );
        }
    }
    s += "\n## No-gradient encoder (batch 64, median)\n\n| geometry | engine | patches/s |\n|---|---|---|\n";
    for e in &r.encoders {
        s += &format!(
            "| {} | {} | {:.0} |\n",
            e.geometry, e.engine, e.patches_per_s
        );
    }
    s += "\n## Inference per batch of 16 (Table 3, median)\n\n| geometry | method | ms/batch | peak MB |\n|---|---|---|---|\n";
    for i in &r.inference {
        s += &format!(
            "| {} | {} | {:.0} | {} |\n",
            i.geometry,
            i.method,
            i.ms_per_batch,
            mb(i.peak_bytes)
        );
    }
    if !r.comparisons.is_empty() {
        s += "\n## Against PyTorch on this machine (`--reference`)\n\nRatio: for time, PyTorch's over dbps's (dbps's speed-up); for a rate, dbps's over PyTorch's; for memory, dbps's over PyTorch's.\n\n| what | reference | dbps | PyTorch | unit | ratio |\n|---|---|---|---|---|---|\n";
        for c in &r.comparisons {
            s += &format!(
                "| {} | {} | {:.0} | {:.0} | {} | {:.2} |\n",
                c.what, c.reference, c.dbps, c.pytorch, c.unit, c.ratio
            );
        }
    }
    s
}

fn ms_list(ms: &[f64]) -> String {
    ms.iter()
        .map(|m| format!("{m:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write(out: &Path, r: &Results) -> Result<()> {
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = out.join("summary.md");
    let text = summary(r);
    std::fs::write(&md, &text).with_context(|| format!("cannot write {}", md.display()))?;
    chart::write_charts(out, r)?;
    println!("{text}");
    log(format!(
        "wrote {}, {} and charts",
        json.display(),
        md.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_marked_failed_or_not_measured_never_silently_passed() {
        assert_eq!(Check::at_least("a", Some(1.2), 1.5).verdict(), "**FAILED**");
        assert_eq!(Check::at_least("a", Some(1.5), 1.5).verdict(), "passed");
        assert_eq!(Check::at_most("b", Some(0.81), 0.8).verdict(), "**FAILED**");
        assert_eq!(Check::at_most("b", None, 0.8).verdict(), "not measured");
    }

    #[test]
    fn checks_without_rows_or_references_are_not_measured() {
        let checks = checks(&[], &BTreeMap::new());
        assert!(checks.len() >= 12);
        assert!(checks.iter().all(|c| c.passed.is_none()));
    }
}
