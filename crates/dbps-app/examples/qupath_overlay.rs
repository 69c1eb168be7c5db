//! Draws a GeoJSON file over a slide's thumbnail as QuPath would show it after "Import
//! objects": every polygon outlined in its classification's colour. It reads only the file's
//! level-0 coordinates (not dbps's grid), so it shows whether the export lands where the model
//! looked. Usage: `qupath_overlay SLIDE FILE.geojson OUT.png [SIDE = 768]`.
use std::path::PathBuf;

use dbps_app::figure::Framebuffer;
use dbps_slide::{Slide, SlideReader};
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [slide, geojson, out, rest @ ..] = args.as_slice() else {
        return Err("usage: qupath_overlay SLIDE FILE.geojson OUT.png [SIDE = 768]".into());
    };
    let side: usize = rest.first().map_or(Ok(768), |s| s.parse())?;
    let slide = Slide::open_with(&PathBuf::from(slide), SlideReader::Auto, 64 << 20)?;
    let (pixels, [h, w]) = slide.thumbnail_color(side)?;
    let c = slide.channels();
    let mut fb = Framebuffer::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let px = &pixels[(y * w + x) * c..][..c];
            fb.put(
                x as i64,
                y as i64,
                if c >= 3 {
                    [px[0], px[1], px[2]]
                } else {
                    [px[0]; 3]
                },
            );
        }
    }
    let [h0, w0] = slide.levels()[0].size;
    let (sx, sy) = (w as f64 / w0 as f64, h as f64 / h0 as f64);
    let collection: Value = serde_json::from_str(&std::fs::read_to_string(geojson)?)?;
    let features = collection["features"]
        .as_array()
        .ok_or("not a FeatureCollection")?;
    // Tissue first, then scored patches, then the picks on top.
    let rank = |f: &Value| match f["properties"]["role"].as_str() {
        Some("salient") => 3,
        Some("sub-salient") => 2,
        Some(_) => 1,
        None => 0,
    };
    let mut ordered: Vec<&Value> = features.iter().collect();
    ordered.sort_by_key(|f| rank(f));
    for feature in ordered {
        let color = feature["properties"]["classification"]["color"]
            .as_array()
            .map(|rgb| [0, 1, 2].map(|i| rgb[i].as_u64().unwrap_or(0) as u8))
            .unwrap_or([255, 255, 0]);
        let geometry = &feature["geometry"];
        let polygons: Vec<&Value> = match geometry["type"].as_str() {
            Some("Polygon") => vec![&geometry["coordinates"]],
            Some("MultiPolygon") => geometry["coordinates"]
                .as_array()
                .into_iter()
                .flatten()
                .collect(),
            _ => continue,
        };
        for ring in polygons
            .iter()
            .flat_map(|p| p.as_array().into_iter().flatten())
        {
            let corners: Vec<[f64; 2]> = ring
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Some([c[0].as_f64()? * sx, c[1].as_f64()? * sy]))
                .collect();
            // Patches two pixels wide, to be seen on the thumbnail; the tissue outline one.
            let width = if rank(feature) > 0 { 2 } else { 1 };
            for pair in corners.windows(2) {
                line(&mut fb, pair[0], pair[1], color, width);
            }
        }
    }
    fb.save(&PathBuf::from(out))?;
    Ok(())
}

/// A line from `a` to `b`, `width` pixels wide (down and right of the path), one dot per pixel
/// step of the longer axis.
fn line(fb: &mut Framebuffer, a: [f64; 2], b: [f64; 2], color: [u8; 3], width: i64) {
    let steps = (b[0] - a[0]).abs().max((b[1] - a[1]).abs()).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]));
        // A point on the right or bottom edge belongs to the last pixel inside.
        let (px, py) = (
            x.min(fb.width() as f64 - 0.5) as i64,
            y.min(fb.height() as f64 - 0.5) as i64,
        );
        for d in 0..width {
            fb.put(px + d, py, color);
            fb.put(px, py + d, color);
        }
    }
}
