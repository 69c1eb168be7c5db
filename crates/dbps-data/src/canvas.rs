use crate::{Pixels, Sample, Target};

/// A single-channel image in [0, 1] that strokes and stamps are drawn onto (max compositing).
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Pixels, row-major.
    pub pixels: Vec<f32>,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl Canvas {
    /// A black canvas.
    pub fn new(height: usize, width: usize) -> Self {
        Self {
            pixels: vec![0.0; height * width],
            height,
            width,
        }
    }

    /// The canvas as a one-channel sample with these targets.
    pub fn into_sample(self, targets: Vec<Target>) -> Sample {
        Sample {
            image: Pixels::F32(self.pixels),
            channels: 1,
            height: self.height,
            width: self.width,
            targets,
        }
    }

    /// Draws an anti-aliased polyline of `thickness` px at `value`, points given as `(x, y)` pixels.
    pub fn polyline(&mut self, points: &[(f32, f32)], thickness: f32, value: f32) {
        if points.is_empty() {
            return;
        }
        let r = thickness / 2.0 + 1.0;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for &(x, y) in points {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        let clip = |v: f32, hi: usize| v.max(0.0).min(hi as f32 - 1.0) as usize;
        let (cx0, cx1) = (
            clip((x0 - r).floor(), self.width),
            clip((x1 + r).ceil(), self.width),
        );
        let (cy0, cy1) = (
            clip((y0 - r).floor(), self.height),
            clip((y1 + r).ceil(), self.height),
        );
        for py in cy0..=cy1 {
            for px in cx0..=cx1 {
                let p = (px as f32 + 0.5, py as f32 + 0.5);
                let d = points
                    .windows(2)
                    .map(|w| segment_distance(p, w[0], w[1]))
                    .fold(segment_distance(p, points[0], points[0]), f32::min);
                let coverage = (thickness / 2.0 + 0.5 - d).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    let pixel = &mut self.pixels[py * self.width + px];
                    *pixel = pixel.max(coverage * value);
                }
            }
        }
    }

    /// Pastes a `size`² stamp with its top-left corner at `(x, y)`, overwriting the whole box —
    /// zeros included, as the reference generator assigns it (clipped at the canvas edge).
    pub fn paste_box(&mut self, stamp: &[f32], size: usize, x: usize, y: usize) {
        let cols = size.min(self.width.saturating_sub(x));
        for sy in 0..size.min(self.height.saturating_sub(y)) {
            let row = (y + sy) * self.width + x;
            self.pixels[row..row + cols].copy_from_slice(&stamp[sy * size..sy * size + cols]);
        }
    }
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polyline_covers_its_path_and_nothing_far_away() {
        let mut c = Canvas::new(20, 20);
        c.polyline(&[(2.0, 10.0), (18.0, 10.0)], 2.0, 1.0);
        assert_eq!(c.pixels[10 * 20 + 10], 1.0);
        assert_eq!(c.pixels[2 * 20 + 10], 0.0);
    }
}
