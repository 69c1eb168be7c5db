//! PNG bar charts drawn with embedded-graphics' built-in bitmap font (no font files, nothing
//! fetched) and encoded with `png`: the bench's and the reproduction's charts.

use std::convert::Infallible;
use std::path::Path;

use anyhow::{Context, Result};
use embedded_graphics::mono_font::{MonoTextStyle, ascii::FONT_7X13, ascii::FONT_9X15_BOLD};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;

/// An RGB framebuffer that embedded-graphics draws into.
struct Framebuffer {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Framebuffer {
    fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; (width * height * 3) as usize],
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        Ok(())
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
    ) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let at = ((p.y as u32 * self.width + p.x as u32) * 3) as usize;
                self.pixels[at..at + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// One bar: label, value, colour.
pub struct Bar {
    /// Text left of the bar.
    pub label: String,
    /// Length in the chart's unit.
    pub value: f64,
    /// Fill.
    pub color: Rgb888,
}

/// dbps's bars.
pub const DBPS: Rgb888 = Rgb888::new(31, 119, 180);
/// The reference's bars (PyTorch, the paper).
pub const TORCH: Rgb888 = Rgb888::new(238, 76, 44);
/// Bars of neither.
pub const OTHER: Rgb888 = Rgb888::new(150, 150, 150);

/// A horizontal bar chart with the value printed after each bar.
pub fn bar_chart(path: &Path, title: &str, unit: &str, bars: &[Bar]) -> Result<()> {
    let (label_w, bar_w, row_h) = (330i32, 420i32, 26i32);
    let width = (label_w + bar_w + 150) as u32;
    let height = (60 + row_h * bars.len() as i32 + 20) as u32;
    let mut fb = Framebuffer::new(width, height);
    let black = MonoTextStyle::new(&FONT_7X13, Rgb888::BLACK);
    let bold = MonoTextStyle::new(&FONT_9X15_BOLD, Rgb888::BLACK);
    let _ = Text::new(title, Point::new(10, 22), bold).draw(&mut fb);
    let max = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    for (i, bar) in bars.iter().enumerate() {
        let y = 50 + row_h * i as i32;
        let _ = Text::new(&bar.label, Point::new(10, y + 15), black).draw(&mut fb);
        let len = ((bar.value / max) * bar_w as f64).round().max(1.0) as u32;
        let _ = Rectangle::new(
            Point::new(label_w, y + 3),
            Size::new(len, (row_h - 8) as u32),
        )
        .into_styled(PrimitiveStyle::with_fill(bar.color))
        .draw(&mut fb);
        let value = if bar.value.abs() >= 10.0 {
            format!("{:.0} {unit}", bar.value)
        } else {
            format!("{:.2} {unit}", bar.value)
        };
        let _ =
            Text::new(&value, Point::new(label_w + len as i32 + 6, y + 15), black).draw(&mut fb);
    }
    fb.save(path)
}
