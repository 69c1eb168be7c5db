//! Register-blocked GEMM tiles: C[rows × cols] = A[rows × k] · B[k × NR] (+ bias | + C), then an
//! optional residual add and ReLU, all before C is stored once.
//!
//! A is row-major with leading dimension `lda` (im2col rows or channels-last pixels, read in
//! place); B is one packed weight panel, `k` rows of NR contiguous floats, zero-padded past the
//! layer's last output channel. Rows past `rows` re-read the last valid row of A and are never
//! stored, so A needs no padding.

use crate::Isa;
use crate::isa::Kind;

/// One tile's operands. Raw pointers because the tile writes a sub-block of a larger output
/// that other threads write other sub-blocks of.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Depth of this pass.
    pub k: usize,
    /// First element of A's first row.
    pub a: *const f32,
    /// Distance between A's rows.
    pub lda: usize,
    /// Packed panel, `k × NR`.
    pub b: *const f32,
    /// First element of C's first row.
    pub c: *mut f32,
    /// Distance between C's rows.
    pub ldc: usize,
    /// Valid rows, 1..=MR.
    pub rows: usize,
    /// Valid columns, 1..=NR.
    pub cols: usize,
    /// `Some(bias)`: C = bias + AB (first depth block); `None`: C += AB.
    pub bias: Option<*const f32>,
    /// Added after the product (last depth block), same layout as C with distance `ldr`.
    pub residual: Option<*const f32>,
    /// Distance between residual rows.
    pub ldr: usize,
    /// Clamp at zero after everything else.
    pub relu: bool,
}

/// Runs one tile with the kernel of `isa`.
///
/// # Safety
/// Every pointer must address the extents that `rows`, `cols`, `k`, `lda`, `ldc`, `ldr` and the
/// ISA's NR describe. (`isa` is supported by this CPU: an [`Isa`] only comes from detection.)
pub(crate) unsafe fn run(isa: Isa, t: &Tile) {
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => unsafe { x86::avx512(t) },
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { x86::avx2(t) },
        #[cfg(not(target_arch = "x86_64"))]
        Kind::Avx512 | Kind::Avx2 => unreachable!("x86 instruction sets are detected on x86 only"),
        Kind::Portable => unsafe { portable(t) },
    }
}

/// Plain-Rust tile (4 × 16), for CPUs without AVX2 and as the reference the SIMD tiles are
/// tested against.
unsafe fn portable(t: &Tile) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0f32; NR]; MR];
    unsafe {
        for (r, row) in acc.iter_mut().enumerate() {
            if let Some(bias) = t.bias {
                for (j, v) in row.iter_mut().enumerate().take(t.cols) {
                    *v = *bias.add(j);
                }
            } else if r < t.rows {
                for (j, v) in row.iter_mut().enumerate().take(t.cols) {
                    *v = *t.c.add(r * t.ldc + j);
                }
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|r| t.a.add(r.min(t.rows - 1) * t.lda));
        for p in 0..t.k {
            let b: &[f32; NR] = &*(t.b.add(p * NR) as *const [f32; NR]);
            for (r, row) in acc.iter_mut().enumerate() {
                let a = *rows[r].add(p);
                for (v, &w) in row.iter_mut().zip(b) {
                    *v += a * w;
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            for (j, &v) in row.iter().enumerate().take(t.cols) {
                let mut v = v;
                if let Some(res) = t.residual {
                    v += *res.add(r * t.ldr + j);
                }
                if t.relu {
                    v = v.max(0.0);
                }
                *t.c.add(r * t.ldc + j) = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Tile;
    use std::arch::x86_64::*;

    /// 12 × 32 tile: two zmm accumulators per row, B loaded once per depth step and A
    /// broadcast from memory.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(t: &Tile) {
        const MR: usize = 12;
        const NR: usize = 32;
        let lo: __mmask16 = if t.cols >= 16 {
            0xffff
        } else {
            (1u16 << t.cols) - 1
        };
        let hi: __mmask16 = if t.cols > 16 {
            ((1u32 << (t.cols - 16)) - 1) as u16
        } else {
            0
        };
        // The upper half's pointers (`wrapping_add(16)`) may lie past a row of `cols ≤ 16`
        // values: they are formed without `add`'s in-bounds promise and only ever used under
        // an all-zero mask, which touches no memory.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            if let Some(bias) = t.bias {
                let b0 = _mm512_maskz_loadu_ps(lo, bias);
                let b1 = _mm512_maskz_loadu_ps(hi, bias.wrapping_add(16));
                for row in acc.iter_mut() {
                    *row = [b0, b1];
                }
            } else {
                for (r, row) in acc.iter_mut().enumerate() {
                    if r < t.rows {
                        let c = t.c.add(r * t.ldc);
                        *row = [
                            _mm512_maskz_loadu_ps(lo, c),
                            _mm512_maskz_loadu_ps(hi, c.wrapping_add(16)),
                        ];
                    }
                }
            }
            let rows: [*const f32; MR] =
                std::array::from_fn(|r| t.a.add(r.min(t.rows - 1) * t.lda));
            let mut b = t.b;
            for p in 0..t.k {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for r in 0..MR {
                    let a = _mm512_set1_ps(*rows[r].add(p));
                    acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
                }
                b = b.add(NR);
            }
            let zero = _mm512_setzero_ps();
            for (r, row) in acc.iter().enumerate() {
                if r >= t.rows {
                    break;
                }
                let [mut v0, mut v1] = *row;
                if let Some(res) = t.residual {
                    let res = res.add(r * t.ldr);
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, res));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, res.wrapping_add(16)));
                }
                if t.relu {
                    v0 = _mm512_max_ps(v0, zero);
                    v1 = _mm512_max_ps(v1, zero);
                }
                let c = t.c.add(r * t.ldc);
                _mm512_mask_storeu_ps(c, lo, v0);
                _mm512_mask_storeu_ps(c.wrapping_add(16), hi, v1);
            }
        }
    }

    /// Lane mask for the first `n` of 8 lanes.
    #[target_feature(enable = "avx2")]
    unsafe fn mask8(n: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes)
    }

    /// 6 × 16 tile: two ymm accumulators per row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(t: &Tile) {
        const MR: usize = 6;
        const NR: usize = 16;
        unsafe {
            let lo = mask8(t.cols);
            let hi = mask8(t.cols.saturating_sub(8));
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            if let Some(bias) = t.bias {
                let b0 = _mm256_maskload_ps(bias, lo);
                let b1 = _mm256_maskload_ps(bias.wrapping_add(8), hi);
                for row in acc.iter_mut() {
                    *row = [b0, b1];
                }
            } else {
                for (r, row) in acc.iter_mut().enumerate() {
                    if r < t.rows {
                        let c = t.c.add(r * t.ldc);
                        *row = [
                            _mm256_maskload_ps(c, lo),
                            _mm256_maskload_ps(c.wrapping_add(8), hi),
                        ];
                    }
                }
            }
            let rows: [*const f32; MR] =
                std::array::from_fn(|r| t.a.add(r.min(t.rows - 1) * t.lda));
            let mut b = t.b;
            for p in 0..t.k {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for r in 0..MR {
                    let a = _mm256_broadcast_ss(&*rows[r].add(p));
                    acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
                }
                b = b.add(NR);
            }
            let zero = _mm256_setzero_ps();
            for (r, row) in acc.iter().enumerate() {
                if r >= t.rows {
                    break;
                }
                let [mut v0, mut v1] = *row;
                if let Some(res) = t.residual {
                    let res = res.add(r * t.ldr);
                    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(res, lo));
                    v1 = _mm256_add_ps(v1, _mm256_maskload_ps(res.wrapping_add(8), hi));
                }
                if t.relu {
                    v0 = _mm256_max_ps(v0, zero);
                    v1 = _mm256_max_ps(v1, zero);
                }
                let c = t.c.add(r * t.ldc);
                _mm256_maskstore_ps(c, lo, v0);
                _mm256_maskstore_ps(c.wrapping_add(8), hi, v1);
            }
        }
    }
}
