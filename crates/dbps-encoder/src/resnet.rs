//! ResNet-18/34/50 in torchvision's layout (He et al., 2016), cut after layer2 or layer4.
//! Field names follow torchvision's state-dict keys (`conv1`, `bn1`, `layer1.0.conv1`, …).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Tensor, backend::Backend};

use crate::PatchEncoder;
use crate::batchnorm::{BatchNorm2d, conv_bn};
use crate::fast_pool::relu_max_pool;
use crate::fast_relu::relu;

/// ResNet depth: which block type and how many blocks per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetDepth {
    /// BasicBlocks [2, 2, 2, 2].
    R18,
    /// BasicBlocks [3, 4, 6, 3].
    R34,
    /// Bottlenecks [3, 4, 6, 3].
    R50,
}

impl ResNetDepth {
    fn blocks(self) -> [usize; 4] {
        match self {
            Self::R18 => [2, 2, 2, 2],
            Self::R34 | Self::R50 => [3, 4, 6, 3],
        }
    }

    pub(crate) fn expansion(self) -> usize {
        match self {
            Self::R50 => 4,
            _ => 1,
        }
    }
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
}

/// The 1×1 projection shortcut (`downsample.0` conv, `downsample.1` BatchNorm in torchvision).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1×1 strided convolution.
    pub conv: Conv2d<B>,
    /// Its BatchNorm.
    pub bn: BatchNorm2d<B>,
}

/// A BasicBlock (conv3 absent) or a Bottleneck (conv3 present), torchvision names.
#[derive(Module, Debug)]
pub struct ResNetBlock<B: Backend> {
    /// First convolution (3×3 basic, 1×1 bottleneck).
    pub conv1: Conv2d<B>,
    /// BatchNorm after conv1.
    pub bn1: BatchNorm2d<B>,
    /// Second convolution (3×3, carries the stride).
    pub conv2: Conv2d<B>,
    /// BatchNorm after conv2.
    pub bn2: BatchNorm2d<B>,
    /// Bottleneck expansion convolution (1×1).
    pub conv3: Option<Conv2d<B>>,
    /// BatchNorm after conv3.
    pub bn3: Option<BatchNorm2d<B>>,
    /// Projection shortcut when shape changes.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> ResNetBlock<B> {
    fn new(
        depth: ResNetDepth,
        c_in: usize,
        planes: usize,
        stride: usize,
        device: &B::Device,
    ) -> Self {
        let expansion = depth.expansion();
        let c_out = planes * expansion;
        let bn = |c| BatchNorm2d::new(c, device);
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(c_in, c_out, 1, stride).init(device),
            bn: bn(c_out),
        });
        if expansion == 1 {
            Self {
                conv1: conv(c_in, planes, 3, stride).init(device),
                bn1: bn(planes),
                conv2: conv(planes, planes, 3, 1).init(device),
                bn2: bn(planes),
                conv3: None,
                bn3: None,
                downsample,
            }
        } else {
            Self {
                conv1: conv(c_in, planes, 1, 1).init(device),
                bn1: bn(planes),
                conv2: conv(planes, planes, 3, stride).init(device),
                bn2: bn(planes),
                conv3: Some(conv(planes, c_out, 1, 1).init(device)),
                bn3: Some(bn(c_out)),
                downsample,
            }
        }
    }

    /// y = relu(F(x) + shortcut(x)).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(d) => conv_bn(&d.conv, &d.bn, x.clone()),
            None => x.clone(),
        };
        let out = relu(conv_bn(&self.conv1, &self.bn1, x));
        let out = conv_bn(&self.conv2, &self.bn2, out);
        let out = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => conv_bn(conv3, bn3, relu(out)),
            _ => out,
        };
        relu(out + identity)
    }
}

/// A ResNet trunk with global average pooling; `layer3`/`layer4` are empty when cut after layer2.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// 7×7/2 stem convolution.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm2d<B>,
    /// 3×3/2 max pooling.
    pub maxpool: MaxPool2d,
    /// Stage 1.
    pub layer1: Vec<ResNetBlock<B>>,
    /// Stage 2.
    pub layer2: Vec<ResNetBlock<B>>,
    /// Stage 3 (empty when `stages = 2`).
    pub layer3: Vec<ResNetBlock<B>>,
    /// Stage 4 (empty when `stages = 2`).
    pub layer4: Vec<ResNetBlock<B>>,
    pub(crate) out_dim: usize,
}

impl<B: Backend> ResNet<B> {
    /// A freshly initialised ResNet; `width` is 64 for torchvision's networks.
    pub fn new(
        depth: ResNetDepth,
        stages: usize,
        in_channels: usize,
        width: usize,
        device: &B::Device,
    ) -> Self {
        let mut c_in = width;
        let mut layers: [Vec<ResNetBlock<B>>; 4] = Default::default();
        for (stage, (layer, blocks)) in layers.iter_mut().zip(depth.blocks()).enumerate() {
            if stage >= stages {
                break;
            }
            let planes = width << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            for block in 0..blocks {
                let s = if block == 0 { stride } else { 1 };
                layer.push(ResNetBlock::new(depth, c_in, planes, s, device));
                c_in = planes * depth.expansion();
            }
        }
        let [layer1, layer2, layer3, layer4] = layers;
        Self {
            conv1: conv(in_channels, width, 7, 2).init(device),
            bn1: BatchNorm2d::new(width, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            out_dim: c_in,
        }
    }

    /// Channels of the pooled output.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Feature maps after the last kept stage, `[n, D, h, w]`.
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = relu_max_pool(conv_bn(&self.conv1, &self.bn1, x), &self.maxpool);
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
            .fold(x, |x, block| block.forward(x))
    }
}

impl<B: Backend> PatchEncoder<B> for ResNet<B> {
    fn embed_dim(&self) -> usize {
        self.out_dim
    }

    fn embed(&self, patches: Tensor<B, 4>) -> Tensor<B, 2> {
        let maps = self.features(patches);
        let [n, d, h, w] = maps.dims();
        maps.reshape([n, d, h * w]).mean_dim(2).reshape([n, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn widths_match_torchvision() {
        let device = Default::default();
        let r18 = ResNet::<Flex>::new(ResNetDepth::R18, 2, 1, 64, &device);
        assert_eq!(r18.out_dim(), 128);
        let r18 = ResNet::<Flex>::new(ResNetDepth::R18, 4, 3, 64, &device);
        assert_eq!(r18.out_dim(), 512);
        // torchvision resnet18 has 11,689,512 parameters, 11,176,512 without the fc head; burn also
        // counts BatchNorm running mean and variance (2 × 4,800 channels).
        assert_eq!(r18.num_params(), 11_176_512 + 2 * 4_800);
        let r50 = ResNet::<Flex>::new(ResNetDepth::R50, 4, 3, 64, &device);
        assert_eq!(r50.out_dim(), 2048);
        // torchvision resnet50: 25,557,032 parameters, 23,508,032 without the fc head (+ 2 × 26,560 running stats).
        assert_eq!(r50.num_params(), 23_508_032 + 2 * 26_560);
    }

    #[test]
    fn embeds_patches_to_pooled_vectors() {
        let device = Default::default();
        let net = ResNet::<Flex>::new(ResNetDepth::R18, 2, 1, 8, &device);
        let out = net.embed(Tensor::ones([2, 1, 50, 50], &device));
        assert_eq!(out.dims(), [2, 16]);
    }
}
