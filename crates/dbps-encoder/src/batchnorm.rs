//! BatchNorm over conv feature maps, written for speed on burn-flex, plus conv+BN folding.
//!
//! In training mode on `Autodiff<Flex>` the normalisation is one fused operation
//! ([`crate::fast_batchnorm`]); on other backends it is composed from tensor ops.
//!
//! burn-flex broadcasts `[1, C, 1, 1]` operands over `[N, C, H, W]` maps through a slow generic
//! path (≈ 30× a plain element-wise op, measured). Here every per-channel operation runs on the
//! `[N·C, H·W]` view with a trailing-axis broadcast, which is fast; in inference mode the
//! normalisation is folded into the preceding convolution's weights and bias, so it costs nothing.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, backend::Backend};

use crate::fast_batchnorm::batch_norm_train;

/// BatchNorm2d with torchvision's parameter names (`weight`/`bias` are `gamma`/`beta` as in burn).
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale γ.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift β.
    pub beta: Param<Tensor<B, 1>>,
    /// Running mean, used in inference mode.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, used in inference mode.
    pub running_var: RunningState<Tensor<B, 1>>,
    pub(crate) momentum: f64,
    pub(crate) epsilon: f64,
}

/// Multiplies channel `c` of `x` `[N, C, H, W]` by `scale[c]` and adds `shift[c]`.
fn channel_affine<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let per_row = |v: Tensor<B, 1>| v.reshape([1, c]).repeat_dim(0, n).reshape([n * c, 1]);
    (x.reshape([n * c, h * w]) * per_row(scale) + per_row(shift)).reshape([n, c, h, w])
}

impl<B: Backend> BatchNorm2d<B> {
    /// γ = 1, β = 0, running mean 0 and variance 1, momentum 0.1, ε = 1e-5 (PyTorch's defaults).
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// Inference-mode normalisation as a per-channel `(scale, shift)`, from the running
    /// statistics with any update a training forward left pending folded in.
    pub fn inference_affine(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let scale = self.gamma.val() / (self.running_var.value_sync() + self.epsilon).sqrt();
        let shift = self.beta.val() - self.running_mean.value_sync() * scale.clone();
        (scale, shift)
    }

    /// Normalises `[N, C, H, W]`: batch statistics (and a running-stat update) when autodiff is
    /// enabled, running statistics otherwise — the convention of burn's own BatchNorm — and
    /// always inside [`crate::in_inference`].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if !B::ad_enabled(&x.device()) || crate::inference_forced() {
            let (scale, shift) = self.inference_affine();
            return channel_affine(x, scale, shift);
        }
        let [n, c, h, w] = x.dims();
        let count = (n * h * w) as f64;
        let bessel = count / (count - 1.0).max(1.0);
        let m = self.momentum;
        if let Some(norm) =
            batch_norm_train(x.clone(), self.gamma.val(), self.beta.val(), self.epsilon)
        {
            self.running_mean
                .update(self.running_mean.value_sync() * (1.0 - m) + norm.mean * m);
            self.running_var
                .update(self.running_var.value_sync() * (1.0 - m) + norm.var * (bessel * m));
            return norm.output;
        }
        let rows = x.clone().reshape([n * c, h * w]);
        let per_channel = |t: Tensor<B, 2>| t.mean_dim(1).reshape([n, c]).mean_dim(0).reshape([c]);
        let mean = per_channel(rows.clone());
        let var = (per_channel(rows.square()) - mean.clone().square()).clamp_min(0.0);
        let unbiased = var.clone().detach() * bessel;
        self.running_mean
            .update(self.running_mean.value_sync() * (1.0 - m) + mean.clone().detach() * m);
        self.running_var
            .update(self.running_var.value_sync() * (1.0 - m) + unbiased * m);
        let scale = self.gamma.val() / (var + self.epsilon).sqrt();
        let shift = self.beta.val() - mean * scale.clone();
        channel_affine(x, scale, shift)
    }
}

/// `bn(conv(x))`; in inference mode as one convolution with folded weights and bias.
pub fn conv_bn<B: Backend>(conv: &Conv2d<B>, bn: &BatchNorm2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [kh, kw] = conv.kernel_size;
    let options = ConvOptions::new(conv.stride, [kh / 2, kw / 2], conv.dilation, conv.groups);
    if B::ad_enabled(&x.device()) && !crate::inference_forced() {
        let bias = conv.bias.as_ref().map(|b| b.val());
        return bn.forward(crate::conv2d(x, conv.weight.val(), bias, options));
    }
    let (scale, shift) = bn.inference_affine();
    let weight = conv.weight.val();
    let c_out = weight.dims()[0];
    let weight = weight * scale.reshape([c_out, 1, 1, 1]);
    crate::conv2d(x, weight, Some(shift), options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{BatchNormConfig, PaddingConfig2d, conv::Conv2dConfig};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<Flex>;

    fn close(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-4));
    }

    /// Running statistics by hand: channel 0 holds {1, 2, 3, 4} (mean 2.5, unbiased variance
    /// 5/3, biased 1.25), channel 1 holds {0, 0, 0, 8} (mean 2, unbiased 16, biased 12);
    /// from (0, 1) with momentum 0.1, r ← 0.9·r + 0.1·batch statistic, twice; the output
    /// uses the biased variance.
    #[test]
    fn running_statistics_follow_the_momentum_update_by_hand() {
        let device = Default::default();
        let bn = BatchNorm2d::<A>::new(2, &device);
        let x = Tensor::<A, 4>::from_floats(
            [[[[1.0, 2.0]], [[0.0, 0.0]]], [[[3.0, 4.0]], [[0.0, 8.0]]]],
            &device,
        );
        let first: Vec<f32> = bn.forward(x.clone()).into_data().iter::<f32>().collect();
        let eps = 1e-5f64;
        let z = |v: f64, mean: f64, var: f64| ((v - mean) / (var + eps).sqrt()) as f32;
        let want = [
            z(1.0, 2.5, 1.25),
            z(2.0, 2.5, 1.25),
            z(0.0, 2.0, 12.0),
            z(0.0, 2.0, 12.0),
            z(3.0, 2.5, 1.25),
            z(4.0, 2.5, 1.25),
            z(0.0, 2.0, 12.0),
            z(8.0, 2.0, 12.0),
        ];
        for (g, w) in first.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "output {g} vs {w}");
        }
        let stats = |bn: &BatchNorm2d<A>| -> (Vec<f32>, Vec<f32>) {
            (
                bn.running_mean
                    .value_sync()
                    .into_data()
                    .iter::<f32>()
                    .collect(),
                bn.running_var
                    .value_sync()
                    .into_data()
                    .iter::<f32>()
                    .collect(),
            )
        };
        let (mean, var) = stats(&bn);
        let near = |got: &[f32], want: [f64; 2], what: &str| {
            for (g, w) in got.iter().zip(want) {
                assert!((f64::from(*g) - w).abs() < 1e-5, "{what}: {g} vs {w}");
            }
        };
        near(&mean, [0.25, 0.2], "running mean after one step");
        near(
            &var,
            [0.9 + 0.1 * 5.0 / 3.0, 0.9 + 0.1 * 16.0],
            "running var after one step",
        );
        let _ = bn.forward(x);
        let (mean, var) = stats(&bn);
        near(
            &mean,
            [0.9 * 0.25 + 0.25, 0.9 * 0.2 + 0.2],
            "running mean after two steps",
        );
        let var1 = [0.9 + 0.1 * 5.0 / 3.0, 0.9 + 0.1 * 16.0];
        near(
            &var,
            [0.9 * var1[0] + 0.1 * 5.0 / 3.0, 0.9 * var1[1] + 0.1 * 16.0],
            "running var after two steps",
        );
    }

    /// The fused training-mode BatchNorm (the `Autodiff<Flex>` path) against burn's own
    /// `nn::BatchNorm`: output, running statistics, and the gradients of x, γ and β.
    #[test]
    fn training_mode_matches_burn_batchnorm() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([3, 4, 5, 5], Distribution::Normal(1.0, 2.0), &device);
        let gamma = Tensor::<Flex, 1>::random([4], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<Flex, 1>::random([4], Distribution::Default, &device);
        let seed = Tensor::<Flex, 4>::random([3, 4, 5, 5], Distribution::Default, &device);
        let mut ours = BatchNorm2d::<A>::new(4, &device);
        ours.gamma = Param::from_tensor(Tensor::from_inner(gamma.clone()));
        ours.beta = Param::from_tensor(Tensor::from_inner(beta.clone()));
        let mut theirs = BatchNormConfig::new(4).init::<A>(&device);
        theirs.gamma = Param::from_tensor(Tensor::from_inner(gamma));
        theirs.beta = Param::from_tensor(Tensor::from_inner(beta));
        let run = |forward: &dyn Fn(Tensor<A, 4>) -> Tensor<A, 4>| {
            let xa = Tensor::<A, 4>::from_inner(x.clone()).require_grad();
            let y = forward(xa.clone());
            let grads = (y.clone() * Tensor::from_inner(seed.clone()))
                .sum()
                .backward();
            (y.inner(), xa.grad(&grads).expect("x gradient"), grads)
        };
        let (y, dx, grads) = run(&|x| ours.forward(x));
        let (y_ref, dx_ref, grads_ref) = run(&|x| theirs.forward(x));
        close(y, y_ref);
        close(dx, dx_ref);
        for (a, b) in [
            (ours.gamma.grad(&grads), theirs.gamma.grad(&grads_ref)),
            (ours.beta.grad(&grads), theirs.beta.grad(&grads_ref)),
        ] {
            a.expect("our gradient")
                .into_data()
                .assert_approx_eq::<f32>(
                    &b.expect("burn's gradient").into_data(),
                    Tolerance::absolute(1e-4),
                );
        }
        // Running statistics moved 10 % towards the batch's (synced: `value()` would still show
        // the initial 0 and 1 on both sides). burn folds in the biased batch variance, PyTorch —
        // and dbps, whose weights come from PyTorch — the unbiased one: 0.9 + 0.1·var·n/(n − 1).
        ours.running_mean
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(
                &theirs.running_mean.value_sync().into_data(),
                Tolerance::absolute(1e-5),
            );
        let n = 3.0 * 5.0 * 5.0;
        let unbiased = (theirs.running_var.value_sync() - 0.9) * (n / (n - 1.0)) + 0.9;
        ours.running_var
            .value_sync()
            .into_data()
            .assert_approx_eq::<f32>(&unbiased.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn folded_inference_equals_conv_then_batchnorm() {
        let device = Default::default();
        let conv = Conv2dConfig::new([3, 6], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init::<Flex>(&device);
        let mut bn = BatchNorm2d::<Flex>::new(6, &device);
        bn.running_mean = RunningState::new(Tensor::random([6], Distribution::Default, &device));
        bn.running_var = RunningState::new(Tensor::random(
            [6],
            Distribution::Uniform(0.5, 2.0),
            &device,
        ));
        bn.gamma = Param::from_tensor(Tensor::random([6], Distribution::Default, &device));
        let x = Tensor::<Flex, 4>::random([2, 3, 9, 9], Distribution::Default, &device);
        let unfolded = bn.forward(conv.forward(x.clone()));
        close(conv_bn(&conv, &bn, x), unfolded);
    }
}
