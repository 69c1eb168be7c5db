//! An RGB framebuffer that embedded-graphics draws into (its built-in bitmap fonts need no font
//! files), saved as PNG: the figures of `dbps explain` and the charts of `cargo xtask`.

use std::convert::Infallible;
use std::path::Path;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

use dbps_model::atomic_write::write_atomic;
use dbps_train::{Result, TrainError};

/// An RGB image, 8 bits per channel, row-major, white when created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Framebuffer {
    /// A white `width × height` image.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width as usize * height as usize * 3],
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Sets pixel `(x, y)`; coordinates outside the image are ignored (shapes may overhang).
    pub fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0
            && y >= 0
            && (x as u64) < u64::from(self.width)
            && (y as u64) < u64::from(self.height)
        {
            let at = (y as usize * self.width as usize + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&rgb);
        }
    }

    /// Pixel `(x, y)`.
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let at = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }

    /// Copies `image` (`[h, w]` RGB rows) with its top-left corner at `(x, y)`.
    pub fn blit(&mut self, x: i64, y: i64, [h, w]: [usize; 2], rgb: &[[u8; 3]]) {
        for row in 0..h {
            for col in 0..w {
                self.put(x + col as i64, y + row as i64, rgb[row * w + col]);
            }
        }
    }

    /// The outline of the `w × h` rectangle at `(x, y)`, `thickness` pixels wide, drawn inside it.
    pub fn outline(&mut self, [x, y]: [i64; 2], [w, h]: [i64; 2], thickness: i64, rgb: [u8; 3]) {
        let t = thickness.min((w.min(h) + 1) / 2).max(1);
        for dy in 0..h {
            for dx in 0..w {
                let edge = dx < t || dy < t || dx >= w - t || dy >= h - t;
                if edge {
                    self.put(x + dx, y + dy, rgb);
                }
            }
        }
    }

    /// The image as PNG bytes.
    pub fn png(&self) -> std::result::Result<Vec<u8>, png::EncodingError> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }

    /// Saves the image as PNG through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.png().map_err(|e| TrainError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        Ok(write_atomic(path, &bytes)?)
    }
}

impl OriginDimensions for Framebuffer {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Framebuffer {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> std::result::Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            self.put(i64::from(p.x), i64::from(p.y), [c.r(), c.g(), c.b()]);
        }
        Ok(())
    }
}

/// The colour of `t` ∈ [0, 1] on a dark-to-bright heat scale (black, purple, red, orange,
/// pale yellow: ordered by lightness, so it reads in grayscale print too).
pub fn heat_color(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [87.0, 16.0, 110.0],
        [188.0, 55.0, 84.0],
        [249.0, 142.0, 9.0],
        [252.0, 255.0, 164.0],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let mix = |c: usize| (STOPS[i][c] + f * (STOPS[i + 1][c] - STOPS[i][c])).round() as u8;
    [mix(0), mix(1), mix(2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_are_drawn_inside_the_rectangle() {
        let mut fb = Framebuffer::new(10, 10);
        fb.outline([2, 3], [4, 5], 1, [255, 0, 0]);
        for y in 0..10 {
            for x in 0..10 {
                let inside = (2..6).contains(&x) && (3..8).contains(&y);
                let border = inside && (x == 2 || x == 5 || y == 3 || y == 7);
                let expected = if border { [255, 0, 0] } else { [255; 3] };
                assert_eq!(fb.get(x, y), expected, "({x}, {y})");
            }
        }
    }

    #[test]
    fn the_heat_scale_runs_dark_to_bright() {
        let lightness = |t: f32| heat_color(t).iter().map(|&c| u32::from(c)).sum::<u32>();
        let steps: Vec<u32> = (0..=10).map(|i| lightness(i as f32 / 10.0)).collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        assert_eq!(heat_color(f32::NAN), heat_color(0.0));
        assert_eq!(heat_color(2.0), [252, 255, 164]);
    }
}
