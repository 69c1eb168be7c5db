//! `dbps`: train and evaluate IPS / DBPS classifiers on images far too large for a GPU.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dbps_app::explain::{ExplainOptions, HeadChoice, Normalisation, explain_on};
use dbps_app::launch::TrainLaunch;
use dbps_app::predict::{SlideOptions, predict_on};
use dbps_app::shards::{Shard, ShardJob};
use dbps_app::slide_check::{CheckOptions, CheckPlan};
use dbps_parallel::NodeSpec;
use dbps_slide::{Slide, SlideReader};
use dbps_train::RunConfig;
use dbps_train::backend::DeviceChoice;
use dbps_train::config::ConfigOverrides;

/// The step meter's peak-memory figure counts heap bytes through this allocator.
#[global_allocator]
static ALLOCATOR: dbps_model::meter::TrackingAllocator = dbps_model::meter::TrackingAllocator;

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

/// The place of one process among several (`dbps train --nodes …`).
#[derive(clap::Args)]
struct NodeArgs {
    /// Ranks (processes, one per GPU) in a multi-machine run; each needs the options below.
    #[arg(long, requires_all = ["node_rank", "orchestrator", "listen"])]
    nodes: Option<usize>,
    /// This process's rank, 0 … N−1; rank 0 writes the run directory, the others no file.
    #[arg(long, requires = "nodes")]
    node_rank: Option<usize>,
    /// The orchestrator every rank registers with (`dbps orchestrator --port P` on one host).
    #[arg(long, value_name = "ws://HOST:PORT", requires = "nodes")]
    orchestrator: Option<String>,
    /// This rank's own address, where the others download its gradients (a free port).
    #[arg(long, value_name = "ws://ADDR:PORT", requires = "nodes")]
    listen: Option<String>,
    /// Seconds a rank waits for the others in an exchange before it stops with an error
    /// naming the rank that does not answer.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    peer_timeout: u64,
    /// Seconds a rank waits at start-up for every rank to register.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    start_timeout: u64,
}

impl NodeArgs {
    fn spec(&self) -> Option<NodeSpec> {
        Some(NodeSpec {
            nodes: self.nodes?,
            rank: self.node_rank?,
            orchestrator: self.orchestrator.clone()?,
            listen: self.listen.clone()?,
            peer_timeout: Duration::from_secs(self.peer_timeout),
            start_timeout: Duration::from_secs(self.start_timeout),
        })
    }
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
        /// Where to run: cpu, cuda, cuda:N, or a list of one kind (cuda:0,cuda:1): one replica
        /// per device, each global batch (`train.batch_size`) split among them.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[command(flatten)]
        node: NodeArgs,
        /// Write the gradients every optimizer step receives to this folder (one file per
        /// step): for comparing a multi-device or multi-machine run with a single process.
        #[arg(long, value_name = "DIR")]
        trace_gradients: Option<PathBuf>,
    },
    /// The rendezvous of a multi-machine run: start it once, on a host every rank can reach,
    /// before the ranks (`dbps train --nodes N --orchestrator ws://HOST:PORT …`).
    Orchestrator {
        /// Port to listen on (every interface).
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Turn a model trained with the official IPS code (its `torch.save` state dict) into a run
    /// directory that predict, explain, eval and `train --resume` accept.
    #[command(name = "import-ips")]
    ImportIps {
        /// The official checkpoint: IPSNet's state dict (.pth/.pt, read without Python, or
        /// .safetensors under the official names).
        #[arg(value_name = "CHECKPOINT")]
        checkpoint: PathBuf,
        /// The dbps config describing the same model (encoder, aggregator sizes, tasks).
        #[arg(long)]
        config: PathBuf,
        /// The IPS method of the config to import into, when it lists several.
        #[arg(long)]
        method: Option<String>,
        /// Where to create the run directory (a taken name gets a suffix).
        #[arg(long)]
        out: PathBuf,
    },
    /// Class probabilities of new images from the best checkpoints of a run.
    Predict {
        /// Image files, folders of images, or tiled (Big)TIFF slides streamed tile by tile (images
        /// are read as the run's training images were:
        /// photographs resized to the training size, grayscale canvases at their own size).
        #[arg(value_name = "IMAGE", required_unless_present_any = ["list", "merge"], conflicts_with_all = ["list", "merge"])]
        images: Vec<PathBuf>,
        /// A run directory written by `dbps train`, or one of its method folders.
        #[arg(long, required_unless_present = "merge")]
        checkpoint: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A list of slides to predict into `--out`, one result file per slide: a labels.csv
        /// (`slide,label[,split]`) or a text file of paths, one per line.
        #[arg(long, value_name = "LIST", requires = "out", conflicts_with = "merge")]
        list: Option<PathBuf>,
        /// With --list: predict only shard K of N (every N-th slide, K from 1), e.g. one task
        /// of a Slurm array; slides whose result from this checkpoint exists are skipped.
        #[arg(long, value_name = "K/N", requires = "list")]
        shard: Option<String>,
        /// With --list: the folder of result files.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Gather the result files of a --list run into DIR/predictions.csv and
        /// DIR/predictions.json.
        #[arg(long, value_name = "DIR")]
        merge: Option<PathBuf>,
        /// Write each slide's picks (and tissue outline) as GeoJSON in level-0 pixels for
        /// QuPath ("Import objects"): DIR/<file name>.geojson (with --list: DIR/<name>.geojson,
        /// named as the slide's result file).
        #[arg(long, value_name = "DIR", conflicts_with = "merge")]
        geojson: Option<PathBuf>,
        #[command(flatten)]
        slides: SlideArgs,
        /// Where to run: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
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
        /// For slides: also write the picks with their attention per head and mean, and the
        /// tissue outline, as GeoJSON in level-0 pixels for QuPath ("Import objects").
        #[arg(long, value_name = "FILE.geojson")]
        geojson: Option<PathBuf>,
        /// With --geojson: every scored patch with its attention, not only the picks.
        #[arg(long, requires = "geojson")]
        geojson_all: bool,
        #[command(flatten)]
        slides: SlideArgs,
        /// Where to run: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Whole-slide images before a run.
    Slides {
        #[command(subcommand)]
        command: SlidesCommand,
    },
    /// Evaluate the best checkpoints of a finished run (or one method folder) on its test split.
    Eval {
        /// A run directory written by `dbps train`, or one of its method folders.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Where to run: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Subcommand)]
enum SlidesCommand {
    /// Check every slide of a list as a run would read it: per slide a thumbnail with the
    /// tissue mask and the patch grid (OUT/<name>.png) and a row of OUT/slides-check.csv; the
    /// exit status is non-zero when any slide would fail the run.
    Check {
        /// A labels.csv (`slide,label[,split]`) or a text file of slide paths, one per line.
        #[arg(value_name = "LIST")]
        list: PathBuf,
        /// The folder for the thumbnails and the CSV.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A run config with `dataset.slides`: its patch size, stride, resolution, tissue mask
        /// and reader (the options below override them).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Patch side in pixels as the model sees them.
        #[arg(long, required_unless_present = "config")]
        patch: Option<usize>,
        /// Distance between patch origins (the patch side by default).
        #[arg(long)]
        stride: Option<usize>,
        /// Read the level closest to this downsample of full resolution, not coarser.
        #[arg(long, conflicts_with = "mpp")]
        downsample: Option<f64>,
        /// Read patches at this many µm per pixel (the slides must state their resolution).
        #[arg(long)]
        mpp: Option<f64>,
        /// Which reader opens slides: auto, builtin or openslide.
        #[arg(long)]
        reader: Option<SlideReader>,
        /// Count every patch, not only those on tissue.
        #[arg(long)]
        no_tissue_mask: bool,
        /// Headers, thumbnails and masks only: skip decoding the tiles under the patches.
        #[arg(long)]
        quick: bool,
    },
}

/// How slides are read.
#[derive(clap::Args)]
struct SlideArgs {
    /// For slides: read the pyramid level closest to this downsample of full resolution
    /// without being coarser (1 = full resolution); by default, the resolution the model was
    /// trained at (`patch.mpp` or `dataset.slides.downsample`; full resolution otherwise).
    #[arg(long)]
    downsample: Option<f64>,
    /// Which reader opens slides: auto (the built-in tiled-TIFF reader; OpenSlide, when built
    /// in, for formats it does not support), builtin, or openslide.
    #[arg(long, default_value = "auto")]
    reader: SlideReader,
    /// For tiled TIFF slides: encode only patches on tissue (Otsu threshold on a thumbnail);
    /// the background patches skipped are reported.
    #[arg(long)]
    tissue_mask: bool,
    /// For tiled TIFF slides: MiB of decoded tiles kept in memory.
    #[arg(long, default_value_t = 64)]
    tile_cache_mib: usize,
    /// For ordinary images (decoded whole): the most pixels a file may declare; a larger one
    /// is refused from its header, before it is decoded.
    #[arg(long, default_value_t = dbps_data::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

impl SlideArgs {
    fn options(&self) -> Result<SlideOptions> {
        if let Some(d) = self.downsample
            && !(d.is_finite() && (1.0..=65_536.0).contains(&d))
        {
            anyhow::bail!(
                "--downsample {d} must lie in [1, 65536] (1 = full resolution, 4 = a quarter of the width)"
            );
        }
        Ok(SlideOptions {
            max_pixels: self.max_pixels,
            downsample: self.downsample,
            reader: self.reader,
            tissue_mask: self.tissue_mask,
            cache_bytes: self.tile_cache_mib.max(1) << 20,
        })
    }
}

/// One device: prediction, explanation and evaluation run on one.
fn device(text: &str) -> Result<DeviceChoice> {
    match DeviceChoice::parse_list(text)?.as_slice() {
        [one] => Ok(*one),
        _ => anyhow::bail!(
            "--device {text}: this command runs on one device; pass one, e.g. cuda:0 (only `dbps train` splits its batches among several)"
        ),
    }
}

fn run(cli: Cli) -> Result<()> {
    // A DBPS_KERNEL_ISA this CPU cannot run is refused before any work starts, rather than
    // quietly replaced by another instruction set deep inside an encoder.
    dbps_kernels::Isa::detect()?;
    match cli.command {
        Command::Orchestrator { port } => dbps_app::orchestrator::serve(port)?,
        Command::ImportIps {
            checkpoint,
            config,
            method,
            out,
        } => {
            let config = RunConfig::from_file(&config)?;
            let imported =
                dbps_app::import::import_ips(&checkpoint, &config, method.as_deref(), &out)?;
            println!(
                "imported {} tensors from {} into {}",
                imported.tensors,
                checkpoint.display(),
                imported.run_dir.display()
            );
        }
        Command::Train {
            resume: Some(run_dir),
            device,
            node,
            trace_gradients,
            ..
        } => {
            let launch = TrainLaunch {
                devices: DeviceChoice::parse_list(&device)?,
                node: node.spec(),
                trace: trace_gradients,
            };
            let report = launch.resume(&run_dir)?;
            println!("{}", report.table());
            println!("results: {}", report.dir.join("metrics.json").display());
        }
        Command::Train {
            config,
            output,
            epochs,
            seed,
            weights,
            device,
            node,
            trace_gradients,
            resume: None,
        } => {
            let launch = TrainLaunch {
                devices: DeviceChoice::parse_list(&device)?,
                node: node.spec(),
                trace: trace_gradients,
            };
            // The overrides go into the config's JSON and are checked with the rest of it,
            // before any run directory exists.
            let overrides = ConfigOverrides {
                epochs,
                seed,
                weights,
            };
            let config = match &config {
                Some(path) => RunConfig::from_file_with(path, &overrides)?,
                None => RunConfig::quickstart_with(&overrides)?,
            };
            let wanted = output
                .or_else(|| config.output_dir.clone())
                .unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
            let report = launch.train(&config, &wanted)?;
            println!("{}", report.table());
            println!("results: {}", report.dir.join("metrics.json").display());
        }
        Command::Predict {
            merge: Some(dir),
            json,
            ..
        } => {
            let merged = dbps_app::shards::merge(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&merged)?);
            } else {
                print!("{}", merged.report.table());
            }
            println!(
                "merged {} slides: {}, {}",
                merged.slides,
                dir.join(dbps_app::shards::MERGED_CSV).display(),
                dir.join(dbps_app::shards::MERGED_JSON).display()
            );
        }
        Command::Predict {
            list: Some(list),
            checkpoint: Some(checkpoint),
            shard,
            out: Some(out),
            geojson,
            slides,
            device: choice,
            ..
        } => {
            let job = ShardJob {
                list: &list,
                checkpoint: &checkpoint,
                shard: match shard {
                    Some(text) => text.parse::<Shard>()?,
                    None => Shard::whole(),
                },
                out: &out,
                slides: slides.options()?,
                geojson: geojson.as_deref(),
            };
            let summary = job.run(device(&choice)?)?;
            println!("{summary}");
            println!("results: {}", out.display());
        }
        Command::Predict {
            images,
            checkpoint: Some(checkpoint),
            json,
            geojson,
            slides,
            device: choice,
            ..
        } => {
            let options = slides.options()?;
            let report = predict_on(device(&choice)?, &checkpoint, &images, &options)?;
            if let Some(dir) = &geojson {
                // stdout may be --json's: the files written go to the log.
                for path in dbps_app::geojson::write_predictions(dir, &report, options.reader)? {
                    tracing::info!(geojson = %path.display(), "written");
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        Command::Predict { .. } => {
            anyhow::bail!(
                "predict needs images and --checkpoint, or --list with --checkpoint and --out, or --merge DIR"
            )
        }
        Command::Explain {
            image,
            checkpoint,
            out,
            head,
            norm,
            panel,
            geojson,
            geojson_all,
            slides,
            device: choice,
        } => {
            let options = ExplainOptions {
                normalisation: norm,
                head,
                panel,
                slides: slides.options()?,
            };
            if let Some(file) = &geojson
                && file.extension().and_then(|e| e.to_str()) != Some("geojson")
            {
                anyhow::bail!("--geojson {} must name a .geojson file", file.display());
            }
            // GeoJSON holds level-0 slide coordinates: an ordinary image is refused before
            // any work.
            let slide = match &geojson {
                Some(_) => Some(
                    Slide::open_if_slide(&image, options.slides.reader, 16 << 20)?.ok_or_else(
                        || {
                            anyhow::anyhow!(
                                "--geojson: {} is an ordinary image, not a slide; GeoJSON holds level-0 slide coordinates, so drop --geojson for it",
                                image.display()
                            )
                        },
                    )?,
                ),
                None => None,
            };
            let explanation = explain_on(device(&choice)?, &checkpoint, &image, &out, &options)?;
            if let (Some(file), Some(slide)) = (&geojson, &slide) {
                dbps_app::geojson::write_explanation(file, &explanation, slide, geojson_all)?;
                println!("geojson: {}", file.display());
            }
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
        Command::Slides {
            command:
                SlidesCommand::Check {
                    list,
                    out,
                    config,
                    patch,
                    stride,
                    downsample,
                    mpp,
                    reader,
                    no_tissue_mask,
                    quick,
                },
        } => {
            let base = config.as_deref().map(RunConfig::from_file).transpose()?;
            let plan = CheckPlan::new(
                base.as_deref(),
                &CheckOptions {
                    patch,
                    stride,
                    downsample,
                    mpp,
                    reader,
                    no_tissue_mask,
                    quick,
                },
            )?;
            let checks = dbps_app::slide_check::check_slides(&list, &out, &plan)?;
            println!(
                "{} slides ready: {}",
                checks.len(),
                out.join(dbps_app::slide_check::CHECK_CSV).display()
            );
        }
        Command::Eval {
            checkpoint,
            device: choice,
        } => {
            let report = dbps_app::evaluate::eval_on(device(&choice)?, &checkpoint)?;
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
    dbps_model::heap::retain_freed_memory();
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
        dbps_model::progress::hide_progress_bars();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}
