//! Training-mode BatchNorm over channels-first maps in two passes forward and two backward.
//!
//! With batch statistics μ_c, σ²_c (biased) over the m = N·H·W values of channel c,
//! `x̂ = (x − μ) / √(σ² + ε)` and `y = γ x̂ + β`; the gradients are
//! `dβ = Σ dy`, `dγ = Σ dy·x̂` and `dx = γ/(m √(σ² + ε)) · (m·dy − Σ dy − x̂ · Σ dy·x̂)`
//! (Ioffe & Szegedy, 2015). Composed from element-wise tensor ops these take about seventeen
//! passes over the map; here every pass is one read (and at most one write) of each plane.

use rayon::prelude::*;

use crate::KernelError;

/// The batch statistics of one forward pass, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Mean μ_c.
    pub mean: Vec<f32>,
    /// Biased variance σ²_c (divided by m, as the normalisation uses it).
    pub var: Vec<f32>,
}

/// The gradients of a training-mode BatchNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormGrads {
    /// dL/dx, channels-first like the input.
    pub input: Vec<f32>,
    /// dL/dγ per channel.
    pub gamma: Vec<f32>,
    /// dL/dβ per channel.
    pub beta: Vec<f32>,
}

/// Checks `[n, c, plane]` against a buffer and the per-channel vectors.
fn check(
    what: &'static str,
    len: usize,
    [n, c, plane]: [usize; 3],
    per_channel: &[&[f32]],
) -> Result<(), KernelError> {
    if len != n * c * plane {
        return Err(KernelError::Shape {
            what,
            expected: n * c * plane,
            got: len,
        });
    }
    for v in per_channel {
        if v.len() != c {
            return Err(KernelError::Shape {
                what: "BatchNorm per-channel vector",
                expected: c,
                got: v.len(),
            });
        }
    }
    if n * plane == 0 {
        return Err(KernelError::Zero("BatchNorm values per channel"));
    }
    Ok(())
}

/// Σ f(a_i, b_i) over two equal planes, in 16 f32 lanes (vectorised), returned as f64.
#[inline(always)]
fn plane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut lanes = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for l in 0..16 {
            lanes[l] += f(xa[l], xb[l]);
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Per-channel totals of `f` over every plane `(image, channel)` of two equal buffers.
fn channel_sums(
    a: &[f32],
    b: &[f32],
    [_, c, plane]: [usize; 3],
    f: impl Fn(usize, f32, f32) -> f32 + Sync,
) -> Vec<f64> {
    let per_plane: Vec<f64> = a
        .par_chunks(plane)
        .zip(b.par_chunks(plane))
        .enumerate()
        .map(|(p, (pa, pb))| {
            let ch = p % c;
            plane_sum(pa, pb, |x, y| f(ch, x, y))
        })
        .collect();
    let mut total = vec![0f64; c];
    for (p, v) in per_plane.iter().enumerate() {
        total[p % c] += v;
    }
    total
}

/// `y = γ (x − μ)/√(σ² + ε) + β` with the batch's own statistics; `x` is `[n, c, plane]`
/// channels-first. Returns `y` and the statistics (for the running averages and the backward).
pub fn batch_norm_forward(
    x: &[f32],
    shape: [usize; 3],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
) -> Result<(Vec<f32>, BatchStats), KernelError> {
    check("BatchNorm input", x.len(), shape, &[gamma, beta])?;
    let [n, c, plane] = shape;
    let m = (n * plane) as f64;
    // Two passes (mean, then squared deviations): E[x²] − μ² loses the variance of maps whose
    // mean is large next to their spread.
    let mean: Vec<f32> = channel_sums(x, x, shape, |_, v, _| v)
        .iter()
        .map(|s| (s / m) as f32)
        .collect();
    let var: Vec<f32> = channel_sums(x, x, shape, |ch, v, _| (v - mean[ch]) * (v - mean[ch]))
        .iter()
        .map(|s| (s / m) as f32)
        .collect();
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|ch| {
            let s = gamma[ch] / (var[ch] + epsilon).sqrt();
            (s, beta[ch] - mean[ch] * s)
        })
        .unzip();
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(p, (out, src))| {
            let (s, t) = (scale[p % c], shift[p % c]);
            for (o, &v) in out.iter_mut().zip(src) {
                *o = v * s + t;
            }
        });
    Ok((y, BatchStats { mean, var }))
}

/// The gradients of [`batch_norm_forward`] from `dy`, the forward's input `x` and statistics.
pub fn batch_norm_backward(
    dy: &[f32],
    x: &[f32],
    shape: [usize; 3],
    stats: &BatchStats,
    gamma: &[f32],
    epsilon: f32,
) -> Result<BatchNormGrads, KernelError> {
    check(
        "BatchNorm input",
        x.len(),
        shape,
        &[gamma, &stats.mean, &stats.var],
    )?;
    check("BatchNorm output gradient", dy.len(), shape, &[])?;
    let [n, c, plane] = shape;
    let m = (n * plane) as f32;
    let inv_std: Vec<f32> = stats
        .var
        .iter()
        .map(|v| 1.0 / (v + epsilon).sqrt())
        .collect();
    let mean = &stats.mean;
    let sum_dy: Vec<f32> = channel_sums(dy, dy, shape, |_, g, _| g)
        .iter()
        .map(|&v| v as f32)
        .collect();
    // Σ dy·x̂ = r · Σ dy·(x − μ).
    let sum_dy_xhat: Vec<f32> = channel_sums(dy, x, shape, |ch, g, v| g * (v - mean[ch]))
        .iter()
        .enumerate()
        .map(|(ch, &v)| v as f32 * inv_std[ch])
        .collect();
    // dx = a·dy + b·x + d per channel, from the formula in the module doc.
    let coefficients: Vec<[f32; 3]> = (0..c)
        .map(|ch| {
            let (g, r) = (gamma[ch], inv_std[ch]);
            let a = g * r;
            let b = -g * r * r * sum_dy_xhat[ch] / m;
            let d = -a * sum_dy[ch] / m - b * mean[ch];
            [a, b, d]
        })
        .collect();
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(plane)
        .zip(dy.par_chunks(plane).zip(x.par_chunks(plane)))
        .enumerate()
        .for_each(|(p, (out, (g, v)))| {
            let [a, b, d] = coefficients[p % c];
            for ((o, &g), &v) in out.iter_mut().zip(g).zip(v) {
                *o = a * g + b * v + d;
            }
        });
    Ok(BatchNormGrads {
        input: dx,
        gamma: sum_dy_xhat,
        beta: sum_dy,
    })
}
