//! Writes canvases 0..4 of the embedded default's test split (two-digit majority; default
//! config or a JSON given as the first argument) as `canvas-N.png`: to look at what the model
//! sees, and to try `dbps predict` / `dbps explain` on images it was not trained on.
use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};

fn main() {
    let config: SyntheticMajorityConfig = match std::env::args().nth(1) {
        Some(json) => serde_json::from_str(&json).expect("a SyntheticMajorityConfig as JSON"),
        None => SyntheticMajorityConfig::default(),
    };
    let data = SyntheticMajority::new(&config, Split::Test).expect("valid config");
    for i in 0..4 {
        let s = data.sample(i).expect("index in range");
        let Pixels::F32(values) = &s.image else {
            unreachable!("generated canvases are f32")
        };
        let bytes = values.iter().map(|v| (v * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(s.width as u32, s.height as u32, bytes)
            .expect("width × height values")
            .save(format!("canvas-{i}.png"))
            .expect("writable cwd");
        let (_, class, cells) = data.draw(i);
        eprintln!(
            "canvas-{i}.png: class {class} ({} × digit {}, {} × digit {})",
            cells[0].len(),
            config.digits[0],
            cells[1].len(),
            config.digits[1]
        );
    }
}
