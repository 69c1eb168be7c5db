//! `dbps`: train and evaluate IPS / DBPS classifiers on images far too large for a GPU.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use dbps_train::{
    DeviceChoice, ExplainOptions, HeadChoice, Normalisation, RunConfig, SlideOptions,
};

/// The step meter's peak-memory figure counts heap bytes through this allocator.
#[global_allocator]
static ALLOCATOR: dbps_train::TrackingAllocator = dbps_train::TrackingAllocator;

#[derive(Parser)]
#[command(
    name = "dbps",
    version,
    about = "Iterative (IPS) and dual-buffer (DBPS) patch selection for huge images"
)]
struct Cli {
    /// No progress bars: log lines only (their detail set with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    /// burn-flex on the CPU.
    Cpu,
    /// burn-cuda on GPU 0 (needs a build with `--features cuda`).
    Cuda,
}

#[derive(Subcommand)]
enum Command {
    /// Train every method of a config side by side, then report test accuracy.
    Train {
        /// JSON run config; the embedded default (configs/quickstart.json) when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Continue the interrupted run in this directory from its last complete checkpoint
        /// (its own config.json decides everything else).
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "output", "epochs", "seed", "weights"])]
        resume: Option<PathBuf>,
        /// Run directory; defaults to the config's `output_dir` or `runs/<name>` (never overwritten:
        /// a taken directory gets a `-2`, `-3`, … suffix).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Override the config's number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Override the config's training seed (initialisation, data order, drops, shuffles).
        #[arg(long)]
        seed: Option<u64>,
        /// torchvision ResNet weights to start from (`.pth` or `.safetensors`); overrides the
        /// config's `encoder.<resnet>.weights`.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
    },
    /// Class probabilities of new images from the best checkpoints of a run.
    Predict {
        /// Image files, folders of images, or tiled (Big)TIFF slides streamed tile by tile (images
        /// are read as the run's training images were:
        /// photographs resized to the training size, grayscale canvases at their own size).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// A run directory written by `dbps train`, or one of its method folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        slides: SlideArgs,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
    },
    /// Draw where a trained model looked: the image with its salient and sub-salient patches
    /// outlined, beside a heatmap of the scorer's attention over all patches (one row per
    /// method); the geometry goes to a JSON file beside the PNG.
    Explain {
        /// The image file (read as the run's training images were).
        #[arg(value_name = "IMAGE")]
        image: PathBuf,
        /// A run directory written by `dbps train`, or one of its method folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The figure to write (PNG).
        #[arg(long, value_name = "FILE.png")]
        out: PathBuf,
        /// Attention map of one head (0, 1, …) or the mean over heads.
        #[arg(long, default_value = "mean")]
        head: HeadChoice,
        /// Colour scale of the heatmap: raw, min-max, percentile (1st–99th) or
        /// percentile:LOW,HIGH.
        #[arg(long, default_value = "min-max")]
        norm: Normalisation,
        /// Longest side of each panel in pixels (small images are enlarged by a whole factor,
        /// slides drawn on a thumbnail).
        #[arg(long, default_value_t = 512)]
        panel: u32,
        #[command(flatten)]
        slides: SlideArgs,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
    },
    /// Evaluate the best checkpoints of a finished run (or one method folder) on its test split.
    Eval {
        /// A run directory written by `dbps train`, or one of its method folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
    },
}

/// How tiled (Big)TIFF slides are read.
#[derive(clap::Args)]
struct SlideArgs {
    /// For tiled TIFF slides: read the pyramid level closest to this downsample of full
    /// resolution without being coarser (1 = full resolution).
    #[arg(long, default_value_t = 1.0)]
    downsample: f64,
    /// For tiled TIFF slides: encode only patches on tissue (Otsu threshold on a thumbnail);
    /// the background patches skipped are reported.
    #[arg(long)]
    tissue_mask: bool,
    /// For tiled TIFF slides: MiB of decoded tiles kept in memory.
    #[arg(long, default_value_t = 64)]
    tile_cache_mib: usize,
}

impl SlideArgs {
    fn options(&self) -> Result<SlideOptions> {
        if !(self.downsample.is_finite() && self.downsample >= 1.0) {
            anyhow::bail!(
                "--downsample {} must be at least 1 (1 = full resolution, 4 = a quarter of the width)",
                self.downsample
            );
        }
        Ok(SlideOptions {
            downsample: self.downsample,
            tissue_mask: self.tissue_mask,
            cache_bytes: self.tile_cache_mib.max(1) << 20,
        })
    }
}

fn device(choice: Device) -> Result<DeviceChoice> {
    match choice {
        Device::Cpu => Ok(DeviceChoice::Cpu),
        #[cfg(feature = "cuda")]
        Device::Cuda => Ok(DeviceChoice::Cuda(0)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => anyhow::bail!(
            "this dbps was built without CUDA; rebuild with `cargo build --release --features cuda`"
        ),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            resume: Some(run_dir),
            device: choice,
            ..
        } => {
            let report = device(choice)?.resume(&run_dir)?;
            println!("{}", report.table());
            println!("results: {}", report.dir.join("metrics.json").display());
        }
        Command::Train {
            config,
            output,
            epochs,
            seed,
            weights,
            device: choice,
            resume: None,
        } => {
            let device = device(choice)?;
            let mut config = match &config {
                Some(path) => RunConfig::from_file(path)?,
                None => RunConfig::quickstart()?,
            };
            if let Some(epochs) = epochs {
                config.train.epochs = epochs;
            }
            if let Some(seed) = seed {
                config.train.seed = seed;
            }
            if let Some(weights) = weights {
                config.encoder = config.encoder.with_weights(weights)?;
            }
            // The overrides are checked with the rest of the config by `train`, before any
            // run directory exists.
            let wanted = output
                .or_else(|| config.output_dir.clone())
                .unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
            let report = device.train(&config, &wanted)?;
            println!("{}", report.table());
            println!("results: {}", report.dir.join("metrics.json").display());
        }
        Command::Predict {
            images,
            checkpoint,
            json,
            slides,
            device: choice,
        } => {
            let report = device(choice)?.predict(&checkpoint, &images, &slides.options()?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        Command::Explain {
            image,
            checkpoint,
            out,
            head,
            norm,
            panel,
            slides,
            device: choice,
        } => {
            let options = ExplainOptions {
                normalisation: norm,
                head,
                panel,
                slides: slides.options()?,
            };
            let explanation = device(choice)?.explain(&checkpoint, &image, &out, &options)?;
            for m in &explanation.methods {
                println!(
                    "{}: {} salient, {} sub-salient of {} patches",
                    m.method,
                    m.salient.len(),
                    m.sub_salient.len(),
                    m.attention.len()
                );
            }
            println!("figure: {}", out.display());
            println!("geometry: {}", out.with_extension("json").display());
        }
        Command::Eval {
            checkpoint,
            device: choice,
        } => {
            let report = device(choice)?.eval(&checkpoint)?;
            println!("{}", report.table());
            println!("results: {}", checkpoint.join("eval.json").display());
        }
    }
    Ok(())
}

/// The error and its causes, each said once: dbps's errors already quote their cause in their
/// message (with the fix after it), so a cause whose text is already there is not repeated.
fn report(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn main() -> ExitCode {
    dbps_train::retain_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,burn=warn,burn_train=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if cli.quiet {
        dbps_train::hide_progress_bars();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}
