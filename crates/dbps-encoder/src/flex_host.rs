//! Moving burn-flex tensors to and from the host buffers the CPU kernels read and write.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

/// Runs `f` on a tensor's values: borrowed in place when they are contiguous f32 (no copy of
/// a feature map that is also saved for the backward pass), copied otherwise.
pub(crate) fn with_host<R>(tensor: &FloatTensor<Flex>, f: impl FnOnce(&[f32]) -> R) -> R {
    match tensor.as_slice::<f32>() {
        Some(values) => f(values),
        None => f(&host(tensor.clone())),
    }
}

/// A tensor's values, in row-major order, on the host.
pub(crate) fn host(tensor: FloatTensor<Flex>) -> Vec<f32> {
    let data: TensorData =
        Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(tensor)).into_data();
    data.iter::<f32>().collect()
}

/// A burn-flex tensor of `shape` holding `values`.
pub(crate) fn device_tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> FloatTensor<Flex> {
    Tensor::<Flex, D>::from_data(TensorData::new(values, shape), &Default::default())
        .into_primitive()
        .tensor()
}
