//! Pooling over channels-last maps: max pooling without indices (inference needs none) and
//! global average pooling.

use rayon::prelude::*;

use crate::{FeatureMap, KernelError};

/// Square max pooling with implicit −∞ padding (PyTorch's `MaxPool2d`).
pub fn max_pool(
    input: &FeatureMap,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<FeatureMap, KernelError> {
    if kernel == 0 || stride == 0 {
        return Err(KernelError::Zero("pooling kernel and stride"));
    }
    let out_len = |len: usize| {
        (len + 2 * padding)
            .checked_sub(kernel)
            .map(|span| span / stride + 1)
            .ok_or(KernelError::TooSmall {
                kernel,
                padding,
                h: input.h,
                w: input.w,
            })
    };
    let (oh, ow, c) = (out_len(input.h)?, out_len(input.w)?, input.c);
    let mut out = vec![f32::NEG_INFINITY; input.n * oh * ow * c];
    out.par_chunks_mut((oh * ow * c).max(1))
        .enumerate()
        .for_each(|(img, out)| {
            for (p, pixel) in out.chunks_exact_mut(c).enumerate() {
                let (y, x) = (p / ow, p % ow);
                for ky in 0..kernel {
                    let iy = (y * stride + ky).wrapping_sub(padding);
                    if iy >= input.h {
                        continue;
                    }
                    for kx in 0..kernel {
                        let ix = (x * stride + kx).wrapping_sub(padding);
                        if ix >= input.w {
                            continue;
                        }
                        for (o, &v) in pixel.iter_mut().zip(input.pixel(img, iy, ix)) {
                            *o = o.max(v);
                        }
                    }
                }
            }
        });
    FeatureMap::new(out, [input.n, oh, ow, c])
}

/// Mean over every pixel of each image: `[n, c]`, row-major.
pub fn global_average_pool(input: &FeatureMap) -> Vec<f32> {
    let (plane, c) = (input.h * input.w, input.c);
    let mut out = vec![0f32; input.n * c];
    if plane == 0 {
        return out;
    }
    let scale = 1.0 / plane as f32;
    out.par_chunks_mut(c.max(1))
        .enumerate()
        .for_each(|(img, sums)| {
            for pixel in input.data[img * plane * c..(img + 1) * plane * c].chunks_exact(c) {
                for (s, &v) in sums.iter_mut().zip(pixel) {
                    *s += v;
                }
            }
            for s in sums.iter_mut() {
                *s *= scale;
            }
        });
    out
}
