//! The ResNet stem's `max_pool(relu(x))` as one autodiff operation on burn-flex, keeping only
//! what its backward step needs: the pooled output (which the next convolution keeps anyway)
//! and the argmax indices.
//!
//! Composed from Burn's ops, the stem keeps the ReLU's output whole for the max pool's backward
//! step — which reads nothing of it but its shape — besides the pool's indices: on the
//! megapixel-MNIST gradient pass (1,600 patches, 64 × 25 × 25 maps) that is 256 MB held through
//! the whole backward pass. Max pooling commutes with ReLU (both are monotone), so the pool runs
//! on the BatchNorm's output and the ReLU on the four-times-smaller pooled map; a window whose
//! maximum is not positive passes no gradient either way (its pooled ReLU is 0), and elsewhere
//! the argmax is the same element, so output and gradient equal the composed ones bit for bit.
//! The backward scatter runs one (image, channel) plane per task.
//!
//! Routing is by type id, as in [`crate::conv2d`]: `Autodiff<Flex>` takes this path, every
//! other backend (and a pool with dilation, ceiling mode or asymmetric padding) the composed one.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::ops::{ActivationOps, FloatTensor, IntTensor, ModuleOps};
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};
use dbps_kernels::same_type as cast;
use rayon::prelude::*;

use crate::fast_relu::relu;
use crate::flex_host::{device_tensor, with_host};

type Ad = Autodiff<Flex, NoCheckpointing>;

/// `pool(relu(x))` for `x` `[N, C, H, W]`, one operation on `Autodiff<Flex>`.
pub(crate) fn relu_max_pool<B: Backend>(x: Tensor<B, 4>, pool: &MaxPool2d) -> Tensor<B, 4> {
    let symmetric = match pool.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => {
            (top == bottom && left == right).then_some([top, left])
        }
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Same => None,
    };
    let plain = pool.dilation == [1, 1] && !pool.ceil_mode;
    let (Some(padding), true) = (symmetric, plain) else {
        return pool.forward(relu(x));
    };
    if TypeId::of::<B>() != TypeId::of::<Ad>() {
        return pool.forward(relu(x));
    }
    let Ok(x) = cast::<_, Tensor<Ad, 4>>(x) else {
        unreachable!("B is Autodiff<Flex>")
    };
    let input_dims = x.dims();
    let x = x.into_primitive().tensor();
    let pooled = Flex::max_pool2d_with_indices(
        x.primitive,
        pool.kernel_size,
        pool.stride,
        padding,
        [1, 1],
        false,
    );
    let y = Flex::relu(pooled.output);
    let out = match ReluMaxPoolBackward
        .prepare::<NoCheckpointing>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            PoolState {
                output: y.clone(),
                indices: pooled.indices,
                input_dims,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    let y = Tensor::<Ad, 4>::from_primitive(TensorPrimitive::Float(out));
    cast(y).unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>"))
}

/// What the backward step keeps.
#[derive(Debug, Clone)]
struct PoolState {
    /// `relu(pool(x))`, `[N, C, OH, OW]`.
    output: FloatTensor<Flex>,
    /// Flat index, within its (image, channel) plane of `x`, of each output's maximum.
    indices: IntTensor<Flex>,
    /// `[N, C, H, W]` of `x`.
    input_dims: [usize; 4],
}

/// The backward step of [`relu_max_pool`]: the gradient where the output is positive,
/// scattered onto each window's argmax.
#[derive(Debug)]
struct ReluMaxPoolBackward;

impl Backward<Flex, 1> for ReluMaxPoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = parent else {
            return;
        };
        let PoolState {
            output,
            indices,
            input_dims,
        } = ops.state;
        let [n, c, h, w] = input_dims;
        let dp = Flex::relu_backward(output, dy);
        let indices = indices.to_contiguous();
        let indices: &[i64] = indices
            .as_slice::<i64>()
            .expect("burn-flex max-pool indices are contiguous i64");
        let mut dx = vec![0f32; n * c * h * w];
        with_host(&dp, |dp| {
            let plane_out = dp.len() / (n * c).max(1);
            dx.par_chunks_mut(h * w)
                .zip(dp.par_chunks(plane_out.max(1)))
                .zip(indices.par_chunks(plane_out.max(1)))
                .for_each(|((dx, dp), indices)| {
                    for (g, &i) in dp.iter().zip(indices) {
                        if i >= 0 {
                            dx[i as usize] += g;
                        }
                    }
                });
        });
        grads.register::<Flex>(node.id, device_tensor(dx, input_dims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Distribution, activation};

    /// Same output and input gradient, bit for bit, as Burn's ReLU then max pool — with
    /// windows whose maximum is negative (ties at zero after the ReLU) among them.
    #[test]
    fn equals_burns_relu_then_max_pool_bit_for_bit() {
        let device = Default::default();
        let pool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        for dims in [[2, 3, 9, 9], [1, 2, 8, 7], [3, 1, 1, 1]] {
            let x = Tensor::<Ad, 4>::random(dims, Distribution::Normal(-0.3, 1.0), &device);
            let y_shape = pool.forward(x.clone()).dims();
            let w = Tensor::<Ad, 4>::random(y_shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |f: &dyn Fn(Tensor<Ad, 4>) -> Tensor<Ad, 4>| {
                let x = x.clone().detach().require_grad();
                let y = f(x.clone() * 1.0);
                let grads = (y.clone() * w.clone()).sum().backward();
                (y.into_data(), x.grad(&grads).unwrap().into_data())
            };
            let ours = run(&|t| relu_max_pool(t, &pool));
            let burns = run(&|t| pool.forward(activation::relu(t)));
            assert_eq!(ours.0, burns.0, "{dims:?}");
            assert_eq!(ours.1, burns.1, "{dims:?}");
        }
    }
}
