//! PNG bar charts drawn with embedded-graphics' built-in bitmap font (no font files, nothing
//! fetched) into dbps-app's [`Framebuffer`]: the bench's and the reproduction's charts.

use std::path::Path;

use anyhow::Result;
use dbps_app::figure::Framebuffer;
use embedded_graphics::mono_font::{MonoTextStyle, ascii::FONT_7X13, ascii::FONT_9X15_BOLD};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;

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
    Ok(fb.save(path)?)
}
