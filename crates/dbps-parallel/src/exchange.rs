//! What the ranks of a multi-process run exchange after every training step, in one all-reduce:
//! every gradient, which parameters had one, rank 0's running statistics, and the step's
//! figures.
//!
//! One flat tensor per step rather than one all-reduce per parameter: each all-reduce between
//! machines costs a round of synchronisation, and a ResNet has over a hundred parameter tensors.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::CollectiveSession;
use dbps_model::step::{StepStats, TrainedClassifier};

use crate::Result;

/// Where each part of a step's exchange sits in the flat tensor: trainable parameters in the
/// model's visiting order (the same on every rank, whatever their `ParamId`s), then one flag
/// per parameter, the running statistics, and the figures.
#[derive(Debug, Clone)]
pub struct ExchangeLayout {
    params: Vec<usize>,
    buffers: Vec<usize>,
    tasks: usize,
    nodes: usize,
}

/// The sizes of a module's float tensors, split into trainable parameters (those that require
/// gradients on the autodiff backend) and the rest (running statistics).
struct Sizes {
    params: Vec<usize>,
    buffers: Vec<usize>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Sizes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let numel = tensor.shape().num_elements();
        if tensor.is_require_grad() {
            self.params.push(numel);
        } else {
            self.buffers.push(numel);
        }
    }
}

/// The figures a step contributes: the loss summed over its images, its images, its hits per
/// task, and whether this rank failed.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSums {
    /// Σ loss over the part's images (mean loss × images).
    pub loss: f64,
    /// Images in the part.
    pub images: usize,
    /// Correct images per task.
    pub hits: Vec<i64>,
    /// Ranks whose step failed (this rank's own slot set when it did).
    pub failed: Vec<usize>,
}

impl StepSums {
    /// The sums of a part whose figures are `stats` (nothing, for an empty part).
    pub fn of(stats: Option<&StepStats>, tasks: usize) -> Self {
        match stats {
            Some(s) => Self {
                loss: s.loss * s.batch as f64,
                images: s.batch,
                hits: s.hits.clone(),
                failed: Vec::new(),
            },
            None => Self {
                loss: 0.0,
                images: 0,
                hits: vec![0; tasks],
                failed: Vec::new(),
            },
        }
    }

    /// The figures as one batch of every rank's images.
    pub fn stats(&self) -> StepStats {
        StepStats {
            loss: if self.images == 0 {
                f64::NAN
            } else {
                self.loss / self.images as f64
            },
            hits: self.hits.clone(),
            batch: self.images,
        }
    }

    fn encode(&self, rank: usize, failed: bool, nodes: usize) -> Vec<f32> {
        let mut v = vec![self.loss as f32, self.images as f32];
        v.extend(self.hits.iter().map(|&h| h as f32));
        v.extend((0..nodes).map(|r| f32::from(u8::from(failed && r == rank))));
        v
    }

    fn decode(values: &[f32], tasks: usize) -> Self {
        Self {
            loss: f64::from(values[0]),
            images: values[1].round() as usize,
            hits: values[2..2 + tasks]
                .iter()
                .map(|&h| h.round() as i64)
                .collect(),
            failed: values[2 + tasks..]
                .iter()
                .enumerate()
                .filter(|&(_, &f)| f > 0.5)
                .map(|(r, _)| r)
                .collect(),
        }
    }
}

/// Collects the flat pieces of this rank's contribution, in visiting order.
struct Packer<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    send_buffers: bool,
    params: Vec<Tensor<B::InnerBackend, 1>>,
    flags: Vec<f32>,
    buffers: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Packer<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let numel = tensor.shape().num_elements();
        let device = tensor.device();
        if tensor.is_require_grad() {
            match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(grad) => {
                    self.params.push(grad.reshape([numel]));
                    self.flags.push(1.0);
                }
                None => {
                    self.params.push(Tensor::zeros([numel], &device));
                    self.flags.push(0.0);
                }
            }
        } else if self.send_buffers {
            self.buffers.push(tensor.inner().reshape([numel]));
        } else {
            self.buffers.push(Tensor::zeros([numel], &device));
        }
    }
}

/// Turns the summed tensor back into gradients, for the parameters some rank had one for.
struct Unpacker<'a, B: AutodiffBackend> {
    summed: &'a Tensor<B::InnerBackend, 1>,
    flags: &'a [f32],
    offset: usize,
    index: usize,
    grads: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unpacker<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        if !tensor.is_require_grad() {
            return;
        }
        let shape = tensor.shape();
        let numel = shape.num_elements();
        if self.flags[self.index] > 0.5 {
            let grad = self
                .summed
                .clone()
                .narrow(0, self.offset, numel)
                .reshape(shape);
            self.grads.register::<B::InnerBackend, D>(param.id, grad);
        }
        self.offset += numel;
        self.index += 1;
    }
}

/// Writes rank 0's running statistics into this rank's model.
struct BufferWriter<'a, B: AutodiffBackend> {
    summed: &'a Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for BufferWriter<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if tensor.is_require_grad() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let shape = tensor.shape();
        let numel = shape.num_elements();
        let value = self
            .summed
            .clone()
            .narrow(0, self.offset, numel)
            .reshape(shape);
        self.offset += numel;
        Param::from_mapped_value(id, Tensor::from_inner(value), mapper)
    }
}

/// What a step's exchange hands every rank.
#[derive(Debug)]
pub struct Reduced {
    /// The gradients of the global batch's mean loss (the parts' weighted gradients summed).
    pub grads: GradientsParams,
    /// The global batch's figures.
    pub sums: StepSums,
}

impl ExchangeLayout {
    /// The layout of `model`'s exchange among `nodes` ranks for `tasks` tasks.
    pub fn of<B: AutodiffBackend>(
        model: &TrainedClassifier<B>,
        tasks: usize,
        nodes: usize,
    ) -> Self {
        let mut sizes = Sizes {
            params: Vec::new(),
            buffers: Vec::new(),
        };
        model.visit(&mut sizes);
        Self {
            params: sizes.params,
            buffers: sizes.buffers,
            tasks,
            nodes,
        }
    }

    /// Trainable parameters: what every data-parallel engine sums each step (burn-train's DDP
    /// moves `4 ×` this many bytes; the exchange between ranks adds the flags, running
    /// statistics and figures, [`ExchangeLayout::len`]).
    pub fn parameters(&self) -> usize {
        self.params.iter().sum()
    }

    /// Values exchanged per step between ranks (4 bytes each).
    pub fn len(&self) -> usize {
        let grads: usize = self.params.iter().sum();
        let buffers: usize = self.buffers.iter().sum();
        grads + self.params.len() + buffers + 2 + self.tasks + self.nodes
    }

    /// True when there is nothing to exchange (never, for a model with parameters).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sums this rank's weighted gradients, flags, running statistics (rank 0's) and figures
    /// with every other rank's, writes rank 0's running statistics into `model`, and returns
    /// the global gradients and figures.
    pub fn exchange<B: AutodiffBackend>(
        &self,
        session: &CollectiveSession<B::InnerBackend>,
        model: &TrainedClassifier<B>,
        grads: &GradientsParams,
        sums: &StepSums,
        failed: bool,
        during: &str,
    ) -> Result<Reduced> {
        sync_running_statistics(model);
        let mut packer = Packer::<B> {
            grads,
            send_buffers: session.rank() == 0,
            params: Vec::new(),
            flags: Vec::new(),
            buffers: Vec::new(),
        };
        model.visit(&mut packer);
        let device = session.device().clone();
        let flag_count = packer.flags.len();
        let mut pieces = packer.params;
        pieces.push(Tensor::from_floats(packer.flags.as_slice(), &device));
        pieces.extend(packer.buffers);
        let figures = sums.encode(session.rank(), failed, session.nodes());
        pieces.push(Tensor::from_floats(figures.as_slice(), &device));
        let flat = Tensor::cat(pieces, 0);
        debug_assert_eq!(flat.dims()[0], self.len());

        let summed = session.all_reduce_tensor(flat, during)?;

        let grad_len: usize = self.params.iter().sum();
        let buffer_len: usize = self.buffers.iter().sum();
        let tail: Vec<f32> = summed
            .clone()
            .narrow(0, grad_len, self.len() - grad_len)
            .into_data()
            .into_vec()
            .unwrap_or_default();
        let flags = &tail[..flag_count];
        let sums = StepSums::decode(&tail[flag_count + buffer_len..], self.tasks);
        let mut unpacker = Unpacker::<B> {
            summed: &summed,
            flags,
            offset: 0,
            index: 0,
            grads: GradientsParams::new(),
        };
        model.visit(&mut unpacker);
        let grads = unpacker.grads;
        if buffer_len > 0 {
            let buffers = summed.narrow(0, grad_len + flag_count, buffer_len);
            let _ = model.clone().map(&mut BufferWriter::<B> {
                summed: &buffers,
                offset: 0,
            });
        }
        Ok(Reduced { grads, sums })
    }
}

/// Rank 0's parameters and running statistics, written into every rank's `model`, so that
/// every rank starts from rank 0's initial weights (burn-collective has no broadcast between
/// machines; this one is an all-reduce of rank 0's values with zeros).
pub fn broadcast_model<B: AutodiffBackend>(
    session: &CollectiveSession<B::InnerBackend>,
    model: TrainedClassifier<B>,
) -> Result<TrainedClassifier<B>> {
    struct Flatten<B: AutodiffBackend> {
        send: bool,
        pieces: Vec<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val().inner();
            let numel = tensor.shape().num_elements();
            self.pieces.push(if self.send {
                tensor.reshape([numel])
            } else {
                Tensor::zeros([numel], &tensor.device())
            });
        }
    }
    struct Overwrite<'a, B: AutodiffBackend> {
        summed: &'a Tensor<B::InnerBackend, 1>,
        offset: usize,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for Overwrite<'_, B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let numel = shape.num_elements();
            let value = Tensor::from_inner(
                self.summed
                    .clone()
                    .narrow(0, self.offset, numel)
                    .reshape(shape),
            );
            self.offset += numel;
            let value = if tensor.is_require_grad() {
                value.require_grad()
            } else {
                value
            };
            Param::from_mapped_value(id, value, mapper)
        }
    }
    sync_running_statistics(&model);
    let mut flatten = Flatten::<B> {
        send: session.rank() == 0,
        pieces: Vec::new(),
    };
    model.visit(&mut flatten);
    let summed = session.all_reduce_tensor(
        Tensor::cat(flatten.pieces, 0),
        "start-up (rank 0's initial weights)",
    )?;
    Ok(model.map(&mut Overwrite::<B> {
        summed: &summed,
        offset: 0,
    }))
}

/// Folds the running statistics' pending per-thread updates into their values, so that
/// reading or replacing a value sees the latest update (burn keeps each thread's last update
/// aside until the next one).
fn sync_running_statistics<B: Backend, M: Module<B>>(model: &M) {
    // Running states are shared between clones; recording one folds in the pending updates.
    let _ = model.clone().into_record();
}

/// A digest of every float tensor of `model` (parameters and running statistics), in visiting
/// order: equal digests on two ranks mean bit-identical models.
pub fn parameter_digest<B: Backend, M: Module<B>>(model: &M) -> u64 {
    struct Digest(u64);
    impl<B: Backend> ModuleVisitor<B> for Digest {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values: Vec<f32> = param
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            for v in values {
                for b in v.to_bits().to_le_bytes() {
                    self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
    }
    sync_running_statistics(model);
    let mut digest = Digest(0xcbf2_9ce4_8422_2325);
    model.visit(&mut digest);
    digest.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_round_trip_and_name_the_failed_rank() {
        let sums = StepSums {
            loss: 6.5,
            images: 5,
            hits: vec![3, 4],
            failed: Vec::new(),
        };
        let encoded = sums.encode(1, true, 3);
        let decoded = StepSums::decode(&encoded, 2);
        assert_eq!(decoded.images, 5);
        assert_eq!(decoded.hits, vec![3, 4]);
        assert_eq!(decoded.failed, vec![1]);
        assert!((decoded.stats().loss - 1.3).abs() < 1e-6);
        assert!(StepSums::of(None, 2).stats().loss.is_nan());
    }
}
