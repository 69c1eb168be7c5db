//! Writes a 32768 × 32768 (1.07 gigapixel) gray BigTIFF pyramid — four levels, 512 px deflate
//! tiles — that is black except for three embedded-default canvases (test split, seed 12345),
//! at level-0 pixels (4096, 4096), (20000, 12000) and (30000, 30500): the input of the
//! gigapixel measurement in docs/performance.md. Usage: `gigapixel_slide OUT.tif`.
use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};
use dbps_slide::{PyramidSpec, TileCompression, write_tiled_tiff};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: gigapixel_slide OUT.tif (the file to write)")?;
    let config = SyntheticMajorityConfig {
        seed: 12_345,
        ..SyntheticMajorityConfig::default()
    };
    let data = SyntheticMajority::new(&config, Split::Test)?;
    let spots = [[4096, 4096], [20_000, 12_000], [30_000, 30_500]];
    let mut canvases: Vec<(Vec<u8>, [usize; 2], [usize; 2])> = Vec::new();
    for (i, &spot) in spots.iter().enumerate() {
        let s = data.sample(i)?;
        let Pixels::F32(values) = &s.image else {
            return Err("generated canvases are f32".into());
        };
        let bytes = values.iter().map(|v| (v * 255.0).round() as u8).collect();
        canvases.push((bytes, [s.height, s.width], spot));
    }
    let levels = vec![[32_768, 32_768], [8192, 8192], [2048, 2048], [512, 512]];
    let spec = PyramidSpec {
        levels: levels.clone(),
        tile: 512,
        channels: 1,
        compression: TileCompression::Deflate,
        big: true,
        description: None,
        mpp: None,
    };
    let written = write_tiled_tiff(
        std::path::Path::new(&out),
        &spec,
        |level, [y0, x0], side| {
            let d = levels[0][1] / levels[level][1];
            let mut tile = vec![0u8; side * side];
            for (pixels, [h, w], [py, px]) in &canvases {
                let overlaps = y0 * d < py + h
                    && (y0 + side) * d > *py
                    && x0 * d < px + w
                    && (x0 + side) * d > *px;
                if !overlaps {
                    continue;
                }
                for y in 0..side {
                    for x in 0..side {
                        let (fy, fx) = ((y0 + y) * d, (x0 + x) * d);
                        if (*py..py + h).contains(&fy) && (*px..px + w).contains(&fx) {
                            tile[y * side + x] = pixels[(fy - py) * w + (fx - px)];
                        }
                    }
                }
            }
            tile
        },
    )?;
    eprintln!(
        "{out}: {} tiles, {} stored, {} bytes",
        written.tiles, written.stored, written.bytes
    );
    Ok(())
}
