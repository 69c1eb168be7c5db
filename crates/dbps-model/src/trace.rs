//! A record of the gradients every optimizer step receives, for comparing two runs that should
//! train alike (one process against several ranks or devices): per step, one file of the
//! gradients and one of the weights they were computed at (little-endian f32), and an index
//! of which parameter each range of the gradients holds.
//!
//! The weights make the comparison exact: two runs drift apart by a few rounding errors per
//! step, which AdamW amplifies, so a later step's gradients of two runs are computed at
//! slightly different weights; recomputing one process's gradients at the recorded weights
//! compares like with like at every step.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::atomic_write::{write_atomic, write_json_atomic};
use crate::{ModelError, Result};

/// Where a run's gradient records go: one folder per method under `dir`.
#[derive(Debug, Clone)]
pub struct GradientTrace {
    dir: PathBuf,
}

/// One parameter's range in a step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedParam {
    /// The parameter's path in the model (`classifier.encoder.conv1.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Index of its first value in the record.
    pub offset: usize,
}

/// The index file of a method's records (`index.json`).
pub const TRACE_INDEX: &str = "index.json";

impl GradientTrace {
    /// Records into `dir` (created if needed).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The records of one method: `DIR/METHOD/step-000001.f32`, … and `index.json`.
    pub fn for_method(&self, method: &str) -> Result<MethodTrace> {
        let dir = self.dir.join(method);
        std::fs::create_dir_all(&dir).map_err(|source| ModelError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(MethodTrace { dir, step: 0 })
    }

    /// The gradients of step `step` (1-based, counted over the run) of `method`.
    pub fn step_file(dir: &Path, method: &str, step: usize) -> PathBuf {
        dir.join(method).join(format!("step-{step:06}.f32"))
    }

    /// The weights step `step` of `method` computed its gradients at: every float tensor of
    /// the model (parameters and running statistics) in visiting order.
    pub fn weights_file(dir: &Path, method: &str, step: usize) -> PathBuf {
        dir.join(method).join(format!("weights-{step:06}.f32"))
    }
}

/// The records of one method, written as its optimizer steps.
#[derive(Debug, Clone)]
pub struct MethodTrace {
    dir: PathBuf,
    step: usize,
}

/// Collects every trainable parameter's gradient (zeros where it has none) in visiting order.
struct Collect<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    values: Vec<f32>,
    index: Vec<TracedParam>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let shape = value.dims().to_vec();
        let numel: usize = shape.iter().product();
        self.index.push(TracedParam {
            name: self.path.join("."),
            shape,
            offset: self.values.len(),
        });
        match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(grad) => self
                .values
                .extend(grad.into_data().convert::<f32>().iter::<f32>()),
            None => self.values.extend(std::iter::repeat_n(0.0, numel)),
        }
    }
}

/// Every float tensor, in visiting order.
struct Weights(Vec<f32>);

impl<B: AutodiffBackend> ModuleVisitor<B> for Weights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0
            .extend(param.val().into_data().convert::<f32>().iter::<f32>());
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl MethodTrace {
    /// Writes the gradients `grads` of `module`'s parameters, and `module`'s weights, as the
    /// next step's record.
    pub fn record<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        module: &M,
        grads: &GradientsParams,
    ) -> Result<()> {
        let mut collect = Collect {
            grads,
            path: Vec::new(),
            values: Vec::new(),
            index: Vec::new(),
        };
        module.visit(&mut collect);
        self.step += 1;
        if self.step == 1 {
            write_json_atomic(&self.dir.join(TRACE_INDEX), &collect.index)?;
        }
        write_atomic(
            &self.dir.join(format!("step-{:06}.f32", self.step)),
            &f32_bytes(&collect.values),
        )?;
        // Running statistics keep a thread's last update aside; recording folds it in.
        let _ = module.clone().into_record();
        let mut weights = Weights(Vec::new());
        module.visit(&mut weights);
        write_atomic(
            &self.dir.join(format!("weights-{:06}.f32", self.step)),
            &f32_bytes(&weights.0),
        )
    }
}
