//! [`SlideView`]: a slide as a model sees it — one pyramid level, shrunk to an exact
//! resolution when one in µm/px falls between levels.

use std::sync::Arc;

use crate::{Resolution, Slide, SlideError};

/// Scales this close to 1 read the level as it is: a scanner's stated resolution and a
/// pyramid's downsamples are rounded, and resampling by 1.0004 would only blur.
const SAME_SCALE: f64 = 1e-3;

/// One level of a slide, at a scale: what a patch grid is laid over.
#[derive(Debug, Clone)]
pub struct SlideView {
    slide: Arc<Slide>,
    level: usize,
    /// Level pixels per view pixel: 1 reads the level as it is, above 1 shrinks it.
    scale: f64,
    size: [usize; 2],
}

impl SlideView {
    /// The view `resolution` asks for: a downsample reads the most reduced level not
    /// coarser than it, as it is; µm/px read the level closest from the finer side, shrunk
    /// to exactly that resolution.
    pub fn new(slide: Arc<Slide>, resolution: Resolution) -> Result<Self, SlideError> {
        let (level, scale) = match resolution {
            Resolution::Downsample(d) => (slide.level_for(d), 1.0),
            Resolution::MicronsPerPixel(wanted) => {
                let finest = slide.mpp().ok_or_else(|| SlideError::NoResolution {
                    path: slide.path().to_path_buf(),
                    wanted,
                })?;
                let downsample = wanted / finest;
                if downsample < 1.0 - SAME_SCALE {
                    return Err(SlideError::TooCoarse {
                        path: slide.path().to_path_buf(),
                        wanted,
                        finest,
                    });
                }
                let level = slide.level_for(downsample * (1.0 + SAME_SCALE));
                let scale = downsample / slide.levels()[level].downsample;
                (
                    level,
                    if (scale - 1.0).abs() < SAME_SCALE {
                        1.0
                    } else {
                        scale
                    },
                )
            }
        };
        let [h, w] = slide.levels()[level].size;
        let size = [
            ((h as f64 / scale).floor() as usize).max(1),
            ((w as f64 / scale).floor() as usize).max(1),
        ];
        Ok(Self {
            slide,
            level,
            scale,
            size,
        })
    }

    /// The slide.
    pub fn slide(&self) -> &Arc<Slide> {
        &self.slide
    }

    /// The pyramid level read.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Level pixels per view pixel (1: the level as it is).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `[height, width]` of the view.
    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    /// Level-0 pixels per view pixel: view coordinates times this are level-0 coordinates,
    /// the ones viewers such as QuPath use.
    pub fn level0_per_pixel(&self) -> f64 {
        self.slide.levels()[self.level].downsample * self.scale
    }

    /// µm per view pixel, when the slide states its resolution.
    pub fn mpp(&self) -> Option<f64> {
        self.slide.mpp().map(|m| m * self.level0_per_pixel())
    }

    /// The level pixels `[y0, x0]..[y1, x1]` that the view region at `[y, x]` of `[h, w]`
    /// draws on (for counting the tiles a read touches).
    pub fn level_span(&self, [y, x]: [usize; 2], [h, w]: [usize; 2]) -> [[usize; 2]; 2] {
        let s = self.scale;
        [
            [(y as f64 * s) as usize, (x as f64 * s) as usize],
            [
                ((y + h) as f64 * s).ceil() as usize,
                ((x + w) as f64 * s).ceil() as usize,
            ],
        ]
    }

    /// The interleaved pixels `[h, w, channels]` of the view from `[y, x]`; each view pixel is
    /// the area average of the level pixels it covers. Pixels past the edge are 0.
    pub fn read_region(&self, at: [usize; 2], size: [usize; 2]) -> Result<Vec<u8>, SlideError> {
        if self.scale == 1.0 {
            return self.slide.read_region(self.level, at, size);
        }
        let [[y0, x0], [y1, x1]] = self.level_span(at, size);
        let source = self
            .slide
            .read_region(self.level, [y0, x0], [y1 - y0, x1 - x0])?;
        Ok(area_resample(
            &source,
            [y1 - y0, x1 - x0],
            self.slide.channels(),
            [
                at[0] as f64 * self.scale - y0 as f64,
                at[1] as f64 * self.scale - x0 as f64,
            ],
            self.scale,
            size,
        ))
    }
}

/// Each output pixel `[i, j]` of `out` is the mean of the `source` pixels under the square
/// `[offset + i·scale, offset + (i+1)·scale)` (per axis), each weighted by the length it
/// overlaps: exact area averaging, so that a shrink by a non-whole factor keeps every source
/// pixel's share.
fn area_resample(
    source: &[u8],
    [sh, sw]: [usize; 2],
    channels: usize,
    offset: [f64; 2],
    scale: f64,
    [oh, ow]: [usize; 2],
) -> Vec<u8> {
    let weights = |n: usize, start: f64, len: usize| -> Vec<Vec<(usize, f64)>> {
        (0..n)
            .map(|i| {
                let (a, b) = (start + i as f64 * scale, start + (i + 1) as f64 * scale);
                let mut cover = Vec::new();
                let mut k = a.floor().max(0.0) as usize;
                while (k as f64) < b && k < len {
                    let overlap = (b.min(k as f64 + 1.0) - a.max(k as f64)).max(0.0);
                    if overlap > 0.0 {
                        cover.push((k, overlap));
                    }
                    k += 1;
                }
                cover
            })
            .collect()
    };
    let rows = weights(oh, offset[0], sh);
    let cols = weights(ow, offset[1], sw);
    let mut out = vec![0u8; oh * ow * channels];
    for (i, row) in rows.iter().enumerate() {
        for (j, col) in cols.iter().enumerate() {
            for c in 0..channels {
                let (mut sum, mut area) = (0.0, 0.0);
                for &(y, wy) in row {
                    for &(x, wx) in col {
                        sum += wy * wx * f64::from(source[(y * sw + x) * channels + c]);
                        area += wy * wx;
                    }
                }
                if area > 0.0 {
                    out[(i * ow + j) * channels + c] = (sum / area).round() as u8;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resampling_averages_what_each_pixel_covers() {
        // 1 × 3 source, shrunk by 1.5 to 1 × 2: [10, 20, 40] → [(10 + 0.5·20)/1.5, (0.5·20 + 40)/1.5].
        let out = area_resample(&[10, 20, 40], [1, 3], 1, [0.0, 0.0], 1.5, [1, 2]);
        assert_eq!(out, vec![13, 33]);
        // By 2 over a 2 × 2 RGB block: the mean of the four.
        let src = [0, 0, 0, 4, 8, 12, 8, 16, 24, 12, 24, 36];
        let out = area_resample(&src, [2, 2], 3, [0.0, 0.0], 2.0, [1, 1]);
        assert_eq!(out, vec![6, 12, 18]);
        // A half-pixel offset starts inside the first source pixel.
        let out = area_resample(&[0, 100, 100, 0], [1, 4], 1, [0.0, 0.5], 2.0, [1, 1]);
        assert_eq!(out, vec![75]);
    }
}
