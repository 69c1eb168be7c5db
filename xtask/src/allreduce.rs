//! `cargo xtask allreduce`: what one all-reduce between ranks costs on this machine — an
//! orchestrator and N rank processes on 127.0.0.1, each summing tensors of the sizes asked
//! through the same `CollectiveSession` training uses (burn-collective's ring between nodes).
//! The figures feed the scaling estimate of docs/distributed.md.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use dbps_parallel::{CollectiveSession, NodeSpec};
use serde::{Deserialize, Serialize};

/// Options of `cargo xtask allreduce`.
#[derive(clap::Args)]
pub struct AllReduceArgs {
    /// Ranks (processes) on this machine.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Tensor sizes to sum, in MB of f32 (4 bytes a value).
    #[arg(long, value_delimiter = ',', default_values_t = [0.04, 4.0, 45.0])]
    megabytes: Vec<f64>,
    /// Timed all-reduces per size (after one warm-up).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Where the figures go.
    #[arg(long, default_value = "bench/allreduce.json")]
    out: PathBuf,
}

/// One rank's part, started by `allreduce` as a child process.
#[derive(clap::Args)]
pub struct RankArgs {
    #[arg(long)]
    rank: usize,
    #[arg(long)]
    nodes: usize,
    #[arg(long)]
    orchestrator: String,
    #[arg(long)]
    listen: String,
    #[arg(long, value_delimiter = ',')]
    megabytes: Vec<f64>,
    #[arg(long)]
    repeats: usize,
}

/// Milliseconds of each timed all-reduce of one size, on one rank.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SizeTimes {
    megabytes: f64,
    ms: Vec<f64>,
}

/// One size's figures.
#[derive(Debug, Clone, Serialize)]
struct SizeFigures {
    megabytes: f64,
    /// Median over repeats of the slowest rank's time.
    ms_median: f64,
    /// Tensor bytes per second of all-reduce.
    megabytes_per_s: f64,
    /// Bytes each rank sends per second: the ring moves 2 (N − 1) / N of the tensor out of
    /// every rank (the "bus bandwidth" of NCCL's tests).
    bus_megabytes_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: crate::bench::Machine,
    nodes: usize,
    repeats: usize,
    sizes: Vec<SizeFigures>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts an orchestrator and the ranks, gathers their times, prints and writes the figures.
pub fn run(args: AllReduceArgs) -> Result<()> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let port = free_port()?;
    std::thread::spawn(move || dbps_app::orchestrator::serve(port));
    let orchestrator = format!("ws://127.0.0.1:{port}");
    let sizes: Vec<String> = args.megabytes.iter().map(f64::to_string).collect();
    let children = (0..args.nodes)
        .map(|rank| {
            Command::new(std::env::current_exe()?)
                .args(["allreduce-rank", "--rank", &rank.to_string()])
                .args(["--nodes", &args.nodes.to_string()])
                .args(["--orchestrator", &orchestrator])
                .args(["--listen", &format!("ws://127.0.0.1:{}", free_port()?)])
                .args(["--megabytes", &sizes.join(",")])
                .args(["--repeats", &args.repeats.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start a rank")
        })
        .collect::<Result<Vec<_>>>()?;
    let mut per_rank: Vec<Vec<SizeTimes>> = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("a rank failed ({})", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or("");
        per_rank
            .push(serde_json::from_str(last).with_context(|| format!("a rank's figures: {text}"))?);
    }
    let n = args.nodes as f64;
    let figures: Vec<SizeFigures> = (0..args.megabytes.len())
        .map(|i| {
            let mut slowest: Vec<f64> = (0..args.repeats)
                .map(|k| per_rank.iter().map(|r| r[i].ms[k]).fold(0.0, f64::max))
                .collect();
            slowest.sort_by(f64::total_cmp);
            let ms = slowest[slowest.len() / 2];
            let mb = args.megabytes[i];
            SizeFigures {
                megabytes: mb,
                ms_median: ms,
                megabytes_per_s: mb / (ms / 1e3),
                bus_megabytes_per_s: 2.0 * (n - 1.0) / n * mb / (ms / 1e3),
            }
        })
        .collect();
    let report = Report {
        machine: crate::bench::machine(),
        nodes: args.nodes,
        repeats: args.repeats,
        sizes: figures,
    };
    println!(
        "all-reduce between {} ranks on 127.0.0.1 ({}, {} threads; median of {} after a warm-up)\n",
        report.nodes, report.machine.cpu, report.machine.threads, report.repeats
    );
    println!("| tensor MB | ms | tensor MB/s | bus MB/s per rank |\n|---|---|---|---|");
    for s in &report.sizes {
        println!(
            "| {} | {:.1} | {:.0} | {:.0} |",
            s.megabytes, s.ms_median, s.megabytes_per_s, s.bus_megabytes_per_s
        );
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten: {}", args.out.display());
    Ok(())
}

/// One rank: joins, sums each size `1 + repeats` times, prints its times as JSON.
pub fn rank(args: RankArgs) -> Result<()> {
    let spec = NodeSpec {
        nodes: args.nodes,
        rank: args.rank,
        orchestrator: args.orchestrator,
        listen: args.listen,
        peer_timeout: Duration::from_secs(120),
        start_timeout: Duration::from_secs(120),
    };
    let device = Default::default();
    let session = CollectiveSession::<Flex>::join(spec, device, 0)?;
    let mut times = Vec::new();
    for &mb in &args.megabytes {
        let len = ((mb * 1e6 / 4.0) as usize).max(1);
        let values: Vec<f32> = (0..len).map(|i| (i % 97) as f32).collect();
        let tensor = Tensor::<Flex, 1>::from_data(TensorData::new(values, [len]), &device);
        let mut ms = Vec::with_capacity(args.repeats);
        for k in 0..=args.repeats {
            let start = Instant::now();
            let summed = session.all_reduce_tensor(tensor.clone(), "the all-reduce bench")?;
            // Read back, as training does before the optimizer uses the sum.
            let _ = summed.into_data();
            if k > 0 {
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.push(SizeTimes { megabytes: mb, ms });
    }
    session.finish();
    println!("{}", serde_json::to_string(&times)?);
    Ok(())
}
