//! Writes a slide dataset for `dataset.slides` (`configs/slides.json`): COUNT gray tiled
//! BigTIFF pyramids of SIDE × SIDE px (512 px deflate tiles, levels down to 512 px), each black
//! but for one embedded-default canvas (256 × 256, the split's own canvases, seed 4242) at a
//! seeded place on the 16 px grid, and `labels.csv` naming each slide's class — which digit is
//! in the majority on its canvas, alternating from slide to slide so that every split is
//! balanced — and split (70 % train, 15 % val, 15 % test).
//!
//! Usage: `slide_dataset OUT_DIR [COUNT = 40] [SIDE = 8192]`.
use std::path::PathBuf;

use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig, Target};
use dbps_slide::{PyramidSpec, TileCompression, write_tiled_tiff};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: slide_dataset OUT_DIR [COUNT = 40] [SIDE = 8192]")?,
    );
    let count: usize = args.next().map_or(Ok(40), |a| a.parse())?;
    let side: usize = args.next().map_or(Ok(8192), |a| a.parse())?;
    if count < 3 || side < 512 || !side.is_multiple_of(512) {
        return Err(
            "COUNT must be at least 3 (one slide per split) and SIDE a multiple of 512".into(),
        );
    }
    std::fs::create_dir_all(out.join("slides"))?;
    // Enough canvases in every split to alternate the classes (each canvas's class is drawn).
    let canvases = 2 * count + 64;
    let config = SyntheticMajorityConfig {
        seed: 4242,
        sizes: [canvases; 3],
        ..SyntheticMajorityConfig::default()
    };
    let splits =
        [Split::Train, Split::Valid, Split::Test].map(|s| SyntheticMajority::new(&config, s));
    let [train, valid, test] = splits;
    let (train, valid, test) = (train?, valid?, test?);
    let val_from = (count * 70).div_ceil(100).min(count - 2);
    let test_from = (count * 85).div_ceil(100).clamp(val_from + 1, count - 1);
    let mut levels = vec![[side, side]];
    while levels.last().is_some_and(|l| l[0] / 4 >= 512) {
        let [h, w] = levels[levels.len() - 1];
        levels.push([h / 4, w / 4]);
    }
    let mut labels = String::from("slide,label,split\n");
    // The next canvas of each split not yet used.
    let mut next = [0usize; 3];
    for i in 0..count {
        let (source, split, s) = if i < val_from {
            (&train, "train", 0)
        } else if i < test_from {
            (&valid, "val", 1)
        } else {
            (&test, "test", 2)
        };
        let want = i % 2;
        let (sample, class) = loop {
            let sample = source.sample(next[s])?;
            next[s] += 1;
            match sample.targets.first() {
                Some(&Target::Class(class)) if class == want => break (sample, class),
                Some(Target::Class(_)) => continue,
                _ => return Err("the embedded default has one softmax task".into()),
            }
        };
        let Pixels::F32(values) = &sample.image else {
            return Err("generated canvases are f32".into());
        };
        let canvas: Vec<u8> = values.iter().map(|v| (v * 255.0).round() as u8).collect();
        let (h, w) = (sample.height, sample.width);
        // A place on the 16 px grid, drawn from the slide's index.
        let cells = (side - w.max(h)) / 16;
        let mix = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let spot = [
            (mix >> 7) as usize % cells * 16,
            (mix >> 29) as usize % cells * 16,
        ];
        let spec = PyramidSpec {
            levels: levels.clone(),
            tile: 512,
            channels: 1,
            compression: TileCompression::Deflate,
            big: true,
            description: None,
            mpp: None,
        };
        let path = out.join(format!("slides/slide_{i:03}.tif"));
        write_tiled_tiff(&path, &spec, |level, [y0, x0], tile_side| {
            let d = side / levels[level][1];
            let mut tile = vec![0u8; tile_side * tile_side];
            let [py, px] = spot;
            let overlaps = y0 * d < py + h
                && (y0 + tile_side) * d > py
                && x0 * d < px + w
                && (x0 + tile_side) * d > px;
            if overlaps {
                for y in 0..tile_side {
                    for x in 0..tile_side {
                        let (fy, fx) = ((y0 + y) * d, (x0 + x) * d);
                        if (py..py + h).contains(&fy) && (px..px + w).contains(&fx) {
                            tile[y * tile_side + x] = canvas[(fy - py) * w + (fx - px)];
                        }
                    }
                }
            }
            tile
        })?;
        labels += &format!("slides/slide_{i:03}.tif,majority-{class},{split}\n");
    }
    std::fs::write(out.join("labels.csv"), labels)?;
    eprintln!(
        "{}: {count} slides of {side} × {side} px, labels.csv",
        out.display()
    );
    Ok(())
}
