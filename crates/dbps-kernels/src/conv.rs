//! 2-d convolution as a GEMM over channels-last pixels, with bias, residual and ReLU fused
//! into the store.
//!
//! Rows are output pixels, the depth is (tap row, tap column, input channel) and the columns
//! are output channels. Weights are packed once, into panels of NR output channels; each
//! thread takes a block of output pixels, copies their taps into a row-major im2col block
//! (whole channel runs, so it is a string of memcpys; 1×1 stride-1 convolutions read the
//! input in place) and sweeps the microkernel over it, depth block by depth block so the
//! weights in use stay in cache.

use rayon::prelude::*;

use crate::microkernel::{self, Tile};
use crate::{FeatureMap, Isa, KernelError};

/// Depth per pass: a 256 × NR weight block stays in L1/L2 while every row tile of a block
/// streams past it.
const DEPTH_BLOCK: usize = 256;

/// Shape of a square convolution (torchvision's ResNets use nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl ConvSpec {
    /// Output side for an input side `len`, if the kernel fits.
    pub fn out_len(&self, len: usize) -> Option<usize> {
        (len + 2 * self.padding)
            .checked_sub(self.kernel)
            .map(|span| span / self.stride + 1)
    }

    /// GEMM depth: taps × input channels.
    fn depth(&self) -> usize {
        self.kernel * self.kernel * self.c_in
    }

    /// True when the input pixels are the GEMM rows as they stand.
    fn reads_input_in_place(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }
}

/// A convolution with its weights packed for one [`Isa`]'s microkernel; bias and the epilogue
/// are applied as the output is stored.
#[derive(Debug, Clone)]
pub struct PackedConv {
    spec: ConvSpec,
    isa: Isa,
    /// `panels × depth × NR`, zero past `c_out`.
    panels: Vec<f32>,
    /// `panels × NR`, zero past `c_out`.
    bias: Vec<f32>,
}

impl PackedConv {
    /// Packs weights given in PyTorch's layout `[c_out, c_in, k, k]` with one bias per output
    /// channel (a folded BatchNorm's shift, or zeros).
    pub fn new(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        isa: Isa,
    ) -> Result<Self, KernelError> {
        for (what, v) in [
            ("c_in", spec.c_in),
            ("c_out", spec.c_out),
            ("kernel", spec.kernel),
            ("stride", spec.stride),
        ] {
            if v == 0 {
                return Err(KernelError::Zero(what));
            }
        }
        let depth = spec.depth();
        if weight.len() != spec.c_out * depth {
            return Err(KernelError::Shape {
                what: "convolution weight",
                expected: spec.c_out * depth,
                got: weight.len(),
            });
        }
        if bias.len() != spec.c_out {
            return Err(KernelError::Shape {
                what: "convolution bias",
                expected: spec.c_out,
                got: bias.len(),
            });
        }
        let nr = isa.nr();
        let n_panels = spec.c_out.div_ceil(nr);
        let mut panels = vec![0f32; n_panels * depth * nr];
        let k = spec.kernel;
        for co in 0..spec.c_out {
            let (panel, lane) = (co / nr, co % nr);
            for ci in 0..spec.c_in {
                for ky in 0..k {
                    for kx in 0..k {
                        let src = ((co * spec.c_in + ci) * k + ky) * k + kx;
                        let row = (ky * k + kx) * spec.c_in + ci;
                        panels[(panel * depth + row) * nr + lane] = weight[src];
                    }
                }
            }
        }
        let mut padded_bias = vec![0f32; n_panels * nr];
        padded_bias[..spec.c_out].copy_from_slice(bias);
        Ok(Self {
            spec,
            isa,
            panels,
            bias: padded_bias,
        })
    }

    /// The convolution's shape.
    pub fn spec(&self) -> ConvSpec {
        self.spec
    }

    /// Output shape for `input`, or why the convolution cannot run on it.
    pub fn out_shape(&self, input: &FeatureMap) -> Result<[usize; 4], KernelError> {
        if input.c != self.spec.c_in {
            return Err(KernelError::Channels {
                expected: self.spec.c_in,
                got: input.c,
            });
        }
        let too_small = || KernelError::TooSmall {
            kernel: self.spec.kernel,
            padding: self.spec.padding,
            h: input.h,
            w: input.w,
        };
        let h = self.spec.out_len(input.h).ok_or_else(too_small)?;
        let w = self.spec.out_len(input.w).ok_or_else(too_small)?;
        Ok([input.n, h, w, self.spec.c_out])
    }

    /// `relu?(conv(input) + bias + residual?)`, channels-last.
    pub fn forward(
        &self,
        input: &FeatureMap,
        residual: Option<&FeatureMap>,
        relu: bool,
    ) -> Result<FeatureMap, KernelError> {
        let shape = self.out_shape(input)?;
        if let Some(res) = residual
            && res.shape() != shape
        {
            return Err(KernelError::Residual {
                expected: shape,
                got: res.shape(),
            });
        }
        let [n, oh, ow, c_out] = shape;
        let rows = n * oh * ow;
        let mut out = vec![0f32; rows * c_out];
        if rows == 0 {
            return FeatureMap::new(out, shape);
        }
        let block = self.rows_per_block(rows);
        let depth = self.spec.depth();
        out.par_chunks_mut(block * c_out).enumerate().for_each_init(
            Vec::new,
            |cols, (b, out_block)| {
                let first_row = b * block;
                let count = out_block.len() / c_out;
                let (a, lda) = if self.spec.reads_input_in_place() {
                    (&input.data[first_row * depth..], depth)
                } else {
                    cols.resize(count * depth, 0.0);
                    self.im2col(input, [oh, ow], first_row, count, cols);
                    (&cols[..], depth)
                };
                let res = residual.map(|r| &r.data[first_row * c_out..]);
                self.gemm_block(a, lda, count, out_block, res, relu);
            },
        );
        FeatureMap::new(out, shape)
    }

    /// Output pixels per thread task: a few microkernel tiles, but enough tasks for every core.
    fn rows_per_block(&self, rows: usize) -> usize {
        let mr = self.isa.mr();
        let tasks = 4 * rayon::current_num_threads();
        let even = rows.div_ceil(tasks).div_ceil(mr) * mr;
        even.clamp(mr, 8 * mr)
    }

    /// Copies the taps of output pixels `first..first + count` into `cols` (`count × depth`).
    fn im2col(
        &self,
        input: &FeatureMap,
        [oh, ow]: [usize; 2],
        first: usize,
        count: usize,
        cols: &mut [f32],
    ) {
        let ConvSpec {
            c_in,
            kernel,
            stride,
            padding,
            ..
        } = self.spec;
        let depth = self.spec.depth();
        for (i, row) in cols.chunks_exact_mut(depth).take(count).enumerate() {
            let pixel = first + i;
            let (img, rest) = (pixel / (oh * ow), pixel % (oh * ow));
            let (y, x) = (rest / ow, rest % ow);
            for ky in 0..kernel {
                let iy = (y * stride + ky).wrapping_sub(padding);
                for kx in 0..kernel {
                    let ix = (x * stride + kx).wrapping_sub(padding);
                    let dst = &mut row[(ky * kernel + kx) * c_in..][..c_in];
                    if iy < input.h && ix < input.w {
                        dst.copy_from_slice(input.pixel(img, iy, ix));
                    } else {
                        dst.fill(0.0);
                    }
                }
            }
        }
    }

    /// `out` (`count × c_out`) from GEMM rows `a` (`count × depth`, leading dimension `lda`).
    fn gemm_block(
        &self,
        a: &[f32],
        lda: usize,
        count: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) {
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        let depth = self.spec.depth();
        let c_out = self.spec.c_out;
        debug_assert!(a.len() >= (count - 1) * lda + depth);
        debug_assert!(out.len() >= count * c_out);
        for k0 in (0..depth).step_by(DEPTH_BLOCK) {
            let k = DEPTH_BLOCK.min(depth - k0);
            let last = k0 + k == depth;
            for (panel, col0) in (0..c_out).step_by(nr).enumerate() {
                let b = &self.panels[(panel * depth + k0) * nr..];
                for row0 in (0..count).step_by(mr) {
                    let tile = Tile {
                        k,
                        a: a[row0 * lda + k0..].as_ptr(),
                        lda,
                        b: b.as_ptr(),
                        c: out[row0 * c_out + col0..].as_mut_ptr(),
                        ldc: c_out,
                        rows: mr.min(count - row0),
                        cols: nr.min(c_out - col0),
                        bias: (k0 == 0).then(|| self.bias[col0..].as_ptr()),
                        residual: residual
                            .filter(|_| last)
                            .map(|r| r[row0 * c_out + col0..].as_ptr()),
                        ldr: c_out,
                        relu: relu && last,
                    };
                    // SAFETY: the tile addresses rows row0.. of `a` (at most `count`, each `depth`
                    // long past `k0`), panel `panel` of the packed weights and bias (NR wide,
                    // zero-padded), and rows row0.. of `out` and `residual` (`c_out` wide); the
                    // ISA was detected on this CPU when the weights were packed.
                    unsafe { microkernel::run(self.isa, &tile) };
                }
            }
        }
    }
}
