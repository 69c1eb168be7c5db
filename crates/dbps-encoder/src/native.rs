//! The selection pass's encoder on dedicated CPU kernels: a [`ResNet`] frozen into
//! channels-last convolutions with BatchNorm folded in and bias, residual and ReLU fused
//! (`dbps-kernels`), equal to [`ResNet::embed`] in inference mode within float rounding.
//!
//! Selection embeds every candidate patch without gradients, so it never needs the autodiff
//! graph, the batch statistics or Burn's general convolution; the gradient pass keeps using
//! [`ResNet`] on Burn. Freezing copies the weights, so freeze again after an optimizer step.

use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use dbps_kernels::{ConvSpec, FeatureMap, Isa, PackedConv, global_average_pool, max_pool};

use crate::batchnorm::BatchNorm2d;
use crate::error::NativeError;
use crate::{Encoder, PatchEncoder, ResNet, ResNetBlock};

fn host_f32<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    what: &'static str,
) -> Result<Vec<f32>, NativeError> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|_| NativeError::Dtype(what))
}

/// `conv` followed by inference-mode `bn`, as one packed convolution: W·γ/σ, bias β − μγ/σ.
fn fold<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm2d<B>,
    isa: Isa,
) -> Result<PackedConv, NativeError> {
    let [c_out, c_in, kernel, _] = conv.weight.dims();
    let (scale, shift) = bn.inference_affine();
    let scale = host_f32(scale, "batchnorm scale")?;
    let mut weight = host_f32(conv.weight.val(), "conv weight")?;
    let per_out = weight.len() / c_out;
    for (w, s) in weight.chunks_exact_mut(per_out).zip(&scale) {
        w.iter_mut().for_each(|v| *v *= s);
    }
    let spec = ConvSpec {
        c_in,
        c_out,
        kernel,
        stride: conv.stride[0],
        padding: kernel / 2,
    };
    Ok(PackedConv::new(
        spec,
        &weight,
        &host_f32(shift, "batchnorm shift")?,
        isa,
    )?)
}

/// One residual block: `relu(conv_last(…relu(conv1(x))…) + shortcut(x))`.
#[derive(Debug, Clone)]
struct NativeBlock {
    /// conv1 (+ conv2 for bottlenecks), each followed by ReLU.
    body: Vec<PackedConv>,
    /// The convolution whose output the shortcut is added to.
    last: PackedConv,
    downsample: Option<PackedConv>,
}

impl NativeBlock {
    fn new<B: Backend>(block: &ResNetBlock<B>, isa: Isa) -> Result<Self, NativeError> {
        let conv1 = fold(&block.conv1, &block.bn1, isa)?;
        let conv2 = fold(&block.conv2, &block.bn2, isa)?;
        let (body, last) = match (&block.conv3, &block.bn3) {
            (Some(conv3), Some(bn3)) => (vec![conv1, conv2], fold(conv3, bn3, isa)?),
            _ => (vec![conv1], conv2),
        };
        let downsample = block
            .downsample
            .as_ref()
            .map(|d| fold(&d.conv, &d.bn, isa))
            .transpose()?;
        Ok(Self {
            body,
            last,
            downsample,
        })
    }

    fn forward(&self, x: FeatureMap) -> Result<FeatureMap, NativeError> {
        let shortcut = match &self.downsample {
            Some(d) => d.forward(&x, None, false)?,
            None => x.clone(),
        };
        let mut h = x;
        for conv in &self.body {
            h = conv.forward(&h, None, true)?;
        }
        Ok(self.last.forward(&h, Some(&shortcut), true)?)
    }
}

/// A [`ResNet`]'s inference-mode forward on `dbps-kernels`: patches → pooled features.
#[derive(Debug, Clone)]
pub struct NativeResNet {
    stem: PackedConv,
    blocks: Vec<NativeBlock>,
    out_dim: usize,
    isa: Isa,
}

impl NativeResNet {
    /// Freezes `net`'s current weights (BatchNorm on running statistics) for `isa`.
    pub fn new<B: Backend>(net: &ResNet<B>, isa: Isa) -> Result<Self, NativeError> {
        let blocks = [&net.layer1, &net.layer2, &net.layer3, &net.layer4]
            .into_iter()
            .flatten()
            .map(|block| NativeBlock::new(block, isa))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stem: fold(&net.conv1, &net.bn1, isa)?,
            blocks,
            out_dim: net.out_dim(),
            isa,
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Width of the pooled features.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Pooled features `[n, D]` (row-major) of patches `[n, C, h, w]` given channels-first.
    ///
    /// Patches go through in groups of [`NativeResNet::GROUP`]: a group's feature maps stay in
    /// the last-level cache, and buffers that size are recycled by the allocator instead of
    /// being mapped afresh (and page-faulted in) for every layer.
    pub fn embed(&self, patches: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, NativeError> {
        let [n, c, h, w] = shape;
        let per_patch = c * h * w;
        if patches.len() != n * per_patch {
            return Err(dbps_kernels::KernelError::Shape {
                what: "patches",
                expected: n * per_patch,
                got: patches.len(),
            }
            .into());
        }
        let mut out = Vec::with_capacity(n * self.out_dim);
        for (g, group) in patches.chunks(Self::GROUP * per_patch.max(1)).enumerate() {
            let count = (n - g * Self::GROUP).min(Self::GROUP);
            out.extend(self.embed_group(group, [count, c, h, w])?);
        }
        Ok(out)
    }

    /// Patches per pass through the network.
    pub const GROUP: usize = 64;

    fn embed_group(&self, patches: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, NativeError> {
        let x = FeatureMap::from_nchw(patches, shape)?;
        let x = self.stem.forward(&x, None, true)?;
        // torchvision's stem pooling: 3×3, stride 2, padding 1.
        let mut x = max_pool(&x, 3, 2, 1)?;
        for block in &self.blocks {
            x = block.forward(x)?;
        }
        Ok(global_average_pool(&x))
    }
}

/// An [`Encoder`] frozen for the selection pass: the ResNet backbone on [`NativeResNet`],
/// the projector (if any) on Burn.
#[derive(Debug, Clone)]
pub struct NativeEncoder<B: Backend> {
    backbone: NativeResNet,
    /// The encoder it was frozen from: its projector runs on Burn, and it embeds inputs the
    /// kernels reject.
    fallback: Encoder<B>,
}

impl<B: Backend> NativeEncoder<B> {
    /// Freezes `encoder` for the best instruction set of this CPU; `None` when its backbone
    /// has no native path (precomputed features need no encoder pass anyway).
    pub fn freeze(encoder: &Encoder<B>) -> Option<Result<Self, NativeError>> {
        match Isa::detect() {
            Ok(isa) => Self::freeze_for(encoder, isa),
            Err(e) => {
                matches!(encoder.backbone, crate::Backbone::ResNet(_)).then_some(Err(e.into()))
            }
        }
    }

    /// As [`NativeEncoder::freeze`], for a given instruction set.
    pub fn freeze_for(encoder: &Encoder<B>, isa: Isa) -> Option<Result<Self, NativeError>> {
        let crate::Backbone::ResNet(net) = &encoder.backbone else {
            return None;
        };
        Some(NativeResNet::new(net, isa).map(|backbone| Self {
            backbone,
            fallback: encoder.clone(),
        }))
    }

    /// The frozen backbone.
    pub fn backbone(&self) -> &NativeResNet {
        &self.backbone
    }
}

impl<B: Backend> PatchEncoder<B> for NativeEncoder<B> {
    fn embed_dim(&self) -> usize {
        self.fallback.embed_dim()
    }

    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2> {
        let shape = patches.dims();
        let device = patches.device();
        let pixels: Vec<f32> = patches.clone().into_data().iter::<f32>().collect();
        let features = match self.backbone.embed(&pixels, shape) {
            Ok(features) => features,
            Err(e) => {
                // Burn's forward reports such an input in its own words.
                tracing::warn!(error = %e, "native encoder rejected the patches; using Burn's");
                return self.fallback.embed(patches);
            }
        };
        let features = Tensor::from_data(
            TensorData::new(features, [shape[0], self.backbone.out_dim()]),
            &device,
        );
        match &self.fallback.projector {
            Some(p) => p.forward(features),
            None => features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNetDepth;
    use burn::backend::Flex;
    use burn::module::{Param, RunningState};
    use burn::tensor::{Distribution, Tolerance};

    /// Random BatchNorm statistics and affine parameters, so folding is not a no-op.
    fn randomise_bn(bn: &mut BatchNorm2d<Flex>) {
        let c = bn.gamma.dims()[0];
        let device = Default::default();
        bn.gamma = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 1.5),
            &device,
        ));
        bn.beta = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(-0.2, 0.2),
            &device,
        ));
        bn.running_mean = RunningState::new(Tensor::random(
            [c],
            Distribution::Uniform(-0.2, 0.2),
            &device,
        ));
        bn.running_var = RunningState::new(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 2.0),
            &device,
        ));
    }

    fn randomised(
        depth: ResNetDepth,
        stages: usize,
        channels: usize,
        width: usize,
    ) -> ResNet<Flex> {
        let mut net = ResNet::<Flex>::new(depth, stages, channels, width, &Default::default());
        randomise_bn(&mut net.bn1);
        for layer in [
            &mut net.layer1,
            &mut net.layer2,
            &mut net.layer3,
            &mut net.layer4,
        ] {
            for block in layer.iter_mut() {
                randomise_bn(&mut block.bn1);
                randomise_bn(&mut block.bn2);
                if let Some(bn3) = block.bn3.as_mut() {
                    randomise_bn(bn3);
                }
                if let Some(d) = block.downsample.as_mut() {
                    randomise_bn(&mut d.bn);
                }
            }
        }
        net
    }

    /// Every ResNet variant dbps configures: native features equal Burn's within 1e-4 on every
    /// instruction set this CPU runs — absolute, or relative 1e-5 where random BatchNorm
    /// statistics push features past 100 (there 1e-4 is a few f32 ulps, which another
    /// summation order over 50 layers moves: it failed once at 163.3799 vs 163.3798).
    #[test]
    fn native_resnet_equals_the_plain_forward() {
        let device = Default::default();
        for depth in [ResNetDepth::R18, ResNetDepth::R34, ResNetDepth::R50] {
            for stages in [2, 4] {
                for channels in [1, 3] {
                    let net = randomised(depth, stages, channels, 8);
                    let patches = Tensor::<Flex, 4>::random(
                        [3, channels, 40, 40],
                        Distribution::Default,
                        &device,
                    );
                    let want = net.embed(patches.clone());
                    let pixels = patches.into_data().into_vec::<f32>().unwrap();
                    for isa in Isa::available() {
                        let native = NativeResNet::new(&net, isa).unwrap();
                        let got = native.embed(&pixels, [3, channels, 40, 40]).unwrap();
                        let got = Tensor::<Flex, 2>::from_data(
                            TensorData::new(got, [3, net.out_dim()]),
                            &device,
                        );
                        got.into_data().assert_approx_eq::<f32>(
                            &want.clone().into_data(),
                            Tolerance::rel_abs(1e-5, 1e-4),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn full_width_resnet18_equals_the_plain_forward() {
        let device = Default::default();
        let net = randomised(ResNetDepth::R18, 2, 1, 64);
        let patches = Tensor::<Flex, 4>::random([5, 1, 50, 50], Distribution::Default, &device);
        let want = net.embed(patches.clone());
        let pixels = patches.into_data().into_vec::<f32>().unwrap();
        let got = NativeResNet::new(&net, Isa::best())
            .unwrap()
            .embed(&pixels, [5, 1, 50, 50])
            .unwrap();
        Tensor::<Flex, 2>::from_data(TensorData::new(got, [5, 128]), &device)
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-4));
    }
}
