//! One row's figures: its config resolved against the data root, its cost measured on
//! generated input of the row's geometry, its accuracy trained on the real data when present.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use dbps_data::TaskSpec;
use dbps_encoder::EncoderConfig;
use dbps_model::classifier::SelectionEngine;
use dbps_train::RunConfig;
use dbps_train::config::CheckedRun;
use serde::Serialize;

use super::paper::{DatasetInfo, Metric, PaperRow, Table};
use crate::bench::measure;
use crate::bench::scenario::{Geometry, Method};

/// How much work a row gets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Effort {
    /// Training steps timed per row, after one warm-up step (their median is reported).
    pub timed_steps: usize,
    /// Inference batches timed per Table 3 row.
    pub inference_batches: usize,
    /// With data: epochs trained (the config's when absent).
    pub epochs: Option<usize>,
    /// With data: images read per split (all when absent).
    pub max_images: Option<usize>,
}

impl Effort {
    /// `--quick` (2 CPU cores) or the full protocol.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                timed_steps: 3,
                inference_batches: 2,
                epochs: Some(2),
                max_images: Some(192),
            }
        } else {
            Self {
                timed_steps: 5,
                inference_batches: 5,
                epochs: None,
                max_images: None,
            }
        }
    }
}

/// A config of `configs/paper/` with its `data/…` paths moved under the data root.
pub struct ResolvedConfig {
    /// What trains the row on real data, checked.
    pub config: CheckedRun,
    /// The dataset's files (a folder or the MNIST digits folder).
    pub data: PathBuf,
    /// The torchvision weights the config names but the data root lacks (then `config` starts
    /// from fresh weights, which serves the cost columns only).
    pub missing_weights: Option<PathBuf>,
}

/// Reads `path` and moves every path that starts with `data/` under `data_root`, then applies
/// the effort's epochs and image cap.
pub fn resolve(
    root: &Path,
    path: &Path,
    data_root: &Path,
    effort: &Effort,
) -> Result<ResolvedConfig> {
    let file = root.join(path);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let mut missing_weights = None;
    for section in ["dataset", "encoder"] {
        if let Some(arms) = value[section].as_object_mut() {
            for settings in arms.values_mut().filter_map(|s| s.as_object_mut()) {
                for key in ["root", "digits_dir", "weights"] {
                    if let Some(serde_json::Value::String(p)) = settings.get_mut(key)
                        && let Some(rest) = p.strip_prefix("data/")
                    {
                        *p = data_root.join(rest).display().to_string();
                    }
                }
                if let Some(serde_json::Value::String(p)) = settings.get("weights")
                    && !Path::new(p).is_file()
                {
                    missing_weights = Some(PathBuf::from(p));
                    settings.remove("weights");
                }
            }
        }
    }
    if let Some(epochs) = effort.epochs {
        value["train"]["epochs"] = epochs.into();
        // Warm-up must end before the last epoch.
        value["train"]["warmup_epochs"] = (epochs as f64 / 4.0).into();
    }
    if let Some(cap) = effort.max_images {
        value["train"]["max_images"] = cap.into();
    }
    let config = RunConfig::from_json(&value.to_string(), &file.display().to_string())?;
    let data = config
        .dataset
        .spec()
        .root()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(ResolvedConfig {
        config,
        data,
        missing_weights,
    })
}

/// The encoder without its weight file: cost does not depend on the weights' values.
fn fresh(encoder: &EncoderConfig) -> EncoderConfig {
    encoder.clone().without_weights()
}

/// The bench's geometry and method for a row config: the image size, encoder and attention of
/// the config, the tasks of the dataset.
fn scenario(config: &RunConfig, dataset: &DatasetInfo) -> Result<(Geometry, Method)> {
    let [height, width] = match dataset.generated_bag {
        Some(length) if config.bags() => [1, length],
        None if config.bags() => {
            bail!(
                "{}: bags of features need `generated_bag` in {}",
                dataset.title,
                super::paper::TABLES
            )
        }
        _ => config.image_size(),
    };
    let tasks = config
        .dataset
        .spec()
        .known_tasks()
        .unwrap_or_else(|| vec![TaskSpec::softmax("class", dataset.classes)]);
    let geometry = Geometry {
        name: format!("{} {width}×{height}", dataset.title),
        height,
        width,
        channels: config.encoder.in_channels(),
        patch: config.patch.size,
        encoder: fresh(&config.encoder),
        attention: config.aggregator.clone(),
        tasks,
        bags: config.bags(),
        dataset: config.dataset.clone(),
    };
    let method = &config.methods[0];
    let count = |v: i64| usize::try_from(v).unwrap_or(0);
    let method = Method {
        name: method.name.clone(),
        m: count(method.m),
        m_eval: count(method.m_eval.unwrap_or(method.m)),
        s: count(method.s),
        l: count(method.l),
        drop: method.drop,
        aggregator: method.aggregator,
    };
    Ok((geometry, method))
}

/// Milliseconds and peak memory of one training step or inference batch.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Mean milliseconds per step (or batch).
    pub ms: f64,
    /// Peak bytes above the level before the step: heap on CPU, the pool on CUDA.
    pub peak_bytes: Option<u64>,
    /// Steps (or batches) measured.
    pub measured: usize,
    /// Trainable parameters of the row's model (training cost only): a data-parallel step
    /// all-reduces 4 bytes per parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<usize>,
}

/// The metric cell: measured, or why not.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricCell {
    /// Test figures of the best-on-validation weights, % (mean over tasks), per task.
    Measured {
        /// Mean over tasks.
        mean: f64,
        /// Per task name.
        tasks: Vec<(String, f64)>,
        /// Images in the test split.
        test_images: usize,
        /// Epochs trained.
        epochs: usize,
    },
    /// Not measured, and why (one line).
    Missing(String),
}

/// Everything measured for one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// Which table.
    pub table: Table,
    /// The row and the paper's figures.
    pub row: PaperRow,
    /// Training-step cost on generated input (Tables 1, 2, megapixel MNIST).
    pub train_cost: Option<Cost>,
    /// Inference cost per batch of 16 on generated input (Table 3).
    pub inference_cost: Option<Cost>,
    /// Accuracy or AUC.
    pub metric: MetricCell,
    /// The row's config as it ran, when it has one.
    pub config: Option<RunConfig>,
    /// What went wrong measuring this row, if anything.
    pub error: Option<String>,
}

/// Where and how hard rows are measured.
pub struct RowContext<'a, B: AutodiffBackend> {
    /// Steps, batches, epochs and image cap.
    pub effort: &'a Effort,
    /// Folder of the training runs (real data only).
    pub runs: &'a Path,
    /// The device.
    pub device: &'a B::Device,
    /// The backend and device, in words.
    pub device_name: &'a str,
}

impl<B: AutodiffBackend> Clone for RowContext<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: AutodiffBackend> Copy for RowContext<'_, B> {}

/// Measures one row: cost always (unless the row cannot run at all), the metric when its data
/// and weights are present and the table has a metric.
pub fn measure_row<B: AutodiffBackend>(
    table: Table,
    row: &PaperRow,
    dataset: &DatasetInfo,
    resolved: Option<&ResolvedConfig>,
    on: &RowContext<'_, B>,
) -> RowResult {
    let RowContext {
        effort,
        runs,
        device,
        device_name,
    } = *on;
    let mut result = RowResult {
        table,
        row: row.clone(),
        train_cost: None,
        inference_cost: None,
        metric: MetricCell::Missing(String::new()),
        config: resolved.map(|r| r.config.clone().into_config()),
        error: None,
    };
    let Some(resolved) = resolved else {
        result.metric =
            MetricCell::Missing(format!("not built: dbps cannot read {} yet", dataset.title));
        return result;
    };
    let cost = || -> Result<Cost> {
        let (geometry, method) = scenario(&resolved.config, dataset)?;
        Ok(if table == Table::Three {
            let r = measure::inference_cost::<B::InnerBackend>(
                &geometry,
                &method,
                effort.inference_batches,
                device,
            )?;
            Cost {
                ms: r.ms_per_batch,
                peak_bytes: r.peak_bytes,
                measured: r.batches,
                parameters: None,
            }
        } else {
            let r = measure::train_steps::<B>(
                &geometry,
                &method,
                SelectionEngine::Auto,
                effort.timed_steps,
                device,
            )?;
            Cost {
                ms: r.ms_median,
                peak_bytes: r.peak_heap_step_bytes,
                measured: r.timed_ms.len(),
                parameters: Some(r.parameters),
            }
        })
    };
    match cost() {
        Ok(c) if table == Table::Three => result.inference_cost = Some(c),
        Ok(c) => result.train_cost = Some(c),
        Err(e) => result.error = Some(format!("cost: {e:#}")),
    }
    result.metric = if table == Table::Three {
        MetricCell::Missing("Table 3 reports cost only".into())
    } else if !resolved.data.exists() {
        MetricCell::Missing(format!("no data at {}", resolved.data.display()))
    } else if let Some(w) = &resolved.missing_weights {
        MetricCell::Missing(format!(
            "no weights at {} (torchvision ImageNet file)",
            w.display()
        ))
    } else {
        match train::<B>(
            &resolved.config,
            row,
            dataset.metric,
            runs,
            device,
            device_name,
        ) {
            Ok(cell) => cell,
            Err(e) => {
                result.error = Some(format!("training: {e:#}"));
                MetricCell::Missing("training failed (see error)".into())
            }
        }
    };
    result
}

/// Trains the row's config on its data and reads the test figures of the best-on-validation
/// weights.
fn train<B: AutodiffBackend>(
    config: &CheckedRun,
    row: &PaperRow,
    metric: Metric,
    runs: &Path,
    device: &B::Device,
    device_name: &str,
) -> Result<MetricCell> {
    let wanted = runs.join(format!("{}-{}", row.dataset, row.row));
    let placement = dbps_train::runner::Placement::<B>::single(device.clone());
    let report = dbps_train::runner::run::<B>(config, &wanted, &placement, device_name)?;
    let method = report
        .methods
        .first()
        .context("the run trained no method")?;
    let tasks = method
        .test_best_valid
        .tasks
        .iter()
        .map(|t| {
            let value = match metric {
                Metric::Accuracy => Some(t.accuracy),
                Metric::Auc => t.auc,
            };
            value
                .map(|v| (t.task.clone(), 100.0 * v))
                .with_context(|| format!("the test split of task {} lacks a class: no AUC", t.task))
        })
        .collect::<Result<Vec<_>>>()?;
    let mean = tasks.iter().map(|(_, a)| a).sum::<f64>() / tasks.len().max(1) as f64;
    Ok(MetricCell::Measured {
        mean,
        tasks,
        test_images: method.test_best_valid.images,
        epochs: method.epochs,
    })
}
