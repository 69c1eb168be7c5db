//! Project automation: `cargo xtask <command>` (alias in `.cargo/config.toml`).

mod allreduce;
mod bench;
mod chart;
mod readme_check;
mod reproduce;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "dbps project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run what CI runs: fmt check, clippy (warnings are errors), the CUDA builds (checked),
    /// all tests.
    Ci,
    /// Train the embedded default (IPS and DBPS side by side) and print the table.
    Quickstart,
    /// Measure speed and memory (docs/performance.md): writes bench/results.json, summary.md, charts.
    Bench(bench::BenchArgs),
    /// The paper's Tables 1–3 (and the IPS paper's megapixel-MNIST setting) measured beside the
    /// paper's numbers: writes results/<UTC timestamp>/ (docs/reproducing.md).
    Reproduce(reproduce::ReproduceArgs),
    /// Time all-reduces between ranks on 127.0.0.1 (docs/distributed.md): writes
    /// bench/allreduce.json.
    Allreduce(allreduce::AllReduceArgs),
    /// Check that the README's seed table was measured at a commit whose numerics HEAD still
    /// has (what CI runs); `--measure` re-measures it.
    ReadmeCheck(readme_check::ReadmeArgs),
    /// One rank of `allreduce` (started by it).
    #[command(hide = true)]
    AllreduceRank(allreduce::RankArgs),
    /// One row of `bench` in this process (started by it).
    #[command(hide = true)]
    BenchRow(bench::row::RowArgs),
}

/// The step meter counts heap bytes through this allocator.
#[global_allocator]
static ALLOCATOR: dbps_model::meter::TrackingAllocator = dbps_model::meter::TrackingAllocator;

/// Runs `cargo <args>` from the workspace root, failing on a non-zero exit.
fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("==> cargo {}", args.join(" "));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot start cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    dbps_model::heap::retain_freed_memory();
    match Cli::parse().command {
        Task::Ci => {
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["check", "--features", "cuda"])?;
            cargo(&["check", "--features", "cuda,distributed"])?;
            cargo(&["xtask", "readme-check"])?;
            cargo(&["test", "--workspace"])
        }
        Task::Quickstart => cargo(&["run", "--", "train"]),
        Task::Bench(args) => bench::run(args),
        Task::Reproduce(args) => reproduce::run(args),
        Task::Allreduce(args) => allreduce::run(args),
        Task::ReadmeCheck(args) => readme_check::run(args),
        Task::AllreduceRank(args) => allreduce::rank(args),
        Task::BenchRow(args) => bench::row::run(args),
    }
}
