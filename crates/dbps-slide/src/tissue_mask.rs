//! Which parts of a slide hold tissue: Otsu's threshold on a thumbnail, as CLAM does, so that
//! blank background is never decoded at full resolution.

use crate::{Slide, SlideError};

/// Otsu's threshold of an 8-bit histogram: the t maximising the between-class variance
/// σ_B²(t) = ω₀(t) ω₁(t) (μ₀(t) − μ₁(t))², with ω the class weights and μ the class means of
/// the values ≤ t and > t.
pub fn otsu_threshold(histogram: &[u64; 256]) -> u8 {
    let total: u64 = histogram.iter().sum();
    let sum: f64 = histogram
        .iter()
        .enumerate()
        .map(|(v, &n)| v as f64 * n as f64)
        .sum();
    let (mut weight0, mut sum0) = (0u64, 0f64);
    let (mut best, mut best_var) = (0u8, -1f64);
    for (t, &n) in histogram.iter().enumerate() {
        weight0 += n;
        sum0 += t as f64 * n as f64;
        let weight1 = total - weight0;
        if weight0 == 0 || weight1 == 0 {
            continue;
        }
        let (w0, w1) = (weight0 as f64, weight1 as f64);
        let (mu0, mu1) = (sum0 / w0, (sum - sum0) / w1);
        let var = w0 * w1 * (mu0 - mu1) * (mu0 - mu1);
        if var > best_var {
            best_var = var;
            best = t as u8;
        }
    }
    best
}

/// Which thumbnail pixels are tissue: Otsu's threshold splits the gray values in two, and the
/// side that does not hold the most common value (the background, which fills most of a
/// slide) is tissue. Bright-field slides (dark tissue on white) and dark-field images (bright
/// objects on black) both work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TissueMask {
    /// `[h, w]` of the thumbnail.
    pub size: [usize; 2],
    /// Tissue per thumbnail pixel, row-major, one bit each (bit `i % 64` of word `i / 64`): a
    /// slide dataset keeps every slide's mask, at most 128 KiB apiece.
    bits: Vec<u64>,
    /// The threshold.
    pub threshold: u8,
}

/// Longest side of the thumbnail a slide's tissue mask is computed on.
pub const MASK_THUMBNAIL: usize = 1024;

impl TissueMask {
    /// The mask of `slide`, from its gray thumbnail of at most [`MASK_THUMBNAIL`] pixels a side.
    pub fn of_slide(slide: &Slide) -> Result<Self, SlideError> {
        let (thumbnail, size) = slide.thumbnail(MASK_THUMBNAIL)?;
        Ok(Self::otsu(&thumbnail, size))
    }

    /// A mask from one flag per thumbnail pixel of `size`, row-major.
    pub fn from_flags(size: [usize; 2], flags: &[bool], threshold: u8) -> Self {
        let mut bits = vec![0u64; (size[0] * size[1]).div_ceil(64)];
        for (i, _) in flags.iter().enumerate().filter(|(_, t)| **t) {
            bits[i / 64] |= 1 << (i % 64);
        }
        Self {
            size,
            bits,
            threshold,
        }
    }

    /// Whether thumbnail pixel `[y, x]` is tissue.
    pub fn is_tissue(&self, [y, x]: [usize; 2]) -> bool {
        let i = y * self.size[1] + x;
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    /// The columns of row `y` that are tissue, in order, found a 64-bit word at a time.
    fn tissue_columns(&self, y: usize) -> impl Iterator<Item = usize> + '_ {
        let w = self.size[1];
        let (start, end) = (y * w, (y + 1) * w);
        (start / 64..end.div_ceil(64)).flat_map(move |k| {
            let mut word = self.bits[k];
            std::iter::from_fn(move || {
                while word != 0 {
                    let i = k * 64 + word.trailing_zeros() as usize;
                    word &= word - 1;
                    if (start..end).contains(&i) {
                        return Some(i - start);
                    }
                }
                None
            })
        })
    }

    /// Thumbnail pixels that are tissue.
    pub fn tissue_pixels(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether any thumbnail pixel is tissue.
    pub fn any(&self) -> bool {
        self.bits.iter().any(|&w| w != 0)
    }

    /// The mask of a gray thumbnail `[h, w]`.
    pub fn otsu(thumbnail: &[u8], size: [usize; 2]) -> Self {
        let mut histogram = [0u64; 256];
        for &v in thumbnail {
            histogram[v as usize] += 1;
        }
        let threshold = otsu_threshold(&histogram);
        let background = (0..256).max_by_key(|&v| histogram[v]).unwrap_or(0) as u8;
        let background_low = background <= threshold;
        let tissue: Vec<bool> = thumbnail
            .iter()
            .map(|&v| (v <= threshold) != background_low)
            .collect();
        Self::from_flags(size, &tissue, threshold)
    }

    /// The cells of a patch grid over an image of `image_size` that overlap tissue, as
    /// row-major indices `row · xs.len() + col`: `ys` and `xs` are the top-left rows and
    /// columns of the grid's patches, `[h, w]` their size. The same cells as [`TissueMask::covers`]
    /// finds one by one, but the mask is collapsed row band by row band first, so a grid of
    /// millions of patches costs little more than its rows with tissue.
    pub fn covered_cells(
        &self,
        image_size: [usize; 2],
        ys: &[usize],
        xs: &[usize],
        [h, w]: [usize; 2],
    ) -> Vec<usize> {
        let [mh, mw] = self.size;
        let to_mask = |v: usize, full: usize, m: usize| (v * m / full.max(1)).min(m - 1);
        let span = |v: usize, len: usize, full: usize, m: usize| {
            (to_mask(v, full, m), to_mask(v + len - 1, full, m))
        };
        let columns: Vec<(usize, usize)> =
            xs.iter().map(|&x| span(x, w, image_size[1], mw)).collect();
        // Mask rows with tissue, as a prefix count: a band without any is skipped at once.
        let mut rows_before = vec![0usize; mh + 1];
        for my in 0..mh {
            let any = self.tissue_columns(my).next().is_some();
            rows_before[my + 1] = rows_before[my] + usize::from(any);
        }
        let mut band = vec![false; mw];
        let mut cols_before = vec![0usize; mw + 1];
        let mut cells = Vec::new();
        for (r, &y) in ys.iter().enumerate() {
            let (y0, y1) = span(y, h, image_size[0], mh);
            if rows_before[y1 + 1] == rows_before[y0] {
                continue;
            }
            band.fill(false);
            for my in y0..=y1 {
                for mx in self.tissue_columns(my) {
                    band[mx] = true;
                }
            }
            for (mx, &b) in band.iter().enumerate() {
                cols_before[mx + 1] = cols_before[mx] + usize::from(b);
            }
            cells.extend(
                columns
                    .iter()
                    .enumerate()
                    .filter(|(_, (x0, x1))| cols_before[x1 + 1] > cols_before[*x0])
                    .map(|(c, _)| r * xs.len() + c),
            );
        }
        cells
    }

    /// Whether the region `[y, x]`, `[h, w]` of an image of `image_size` overlaps tissue.
    pub fn covers(&self, image_size: [usize; 2], [y, x]: [usize; 2], [h, w]: [usize; 2]) -> bool {
        let [mh, mw] = self.size;
        let to_mask = |v: usize, full: usize, m: usize| (v * m / full.max(1)).min(m - 1);
        let (y0, y1) = (
            to_mask(y, image_size[0], mh),
            to_mask(y + h - 1, image_size[0], mh),
        );
        let (x0, x1) = (
            to_mask(x, image_size[1], mw),
            to_mask(x + w - 1, image_size[1], mw),
        );
        (y0..=y1).any(|my| (x0..=x1).any(|mx| self.is_tissue([my, mx])))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `covered_cells` finds what `covers` finds patch by patch, on masks and grids of
        /// every shape (thumbnails smaller and larger than the image, overlapping and
        /// strided patches, the last one past the edge).
        #[test]
        fn covered_cells_agree_with_covers(
            mh in 1usize..40,
            mw in 1usize..40,
            bits in proptest::collection::vec(proptest::bool::weighted(0.1), 1600),
            image in (8usize..300, 8usize..300),
            p_frac in 0.0f64..1.0,
            extra in 0usize..4,
        ) {
            let mask = TissueMask::from_flags([mh, mw], &bits[..mh * mw], 0);
            let image = [image.0, image.1];
            let p = 1 + (p_frac * (image[0].min(image[1]) - 1) as f64) as usize;
            let stride = (p + extra).max(1);
            let ys: Vec<usize> = (0..image[0]).step_by(stride).collect();
            let xs: Vec<usize> = (0..image[1]).step_by(stride).collect();
            let mut naive = Vec::new();
            for (r, &y) in ys.iter().enumerate() {
                for (c, &x) in xs.iter().enumerate() {
                    if mask.covers(image, [y, x], [p, p]) {
                        naive.push(r * xs.len() + c);
                    }
                }
            }
            proptest::prop_assert_eq!(mask.covered_cells(image, &ys, &xs, [p, p]), naive);
        }
    }

    /// Two clusters: the threshold lands between them (any t in [10, 199] separates them;
    /// σ_B² is flat there, and the first maximum is kept).
    #[test]
    fn otsu_splits_two_clusters() {
        let mut histogram = [0u64; 256];
        histogram[10] = 700;
        histogram[200] = 300;
        let t = otsu_threshold(&histogram);
        assert!((10..200).contains(&t), "{t}");
        // By hand for 0/1/2 with counts 1, 1, 2: t = 0 gives ω = (1/4, 3/4), μ = (0, 5/3),
        // σ² ∝ 1·3·(5/3)² = 8.33; t = 1 gives ω = (2/4, 2/4), μ = (1/2, 2), σ² ∝ 2·2·(3/2)² = 9.
        let mut h = [0u64; 256];
        h[0] = 1;
        h[1] = 1;
        h[2] = 2;
        assert_eq!(otsu_threshold(&h), 1);
    }

    #[test]
    fn tissue_is_the_side_without_the_background() {
        // Bright field: white background, one dark blob.
        let mut thumb = vec![240u8; 16];
        thumb[5] = 60;
        let mask = TissueMask::otsu(&thumb, [4, 4]);
        assert_eq!(mask.tissue_pixels(), 1);
        assert!(mask.is_tissue([1, 1]));
        // Dark field: black background, one bright blob.
        let mut thumb = vec![5u8; 16];
        thumb[10] = 220;
        let mask = TissueMask::otsu(&thumb, [4, 4]);
        assert!(mask.is_tissue([2, 2]) && mask.tissue_pixels() == 1);
        // Regions of a 400×400 image on this 4×4 mask: pixel (2, 2) covers 200..300 × 200..300.
        assert!(mask.covers([400, 400], [250, 250], [16, 16]));
        assert!(!mask.covers([400, 400], [0, 0], [16, 16]));
        assert!(
            mask.covers([400, 400], [190, 190], [16, 16]),
            "straddles into tissue"
        );
    }
}
