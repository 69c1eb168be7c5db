//! Channels-last feature maps, the layout every kernel here reads and writes.

use crate::KernelError;

/// A batch of feature maps stored channels-last (`[n, h, w, c]`, NHWC): one pixel's channels are
/// contiguous, so a convolution tap is one contiguous run and a pixel is one GEMM row.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Values, `n · h · w · c` of them.
    pub data: Vec<f32>,
    /// Images.
    pub n: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl FeatureMap {
    /// Wraps channels-last values, checking that their count matches the shape.
    pub fn new(data: Vec<f32>, [n, h, w, c]: [usize; 4]) -> Result<Self, KernelError> {
        if data.len() != n * h * w * c {
            return Err(KernelError::Shape {
                what: "feature map",
                expected: n * h * w * c,
                got: data.len(),
            });
        }
        Ok(Self { data, n, h, w, c })
    }

    /// Converts channels-first values `[n, c, h, w]` (burn's and PyTorch's layout).
    pub fn from_nchw(nchw: &[f32], [n, c, h, w]: [usize; 4]) -> Result<Self, KernelError> {
        if nchw.len() != n * c * h * w {
            return Err(KernelError::Shape {
                what: "NCHW input",
                expected: n * c * h * w,
                got: nchw.len(),
            });
        }
        if c == 1 {
            return Self::new(nchw.to_vec(), [n, h, w, c]);
        }
        let mut data = vec![0f32; nchw.len()];
        transpose_images(nchw, &mut data, c, h * w);
        Self::new(data, [n, h, w, c])
    }

    /// The same values channels-first, `[n, c, h, w]`.
    pub fn to_nchw(&self) -> Vec<f32> {
        let plane = self.h * self.w;
        if self.c == 1 {
            return self.data.clone();
        }
        let mut out = vec![0f32; self.data.len()];
        transpose_images(&self.data, &mut out, plane, self.c);
        out
    }

    /// Pixels over the whole batch: the GEMM row count.
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// `[n, h, w, c]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.n, self.h, self.w, self.c]
    }

    /// The channels of pixel `(img, y, x)`.
    pub(crate) fn pixel(&self, img: usize, y: usize, x: usize) -> &[f32] {
        let start = ((img * self.h + y) * self.w + x) * self.c;
        &self.data[start..start + self.c]
    }
}

/// Transposes every image of `src` — a `rows × cols` row-major matrix each — into `dst`, in
/// square blocks so reads and writes both stay within a few cache lines, images in parallel.
/// (NCHW → NHWC is `rows` = channels, `cols` = pixels; the reverse swaps them.)
fn transpose_images(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    use rayon::prelude::*;
    const BLOCK: usize = 16;
    let size = rows * cols;
    if size == 0 {
        return;
    }
    dst.par_chunks_mut(size)
        .zip(src.par_chunks(size))
        .for_each(|(dst, src)| {
            for r0 in (0..rows).step_by(BLOCK) {
                let r1 = (r0 + BLOCK).min(rows);
                for c0 in (0..cols).step_by(BLOCK) {
                    let c1 = (c0 + BLOCK).min(cols);
                    for r in r0..r1 {
                        let line = &src[r * cols..][c0..c1];
                        for (j, &v) in line.iter().enumerate() {
                            dst[(c0 + j) * rows + r] = v;
                        }
                    }
                }
            }
        });
}
