//! Every kernel against a direct, loop-by-loop reference written from the definitions, on every
//! instruction set this CPU runs.

use dbps_kernels::{
    BatchStats, ConvSpec, FeatureMap, Isa, KernelError, PackedConv, batch_norm_backward,
    batch_norm_forward, conv2d_forward, conv2d_input_grad, conv2d_weight_grad, global_average_pool,
    max_pool,
};
use proptest::prelude::*;

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// conv2d on NCHW input and OIHW weights, straight from the definition, in f64; output NHWC,
/// with each output's sum of |terms| (what float rounding error scales with).
fn naive_conv(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    spec: ConvSpec,
) -> (Vec<f32>, Vec<f32>, [usize; 4]) {
    let k = spec.kernel;
    let oh = (h + 2 * spec.padding - k) / spec.stride + 1;
    let ow = (w + 2 * spec.padding - k) / spec.stride + 1;
    let mut out = vec![0f32; n * oh * ow * spec.c_out];
    let mut magnitude = vec![0f32; out.len()];
    for img in 0..n {
        for co in 0..spec.c_out {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = bias[co] as f64;
                    let mut mag = (bias[co] as f64).abs();
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (y * spec.stride + ky) as isize - spec.padding as isize;
                                let ix = (xo * spec.stride + kx) as isize - spec.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((img * c + ci) * h + iy as usize) * w + ix as usize];
                                let wv = weight[((co * c + ci) * k + ky) * k + kx];
                                acc += xv as f64 * wv as f64;
                                mag += (xv as f64 * wv as f64).abs();
                            }
                        }
                    }
                    let at = ((img * oh + y) * ow + xo) * spec.c_out + co;
                    out[at] = acc as f32;
                    magnitude[at] = mag as f32;
                }
            }
        }
    }
    (out, magnitude, [n, oh, ow, spec.c_out])
}

/// f32 sums of `magnitude`-sized terms, in any order, stay within a few ulps of that magnitude.
fn assert_close(got: &[f32], want: &[f32], magnitude: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((g, w), m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + m + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
    residual: bool,
    relu: bool,
}

impl Case {
    fn spec(&self) -> ConvSpec {
        ConvSpec {
            c_in: self.c_in,
            c_out: self.c_out,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// Input shape, channels-first.
    fn shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1usize..4,
        1usize..40,
        1usize..70,
        prop_oneof![Just(1usize), Just(3), Just(7)],
        1usize..3,
        0usize..4,
        (any::<bool>(), any::<bool>()),
    )
        .prop_flat_map(
            |(n, c_in, c_out, kernel, stride, padding, (residual, relu))| {
                let min = kernel.saturating_sub(2 * padding).max(1);
                (min..min + 12, min..min + 12).prop_map(move |(h, w)| Case {
                    n,
                    c_in,
                    c_out,
                    kernel,
                    stride,
                    padding,
                    h,
                    w,
                    residual,
                    relu,
                })
            },
        )
}

type Constructor = fn(ConvSpec, &[f32], &[f32], Isa) -> Result<PackedConv, KernelError>;

fn check_conv(case: &Case, isa: Isa) {
    check_conv_with(case, isa, PackedConv::new);
}

fn check_conv_with(case: &Case, isa: Isa, build: Constructor) {
    let (spec, shape) = (case.spec(), case.shape());
    let x = values(shape.iter().product(), 1);
    let weight = values(case.c_out * case.c_in * case.kernel * case.kernel, 2);
    let bias = values(case.c_out, 3);
    let (mut want, mut magnitude, out_shape) = naive_conv(&x, shape, &weight, &bias, spec);
    let residual = case.residual.then(|| {
        let r = values(want.len(), 4);
        for ((w, m), r) in want.iter_mut().zip(&mut magnitude).zip(&r) {
            *w += r;
            *m += r.abs();
        }
        FeatureMap::new(r, out_shape).unwrap()
    });
    if case.relu {
        want.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    let conv = build(spec, &weight, &bias, isa).unwrap();
    let input = FeatureMap::from_nchw(&x, shape).unwrap();
    let got = conv.forward(&input, residual.as_ref(), case.relu).unwrap();
    assert_eq!(got.shape(), out_shape);
    assert_close(&got.data, &want, &magnitude, &format!("{isa} {case:?}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 48 }))]

    #[test]
    fn convolution_matches_the_definition(case in cases()) {
        for isa in Isa::available() {
            check_conv(&case, isa);
        }
    }
}

#[test]
fn deep_convolution_crosses_depth_blocks() {
    // depth 9 · 64 = 576 spans three 256-deep passes; 70 output channels leave a partial panel.
    let case = Case {
        n: 2,
        c_in: 64,
        c_out: 70,
        kernel: 3,
        stride: 1,
        padding: 1,
        h: 9,
        w: 7,
        residual: true,
        relu: true,
    };
    for isa in Isa::available() {
        check_conv(&case, isa);
    }
}

#[test]
fn max_pool_matches_the_definition() {
    let (n, c, h, w) = (2, 5, 9, 8);
    let x = values(n * c * h * w, 7);
    let got = max_pool(&FeatureMap::from_nchw(&x, [n, c, h, w]).unwrap(), 3, 2, 1).unwrap();
    let (oh, ow) = (5, 4);
    assert_eq!(got.shape(), [n, oh, ow, c]);
    for img in 0..n {
        for ch in 0..c {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for iy in (2 * y).saturating_sub(1)..(2 * y + 2).min(h) {
                        for ix in (2 * xo).saturating_sub(1)..(2 * xo + 2).min(w) {
                            m = m.max(x[((img * c + ch) * h + iy) * w + ix]);
                        }
                    }
                    assert_eq!(got.data[((img * oh + y) * ow + xo) * c + ch], m);
                }
            }
        }
    }
}

#[test]
fn global_average_pool_is_the_per_channel_mean() {
    let (n, c, h, w) = (3, 4, 5, 6);
    let x = values(n * c * h * w, 9);
    let got = global_average_pool(&FeatureMap::from_nchw(&x, [n, c, h, w]).unwrap());
    for img in 0..n {
        for ch in 0..c {
            let plane = &x[(img * c + ch) * h * w..][..h * w];
            let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
            assert!((got[img * c + ch] as f64 - mean).abs() < 1e-5);
        }
    }
}

#[test]
fn bad_inputs_are_reported() {
    let spec = ConvSpec {
        c_in: 3,
        c_out: 4,
        kernel: 7,
        stride: 2,
        padding: 0,
    };
    let conv = PackedConv::new(spec, &[0.0; 4 * 3 * 49], &[0.0; 4], Isa::portable()).unwrap();
    let small = FeatureMap::new(vec![0.0; 5 * 5 * 3], [1, 5, 5, 3]).unwrap();
    assert!(matches!(
        conv.forward(&small, None, false),
        Err(KernelError::TooSmall { .. })
    ));
    let wrong = FeatureMap::new(vec![0.0; 9 * 9], [1, 9, 9, 1]).unwrap();
    assert_eq!(
        conv.forward(&wrong, None, false).unwrap_err(),
        KernelError::Channels {
            expected: 3,
            got: 1
        }
    );
    assert!(PackedConv::new(spec, &[0.0; 3], &[0.0; 4], Isa::portable()).is_err());
    assert!(FeatureMap::new(vec![0.0; 3], [1, 2, 2, 1]).is_err());
}

/// Input and weight gradients of `y = conv(x, W)` for `dL/dy = dy`, straight from the chain
/// rule in f64, channels-first, with the sums of |terms| for the tolerance.
#[allow(clippy::type_complexity)]
fn naive_grads(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    weight: &[f32],
    dy: &[f32],
    spec: ConvSpec,
) -> ((Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
    let k = spec.kernel;
    let oh = (h + 2 * spec.padding - k) / spec.stride + 1;
    let ow = (w + 2 * spec.padding - k) / spec.stride + 1;
    let mut dx = vec![0f64; x.len()];
    let mut dx_mag = vec![0f64; x.len()];
    let mut dw = vec![0f64; weight.len()];
    let mut dw_mag = vec![0f64; weight.len()];
    for img in 0..n {
        for co in 0..spec.c_out {
            for y in 0..oh {
                for xo in 0..ow {
                    let g = dy[((img * spec.c_out + co) * oh + y) * ow + xo] as f64;
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (y * spec.stride + ky) as isize - spec.padding as isize;
                                let ix = (xo * spec.stride + kx) as isize - spec.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xi = ((img * c + ci) * h + iy as usize) * w + ix as usize;
                                let wi = ((co * c + ci) * k + ky) * k + kx;
                                dx[xi] += g * weight[wi] as f64;
                                dx_mag[xi] += (g * weight[wi] as f64).abs();
                                dw[wi] += g * x[xi] as f64;
                                dw_mag[wi] += (g * x[xi] as f64).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<_>>();
    ((f(dx), f(dx_mag)), (f(dw), f(dw_mag)))
}

fn check_grads(case: &Case, isa: Isa) {
    let x = values(case.shape().iter().product(), 11);
    let weight = values(case.c_out * case.c_in * case.kernel * case.kernel, 12);
    check_all_from(case, isa, &x, &weight);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 32 }))]

    #[test]
    fn gradients_match_the_chain_rule(case in cases()) {
        for isa in Isa::available() {
            check_grads(&case, isa);
        }
    }
}

#[test]
fn weight_gradient_spans_pixel_blocks_and_threads() {
    // 3 · 15 · 13 = 585 output pixels: several 256-pixel blocks, split between threads.
    let case = Case {
        n: 3,
        c_in: 20,
        c_out: 40,
        kernel: 3,
        stride: 1,
        padding: 1,
        h: 15,
        w: 13,
        residual: false,
        relu: false,
    };
    for isa in Isa::available() {
        check_grads(&case, isa);
    }
}

#[test]
fn winograd_weight_gradient_matches_the_definition() {
    // ≥ 512 input channels: the weight gradient takes the Winograd path. Odd sizes leave
    // partial tiles at the edges; 3 · 12 · 11 = 396 tiles span several blocks and threads.
    for (n, h, w, c_out) in [(2, 5, 7, 16), (3, 23, 21, 16)] {
        let case = Case {
            n,
            c_in: 512,
            c_out,
            kernel: 3,
            stride: 1,
            padding: 1,
            h,
            w,
            residual: false,
            relu: false,
        };
        for isa in Isa::available() {
            check_grads(&case, isa);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 24 }))]

    /// 3×3 stride-1 padding-1 convolutions take the Winograd path: odd sizes leave partial
    /// 2×2 tiles, odd channel counts partial panels.
    #[test]
    fn winograd_matches_the_definition(
        n in 1usize..3,
        c_in in 1usize..40,
        c_out in 1usize..70,
        h in 1usize..12,
        w in 1usize..12,
        residual in any::<bool>(),
        relu in any::<bool>(),
    ) {
        let case = Case { n, c_in, c_out, kernel: 3, stride: 1, padding: 1, h, w, residual, relu };
        for isa in Isa::available() {
            check_conv_with(&case, isa, PackedConv::winograd);
            check_conv_with(&case, isa, PackedConv::direct);
        }
    }
}

/// Training-mode BatchNorm from the definition in f64: `L = Σ seed · (γ (x − μ)/√(σ² + ε) + β)`
/// with the batch's own μ and biased σ² of each channel over `[n, ·, plane]`.
fn naive_batch_norm_loss(
    x: &[f64],
    [n, c, plane]: [usize; 3],
    gamma: &[f64],
    beta: &[f64],
    seed: &[f64],
) -> (f64, Vec<f64>) {
    let eps = 1e-5;
    let m = (n * plane) as f64;
    let mut loss = 0.0;
    let mut y = vec![0.0; x.len()];
    for ch in 0..c {
        let at = |img: usize, i: usize| (img * c + ch) * plane + i;
        let mut mean = 0.0;
        for img in 0..n {
            for i in 0..plane {
                mean += x[at(img, i)] / m;
            }
        }
        let mut var = 0.0;
        for img in 0..n {
            for i in 0..plane {
                var += (x[at(img, i)] - mean).powi(2) / m;
            }
        }
        for img in 0..n {
            for i in 0..plane {
                let v = gamma[ch] * (x[at(img, i)] - mean) / (var + eps).sqrt() + beta[ch];
                y[at(img, i)] = v;
                loss += seed[at(img, i)] * v;
            }
        }
    }
    (loss, y)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 16 }))]

    /// Output against the definition, and all three gradients against central differences of
    /// the f64 loss.
    #[test]
    fn batch_norm_matches_the_definition(
        n in 1usize..4, c in 1usize..5, plane in 1usize..40, seed in 0u64..1000,
    ) {
        prop_assume!(n * plane > 1);
        let shape = [n, c, plane];
        let len = n * c * plane;
        let x: Vec<f32> = values(len, seed).iter().map(|v| 3.0 * v + 0.5).collect();
        let gamma: Vec<f32> = values(c, seed + 1).iter().map(|v| v + 1.5).collect();
        let beta = values(c, seed + 2);
        let dy = values(len, seed + 3);
        let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let (x64, g64, b64, dy64) = (wide(&x), wide(&gamma), wide(&beta), wide(&dy));
        let (y, stats) = batch_norm_forward(&x, shape, &gamma, &beta, 1e-5).unwrap();
        let (_, y_ref) = naive_batch_norm_loss(&x64, shape, &g64, &b64, &dy64);
        for (a, b) in y.iter().zip(&y_ref) {
            prop_assert!((*a as f64 - b).abs() < 1e-4, "output {a} vs {b}");
        }
        let grads = batch_norm_backward(&dy, &x, shape, &stats, &gamma, 1e-5).unwrap();
        let h = 1e-4;
        let diff = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        for i in 0..len {
            let d = diff(&|e| {
                let mut xp = x64.clone();
                xp[i] += e;
                naive_batch_norm_loss(&xp, shape, &g64, &b64, &dy64).0
            });
            prop_assert!((grads.input[i] as f64 - d).abs() < 2e-3, "dx[{i}] {} vs {d}", grads.input[i]);
        }
        for ch in 0..c {
            let dg = diff(&|e| {
                let mut gp = g64.clone();
                gp[ch] += e;
                naive_batch_norm_loss(&x64, shape, &gp, &b64, &dy64).0
            });
            let db = diff(&|e| {
                let mut bp = b64.clone();
                bp[ch] += e;
                naive_batch_norm_loss(&x64, shape, &g64, &bp, &dy64).0
            });
            prop_assert!((grads.gamma[ch] as f64 - dg).abs() < 2e-3, "dγ {} vs {dg}", grads.gamma[ch]);
            prop_assert!((grads.beta[ch] as f64 - db).abs() < 2e-3, "dβ {} vs {db}", grads.beta[ch]);
        }
    }
}

#[test]
fn batch_norm_rejects_mismatched_shapes() {
    let err = batch_norm_forward(&[0.0; 10], [2, 2, 3], &[1.0; 2], &[0.0; 2], 1e-5).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Shape {
                expected: 12,
                got: 10,
                ..
            }
        ),
        "{err}"
    );
    let err = batch_norm_forward(&[0.0; 12], [2, 2, 3], &[1.0; 3], &[0.0; 2], 1e-5).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Shape {
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    let stats = BatchStats {
        mean: vec![0.0; 2],
        var: vec![1.0; 2],
    };
    let err = batch_norm_backward(&[0.0; 11], &[0.0; 12], [2, 2, 3], &stats, &[1.0; 2], 1e-5)
        .unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Shape {
                expected: 12,
                got: 11,
                ..
            }
        ),
        "{err}"
    );
}

/// `values` shifted to mean `offset`: inputs far from zero, where Winograd's transforms
/// subtract nearly equal numbers and lose precision if they are ill-conditioned.
fn values_around(len: usize, seed: u64, offset: f32) -> Vec<f32> {
    values(len, seed).into_iter().map(|v| v + offset).collect()
}

/// Forward, input gradient and weight gradient of one convolution against the definition,
/// from the given input and weights (the gradient of `Σ dy · y` with `dy` in [-1, 1)).
fn check_all_from(case: &Case, isa: Isa, x: &[f32], weight: &[f32]) {
    let (spec, shape) = (case.spec(), case.shape());
    let (y, y_shape) = conv2d_forward(x, shape, weight, None, spec, isa).unwrap();
    let (want_y, mag_y, _) = naive_conv(x, shape, weight, &vec![0.0; case.c_out], spec);
    let y_nhwc = FeatureMap::from_nchw(&y, y_shape).unwrap();
    assert_close(
        &y_nhwc.data,
        &want_y,
        &mag_y,
        &format!("forward {isa} {case:?}"),
    );
    let dy = values(y.len(), 21);
    let ((want_dx, mag_dx), (want_dw, mag_dw)) = naive_grads(x, shape, weight, &dy, spec);
    let dx = conv2d_input_grad(&dy, shape, weight, spec, isa).unwrap();
    assert_close(
        &dx,
        &want_dx,
        &mag_dx,
        &format!("input grad {isa} {case:?}"),
    );
    let dw = conv2d_weight_grad(x, shape, &dy, spec, isa).unwrap();
    assert_close(
        &dw,
        &want_dw,
        &mag_dw,
        &format!("weight grad {isa} {case:?}"),
    );
}

fn case(n: usize, c_in: usize, c_out: usize, kernel: usize, stride: usize, hw: [usize; 2]) -> Case {
    Case {
        n,
        c_in,
        c_out,
        kernel,
        stride,
        padding: kernel / 2,
        h: hw[0],
        w: hw[1],
        residual: false,
        relu: false,
    }
}

/// A 3×3 stride-1 layer's input gradient is the flipped convolution of dY, which runs as
/// Winograd once dY has ≥ 128 channels (the forward's threshold): ResNet-18's layer2–4 widths,
/// odd sizes for partial tiles.
#[test]
#[cfg_attr(
    miri,
    ignore = "minutes per case under the interpreter; the small cases cover the same code"
)]
fn winograd_input_gradient_matches_the_definition() {
    for (c_in, c_out, hw) in [(64, 128, [7, 5]), (128, 128, [6, 6]), (8, 256, [3, 9])] {
        let case = case(2, c_in, c_out, 3, 1, hw);
        for isa in Isa::available() {
            check_grads(&case, isa);
        }
    }
}

/// ResNet-50's 1×1 convolutions at their real widths: the expansion 256 → 1024, the
/// projection 1024 → 2048 at stride 2, and the reduction 2048 → 512.
#[test]
#[cfg_attr(
    miri,
    ignore = "minutes per case under the interpreter; the small cases cover the same code"
)]
fn resnet50_pointwise_convolutions_at_real_widths() {
    for (c_in, c_out, stride, hw) in [
        (256, 1024, 1, [3, 3]),
        (1024, 2048, 2, [4, 3]),
        (2048, 512, 1, [2, 2]),
    ] {
        let case = case(1, c_in, c_out, 1, stride, hw);
        let x = values(case.shape().iter().product(), 31);
        let weight = values(c_out * c_in, 32);
        for isa in Isa::available() {
            check_all_from(&case, isa, &x, &weight);
        }
    }
}

/// Inputs of mean 100 (not only [-1, 1)): the Winograd forward, its input gradient and its
/// weight gradient stay within f32 rounding of the definition, relative to the sum of |terms|.
#[test]
#[cfg_attr(
    miri,
    ignore = "minutes per case under the interpreter; the small cases cover the same code"
)]
fn winograd_transforms_are_well_conditioned_far_from_zero() {
    for (c_in, c_out, hw) in [(128, 16, [5, 7]), (512, 8, [4, 5]), (16, 128, [6, 5])] {
        let case = case(2, c_in, c_out, 3, 1, hw);
        let x = values_around(case.shape().iter().product(), 41, 100.0);
        let weight = values(c_out * c_in * 9, 42);
        for isa in Isa::available() {
            check_all_from(&case, isa, &x, &weight);
        }
    }
}

/// Small convolutions through every path — direct with a partial panel (fewer than 16 output
/// channels: the masked tail), strided, 7×7, Winograd, and both gradients — sized so that Miri
/// runs them in minutes (`cargo +nightly miri test -p dbps-kernels`, docs/performance.md).
#[test]
fn small_convolutions_on_every_path() {
    for (c_in, c_out, kernel, stride, hw) in [
        (3, 5, 1, 1, [3, 4]),
        (2, 17, 3, 2, [5, 5]),
        (1, 4, 7, 2, [9, 8]),
        (3, 3, 3, 1, [4, 5]),
    ] {
        let plain = case(1, c_in, c_out, kernel, stride, hw);
        let fused = Case {
            residual: true,
            relu: true,
            ..plain.clone()
        };
        for isa in Isa::available() {
            check_conv(&fused, isa);
            if kernel == 3 && stride == 1 {
                check_conv_with(&fused, isa, PackedConv::winograd);
            }
            check_grads(&plain, isa);
        }
    }
}
