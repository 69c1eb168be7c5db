//! The bench's rows, each measured in a process of its own (`xtask bench-row`, started by
//! `xtask bench`): a process's peak resident set never falls, so a row that shared a process
//! with the one before it would inherit that row's peak. The harness runs each PyTorch config
//! in a fresh process for the same reason.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use dbps_model::classifier::SelectionEngine;
use serde::{Deserialize, Serialize};

use super::measure::{
    self, BATCH, ENCODER_BATCH, EncoderResult, InferenceResult, SelectionResult, StepResult,
};
use super::scenario::{Geometry, Method};

/// What a row measures.
#[derive(Debug, Clone)]
pub enum RowKind {
    /// One warm-up training step, then `timed` timed steps.
    Step {
        /// Image geometry.
        geometry: Geometry,
        /// Method.
        method: Method,
        /// Steps timed after the warm-up.
        timed: usize,
    },
    /// The no-gradient selection phase of one batch.
    Selection {
        /// Image geometry.
        geometry: Geometry,
        /// Method.
        method: Method,
    },
    /// No-gradient encoder throughput over about `seconds`.
    Encoder {
        /// Whose encoder and patch size.
        geometry: Geometry,
        /// The frozen channels-last encoder (`true`) or the Burn module's forward.
        native: bool,
        /// Seconds of timed calls.
        seconds: f64,
    },
    /// Evaluation cost of `batches` batches of 16.
    Inference {
        /// Image geometry.
        geometry: Geometry,
        /// Method.
        method: Method,
        /// Batches timed after the warm-up call.
        batches: usize,
    },
}

/// One row: an id (what `bench-row --row` takes) and what it measures.
#[derive(Debug, Clone)]
pub struct Row {
    /// `step/mnist-ips`, `selection/mnist-14400`, `encoder/cqu-native`, ….
    pub id: &'static str,
    /// What it measures.
    pub kind: RowKind,
}

/// Every row of a sitting, in the order they run: `quick` is the reduced set (fewer timed
/// steps, shorter encoder timing, no training step at N = 14,400).
pub fn catalogue(quick: bool) -> Vec<Row> {
    let timed = if quick { 3 } else { 5 };
    let seconds = if quick { 5.0 } else { 15.0 };
    let batches = if quick { 2 } else { 5 };
    let mnist = || Geometry::megapixel_mnist(1500);
    let cqu = Geometry::cqu;
    let step = |id, geometry, method, timed| Row {
        id,
        kind: RowKind::Step {
            geometry,
            method,
            timed,
        },
    };
    let mut rows = vec![
        step("step/mnist-ips", mnist(), Method::ips(100, 100), timed),
        step("step/cqu-ips-m12", cqu(), Method::ips(12, 32), timed),
        step("step/cqu-dbps", cqu(), Method::dbps(12, 60, 32, 0.0), timed),
        step("step/cqu-drop", cqu(), Method::dbps(12, 60, 32, 0.3), timed),
        step("step/cqu-ips-m108", cqu(), Method::ips(108, 32), timed),
        // Memory against N: one timed step is enough for a peak.
        step(
            "step/mnist-ips-3600",
            Geometry::megapixel_mnist(3000),
            Method::ips(100, 100),
            1,
        ),
    ];
    if !quick {
        rows.push(step(
            "step/mnist-ips-14400",
            Geometry::megapixel_mnist(6000),
            Method::ips(100, 100),
            1,
        ));
    }
    for (id, side) in [
        ("selection/mnist-900", 1500),
        ("selection/mnist-3600", 3000),
        ("selection/mnist-14400", 6000),
    ] {
        rows.push(Row {
            id,
            kind: RowKind::Selection {
                geometry: Geometry::megapixel_mnist(side),
                method: Method::ips(100, 100),
            },
        });
    }
    for (id, geometry, native) in [
        ("encoder/mnist-native", mnist(), true),
        ("encoder/mnist-module", mnist(), false),
        ("encoder/cqu-native", cqu(), true),
        ("encoder/cqu-module", cqu(), false),
    ] {
        rows.push(Row {
            id,
            kind: RowKind::Encoder {
                geometry,
                native,
                seconds,
            },
        });
    }
    for (id, method) in [
        ("inference/cqu-ips", Method::ips(12, 32)),
        ("inference/cqu-dbps", Method::dbps(12, 60, 32, 0.0)),
    ] {
        rows.push(Row {
            id,
            kind: RowKind::Inference {
                geometry: cqu(),
                method,
                batches,
            },
        });
    }
    rows
}

/// What a row's process writes: exactly one of the figures, with the threads it ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    /// The row's id.
    pub id: String,
    /// Threads of the process's rayon pool (the kernels' and burn-flex's).
    pub threads: usize,
    /// A training-step row.
    pub step: Option<StepResult>,
    /// A selection-phase row.
    pub selection: Option<SelectionResult>,
    /// An encoder row.
    pub encoder: Option<EncoderResult>,
    /// An inference row.
    pub inference: Option<InferenceResult>,
}

/// Options of the hidden `xtask bench-row` (one row in this process).
#[derive(Debug, Args)]
pub struct RowArgs {
    /// The row's id (see [`catalogue`]).
    #[arg(long)]
    row: String,
    /// The reduced set's version of the row.
    #[arg(long)]
    quick: bool,
    /// Threads of the rayon pool.
    #[arg(long)]
    threads: usize,
    /// `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where to write the row's JSON.
    #[arg(long)]
    json_out: PathBuf,
}

/// Measures one row in this process and writes its JSON.
pub fn run(args: RowArgs) -> Result<()> {
    let Some(row) = catalogue(args.quick).into_iter().find(|r| r.id == args.row) else {
        bail!(
            "--row {}: no such bench row (ids: {})",
            args.row,
            catalogue(false)
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .with_context(|| format!("cannot start a rayon pool of {} threads", args.threads))?;
    let result = match args.device.as_str() {
        "cpu" => measure_row::<Autodiff<Flex>>(&row, &Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda" => measure_row::<Autodiff<dbps_train::backend::CudaBackend>>(
            &row,
            &burn_cuda::CudaDevice::new(0),
        )?,
        other => {
            bail!("--device {other}: use cpu, or cuda with an xtask built with --features cuda")
        }
    };
    let json = serde_json::to_string_pretty(&result)?;
    std::fs::write(&args.json_out, json)
        .with_context(|| format!("cannot write {}", args.json_out.display()))
}

fn measure_row<B: AutodiffBackend>(row: &Row, device: &B::Device) -> Result<RowResult> {
    let mut out = RowResult {
        id: row.id.to_string(),
        threads: rayon::current_num_threads(),
        step: None,
        selection: None,
        encoder: None,
        inference: None,
    };
    match &row.kind {
        RowKind::Step {
            geometry,
            method,
            timed,
        } => {
            out.step = Some(measure::train_steps::<B>(
                geometry,
                method,
                SelectionEngine::Auto,
                *timed,
                device,
            )?);
        }
        RowKind::Selection { geometry, method } => {
            out.selection = Some(measure::selection_phase::<B::InnerBackend>(
                geometry, method, device,
            )?);
        }
        RowKind::Encoder {
            geometry,
            native,
            seconds,
        } => {
            out.encoder = Some(measure::encoder_throughput::<B::InnerBackend>(
                geometry, *native, *seconds, device,
            )?);
        }
        RowKind::Inference {
            geometry,
            method,
            batches,
        } => {
            out.inference = Some(measure::inference_cost::<B::InnerBackend>(
                geometry, method, *batches, device,
            )?);
        }
    }
    Ok(out)
}

/// What the harness config of the same geometry ran: batch, M, I, N and patch side of a
/// step row, or the batch and patch side of an encoder row (`None` for the other fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HarnessTerms {
    /// Images (steps) or patches (encoder) per batch.
    pub batch: usize,
    /// Salient patches M.
    pub m: Option<usize>,
    /// Patches per iteration (the harness's I).
    pub l: Option<usize>,
    /// Patches per image N.
    pub n: Option<usize>,
    /// Patch side.
    pub patch: usize,
}

impl Row {
    /// What this row runs, in the terms the harness's JSON uses.
    pub fn harness_terms(&self) -> HarnessTerms {
        match &self.kind {
            RowKind::Step {
                geometry, method, ..
            }
            | RowKind::Selection { geometry, method }
            | RowKind::Inference {
                geometry, method, ..
            } => HarnessTerms {
                batch: BATCH,
                m: Some(method.m),
                l: Some(method.l),
                n: Some(geometry.patches()),
                patch: geometry.patch,
            },
            RowKind::Encoder { geometry, .. } => HarnessTerms {
                batch: ENCODER_BATCH,
                m: None,
                l: None,
                n: None,
                patch: geometry.patch,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_quick_is_a_subset() {
        let full = catalogue(false);
        let mut ids: Vec<_> = full.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), full.len());
        for row in catalogue(true) {
            assert!(ids.contains(&row.id), "{}", row.id);
        }
    }
}
