//! `relu` whose backward step keeps the activation's output, not its input, on burn-flex with
//! autodiff — the in-place ReLU of PyTorch's ResNet.
//!
//! Burn's autodiff ReLU saves its input for the backward mask (`x > 0`). In a ResNet that input
//! is a BatchNorm's output, saved by nothing else, while the ReLU's output is saved anyway by
//! the layer after it (the next convolution, the max pool): one extra map per activation, about
//! 0.7 GB in the megapixel-MNIST gradient pass. `relu(x) > 0` exactly when `x > 0`, so keeping
//! the output gives the same gradient, bit for bit; and with the input dropped the activation
//! runs in place on the BatchNorm's buffer.
//!
//! Routing is by type id, as in [`crate::conv2d`]: `Autodiff<Flex>` takes this path, every
//! other backend Burn's `relu`.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::{ActivationOps, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive, activation, backend::Backend};
use dbps_kernels::same_type as cast;

type Ad = Autodiff<Flex, NoCheckpointing>;

/// `max(x, 0)`, saving its output for the backward pass where the backend is `Autodiff<Flex>`.
pub(crate) fn relu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if TypeId::of::<B>() != TypeId::of::<Ad>() {
        return activation::relu(x);
    }
    let Ok(x) = cast::<_, Tensor<Ad, D>>(x) else {
        unreachable!("B is Autodiff<Flex>")
    };
    let x = x.into_primitive().tensor();
    let y = Flex::relu(x.primitive);
    let out = match ReluBackward
        .prepare::<NoCheckpointing>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    let y = Tensor::<Ad, D>::from_primitive(TensorPrimitive::Float(out));
    cast(y).unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>"))
}

/// The backward step of [`relu`]: the gradient where the output is positive.
#[derive(Debug)]
struct ReluBackward;

impl Backward<Flex, 1> for ReluBackward {
    /// The activation's output.
    type State = FloatTensor<Flex>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, Flex::relu_backward(ops.state, grad));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Same output and the same input gradient, bit for bit, as Burn's ReLU.
    #[test]
    fn equals_burns_relu_bit_for_bit() {
        let device = Default::default();
        let x = Tensor::<Ad, 4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Ad, 4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<Ad, 4>) -> Tensor<Ad, 4>| {
            let x = x.clone().detach().require_grad();
            let y = f(x.clone() * 1.0);
            let grads = (y.clone() * w.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).unwrap().into_data())
        };
        let ours = run(&|t| relu(t));
        let burns = run(&|t| activation::relu(t));
        assert_eq!(ours.0, burns.0);
        assert_eq!(ours.1, burns.1);
    }
}
