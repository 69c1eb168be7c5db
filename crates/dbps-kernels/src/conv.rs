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

use crate::gemm::{Epilogue, PackedPanels, gemm};
use crate::winograd::WinogradConv;
use crate::{FeatureMap, Isa, KernelError};

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
    pub(crate) fn depth(&self) -> usize {
        self.kernel * self.kernel * self.c_in
    }

    /// True when the input pixels are the GEMM rows as they stand.
    fn reads_input_in_place(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }
}

/// A convolution with its weights packed for one [`Isa`]'s microkernel; bias and the epilogue
/// are applied as the output is stored. 3×3 stride-1 convolutions with at least 128 input
/// channels run as Winograd F(2×2, 3×3) (2.25× fewer multiplies), every other one as im2col +
/// GEMM.
#[derive(Debug, Clone)]
pub struct PackedConv {
    spec: ConvSpec,
    /// Depth (tap row, tap column, input channel) × output channels.
    weights: PackedPanels,
    bias: Vec<f32>,
    winograd: Option<WinogradConv>,
}

impl ConvSpec {
    /// Checks sizes and the weight and bias lengths (`[c_out, c_in, k, k]`, `[c_out]`).
    pub(crate) fn check(&self, weight: usize, bias: Option<usize>) -> Result<(), KernelError> {
        for (what, v) in [
            ("c_in", self.c_in),
            ("c_out", self.c_out),
            ("kernel", self.kernel),
            ("stride", self.stride),
        ] {
            if v == 0 {
                return Err(KernelError::Zero(what));
            }
        }
        if weight != self.c_out * self.depth() {
            return Err(KernelError::Shape {
                what: "convolution weight",
                expected: self.c_out * self.depth(),
                got: weight,
            });
        }
        if let Some(bias) = bias
            && bias != self.c_out
        {
            return Err(KernelError::Shape {
                what: "convolution bias",
                expected: self.c_out,
                got: bias,
            });
        }
        Ok(())
    }

    /// Calls `f(co, row, w)` for every weight `w` of `[c_out, c_in, k, k]` (PyTorch's layout,
    /// read in order) with its GEMM depth row `row` = (ky · k + kx) · c_in + ci.
    pub(crate) fn for_each_weight(&self, weight: &[f32], mut f: impl FnMut(usize, usize, f32)) {
        let taps = self.kernel * self.kernel;
        for (filter, values) in weight.chunks_exact(taps).enumerate() {
            let (co, ci) = (filter / self.c_in, filter % self.c_in);
            for (tap, &w) in values.iter().enumerate() {
                f(co, tap * self.c_in + ci, w);
            }
        }
    }

    /// Index of weight `[co, ci, ky, kx]` in PyTorch's layout, for GEMM depth row `row`.
    pub(crate) fn weight_index(&self, co: usize, row: usize) -> usize {
        let k = self.kernel;
        let (tap, ci) = (row / self.c_in, row % self.c_in);
        ((co * self.c_in + ci) * k + tap / k) * k + tap % k
    }

    /// Output `[n, h, w, c_out]` for an input `[n, h, w, c_in]`, or why the kernel does not fit.
    pub(crate) fn out_shape(&self, [n, h, w, c]: [usize; 4]) -> Result<[usize; 4], KernelError> {
        if c != self.c_in {
            return Err(KernelError::Channels {
                expected: self.c_in,
                got: c,
            });
        }
        let too_small = || KernelError::TooSmall {
            kernel: self.kernel,
            padding: self.padding,
            h,
            w,
        };
        let oh = self.out_len(h).ok_or_else(too_small)?;
        let ow = self.out_len(w).ok_or_else(too_small)?;
        Ok([n, oh, ow, self.c_out])
    }

    /// Copies the taps of output pixels `first..first + count` of `input` into `cols`
    /// (`count × depth`, row-major), zeros where the kernel hangs over the border.
    pub(crate) fn im2col(
        &self,
        input: &FeatureMap,
        out_size: [usize; 2],
        first: usize,
        count: usize,
        cols: &mut [f32],
    ) {
        let depth = self.depth();
        self.for_each_tap_run(input, out_size, first, count, |row, col, run| {
            let dst = &mut cols[row * depth + col..][..run.len()];
            match run {
                TapRun::Copy(src) => dst.copy_from_slice(src),
                TapRun::Zeros(_) => dst.fill(0.0),
            }
        });
    }

    /// As [`ConvSpec::im2col`], but straight into `packed` (resized to `count × depth`), the
    /// layout the weight gradient's GEMM reads: one copy of the taps instead of two.
    pub(crate) fn im2col_packed(
        &self,
        input: &FeatureMap,
        out_size: [usize; 2],
        first: usize,
        count: usize,
        packed: &mut PackedPanels,
    ) {
        packed.reshape(count, self.depth());
        self.for_each_tap_run(input, out_size, first, count, |row, col, run| {
            packed.write_run(row, col, run)
        });
    }

    /// Calls `f(row, col, run)` for the taps of output pixels `first..first + count`: `row` is
    /// the pixel's im2col row, `col` the depth position where `run` starts. A kernel row that
    /// lies wholly inside the input is one run of k · c_in floats (for a 3-channel stem, 7 runs
    /// per pixel instead of 49); elsewhere every tap is its own run or zeros.
    fn for_each_tap_run(
        &self,
        input: &FeatureMap,
        [oh, ow]: [usize; 2],
        first: usize,
        count: usize,
        mut f: impl FnMut(usize, usize, TapRun<'_>),
    ) {
        let (c_in, kernel) = (self.c_in, self.kernel);
        let span = kernel * c_in;
        for i in 0..count {
            let pixel = first + i;
            let (img, rest) = (pixel / (oh * ow), pixel % (oh * ow));
            let (y, x) = (rest / ow, rest % ow);
            let x0 = (x * self.stride).wrapping_sub(self.padding);
            let whole_row = x * self.stride >= self.padding && x0 + kernel <= input.w;
            for ky in 0..kernel {
                let iy = (y * self.stride + ky).wrapping_sub(self.padding);
                let col = ky * span;
                if iy >= input.h {
                    f(i, col, TapRun::Zeros(span));
                } else if whole_row {
                    let start = ((img * input.h + iy) * input.w + x0) * c_in;
                    f(i, col, TapRun::Copy(&input.data[start..start + span]));
                } else {
                    for kx in 0..kernel {
                        let ix = x0.wrapping_add(kx);
                        let run = if ix < input.w {
                            TapRun::Copy(input.pixel(img, iy, ix))
                        } else {
                            TapRun::Zeros(c_in)
                        };
                        f(i, col + kx * c_in, run);
                    }
                }
            }
        }
    }
}

/// A run of consecutive im2col values: input channels to copy, or padding.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TapRun<'a> {
    /// Values read from the input.
    Copy(&'a [f32]),
    /// This many zeros (the kernel hangs over the border).
    Zeros(usize),
}

impl TapRun<'_> {
    /// Values in the run.
    pub fn len(&self) -> usize {
        match self {
            TapRun::Copy(src) => src.len(),
            TapRun::Zeros(n) => *n,
        }
    }
}

/// Output pixels per thread task: a few microkernel tiles, but enough tasks for every core.
pub(crate) fn rows_per_block(isa: Isa, rows: usize) -> usize {
    let mr = isa.mr();
    let tasks = 4 * rayon::current_num_threads();
    let even = rows.div_ceil(tasks).div_ceil(mr) * mr;
    even.clamp(mr, 8 * mr)
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
        Self::build(spec, weight, bias, isa, WinogradConv::worthwhile(&spec))
    }

    /// As [`PackedConv::new`], but Winograd F(2×2, 3×3) wherever the shape allows it (3×3,
    /// stride 1, padding 1), whatever the channel count.
    pub fn winograd(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        isa: Isa,
    ) -> Result<Self, KernelError> {
        Self::build(spec, weight, bias, isa, WinogradConv::applies(&spec))
    }

    /// As [`PackedConv::new`], but always im2col + GEMM (what Winograd is tested against).
    pub fn direct(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        isa: Isa,
    ) -> Result<Self, KernelError> {
        Self::build(spec, weight, bias, isa, false)
    }

    fn build(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        isa: Isa,
        winograd: bool,
    ) -> Result<Self, KernelError> {
        spec.check(weight.len(), Some(bias.len()))?;
        let mut weights = PackedPanels::zeros(isa, spec.depth(), spec.c_out);
        spec.for_each_weight(weight, |co, row, w| weights.set(row, co, w));
        Ok(Self {
            spec,
            weights,
            bias: bias.to_vec(),
            winograd: winograd.then(|| WinogradConv::new(spec, weight, bias, isa)),
        })
    }

    /// The convolution's shape.
    pub fn spec(&self) -> ConvSpec {
        self.spec
    }

    /// Output shape for `input`, or why the convolution cannot run on it.
    pub fn out_shape(&self, input: &FeatureMap) -> Result<[usize; 4], KernelError> {
        self.spec.out_shape(input.shape())
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
        if let Some(winograd) = &self.winograd {
            return winograd.forward(input, residual, relu);
        }
        let [n, oh, ow, c_out] = shape;
        let rows = n * oh * ow;
        let mut out = vec![0f32; rows * c_out];
        if rows == 0 {
            return FeatureMap::new(out, shape);
        }
        let block = rows_per_block(self.weights.isa, rows);
        let depth = self.spec.depth();
        out.par_chunks_mut(block * c_out).enumerate().for_each_init(
            Vec::new,
            |cols, (b, out_block)| {
                let first_row = b * block;
                let count = out_block.len() / c_out;
                let a = if self.spec.reads_input_in_place() {
                    &input.data[first_row * depth..]
                } else {
                    cols.resize(count * depth, 0.0);
                    self.spec.im2col(input, [oh, ow], first_row, count, cols);
                    &cols[..]
                };
                let epilogue = Epilogue {
                    bias: Some(&self.bias),
                    accumulate: false,
                    residual: residual.map(|r| &r.data[first_row * c_out..]),
                    relu,
                };
                gemm(a, depth, count, &self.weights, out_block, c_out, epilogue);
            },
        );
        FeatureMap::new(out, shape)
    }
}
