//! PNG bar charts of the bench figures, drawn with embedded-graphics' built-in bitmap font
//! (no font files, nothing fetched) and encoded with `png`.

use std::convert::Infallible;
use std::path::Path;

use anyhow::{Context, Result};
use embedded_graphics::mono_font::{MonoTextStyle, ascii::FONT_7X13, ascii::FONT_9X15_BOLD};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;

use super::Results;

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
struct Bar {
    label: String,
    value: f64,
    color: Rgb888,
}

const DBPS: Rgb888 = Rgb888::new(31, 119, 180);
const TORCH: Rgb888 = Rgb888::new(238, 76, 44);
const OTHER: Rgb888 = Rgb888::new(150, 150, 150);

/// A horizontal bar chart with the value printed after each bar.
fn bar_chart(path: &Path, title: &str, unit: &str, bars: &[Bar]) -> Result<()> {
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
        let value = format!("{:.0} {unit}", bar.value);
        let _ =
            Text::new(&value, Point::new(label_w + len as i32 + 6, y + 15), black).draw(&mut fb);
    }
    fb.save(path)
}

/// `steps.png`, `memory_vs_n.png`, `encoders.png`.
pub fn write_charts(out: &Path, r: &Results) -> Result<()> {
    let mut steps = Vec::new();
    for row in &r.steps {
        steps.push(Bar {
            label: format!("dbps {} {}", short(&row.geometry), row.method),
            value: row.figures.ms_per_step,
            color: DBPS,
        });
    }
    for (config, label) in [
        ("mnist_ips", "PyTorch MNIST IPS M=100"),
        ("cqu_ips_m12", "PyTorch CQU IPS M=12"),
    ] {
        if let Some(ms) = r.reference.get(config).and_then(|x| x.ms_per_step) {
            steps.push(Bar {
                label: label.into(),
                value: ms,
                color: TORCH,
            });
        }
    }
    bar_chart(
        &out.join("steps.png"),
        "Training step (batch 16)",
        "ms",
        &steps,
    )?;

    let memory: Vec<Bar> = r
        .memory_vs_n
        .iter()
        .filter_map(|row| {
            Some(Bar {
                label: format!("N = {}", row.n),
                value: row.figures.peak_step_bytes? as f64 / 1e6,
                color: DBPS,
            })
        })
        .collect();
    bar_chart(
        &out.join("memory_vs_n.png"),
        "Peak step memory vs N (megapixel MNIST, IPS M=100 L=100)",
        "MB",
        &memory,
    )?;

    let mut encoders: Vec<Bar> = r
        .encoders
        .iter()
        .map(|e| Bar {
            label: format!("dbps {} {}", e.engine, short(&e.geometry)),
            value: e.patches_per_s,
            color: if e.engine == "native" { DBPS } else { OTHER },
        })
        .collect();
    for (config, label) in [
        ("enc_r18_2stage_1ch_50px", "PyTorch MNIST"),
        ("enc_r18_4stage_100px", "PyTorch CQU"),
    ] {
        if let Some(rate) = r.reference.get(config).and_then(|x| x.patches_per_s) {
            encoders.push(Bar {
                label: label.into(),
                value: rate,
                color: TORCH,
            });
        }
    }
    bar_chart(
        &out.join("encoders.png"),
        "No-gradient encoder throughput (batch 64)",
        "patches/s",
        &encoders,
    )
}

/// The first word of a geometry name (`megapixel MNIST 1500²` → `MNIST`).
fn short(geometry: &str) -> &str {
    if geometry.starts_with("megapixel") {
        "MNIST"
    } else {
        geometry.split_whitespace().next().unwrap_or(geometry)
    }
}
