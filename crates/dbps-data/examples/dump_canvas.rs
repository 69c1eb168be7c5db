//! Writes canvases 0..4 of the embedded default's test split (two-digit majority; default
//! config or a JSON given as the first argument) as `canvas-N.png`: to look at what the model
//! sees, and to try `dbps predict` / `dbps explain` on images it was not trained on.
use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: SyntheticMajorityConfig = match std::env::args().nth(1) {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            format!("the first argument must be a SyntheticMajorityConfig as JSON: {e}")
        })?,
        None => SyntheticMajorityConfig::default(),
    };
    let data = SyntheticMajority::new(&config, Split::Test)?;
    for i in 0..4 {
        let s = data.sample(i)?;
        let Pixels::F32(values) = &s.image else {
            return Err("generated canvases are f32".into());
        };
        let bytes = values.iter().map(|v| (v * 255.0).round() as u8).collect();
        let path = format!("canvas-{i}.png");
        image::GrayImage::from_raw(s.width as u32, s.height as u32, bytes)
            .ok_or("a canvas holds width × height values")?
            .save(&path)
            .map_err(|e| format!("cannot write {path} in the current folder: {e}"))?;
        let (_, class, cells) = data.draw(i);
        eprintln!(
            "{path}: class {class} ({} × digit {}, {} × digit {})",
            cells[0].len(),
            config.digits[0],
            cells[1].len(),
            config.digits[1]
        );
    }
    Ok(())
}
