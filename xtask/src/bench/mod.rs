//! `cargo xtask bench`: every figure of `docs/performance.md`, measured in one run.
//!
//! Writes `bench/results.json`, `bench/summary.md` and PNG charts under `bench/`. With
//! `--reference` it reads PyTorch's figures from the same machine and prints the ratios.

mod chart;
pub(crate) mod measure;
mod reference;
pub(crate) mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use dbps_train::SelectionEngine;
use serde::Serialize;

use measure::{EncoderResult, InferenceResult, StepResult};
use reference::Reference;
use scenario::{Geometry, Method};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The reduced set (≤ 10 minutes on 2 CPU cores): fewer steps, N up to 3,600.
    #[arg(long)]
    quick: bool,
    /// Where to run: `cpu`, or `cuda` (GPU 0; needs xtask built with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// JSON files written by `../shared/bench/torch_step_bench.py --json-out` on this machine.
    #[arg(long, num_args = 1..)]
    reference: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Profile one training-step setting and stop: `mnist`, `cqu-ips`, `cqu-dbps`, `cqu-drop`
    /// (for `perf record`; writes nothing).
    #[arg(long)]
    profile: Option<String>,
}

/// A dbps figure beside PyTorch's.
#[derive(Debug, Clone, Serialize)]
struct Comparison {
    what: String,
    dbps: f64,
    pytorch: f64,
    unit: &'static str,
    /// How many times faster dbps is (PyTorch time / dbps time, or dbps rate / PyTorch rate).
    dbps_speedup: f64,
}

/// The done-means checks of the issue, computed from this run's figures.
#[derive(Debug, Clone, Serialize)]
struct Checks {
    dbps_over_ips_time: Option<f64>,
    dbps_over_ips_memory: Option<f64>,
    drop_over_ips_time: Option<f64>,
    /// Peak step memory at the largest N over that at N = 900.
    memory_largest_n_over_900: Option<f64>,
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
    /// Backend and device measured.
    device: String,
    unix_time: u64,
    quick: bool,
    seconds: f64,
    steps: Vec<StepResult>,
    memory_vs_n: Vec<StepResult>,
    encoders: Vec<EncoderResult>,
    inference: Vec<InferenceResult>,
    reference: BTreeMap<String, Reference>,
    comparisons: Vec<Comparison>,
    checks: Checks,
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
    match args.device.as_str() {
        "cpu" => measure_all::<Autodiff<Flex>>(&args, "cpu (burn-flex)", &Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => measure_all::<Autodiff<dbps_train::CudaBackend>>(
            &args,
            "cuda:0 (burn-cuda)",
            &burn_cuda::CudaDevice::new(0),
        ),
        #[cfg(not(feature = "cuda"))]
        "cuda" => bail!(
            "--device cuda: this xtask was built without CUDA; run `cargo xtask-cuda bench --device cuda` (xtask built with --features cuda)"
        ),
        other => bail!("--device {other}: use cpu or cuda"),
    }
}

/// Every measurement on one backend and device, then the files.
fn measure_all<B: AutodiffBackend>(args: &BenchArgs, name: &str, device: &B::Device) -> Result<()> {
    let reference = reference::read(&args.reference)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let start = Instant::now();
    let steps_per_run = if args.quick { 3 } else { 5 };
    let engine = SelectionEngine::Auto;

    let mnist = Geometry::megapixel_mnist(1500);
    let cqu = Geometry::cqu();
    let mnist_ips = Method::ips(100, 100);

    let mut steps = Vec::new();
    let step = |g: &Geometry, m: &Method, n_steps: usize| -> Result<StepResult> {
        log(format!(
            "train steps: {} / {} ({n_steps} steps)",
            g.name, m.name
        ));
        let r = measure::train_steps::<B>(g, m, engine, n_steps, device)?;
        log(format!(
            "  {:.0} ms/step, peak {:.1} MB",
            r.figures.ms_per_step,
            r.figures.peak_step_bytes.unwrap_or(0) as f64 / 1e6
        ));
        Ok(r)
    };
    steps.push(step(&mnist, &mnist_ips, steps_per_run)?);
    let cqu_methods = [
        Method::ips(12, 32),
        Method::dbps(12, 60, 32, 0.0),
        Method::dbps(12, 60, 32, 0.3),
    ];
    log(format!(
        "train steps: {} / {} taking turns ({steps_per_run} steps each)",
        cqu.name,
        cqu_methods
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for r in
        measure::train_steps_interleaved::<B>(&cqu, &cqu_methods, engine, steps_per_run, device)?
    {
        log(format!(
            "  {}: {:.0} ms/step, peak {:.1} MB",
            r.method,
            r.figures.ms_per_step,
            r.figures.peak_step_bytes.unwrap_or(0) as f64 / 1e6
        ));
        steps.push(r);
    }

    let sides: &[usize] = if args.quick { &[3000] } else { &[3000, 6000] };
    let mut memory_vs_n = vec![steps[0].clone()];
    for &side in sides {
        memory_vs_n.push(step(&Geometry::megapixel_mnist(side), &mnist_ips, 3)?);
    }

    let seconds = if args.quick { 5.0 } else { 15.0 };
    let mut encoders = Vec::new();
    for g in [&mnist, &cqu] {
        for native in [true, false] {
            log(format!("encoder throughput: {} native={native}", g.name));
            let r = measure::encoder_throughput::<B::InnerBackend>(g, native, seconds, device)?;
            log(format!("  {:.0} patches/s", r.patches_per_s));
            encoders.push(r);
        }
    }

    let batches = if args.quick { 2 } else { 5 };
    let mut inference = Vec::new();
    for m in [Method::ips(12, 32), Method::dbps(12, 60, 32, 0.0)] {
        log(format!("inference: {} / {}", cqu.name, m.name));
        inference.push(measure::inference_cost::<B::InnerBackend>(
            &cqu, &m, batches, device,
        )?);
    }

    let comparisons = compare(&steps, &encoders, &reference);
    let checks = Checks {
        dbps_over_ips_time: Some(steps[2].figures.ms_per_step / steps[1].figures.ms_per_step),
        dbps_over_ips_memory: ratio(
            steps[2].figures.peak_step_bytes,
            steps[1].figures.peak_step_bytes,
        ),
        drop_over_ips_time: Some(steps[3].figures.ms_per_step / steps[1].figures.ms_per_step),
        memory_largest_n_over_900: ratio(
            memory_vs_n.last().and_then(|r| r.figures.peak_step_bytes),
            memory_vs_n[0].figures.peak_step_bytes,
        ),
    };
    let results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        device: name.into(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: args.quick,
        seconds: start.elapsed().as_secs_f64(),
        steps,
        memory_vs_n,
        encoders,
        inference,
        reference,
        comparisons,
        checks,
    };
    write(&args.out, &results)
}

/// Three training steps of one setting, for a profiler.
fn profile(name: &str) -> Result<()> {
    let (geometry, method) = match name {
        "mnist" => (Geometry::megapixel_mnist(1500), Method::ips(100, 100)),
        "cqu-ips" => (Geometry::cqu(), Method::ips(12, 32)),
        "cqu-dbps" => (Geometry::cqu(), Method::dbps(12, 60, 32, 0.0)),
        "cqu-drop" => (Geometry::cqu(), Method::dbps(12, 60, 32, 0.3)),
        "cqu-grad" => {
            let r = measure::gradient_pass(&Geometry::cqu(), 12 * measure::BATCH, 3)?;
            log(format!("cqu-grad: (forward, backward) {r:?} ms"));
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
            bail!("--profile {other}: use mnist, cqu-ips, cqu-dbps, cqu-drop, cqu-grad or encoders")
        }
    };
    let device = Default::default();
    let r = measure::train_steps::<Autodiff<Flex>>(
        &geometry,
        &method,
        SelectionEngine::Auto,
        3,
        &device,
    )?;
    log(format!("{name}: steps {:?} ms", r.all_ms));
    Ok(())
}

fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    Some(a? as f64 / b? as f64)
}

fn compare(
    steps: &[StepResult],
    encoders: &[EncoderResult],
    reference: &BTreeMap<String, Reference>,
) -> Vec<Comparison> {
    let mut out = Vec::new();
    for (config, row) in [("mnist_ips", &steps[0]), ("cqu_ips_m12", &steps[1])] {
        if let Some(ms) = reference.get(config).and_then(|r| r.ms_per_step) {
            out.push(Comparison {
                what: format!("training step, {} {}", row.geometry, row.method),
                dbps: row.figures.ms_per_step,
                pytorch: ms,
                unit: "ms/step",
                dbps_speedup: ms / row.figures.ms_per_step,
            });
        }
    }
    let native = |name: &str| {
        encoders
            .iter()
            .find(|e| e.engine == "native" && e.geometry == name)
    };
    for (config, geometry) in [
        (
            "enc_r18_2stage_1ch_50px",
            Geometry::megapixel_mnist(1500).name,
        ),
        ("enc_r18_4stage_100px", Geometry::cqu().name),
    ] {
        if let (Some(rate), Some(ours)) = (
            reference.get(config).and_then(|r| r.patches_per_s),
            native(&geometry),
        ) {
            out.push(Comparison {
                what: format!("no-gradient encoder, {geometry}"),
                dbps: ours.patches_per_s,
                pytorch: rate,
                unit: "patches/s",
                dbps_speedup: ours.patches_per_s / rate,
            });
        }
    }
    out
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "—".into(), |b| format!("{:.1}", b as f64 / 1e6))
}

fn summary(r: &Results) -> String {
    let mut s = String::new();
    s += &format!(
        "# dbps bench\n\n`{}` — {} ({} threads, kernels: {}), {:.0} s{}.\n\n",
        r.command,
        r.machine.cpu,
        r.machine.threads,
        r.machine.kernel_isa,
        r.seconds,
        if r.quick { ", quick set" } else { "" }
    );
    s += "## Training steps (batch 16; mean ms from start of selection to end of the optimizer step, first and last step excluded; peak = heap bytes above the step's start)\n\n";
    s += "| geometry | method | N | ms/step | peak step MB | steps averaged | trainable parameters (all-reduce MB/step) |\n|---|---|---|---|---|---|---|\n";
    for row in r.steps.iter().chain(r.memory_vs_n.iter().skip(1)) {
        s += &format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} ({:.1}) |\n",
            row.geometry,
            row.method,
            row.n,
            row.figures.ms_per_step,
            mb(row.figures.peak_step_bytes),
            row.figures.steps,
            row.parameters,
            4.0 * row.parameters as f64 / 1e6
        );
    }
    s +=
        "\n## No-gradient encoder (batch 64)\n\n| geometry | engine | patches/s |\n|---|---|---|\n";
    for e in &r.encoders {
        s += &format!(
            "| {} | {} | {:.0} |\n",
            e.geometry, e.engine, e.patches_per_s
        );
    }
    s += "\n## Inference per batch of 16 (Table 3)\n\n| geometry | method | ms/batch | peak MB |\n|---|---|---|---|\n";
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
        s += "\n## Against PyTorch on this machine (`--reference`)\n\n| what | dbps | PyTorch | unit | dbps speed-up |\n|---|---|---|---|---|\n";
        for c in &r.comparisons {
            s += &format!(
                "| {} | {:.0} | {:.0} | {} | {:.2}× |\n",
                c.what, c.dbps, c.pytorch, c.unit, c.dbps_speedup
            );
        }
    }
    let f = |v: Option<f64>| v.map_or_else(|| "—".into(), |x| format!("{x:.3}"));
    s += &format!(
        "\n## Checks\n\n| check | value | bound |\n|---|---|---|\n| DBPS / IPS time (CQU) | {} | ≤ 1.05 |\n| DBPS / IPS memory (CQU) | {} | ≤ 1.05 |\n| DBPS r=0.3 / IPS time (CQU) | {} | ≤ 0.85 |\n| peak step memory, largest N / N = 900 | {} | ≤ 1.05 |\n",
        f(r.checks.dbps_over_ips_time),
        f(r.checks.dbps_over_ips_memory),
        f(r.checks.drop_over_ips_time),
        f(r.checks.memory_largest_n_over_900)
    );
    s
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
