//! Training-mode BatchNorm as one autodiff operation on burn-flex: forward and backward each
//! two passes over the map on `dbps-kernels`, instead of the seventeen or so that the
//! element-wise composition in [`crate::BatchNorm2d`] records (profiled: the gradient pass's
//! BatchNorms cost about as much as its convolutions' weight gradients).
//!
//! Routing is by type id, as in [`crate::conv2d`]: `Autodiff<Flex>` takes this path, every
//! other backend the composed one.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};
use dbps_kernels::{BatchStats, batch_norm_backward, batch_norm_forward, same_type as cast};

use crate::flex_host::{device_tensor, host, with_host};

type Ad = Autodiff<Flex, NoCheckpointing>;

/// The output of a training-mode BatchNorm and its batch statistics (constants: they feed the
/// running averages only).
pub(crate) struct TrainNorm<B: Backend> {
    /// `γ x̂ + β`, `[N, C, H, W]`.
    pub output: Tensor<B, 4>,
    /// μ per channel.
    pub mean: Tensor<B, 1>,
    /// Biased σ² per channel.
    pub var: Tensor<B, 1>,
}

/// Training-mode BatchNorm of `x` `[N, C, H, W]` with batch statistics on the kernels, when
/// the backend is `Autodiff<Flex>`; `None` elsewhere (or for a map the kernels reject), and
/// the caller composes it from tensor ops.
pub(crate) fn batch_norm_train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Option<TrainNorm<B>> {
    if TypeId::of::<B>() != TypeId::of::<Ad>() {
        return None;
    }
    let (Ok(x), Ok(gamma), Ok(beta)) = (
        cast::<_, Tensor<Ad, 4>>(x),
        cast::<_, Tensor<Ad, 1>>(gamma),
        cast::<_, Tensor<Ad, 1>>(beta),
    ) else {
        unreachable!("B is Autodiff<Flex>")
    };
    let device = x.device();
    let (output, stats) = tracked(x, gamma, beta, epsilon as f32)?;
    let stat = |v: Vec<f32>| {
        let len = v.len();
        // A constant (no gradient). Built from data rather than `from_inner`, which needs
        // `Autodiff<Flex>: AutodiffBackend` — false in a `distributed` build of burn.
        let t = Tensor::<Ad, 1>::from_data(burn::tensor::TensorData::new(v, [len]), &device);
        cast::<_, Tensor<B, 1>>(t).unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>"))
    };
    Some(TrainNorm {
        output: cast(output).unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>")),
        mean: stat(stats.mean),
        var: stat(stats.var),
    })
}

/// What the backward pass needs: the input, the statistics, γ and ε.
#[derive(Debug, Clone)]
struct NormState {
    x: burn::tensor::ops::FloatTensor<Flex>,
    /// `[N, C, H, W]` of the map.
    dims: [usize; 4],
    stats: BatchStats,
    gamma: Vec<f32>,
    epsilon: f32,
}

/// The backward step of [`tracked`]: dx, dγ and dβ in two passes.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let s = ops.state;
        let [n, c, h, w] = s.dims;
        let g = with_host(&dy, |dy| {
            with_host(&s.x, |x| {
                batch_norm_backward(dy, x, [n, c, h * w], &s.stats, &s.gamma, s.epsilon)
            })
        })
        .expect("gradient shapes follow the forward pass");
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, device_tensor(g.input, s.dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, device_tensor(g.gamma, [c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, device_tensor(g.beta, [c]));
        }
    }
}

/// Forward on the kernels, recorded on the tape with [`BatchNormBackward`].
fn tracked(
    x: Tensor<Ad, 4>,
    gamma: Tensor<Ad, 1>,
    beta: Tensor<Ad, 1>,
    epsilon: f32,
) -> Option<(Tensor<Ad, 4>, BatchStats)> {
    let dims = x.dims();
    let shape = [dims[0], dims[1], dims[2] * dims[3]];
    let (x, gamma, beta) = (
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    );
    let gamma_host = host(gamma.primitive.clone());
    let beta_host = host(beta.primitive.clone());
    let (y, stats) = with_host(&x.primitive, |values| {
        batch_norm_forward(values, shape, &gamma_host, &beta_host, epsilon)
    })
    .ok()?;
    let y = device_tensor(y, dims);
    let out = match BatchNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            NormState {
                x: x.primitive,
                dims,
                stats: stats.clone(),
                gamma: gamma_host,
                epsilon,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some((Tensor::from_primitive(TensorPrimitive::Float(out)), stats))
}
