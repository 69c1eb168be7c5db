//! The worked example of `docs/extending.md`: a small encoder added through the
//! [`PatchEncoder`] seam (this file, one arm in `EncoderConfig`, one in `Backbone`).

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Tensor, activation::relu, backend::Backend};

use crate::PatchEncoder;

/// conv 3×3 / 2 → ReLU → conv 3×3 / 2 → ReLU → global average pooling: D = `width`.
///
/// A cheap encoder for quick experiments on small patches, with no BatchNorm, so training and
/// selection see the same function.
#[derive(Module, Debug)]
pub struct TinyCnn<B: Backend> {
    /// First convolution, `in_channels` → `width`.
    pub conv1: Conv2d<B>,
    /// Second convolution, `width` → `width`.
    pub conv2: Conv2d<B>,
}

impl<B: Backend> TinyCnn<B> {
    /// Fresh weights for `in_channels`-channel patches and `width` output features.
    pub fn new(in_channels: usize, width: usize, device: &B::Device) -> Self {
        let conv = |c_in| {
            Conv2dConfig::new([c_in, width], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv(in_channels),
            conv2: conv(width),
        }
    }
}

impl<B: Backend> PatchEncoder<B> for TinyCnn<B> {
    fn embed_dim(&self) -> usize {
        self.conv2.weight.dims()[0]
    }

    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = relu(self.conv1.forward(patches));
        let x = relu(self.conv2.forward(x));
        let [n, d, h, w] = x.dims();
        x.reshape([n, d, h * w]).mean_dim(2).reshape([n, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    /// The embedding is the spatial mean of the second convolution's rectified output.
    #[test]
    fn embedding_is_the_mean_of_the_last_feature_map() {
        let device = Default::default();
        let net = TinyCnn::<Flex>::new(2, 5, &device);
        let x = Tensor::<Flex, 4>::random([3, 2, 9, 9], Distribution::Default, &device);
        let maps = relu(net.conv2.forward(relu(net.conv1.forward(x.clone()))));
        assert_eq!(maps.dims(), [3, 5, 3, 3]);
        let want = maps.mean_dim(3).mean_dim(2).reshape([3, 5]);
        net.embed(x)
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
        assert_eq!(PatchEncoder::<Flex>::embed_dim(&net), 5);
    }
}
