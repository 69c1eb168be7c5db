use rayon::prelude::*;

use crate::{PatchGrid, TilingError};

/// Per-channel normalisation applied while a patch is cut: `(raw · scale − mean[c]) / std[c]`.
///
/// 8-bit images stay 8-bit in memory and are normalised patch by patch, so a batch costs one
/// byte per pixel however large the image is (ImageNet statistics: [`PixelNorm::imagenet`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PixelNorm {
    scale: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl PixelNorm {
    /// Values used as they are.
    pub fn identity(channels: usize) -> Self {
        Self {
            scale: 1.0,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// `(raw · scale − mean[c]) / std[c]`; one mean and one positive std per channel.
    pub fn new(scale: f32, mean: Vec<f32>, std: Vec<f32>) -> Result<Self, TilingError> {
        let bad_std = std.iter().any(|s| !(s.is_finite() && *s > 0.0));
        if mean.len() != std.len() || bad_std || !scale.is_finite() {
            return Err(TilingError::Normalisation { mean, std, scale });
        }
        Ok(Self { scale, mean, std })
    }

    /// 8-bit RGB to ImageNet statistics (torchvision's `ToTensor` then `Normalize`).
    pub fn imagenet() -> Self {
        Self {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Channels it normalises.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Normalises one image of raw 8-bit values, channel-major with `plane` values per channel.
    pub fn apply_planar(&self, raw: &[u8], plane: usize) -> Vec<f32> {
        raw.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / plane.max(1)).min(self.mean.len().saturating_sub(1));
                (f32::from(v) * self.scale - self.mean[c]) / self.std[c]
            })
            .collect()
    }
}

/// The pixel values of a [`HostImages`] batch, as decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum HostPixels {
    /// 8-bit samples (photographs, scans): normalised when cut.
    U8(Vec<u8>),
    /// Real-valued samples (generated canvases, already normalised data).
    F32(Vec<f32>),
}

impl HostPixels {
    fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::F32(v) => v.len(),
        }
    }
}

/// A batch of images `[B, C, H, W]` kept in host memory, from which patches are cut on demand.
///
/// This is the patch source of selection: only the patches asked for are normalised and
/// handed on (one chunk of L candidates per image, then the M winners), so the device never
/// holds the whole batch.
#[derive(Debug, Clone, PartialEq)]
pub struct HostImages {
    pixels: HostPixels,
    dims: [usize; 4],
    norm: PixelNorm,
}

impl HostImages {
    /// Images `dims = [B, C, H, W]` with `pixels` in that row-major order, normalised by `norm`
    /// when cut.
    pub fn new(pixels: HostPixels, dims: [usize; 4], norm: PixelNorm) -> Result<Self, TilingError> {
        let [_, channels, ..] = dims;
        if pixels.len() != dims.iter().product::<usize>() {
            return Err(TilingError::PixelCount {
                dims,
                got: pixels.len(),
            });
        }
        if norm.channels() != channels {
            return Err(TilingError::NormChannels {
                channels,
                norm: norm.channels(),
            });
        }
        Ok(Self { pixels, dims, norm })
    }

    /// `[B, C, H, W]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

    /// Images B.
    pub fn batch(&self) -> usize {
        self.dims[0]
    }

    /// Bytes the pixels occupy (one per 8-bit sample, four per f32 one).
    pub fn bytes(&self) -> usize {
        match &self.pixels {
            HostPixels::U8(v) => v.len(),
            HostPixels::F32(v) => v.len() * 4,
        }
    }

    /// The normalised patches named by `picks` — `(image, grid index)` pairs — as
    /// `[picks.len(), C, p, p]` f32 values in the order of `picks`, cut in parallel. Pixels past
    /// the image's edge (a zero-padded remainder) are zeros after normalisation, as in
    /// [`crate::cut_patches`].
    pub fn cut(&self, grid: &PatchGrid, picks: &[(usize, usize)]) -> Result<Vec<f32>, TilingError> {
        self.cut_with(grid, picks, true)
    }

    /// [`HostImages::cut`] on the calling thread only: for a background thread that prepares
    /// the next chunk while the thread pool encodes the current one.
    pub fn cut_serial(
        &self,
        grid: &PatchGrid,
        picks: &[(usize, usize)],
    ) -> Result<Vec<f32>, TilingError> {
        self.cut_with(grid, picks, false)
    }

    fn cut_with(
        &self,
        grid: &PatchGrid,
        picks: &[(usize, usize)],
        parallel: bool,
    ) -> Result<Vec<f32>, TilingError> {
        self.check(grid, picks)?;
        let patch = (self.dims[1] * grid.patch() * grid.patch()).max(1);
        let mut out = vec![0f32; picks.len() * patch];
        let cut = |(dst, &pick): (&mut [f32], &(usize, usize))| self.cut_one(grid, pick, dst);
        if parallel {
            out.par_chunks_mut(patch).zip(picks).for_each(cut);
        } else {
            out.chunks_mut(patch).zip(picks).for_each(cut);
        }
        Ok(out)
    }

    fn check(&self, grid: &PatchGrid, picks: &[(usize, usize)]) -> Result<(), TilingError> {
        let [batch, _, height, width] = self.dims;
        grid.check_image([height, width])?;
        match picks
            .iter()
            .find(|&&(image, index)| image >= batch || index >= grid.len())
        {
            Some(&(image, index)) => Err(TilingError::PickOutside {
                image,
                index,
                batch,
                patches: grid.len(),
            }),
            None => Ok(()),
        }
    }

    /// Writes patch `(image, index)` into `dst` (`C·p·p` values, zeros past the edge).
    fn cut_one(&self, grid: &PatchGrid, (image, index): (usize, usize), dst: &mut [f32]) {
        let [_, channels, height, width] = self.dims;
        let p = grid.patch();
        let [y, x] = grid.origin(index);
        let (rows, cols) = (p.min(height - y), p.min(width - x));
        let scale = self.norm.scale;
        for c in 0..channels {
            let (mean, std) = (self.norm.mean[c], self.norm.std[c]);
            let (mul, add) = (scale / std, -mean / std);
            let plane = (image * channels + c) * height * width;
            let patch = &mut dst[c * p * p..(c + 1) * p * p];
            if rows < p || cols < p {
                patch.fill(0.0);
            }
            for r in 0..rows {
                let src = plane + (y + r) * width + x;
                let row = &mut patch[r * p..r * p + cols];
                match &self.pixels {
                    HostPixels::U8(v) => {
                        for (d, &s) in row.iter_mut().zip(&v[src..src + cols]) {
                            *d = f32::from(s) * mul + add;
                        }
                    }
                    HostPixels::F32(v) if mul == 1.0 && add == 0.0 => {
                        row.copy_from_slice(&v[src..src + cols]);
                    }
                    HostPixels::F32(v) => {
                        for (d, &s) in row.iter_mut().zip(&v[src..src + cols]) {
                            *d = s * mul + add;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RemainderPolicy;

    fn images(pixels: HostPixels, norm: PixelNorm) -> HostImages {
        HostImages::new(pixels, [2, 3, 10, 13], norm).unwrap()
    }

    /// The patch computed pixel by pixel from the definition.
    fn reference(
        raw: &dyn Fn(usize) -> f32,
        norm: &PixelNorm,
        grid: &PatchGrid,
        (image, index): (usize, usize),
    ) -> Vec<f32> {
        let p = grid.patch();
        let [y0, x0] = grid.origin(index);
        let mut out = Vec::new();
        for c in 0..3 {
            for r in 0..p {
                for q in 0..p {
                    let (y, x) = (y0 + r, x0 + q);
                    out.push(if y < 10 && x < 13 {
                        let v = raw(((image * 3 + c) * 10 + y) * 13 + x);
                        (v * norm.scale - norm.mean[c]) / norm.std[c]
                    } else {
                        0.0
                    });
                }
            }
        }
        out
    }

    #[test]
    fn cut_normalises_each_channel_and_pads_with_zeros() {
        let count = 2 * 3 * 10 * 13;
        let bytes: Vec<u8> = (0..count).map(|i| (i * 7 % 256) as u8).collect();
        let norm = PixelNorm::imagenet();
        for policy in [RemainderPolicy::Drop, RemainderPolicy::ZeroPad] {
            let grid = PatchGrid::new([10, 13], 4, 3, policy).unwrap();
            let picks = [(1, grid.len() - 1), (0, 0), (1, 2), (0, grid.len() / 2)];
            let host = images(HostPixels::U8(bytes.clone()), norm.clone());
            let got = host.cut(&grid, &picks).unwrap();
            assert_eq!(got, host.cut_serial(&grid, &picks).unwrap());
            let want: Vec<f32> = picks
                .iter()
                .flat_map(|&pick| reference(&|i| f32::from(bytes[i]), &norm, &grid, pick))
                .collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn f32_pixels_without_normalisation_are_copied() {
        let count = 2 * 3 * 10 * 13;
        let values: Vec<f32> = (0..count).map(|i| i as f32 * 0.5 - 3.0).collect();
        let grid = PatchGrid::new([10, 13], 5, 5, RemainderPolicy::ZeroPad).unwrap();
        let norm = PixelNorm::identity(3);
        let host = images(HostPixels::F32(values.clone()), norm.clone());
        let picks: Vec<(usize, usize)> = (0..grid.len()).map(|i| (i % 2, i)).collect();
        let want: Vec<f32> = picks
            .iter()
            .flat_map(|&pick| reference(&|i| values[i], &norm, &grid, pick))
            .collect();
        assert_eq!(host.cut(&grid, &picks).unwrap(), want);
    }

    #[test]
    fn bad_batches_and_picks_are_named() {
        let norm = PixelNorm::identity(3);
        let short = HostImages::new(HostPixels::U8(vec![0; 5]), [2, 3, 10, 13], norm.clone());
        assert!(matches!(short, Err(TilingError::PixelCount { got: 5, .. })));
        let wrong = HostImages::new(
            HostPixels::U8(vec![0; 2 * 3 * 10 * 13]),
            [2, 3, 10, 13],
            PixelNorm::identity(1),
        );
        assert!(matches!(
            wrong,
            Err(TilingError::NormChannels {
                channels: 3,
                norm: 1
            })
        ));
        assert!(PixelNorm::new(1.0, vec![0.0], vec![0.0]).is_err());
        let host = images(HostPixels::U8(vec![0; 2 * 3 * 10 * 13]), norm);
        let grid = PatchGrid::new([10, 13], 4, 4, RemainderPolicy::Drop).unwrap();
        let outside = host.cut(&grid, &[(2, 0)]).unwrap_err();
        assert!(outside.to_string().contains("image 2"), "{outside}");
        let other = PatchGrid::new([12, 13], 4, 4, RemainderPolicy::Drop).unwrap();
        assert!(matches!(
            host.cut(&other, &[(0, 0)]),
            Err(TilingError::ImageSizeMismatch { .. })
        ));
    }
}
