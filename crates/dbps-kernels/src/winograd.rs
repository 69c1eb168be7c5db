//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016):
//! each 2×2 block of outputs costs 16 multiplies per input/output channel pair instead of 36.
//!
//! With input tile d (4×4, the 2×2 outputs' receptive field), filter g (3×3):
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, and the element-wise product summed over input channels
//! becomes 16 GEMMs, one per tile position ξ: `M_ξ[tile, co] = Σ_ci V_ξ[tile, ci] · U_ξ[ci, co]`.
//! The transforms use only ±1 and ±½, so the result stays within float rounding of the direct
//! convolution.

use rayon::prelude::*;

use crate::gemm::{Epilogue, PackedPanels, gemm};
use crate::{ConvSpec, FeatureMap, Isa, KernelError};

/// Filter transform of one 3×3 filter: `U = G g Gᵀ` (4×4, row-major).
fn filter_transform(g: [[f32; 3]; 3]) -> [f32; 16] {
    // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    let gm = |col: [f32; 3]| {
        [
            col[0],
            0.5 * (col[0] + col[1] + col[2]),
            0.5 * (col[0] - col[1] + col[2]),
            col[2],
        ]
    };
    // t = G g (4×3): transform each column of g.
    let mut t = [[0f32; 3]; 4];
    for c in 0..3 {
        let col = gm([g[0][c], g[1][c], g[2][c]]);
        for r in 0..4 {
            t[r][c] = col[r];
        }
    }
    // U = t Gᵀ (4×4): transform each row of t.
    let mut u = [0f32; 16];
    for r in 0..4 {
        let row = gm(t[r]);
        u[r * 4..r * 4 + 4].copy_from_slice(&row);
    }
    u
}

/// Channels transformed at once: one vector register's worth per value.
const LANES: usize = 16;

/// `dst[..len] = src[..len]`, as one fixed-size (inlined, vectorised) copy when `len` is a full
/// vector: variable-length copies become a `memcpy` call per 64 bytes.
#[inline(always)]
fn copy_lanes(dst: &mut [f32; LANES], src: &[f32], len: usize) {
    if len == LANES {
        dst.copy_from_slice(&src[..LANES]);
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// `dst[..len] = src[..len]`, the other way round.
#[inline(always)]
fn copy_out(dst: &mut [f32], src: &[f32; LANES], len: usize) {
    if len == LANES {
        dst[..LANES].copy_from_slice(src);
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// Input transform `Bᵀ d B` of a 4×4 tile, Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]],
/// for every channel: `d[i]` is tap i's channel run; result ξ goes to `out[ξ · stride ..]`.
pub(crate) fn input_transform(d: &[&[f32]; 16], out: &mut [f32], stride: usize, c: usize) {
    for c0 in (0..c).step_by(LANES) {
        let len = LANES.min(c - c0);
        let mut x = [[0f32; LANES]; 16];
        for (xi, row) in x.iter_mut().enumerate() {
            copy_lanes(row, &d[xi][c0..], len);
        }
        let mut t = [[0f32; LANES]; 16];
        for col in 0..4 {
            for l in 0..LANES {
                let (d0, d1, d2, d3) = (x[col][l], x[4 + col][l], x[8 + col][l], x[12 + col][l]);
                t[col][l] = d0 - d2;
                t[4 + col][l] = d1 + d2;
                t[8 + col][l] = d2 - d1;
                t[12 + col][l] = d1 - d3;
            }
        }
        for row in 0..4 {
            let r = row * 4;
            let mut v = [[0f32; LANES]; 4];
            for l in 0..LANES {
                let (t0, t1, t2, t3) = (t[r][l], t[r + 1][l], t[r + 2][l], t[r + 3][l]);
                v[0][l] = t0 - t2;
                v[1][l] = t1 + t2;
                v[2][l] = t2 - t1;
                v[3][l] = t1 - t3;
            }
            for (j, vals) in v.iter().enumerate() {
                copy_out(&mut out[(r + j) * stride + c0..], vals, len);
            }
        }
    }
}

/// The 16 input pixels (channel runs) under the 4×4 tile whose 2×2 outputs start at
/// `(2·ty, 2·tx)` of image `img`; `zeros` (one pixel's worth) where the tile hangs over the
/// padding.
pub(crate) fn tile_taps<'a>(
    input: &'a FeatureMap,
    img: usize,
    [ty, tx]: [usize; 2],
    zeros: &'a [f32],
) -> [&'a [f32]; 16] {
    std::array::from_fn(|i| {
        let iy = (2 * ty + i / 4).wrapping_sub(1);
        let ix = (2 * tx + i % 4).wrapping_sub(1);
        if iy < input.h && ix < input.w {
            input.pixel(img, iy, ix)
        } else {
            zeros
        }
    })
}

/// The output buffer, shared by tasks that write disjoint pixels of it.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (one tile's pixels each) and nothing reads the buffer
// until every task has finished.
unsafe impl Sync for OutPtr {}

/// A 3×3, stride-1, padding-1 convolution with its filters transformed and packed for the
/// 16 GEMMs.
#[derive(Debug, Clone)]
pub(crate) struct WinogradConv {
    spec: ConvSpec,
    /// One packed `c_in × c_out` matrix per tile position.
    u: Vec<PackedPanels>,
    bias: Vec<f32>,
}

impl WinogradConv {
    /// True where dbps uses this algorithm: it applies, and the layer has at least 128 input
    /// channels. On the bench machine the ResNet-18 encoders ran 1522 (2 stages, 50² patches)
    /// and 234 (4 stages, 100²) patches/s with this threshold, 1526 and 240 with 64 — within
    /// run-to-run noise — so the 64-channel layers keep im2col + GEMM.
    pub fn worthwhile(spec: &ConvSpec) -> bool {
        Self::applies(spec) && spec.c_in >= 128
    }

    /// True for the convolutions this algorithm computes: 3×3, stride 1, padding 1.
    pub fn applies(spec: &ConvSpec) -> bool {
        spec.kernel == 3 && spec.stride == 1 && spec.padding == 1
    }

    /// Transforms PyTorch-layout weights `[c_out, c_in, 3, 3]`.
    pub fn new(spec: ConvSpec, weight: &[f32], bias: &[f32], isa: Isa) -> Self {
        let (c_in, c_out) = (spec.c_in, spec.c_out);
        // u_all[(co · c_in + ci) · 16 + ξ]
        let mut u_all = vec![0f32; c_out * c_in * 16];
        for co in 0..c_out {
            for ci in 0..c_in {
                let w = &weight[(co * c_in + ci) * 9..][..9];
                let g = [[w[0], w[1], w[2]], [w[3], w[4], w[5]], [w[6], w[7], w[8]]];
                u_all[(co * c_in + ci) * 16..][..16].copy_from_slice(&filter_transform(g));
            }
        }
        let u = (0..16)
            .map(|xi| {
                PackedPanels::pack(isa, c_in, c_out, |ci, co| u_all[(co * c_in + ci) * 16 + xi])
            })
            .collect();
        Self {
            spec,
            u,
            bias: bias.to_vec(),
        }
    }

    /// `relu?(conv(input) + bias + residual?)`, channels-last; shapes already checked.
    pub fn forward(
        &self,
        input: &FeatureMap,
        residual: Option<&FeatureMap>,
        relu: bool,
    ) -> Result<FeatureMap, KernelError> {
        let (n, h, w) = (input.n, input.h, input.w);
        let (c_in, c_out) = (self.spec.c_in, self.spec.c_out);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let tiles_per_image = th * tw;
        let total = n * tiles_per_image;
        let mut out = vec![0f32; n * h * w * c_out];
        let isa = self.u[0].isa;
        let block = (8 * isa.mr()).min(total.div_ceil(4 * rayon::current_num_threads()).max(1));
        let zeros = vec![0f32; c_in];
        let target = OutPtr(out.as_mut_ptr());
        // Blocks of tiles run across image boundaries so small maps still fill the
        // microkernel's rows; every tile owns distinct output pixels.
        (0..total)
            .step_by(block)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(v, m): &mut (Vec<f32>, Vec<f32>), first| {
                    let count = block.min(total - first);
                    v.resize(16 * count * c_in, 0.0);
                    m.resize(16 * count * c_out, 0.0);
                    // V_ξ[tile, ci] at v[(ξ · count + tile) · c_in + ci].
                    for t in 0..count {
                        let tile = first + t;
                        let (img, rest) = (tile / tiles_per_image, tile % tiles_per_image);
                        let (ty, tx) = (rest / tw, rest % tw);
                        let taps = tile_taps(input, img, [ty, tx], &zeros);
                        input_transform(&taps, &mut v[t * c_in..], count * c_in, c_in);
                    }
                    for xi in 0..16 {
                        gemm(
                            &v[xi * count * c_in..],
                            c_in,
                            count,
                            &self.u[xi],
                            &mut m[xi * count * c_out..],
                            c_out,
                            Epilogue::PLAIN,
                        );
                    }
                    let target = &target;
                    self.output_transform(
                        m,
                        count,
                        first,
                        [h, w, tw, tiles_per_image],
                        target,
                        residual.map(|r| &r.data[..]),
                        relu,
                    );
                },
            );
        FeatureMap::new(out, [n, h, w, c_out])
    }

    /// `Y = Aᵀ M A` per tile and channel, Aᵀ = [[1,1,1,0],[0,1,−1,−1]], then bias, residual and
    /// ReLU, written where the tile's outputs fall inside the image.
    #[allow(clippy::too_many_arguments)]
    fn output_transform(
        &self,
        m: &[f32],
        count: usize,
        first: usize,
        [h, w, tw, tiles_per_image]: [usize; 4],
        out: &OutPtr,
        residual: Option<&[f32]>,
        relu: bool,
    ) {
        let c_out = self.spec.c_out;
        for t in 0..count {
            let tile = first + t;
            let (img, rest) = (tile / tiles_per_image, tile % tiles_per_image);
            let (ty, tx) = (rest / tw, rest % tw);
            for c0 in (0..c_out).step_by(LANES) {
                let len = LANES.min(c_out - c0);
                let mut x = [[0f32; LANES]; 16];
                for (xi, row) in x.iter_mut().enumerate() {
                    copy_lanes(row, &m[(xi * count + t) * c_out + c0..], len);
                }
                // s = Aᵀ M (2×4), then y = s A (2×2).
                let mut y = [[0f32; LANES]; 4];
                for l in 0..LANES {
                    let mut s = [[0f32; 4]; 2];
                    for col in 0..4 {
                        let (m0, m1, m2, m3) =
                            (x[col][l], x[4 + col][l], x[8 + col][l], x[12 + col][l]);
                        s[0][col] = m0 + m1 + m2;
                        s[1][col] = m1 - m2 - m3;
                    }
                    for (dy, row) in s.iter().enumerate() {
                        y[2 * dy][l] = row[0] + row[1] + row[2];
                        y[2 * dy + 1][l] = row[1] - row[2] - row[3];
                    }
                }
                for (k, vals) in y.iter().enumerate() {
                    let (yy, xx) = (2 * ty + k / 2, 2 * tx + k % 2);
                    if yy >= h || xx >= w {
                        continue;
                    }
                    let at = ((img * h + yy) * w + xx) * c_out + c0;
                    let mut row = [0f32; LANES];
                    for (l, r) in row.iter_mut().enumerate().take(len) {
                        let mut value = vals[l] + self.bias[c0 + l];
                        if let Some(res) = residual {
                            value += res[at + l];
                        }
                        if relu {
                            value = value.max(0.0);
                        }
                        *r = value;
                    }
                    // SAFETY: `at..at + len` lies inside the output (pixel (yy, xx) of image
                    // `img` is in bounds), and no other tile writes this pixel.
                    unsafe {
                        std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add(at), len);
                    }
                }
            }
        }
    }
}
