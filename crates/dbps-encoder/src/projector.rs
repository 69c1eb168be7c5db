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
        relu(self.bn.forward(self.linear.forward(normed)))
    }
}
