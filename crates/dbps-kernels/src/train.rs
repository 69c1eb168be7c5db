//! Convolution for the gradient pass: forward, input gradient and weight gradient on
//! channels-first buffers (Burn's and PyTorch's layout), each turned into one GEMM on the
//! microkernels of [`crate::gemm`].
//!
//! - forward: `y = conv(x, W)`, as [`PackedConv::forward`] with the weights packed per call;
//! - input gradient: `dX = col2im(dY · Wᵀ)` — a GEMM over output pixels whose rows are scattered
//!   back onto the input taps they came from, image by image so no two threads add to one pixel;
//! - weight gradient: `dW = dYᵀ · im2col(x)` — a GEMM whose depth runs over every output pixel of
//!   the batch, split into one partial sum per thread and added up at the end; for the layers
//!   the forward pass runs as Winograd, the same sum over Winograd tiles
//!   ([`crate::winograd_grad`]).

use rayon::prelude::*;

use crate::conv::rows_per_block;
use crate::gemm::{Epilogue, PackedPanels, gemm, sum_partials};
use crate::winograd::WinogradConv;
use crate::winograd_grad;
use crate::{ConvSpec, FeatureMap, Isa, KernelError, PackedConv};

/// Output pixels per packed block of the weight gradient.
const PIXEL_BLOCK: usize = 256;

/// Input channels from which a 3×3 stride-1 weight gradient runs as Winograd. Measured on the
/// CQU gradient pass (192 patches of 100², ResNet-18, AVX-512, 2 threads): 512 channels on 4×4
/// maps took 62 ms against im2col's 98–120 ms; 256 channels on 7×7 maps 70–98 against 69 ms and
/// 128 on 13×13 maps 60 against 54–64 ms — the tile transforms eat the saving there.
const WINOGRAD_WEIGHT_GRAD_CHANNELS: usize = 512;

/// `[n, c, h, w]` of an NCHW buffer, checked against its length.
fn nhwc(data: &[f32], [n, c, h, w]: [usize; 4]) -> Result<FeatureMap, KernelError> {
    FeatureMap::from_nchw(data, [n, c, h, w])
}

/// `y = conv(x, W) + bias`: `x` `[n, c_in, h, w]`, `W` `[c_out, c_in, k, k]`, both
/// channels-first; returns `y` channels-first with its shape `[n, c_out, oh, ow]`.
pub fn conv2d_forward(
    x: &[f32],
    x_shape: [usize; 4],
    weight: &[f32],
    bias: Option<&[f32]>,
    spec: ConvSpec,
    isa: Isa,
) -> Result<(Vec<f32>, [usize; 4]), KernelError> {
    let zeros = vec![0.0; spec.c_out];
    let conv = PackedConv::new(spec, weight, bias.unwrap_or(&zeros), isa)?;
    let y = conv.forward(&nhwc(x, x_shape)?, None, false)?;
    Ok((y.to_nchw(), [y.n, y.c, y.h, y.w]))
}

/// dL/dx of `y = conv(x, W)` from `dy` `[n, c_out, oh, ow]`, for an input of `x_shape`
/// `[n, c_in, h, w]`; channels-first in and out.
pub fn conv2d_input_grad(
    dy: &[f32],
    x_shape: [usize; 4],
    weight: &[f32],
    spec: ConvSpec,
    isa: Isa,
) -> Result<Vec<f32>, KernelError> {
    spec.check(weight.len(), None)?;
    let [n, c_in, h, w] = x_shape;
    let [_, oh, ow, c_out] = spec.out_shape([n, h, w, c_in])?;
    if spec.stride == 1 && 2 * spec.padding + 1 == spec.kernel {
        // A "same" stride-1 convolution's input gradient is the same convolution of dY with the
        // filters flipped and input/output channels swapped — so it takes the forward path
        // (Winograd included).
        return same_conv_input_grad(dy, x_shape, weight, spec, isa);
    }
    let dy = nhwc(dy, [n, c_out, oh, ow])?;
    let depth = spec.depth();
    // Wᵀ: depth c_out, one column per (tap, input channel).
    let mut wt = PackedPanels::zeros(isa, c_out, depth);
    spec.for_each_weight(weight, |co, row, w| wt.set(co, row, w));
    let mut dx = vec![0f32; n * h * w * c_in];
    if dx.is_empty() || dy.data.is_empty() {
        return Ok(FeatureMap::new(dx, [n, h, w, c_in])?.to_nchw());
    }
    let per_image = oh * ow;
    let block = rows_per_block(isa, per_image);
    let k = spec.kernel;
    dx.par_chunks_mut(h * w * c_in).enumerate().for_each_init(
        Vec::new,
        |cols: &mut Vec<f32>, (img, dx_img)| {
            for first in (0..per_image).step_by(block) {
                let count = block.min(per_image - first);
                cols.resize(count * depth, 0.0);
                let a = &dy.data[(img * per_image + first) * c_out..];
                gemm(a, c_out, count, &wt, cols, depth, Epilogue::PLAIN);
                for (i, taps) in cols.chunks_exact(depth).take(count).enumerate() {
                    let (y, x) = ((first + i) / ow, (first + i) % ow);
                    for ky in 0..k {
                        let iy = (y * spec.stride + ky).wrapping_sub(spec.padding);
                        if iy >= h {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (x * spec.stride + kx).wrapping_sub(spec.padding);
                            if ix >= w {
                                continue;
                            }
                            let src = &taps[(ky * k + kx) * c_in..][..c_in];
                            let dst = &mut dx_img[(iy * w + ix) * c_in..][..c_in];
                            for (d, s) in dst.iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        },
    );
    Ok(FeatureMap::new(dx, [n, h, w, c_in])?.to_nchw())
}

/// [`conv2d_input_grad`] of a stride-1 convolution padded to keep its size:
/// `dX = conv(dY, W')` with `W'[ci, co, ky, kx] = W[co, ci, k−1−ky, k−1−kx]`.
fn same_conv_input_grad(
    dy: &[f32],
    [n, c_in, h, w]: [usize; 4],
    weight: &[f32],
    spec: ConvSpec,
    isa: Isa,
) -> Result<Vec<f32>, KernelError> {
    let k = spec.kernel;
    let mut flipped = vec![0f32; weight.len()];
    for co in 0..spec.c_out {
        for ci in 0..c_in {
            for ky in 0..k {
                for kx in 0..k {
                    flipped[((ci * spec.c_out + co) * k + (k - 1 - ky)) * k + (k - 1 - kx)] =
                        weight[((co * c_in + ci) * k + ky) * k + kx];
                }
            }
        }
    }
    let transposed = ConvSpec {
        c_in: spec.c_out,
        c_out: c_in,
        ..spec
    };
    let (dx, _) = conv2d_forward(dy, [n, spec.c_out, h, w], &flipped, None, transposed, isa)?;
    Ok(dx)
}

/// dL/dW `[c_out, c_in, k, k]` of `y = conv(x, W)` from `x` `[n, c_in, h, w]` and `dy`
/// `[n, c_out, oh, ow]`, channels-first.
pub fn conv2d_weight_grad(
    x: &[f32],
    x_shape: [usize; 4],
    dy: &[f32],
    spec: ConvSpec,
    isa: Isa,
) -> Result<Vec<f32>, KernelError> {
    let [n, c_in, h, w] = x_shape;
    let [_, oh, ow, c_out] = spec.out_shape([n, h, w, c_in])?;
    let per_image = oh * ow;
    let pixels = n * per_image;
    if dy.len() != n * c_out * per_image {
        return Err(KernelError::Shape {
            what: "output gradient",
            expected: n * c_out * per_image,
            got: dy.len(),
        });
    }
    let input = nhwc(x, x_shape)?;
    if WinogradConv::applies(&spec) && spec.c_in >= WINOGRAD_WEIGHT_GRAD_CHANNELS {
        let dy = nhwc(dy, [n, c_out, oh, ow])?;
        return Ok(winograd_grad::weight_grad(&input, &dy, spec, isa));
    }
    let depth = spec.depth();
    // dYᵀ with every pixel of the batch along a row: `[c_out, n · oh · ow]`.
    let mut dy_t = vec![0f32; c_out * pixels];
    for img in 0..n {
        for co in 0..c_out {
            dy_t[co * pixels + img * per_image..][..per_image]
                .copy_from_slice(&dy[(img * c_out + co) * per_image..][..per_image]);
        }
    }
    let tasks = rayon::current_num_threads().max(1);
    let span = pixels.div_ceil(tasks).max(1);
    let partial = |first: usize| {
        let last = (first + span).min(pixels);
        let mut sum = vec![0f32; c_out * depth];
        let mut b = PackedPanels::empty(isa);
        for start in (first..last).step_by(PIXEL_BLOCK) {
            let count = PIXEL_BLOCK.min(last - start);
            spec.im2col_packed(&input, [oh, ow], start, count, &mut b);
            let epilogue = Epilogue {
                accumulate: true,
                ..Epilogue::PLAIN
            };
            gemm(&dy_t[start..], pixels, c_out, &b, &mut sum, depth, epilogue);
        }
        sum
    };
    let total = sum_partials(pixels, span, c_out * depth, partial);
    let mut out = vec![0f32; total.len()];
    for co in 0..c_out {
        for row in 0..depth {
            out[spec.weight_index(co, row)] = total[co * depth + row];
        }
    }
    Ok(out)
}
