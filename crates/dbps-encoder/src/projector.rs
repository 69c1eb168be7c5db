use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, activation::relu, backend::Backend};

/// LayerNorm (no affine, eps 1e-5) → Linear → BatchNorm1d → ReLU (method.md §2).
#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    /// The linear map to the output width.
    pub linear: Linear<B>,
    /// BatchNorm over the projected features.
    pub bn: BatchNorm<B>,
    out_dim: usize,
}

impl<B: Backend> Projector<B> {
    /// A projector from `d_in` to `d_out` features.
    pub fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        Self {
            linear: LinearConfig::new(d_in, d_out).init(device),
            bn: BatchNormConfig::new(d_out).init(device),
            out_dim: d_out,
        }
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Projects `[n, d_in]` to `[n, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(1);
        let normed = centred / (var + 1e-5).sqrt();
        let projected = self.linear.forward(normed);
        let bn = &self.bn;
        let out = if crate::inference_forced() {
            // Burn's BatchNorm picks batch statistics whenever the backend records gradients.
            let unit = |t: Tensor<B, 1>| t.unsqueeze_dim::<2>(0);
            let scale = bn.gamma.val() / (bn.running_var.value_sync() + bn.epsilon).sqrt();
            let shift = bn.beta.val() - bn.running_mean.value_sync() * scale.clone();
            projected * unit(scale) + unit(shift)
        } else {
            bn.forward(projected)
        };
        relu(out)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::tensor::Distribution;

    use super::*;

    /// Inside `in_inference` the projector on an autodiff backend normalises with its running
    /// statistics, as it does without autodiff, and leaves them unchanged.
    #[test]
    fn inference_uses_running_statistics_on_an_autodiff_backend() {
        let device = Default::default();
        let projector = Projector::<Autodiff<Flex>>::new(6, 4, &device);
        let x =
            Tensor::<Autodiff<Flex>, 2>::random([5, 6], Distribution::Normal(2.0, 3.0), &device);
        // One training forward moves the running statistics away from (0, 1).
        let _ = projector.forward(x.clone());
        let mean = projector.bn.running_mean.value_sync();
        let got = crate::in_inference(|| projector.forward(x.clone()));
        let want = projector.valid().forward(x.inner());
        got.inner()
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::default());
        projector
            .bn
            .running_mean
            .value_sync()
            .into_data()
            .assert_eq(&mean.into_data(), true);
    }
}
