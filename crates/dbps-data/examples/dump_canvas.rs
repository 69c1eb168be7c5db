//! Writes canvas 0..k of the synthetic digits (default config or a JSON given as the first
//! argument) as binary PGM files, for looking at what the model sees.
use dbps_data::{ImageSource, Pixels, Split, SyntheticDigits, SyntheticDigitsConfig};

fn main() {
    let config: SyntheticDigitsConfig = match std::env::args().nth(1) {
        Some(json) => serde_json::from_str(&json).expect("a SyntheticDigitsConfig as JSON"),
        None => SyntheticDigitsConfig::default(),
    };
    let data = SyntheticDigits::new(&config, Split::Train).expect("valid config");
    for i in 0..4 {
        let s = data.sample(i).expect("index in range");
        let mut out = format!("P5\n{} {}\n255\n", s.width, s.height).into_bytes();
        let Pixels::F32(values) = &s.image else {
            unreachable!("generated canvases are f32")
        };
        out.extend(values.iter().map(|v| (v * 255.0) as u8));
        std::fs::write(format!("canvas-{i}.pgm"), out).expect("writable cwd");
        eprintln!("canvas-{i}.pgm: digit {:?}", s.targets[0]);
    }
}
