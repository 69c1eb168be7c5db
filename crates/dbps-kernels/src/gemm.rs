//! C = A·B (+ bias) (+ residual) (ReLU?) for a row-major A read in place and a B packed once
//! into panels of NR columns: the driver every convolution pass (forward, input gradient,
//! weight gradient) runs on.

use crate::Isa;
use crate::conv::TapRun;
use crate::microkernel::{self, Tile};

/// Depth per pass: a 256 × NR block of B stays in L1/L2 while every row tile of A streams past.
const DEPTH_BLOCK: usize = 256;

/// A `depth × cols` matrix packed into panels of NR columns (`panels × depth × NR`), zero past
/// the last column, for one [`Isa`]'s microkernel.
#[derive(Debug, Clone)]
pub(crate) struct PackedPanels {
    pub isa: Isa,
    pub depth: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl PackedPanels {
    /// Packs `value(row, col)` for `row < depth`, `col < cols`.
    pub fn pack(isa: Isa, depth: usize, cols: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let nr = isa.nr();
        let panels = cols.div_ceil(nr);
        let mut data = vec![0f32; panels * depth * nr];
        for (panel, block) in data.chunks_exact_mut(depth * nr).enumerate() {
            for (row, lanes) in block.chunks_exact_mut(nr).enumerate() {
                for (lane, v) in lanes.iter_mut().enumerate() {
                    let col = panel * nr + lane;
                    if col < cols {
                        *v = value(row, col);
                    }
                }
            }
        }
        Self {
            isa,
            depth,
            cols,
            data,
        }
    }

    /// Sets element `(row, col)` of a packing made by [`PackedPanels::zeros`].
    #[inline(always)]
    pub fn set(&mut self, row: usize, col: usize, value: f32) {
        let nr = self.isa.nr();
        self.data[((col / nr) * self.depth + row) * nr + col % nr] = value;
    }

    /// An all-zero `depth × cols` packing, to be filled with [`PackedPanels::set`].
    pub fn zeros(isa: Isa, depth: usize, cols: usize) -> Self {
        Self {
            isa,
            depth,
            cols,
            data: vec![0f32; cols.div_ceil(isa.nr()) * depth * isa.nr()],
        }
    }

    /// Makes `self` a `depth × cols` packing, reusing its buffer. Values are left as they
    /// were when the shape is unchanged (the caller overwrites every element below `cols`, and
    /// the padding lanes past it are still zero); otherwise everything becomes zero.
    pub fn reshape(&mut self, depth: usize, cols: usize) {
        if (depth, cols) != (self.depth, self.cols) {
            self.depth = depth;
            self.cols = cols;
            self.data.clear();
            self.data
                .resize(cols.div_ceil(self.isa.nr()) * depth * self.isa.nr(), 0.0);
        }
    }

    /// Writes `run` into row `row` from column `col` on, across panel boundaries.
    #[inline(always)]
    pub fn write_run(&mut self, row: usize, col: usize, run: TapRun<'_>) {
        let nr = self.isa.nr();
        let (mut col, mut done, len) = (col, 0, run.len());
        while done < len {
            let (panel, lane) = (col / nr, col % nr);
            let n = (nr - lane).min(len - done);
            let dst = &mut self.data[(panel * self.depth + row) * nr + lane..][..n];
            match run {
                TapRun::Copy(src) => dst.copy_from_slice(&src[done..done + n]),
                TapRun::Zeros(_) => dst.fill(0.0),
            }
            col += n;
            done += n;
        }
    }

    /// An empty packing for `isa`, to be filled by [`PackedPanels::repack_rows`].
    pub fn empty(isa: Isa) -> Self {
        Self {
            isa,
            depth: 0,
            cols: 0,
            data: Vec::new(),
        }
    }
}

/// What happens to C besides the product.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// Start from this per-column bias (`None`: from zero, or from C's contents when
    /// `accumulate`).
    pub bias: Option<&'a [f32]>,
    /// Add C's current contents instead of overwriting them.
    pub accumulate: bool,
    /// Added at the end, same layout as C (leading dimension `ldc`).
    pub residual: Option<&'a [f32]>,
    /// Clamp at zero at the end.
    pub relu: bool,
}

impl Epilogue<'_> {
    /// C = A·B.
    pub const PLAIN: Epilogue<'static> = Epilogue {
        bias: None,
        accumulate: false,
        residual: None,
        relu: false,
    };
}

/// `c[r·ldc + j] (=|+=) Σ_k a[r·lda + k] · B[k, j]` for `r < rows`, `j < b.cols`, then the
/// epilogue; `a` rows are `b.depth` long.
pub(crate) fn gemm(
    a: &[f32],
    lda: usize,
    rows: usize,
    b: &PackedPanels,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue<'_>,
) {
    if rows == 0 || b.cols == 0 {
        return;
    }
    let isa = b.isa;
    let (mr, nr) = (isa.mr(), isa.nr());
    let depth = b.depth;
    assert!(
        a.len() >= (rows - 1) * lda + depth,
        "A is shorter than its rows"
    );
    assert!(
        c.len() >= (rows - 1) * ldc + b.cols,
        "C is shorter than its rows"
    );
    if let Some(res) = epilogue.residual {
        assert!(
            res.len() >= (rows - 1) * ldc + b.cols,
            "residual is shorter than C"
        );
    }
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= b.cols, "bias is shorter than C's columns");
    }
    // A zero bias, read as far as it reaches (shorter than C's columns is fine: the rest is 0).
    static ZEROS: [f32; 32] = [0.0; 32];
    let start_bias = match (epilogue.bias, epilogue.accumulate) {
        (Some(bias), _) => Some(bias),
        (None, false) => Some(&ZEROS[..]),
        (None, true) => None,
    };
    if depth == 0 {
        // An empty product: C is the bias (or stays), then the epilogue.
        for r in 0..rows {
            for j in 0..b.cols {
                let v = &mut c[r * ldc + j];
                if let Some(bias) = start_bias {
                    *v = bias.get(j).copied().unwrap_or(0.0);
                }
                if let Some(res) = epilogue.residual {
                    *v += res[r * ldc + j];
                }
                if epilogue.relu {
                    *v = v.max(0.0);
                }
            }
        }
        return;
    }
    for k0 in (0..depth).step_by(DEPTH_BLOCK) {
        let k = DEPTH_BLOCK.min(depth - k0);
        let last = k0 + k == depth;
        for (panel, col0) in (0..b.cols).step_by(nr).enumerate() {
            let panel_data = &b.data[(panel * depth + k0) * nr..];
            // The bias of a partial last panel is read NR wide: pad it.
            let bias_tile: Option<[f32; 32]> =
                (k0 == 0).then_some(start_bias).flatten().map(|bias| {
                    let mut t = [0f32; 32];
                    let n = nr.min(b.cols - col0).min(bias.len().saturating_sub(col0));
                    if n > 0 {
                        t[..n].copy_from_slice(&bias[col0..col0 + n]);
                    }
                    t
                });
            for row0 in (0..rows).step_by(mr) {
                let tile = Tile {
                    k,
                    a: a[row0 * lda + k0..].as_ptr(),
                    lda,
                    b: panel_data.as_ptr(),
                    c: c[row0 * ldc + col0..].as_mut_ptr(),
                    ldc,
                    rows: mr.min(rows - row0),
                    cols: nr.min(b.cols - col0),
                    bias: bias_tile.as_ref().map(|t| t.as_ptr()),
                    residual: epilogue
                        .residual
                        .filter(|_| last)
                        .map(|r| r[row0 * ldc + col0..].as_ptr()),
                    ldr: ldc,
                    relu: epilogue.relu && last,
                };
                // SAFETY: the asserts above bound every row of A (depth long from k0), C and the
                // residual; the panel holds `depth × NR` values; the bias tile is NR wide; the
                // ISA was detected on this CPU when B was packed.
                unsafe { microkernel::run(isa, &tile) };
            }
        }
    }
}

/// Runs `partial(first)` for every `span`-long range of `0..total` on the thread pool and adds
/// the results (each `len` long) element-wise: the reduction of GEMMs whose depth is split
/// between threads (each thread owns one accumulator, so no two threads add to one value).
pub(crate) fn sum_partials(
    total: usize,
    span: usize,
    len: usize,
    partial: impl Fn(usize) -> Vec<f32> + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;
    (0..total)
        .step_by(span.max(1))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(partial)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![0f32; len])
}
