use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::PatchEncoder;

/// Passes precomputed patch features through: "patches" `[n, D, 1, 1]` → `[n, D]`.
#[derive(Module, Debug, Clone)]
pub struct IdentityEncoder {
    dim: usize,
}

impl IdentityEncoder {
    /// An identity encoder for features of width `dim`.
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }
}

impl<B: Backend> PatchEncoder<B> for IdentityEncoder {
    fn embed_dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, d, h, w] = patches.dims();
        assert_eq!(
            (d, h, w),
            (self.dim, 1, 1),
            "identity encoder expects precomputed features [n, {}, 1, 1]",
            self.dim
        );
        patches.reshape([n, d])
    }
}
