//! `conv2d` that runs on `dbps-kernels` where the backend is burn-flex — forward, and with
//! autodiff the input and weight gradients too — and on Burn's own convolution everywhere else.
//!
//! Burn's CPU convolution goes through a 3-d path with generic packing and a transposed
//! convolution for the input gradient; the gradient pass spent most of a training step there.
//! The backend is known only as a type parameter, so the choice is made by comparing type ids
//! (a specialisation that costs one comparison per call) rather than by a trait bound that every
//! generic model type would have to carry.

use std::any::TypeId;

use crate::flex_host::{device_tensor, with_host};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Tensor, TensorData, TensorPrimitive, backend::Backend};
use dbps_kernels::{
    ConvSpec, Isa, KernelError, conv2d_forward, conv2d_input_grad, conv2d_weight_grad,
    same_type as cast,
};

type Ad = Autodiff<Flex, NoCheckpointing>;

/// The kernels' description of a convolution, when they support it: square kernel, equal
/// strides and paddings, no dilation, no groups.
fn kernel_spec(weight: [usize; 4], options: &ConvOptions<2>) -> Option<ConvSpec> {
    let [c_out, c_in, kh, kw] = weight;
    let square = kh == kw
        && options.stride[0] == options.stride[1]
        && options.padding[0] == options.padding[1]
        && options.dilation == [1, 1]
        && options.groups == 1;
    square.then_some(ConvSpec {
        c_in,
        c_out,
        kernel: kh,
        stride: options.stride[0],
        padding: options.padding[0],
    })
}

/// `conv2d(x, weight, bias, options)` (Burn's semantics), on `dbps-kernels` for burn-flex with
/// or without autodiff.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    let Some(spec) = kernel_spec(weight.dims(), &options) else {
        return burn_conv2d(x, weight, bias, options);
    };
    let backend = TypeId::of::<B>();
    if backend == TypeId::of::<Flex>() {
        let (Ok(x), Ok(weight), Ok(bias)) = (
            cast::<_, Tensor<Flex, 4>>(x),
            cast::<_, Tensor<Flex, 4>>(weight),
            cast::<_, Option<Tensor<Flex, 1>>>(bias),
        ) else {
            unreachable!("B is Flex")
        };
        // Shapes the kernels reject (Burn would reject them too) get Burn's own error; a bad
        // DBPS_KERNEL_ISA was refused when the process started (the CLI checks it first).
        let y = Isa::detect()
            .and_then(|isa| forward(x.clone(), weight.clone(), bias.clone(), spec, isa))
            .unwrap_or_else(|_| burn_conv2d(x, weight, bias, options));
        return cast(y).unwrap_or_else(|_| unreachable!("B is Flex"));
    }
    if backend == TypeId::of::<Ad>() && bias.is_none() {
        let (Ok(x), Ok(weight)) = (
            cast::<_, Tensor<Ad, 4>>(x),
            cast::<_, Tensor<Ad, 4>>(weight),
        ) else {
            unreachable!("B is Autodiff<Flex>")
        };
        let y = tracked_forward(x.clone(), weight.clone(), spec)
            .unwrap_or_else(|_| burn_conv2d(x, weight, None, options));
        return cast(y).unwrap_or_else(|_| unreachable!("B is Autodiff<Flex>"));
    }
    burn_conv2d(x, weight, bias, options)
}

fn forward(
    x: Tensor<Flex, 4>,
    weight: Tensor<Flex, 4>,
    bias: Option<Tensor<Flex, 1>>,
    spec: ConvSpec,
    isa: Isa,
) -> Result<Tensor<Flex, 4>, KernelError> {
    let shape = x.dims();
    let device = x.device();
    let bias: Option<Vec<f32>> = bias.map(|b| b.into_data().iter::<f32>().collect());
    let (x, weight) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (y, y_shape) = with_host(&x, |x| {
        with_host(&weight, |w| {
            conv2d_forward(x, shape, w, bias.as_deref(), spec, isa)
        })
    })?;
    Ok(Tensor::from_data(TensorData::new(y, y_shape), &device))
}

/// The backward step of [`tracked_forward`]: input and weight gradients on the kernels.
#[derive(Debug)]
struct KernelConvBackward;

impl Backward<Flex, 2> for KernelConvBackward {
    /// Input, weight, the convolution, and the instruction set the forward ran on.
    type State = (FloatTensor<Flex>, FloatTensor<Flex>, ConvSpec, Isa);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, spec, isa) = ops.state;
        let x_shape: [usize; 4] =
            Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x.clone())).dims();
        let err = "gradient shapes follow the forward pass";
        with_host(&dy, |dy| {
            if let Some(node) = node_x {
                let dx = with_host(&weight, |w| conv2d_input_grad(dy, x_shape, w, spec, isa))
                    .expect(err);
                grads.register::<Flex>(node.id, device_tensor(dx, x_shape));
            }
            if let Some(node) = node_weight {
                let dw =
                    with_host(&x, |x| conv2d_weight_grad(x, x_shape, dy, spec, isa)).expect(err);
                let shape = [spec.c_out, spec.c_in, spec.kernel, spec.kernel];
                grads.register::<Flex>(node.id, device_tensor(dw, shape));
            }
        });
    }
}

/// Forward on the kernels, recorded on the autodiff tape with [`KernelConvBackward`].
fn tracked_forward(
    x: Tensor<Ad, 4>,
    weight: Tensor<Ad, 4>,
    spec: ConvSpec,
) -> Result<Tensor<Ad, 4>, KernelError> {
    let isa = Isa::detect()?;
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let y = forward(
        Tensor::from_primitive(TensorPrimitive::Float(x.primitive.clone())),
        Tensor::from_primitive(TensorPrimitive::Float(weight.primitive.clone())),
        None,
        spec,
        isa,
    )?
    .into_primitive()
    .tensor();
    let out = match KernelConvBackward
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x.primitive, weight.primitive, spec, isa), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    fn options(stride: usize, padding: usize) -> ConvOptions<2> {
        ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1)
    }

    /// Forward and both gradients equal Burn's own convolution's, for the ResNet shapes.
    #[test]
    fn kernels_equal_burns_convolution_and_its_gradients() {
        let device = Default::default();
        for (c_in, c_out, k, stride, pad, side) in [
            (3, 8, 7, 2, 3, 21),
            (8, 8, 3, 1, 1, 9),
            (8, 16, 3, 2, 1, 9),
            (8, 16, 1, 2, 0, 9),
            (16, 32, 1, 1, 0, 5),
        ] {
            let x =
                Tensor::<Flex, 4>::random([2, c_in, side, side], Distribution::Default, &device);
            let w = Tensor::<Flex, 4>::random([c_out, c_in, k, k], Distribution::Default, &device);
            let dy_seed = Tensor::<Flex, 4>::random(
                burn_conv2d(x.clone(), w.clone(), None, options(stride, pad)).dims(),
                Distribution::Default,
                &device,
            );
            let run = |ours: bool| {
                let xa = Tensor::<Ad, 4>::from_inner(x.clone()).require_grad();
                let wa = Tensor::<Ad, 4>::from_inner(w.clone()).require_grad();
                let y = if ours {
                    conv2d(xa.clone(), wa.clone(), None, options(stride, pad))
                } else {
                    burn_conv2d(xa.clone(), wa.clone(), None, options(stride, pad))
                };
                let loss = (y.clone() * Tensor::from_inner(dy_seed.clone())).sum();
                let grads = loss.backward();
                (
                    y.inner(),
                    xa.grad(&grads).expect("x gradient"),
                    wa.grad(&grads).expect("w gradient"),
                )
            };
            let (y, dx, dw) = run(true);
            let (y_ref, dx_ref, dw_ref) = run(false);
            let tol = Tolerance::absolute(1e-3);
            y.into_data()
                .assert_approx_eq::<f32>(&y_ref.into_data(), tol);
            dx.into_data()
                .assert_approx_eq::<f32>(&dx_ref.into_data(), tol);
            dw.into_data()
                .assert_approx_eq::<f32>(&dw_ref.into_data(), tol);
        }
    }
}
