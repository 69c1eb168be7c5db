//! Stroke skeletons of the ten digits in a unit box (x right, y down), and a jittered renderer.

use rand::{Rng, RngExt};

use crate::Canvas;

fn ellipse(
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    from: f32,
    to: f32,
    steps: usize,
) -> Vec<(f32, f32)> {
    (0..=steps)
        .map(|i| {
            let a = (from + (to - from) * i as f32 / steps as f32).to_radians();
            (cx + rx * a.cos(), cy + ry * a.sin())
        })
        .collect()
}

/// The strokes of digit `d` (0–9).
fn skeleton(d: usize) -> Vec<Vec<(f32, f32)>> {
    match d {
        0 => vec![ellipse(0.5, 0.5, 0.32, 0.46, 0.0, 360.0, 16)],
        1 => vec![vec![(0.3, 0.22), (0.55, 0.02), (0.55, 0.98)]],
        2 => {
            let mut top = ellipse(0.5, 0.3, 0.32, 0.26, 190.0, 380.0, 8);
            top.extend([(0.15, 0.98), (0.88, 0.98)]);
            vec![top]
        }
        3 => vec![
            ellipse(0.48, 0.27, 0.3, 0.24, 200.0, 450.0, 9),
            ellipse(0.48, 0.73, 0.33, 0.25, 270.0, 520.0, 9),
        ],
        4 => vec![vec![(0.68, 0.98), (0.68, 0.02), (0.1, 0.68), (0.92, 0.68)]],
        5 => {
            let mut s = vec![(0.85, 0.03), (0.22, 0.03), (0.18, 0.45)];
            s.extend(ellipse(0.48, 0.67, 0.34, 0.3, 220.0, 500.0, 10));
            vec![s]
        }
        6 => {
            let mut s = vec![(0.78, 0.04), (0.4, 0.25)];
            s.extend(ellipse(0.5, 0.7, 0.32, 0.27, 190.0, 550.0, 14));
            vec![s]
        }
        7 => vec![vec![(0.1, 0.03), (0.9, 0.03), (0.38, 0.98)]],
        8 => vec![
            ellipse(0.5, 0.26, 0.25, 0.23, 0.0, 360.0, 12),
            ellipse(0.5, 0.73, 0.31, 0.25, 0.0, 360.0, 12),
        ],
        _ => {
            let mut s = ellipse(0.5, 0.3, 0.3, 0.27, 10.0, 370.0, 14);
            s.extend([(0.78, 0.6), (0.62, 0.98)]);
            vec![s]
        }
    }
}

/// Draws digit `d` in a box of `height` px whose top-left is `(x, y)`, with random stroke jitter,
/// slant, aspect and thickness; returns the box width actually used.
pub(crate) fn draw_digit<R: Rng + ?Sized>(
    canvas: &mut Canvas,
    d: usize,
    (x, y): (f32, f32),
    height: f32,
    rng: &mut R,
) {
    let aspect = rng.random_range(0.55f32..0.8);
    let slant = rng.random_range(-0.25f32..0.25);
    let thickness = rng.random_range(0.09f32..0.15) * height;
    let value = rng.random_range(0.8f32..1.0);
    let width = height * aspect;
    for stroke in skeleton(d) {
        let points: Vec<(f32, f32)> = stroke
            .iter()
            .map(|&(u, v)| {
                let u = u + rng.random_range(-0.04f32..0.04);
                let v = v + rng.random_range(-0.04f32..0.04);
                let u = u + slant * (0.5 - v);
                (x + u * width, y + v * height)
            })
            .collect();
        // At least 1.6 px, so that some pixel of every stroke is fully covered and a digit is
        // always brighter than clutter (≤ 0.7).
        canvas.polyline(&points, thickness.max(1.6), value);
    }
}

/// Draws a random clutter stroke (two joined segments) inside a `size` px box at `(x, y)`.
pub(crate) fn draw_clutter<R: Rng + ?Sized>(
    canvas: &mut Canvas,
    (x, y): (f32, f32),
    size: f32,
    rng: &mut R,
) {
    let mut p = || {
        (
            x + rng.random_range(0.0..size),
            y + rng.random_range(0.0..size),
        )
    };
    let points = [p(), p(), p()];
    let thickness = rng.random_range(0.06f32..0.12) * size;
    let value = rng.random_range(0.3f32..0.7);
    canvas.polyline(&points, thickness.max(1.0), value);
}
