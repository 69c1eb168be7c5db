//! Writes canvases 0..4 of the embedded default (two-digit majority; default config or a JSON
//! given as the first argument) as binary PGM files, for looking at what the model sees.
use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};

fn main() {
    let config: SyntheticMajorityConfig = match std::env::args().nth(1) {
        Some(json) => serde_json::from_str(&json).expect("a SyntheticMajorityConfig as JSON"),
        None => SyntheticMajorityConfig::default(),
    };
    let data = SyntheticMajority::new(&config, Split::Train).expect("valid config");
    for i in 0..4 {
        let s = data.sample(i).expect("index in range");
        let mut out = format!("P5\n{} {}\n255\n", s.width, s.height).into_bytes();
        let Pixels::F32(values) = &s.image else {
            unreachable!("generated canvases are f32")
        };
        out.extend(values.iter().map(|v| (v * 255.0) as u8));
        std::fs::write(format!("canvas-{i}.pgm"), out).expect("writable cwd");
        let (_, class, cells) = data.draw(i);
        eprintln!(
            "canvas-{i}.pgm: class {class} ({} × digit {}, {} × digit {})",
            cells[0].len(),
            config.digits[0],
            cells[1].len(),
            config.digits[1]
        );
    }
}
