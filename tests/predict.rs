//! `dbps predict` and `dbps explain`: the embedded default trained briefly, then class
//! probabilities of fresh images written as PNG files (a table, JSON), the figure of where each
//! method looked (outlines checked pixel by pixel against the picks), and bad input named.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{dbps, stderr};
use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};
use dbps_slide::{PyramidSpec, TileCompression, write_tiled_tiff};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-predict-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Canvases of the embedded default's kind that no split of it holds (another seed), as PNGs.
fn fresh_images(folder: &Path, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).unwrap();
    let config = SyntheticMajorityConfig {
        seed: 12_345,
        ..SyntheticMajorityConfig::default()
    };
    let data = SyntheticMajority::new(&config, Split::Test).unwrap();
    (0..count)
        .map(|i| {
            let sample = data.sample(i).unwrap();
            let Pixels::F32(values) = &sample.image else {
                panic!("generated canvases are f32")
            };
            let bytes = values.iter().map(|v| (v * 255.0).round() as u8).collect();
            let path = folder.join(format!("fresh-{i}.png"));
            image::GrayImage::from_raw(sample.width as u32, sample.height as u32, bytes)
                .unwrap()
                .save(&path)
                .unwrap();
            path
        })
        .collect()
}

/// The outline colours the figure promises, read from its sidecar.
fn color(geometry: &Value, key: &str) -> [u8; 3] {
    let c: Vec<u8> = geometry[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    [c[0], c[1], c[2]]
}

/// Every patch `predict` picked has its outline on the figure's image panel — the rectangle
/// from its grid index, the grid's stride and the panel's scale — and no outline pixel lies
/// anywhere else on that panel.
fn check_outlines(png: &image::RgbImage, geometry: &Value, predictions: &[Value], image: &Path) {
    let scale = geometry["scale"].as_f64().unwrap();
    let cols = geometry["grid"]["cols"].as_u64().unwrap() as usize;
    let stride = geometry["grid"]["stride"].as_u64().unwrap() as usize;
    let patch = geometry["grid"]["patch"].as_u64().unwrap() as usize;
    let [pw, ph] = [0, 1].map(|i| geometry["panel"][i].as_u64().unwrap() as u32);
    let (salient_color, sub_color) = (
        color(geometry, "salient_color"),
        color(geometry, "sub_salient_color"),
    );
    let methods = geometry["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2);
    for m in methods {
        let predicted = predictions
            .iter()
            .find(|p| p["method"] == m["method"] && p["image"] == image.to_str().unwrap())
            .unwrap();
        assert_eq!(
            m["salient"], predicted["salient"],
            "explain selects what predict selected"
        );
        assert_eq!(m["sub_salient"], predicted["sub_salient"]);
        let [left, top] = [0, 1].map(|i| m["image_panel"][i].as_u64().unwrap() as u32);
        let rect = |index: u64| {
            let (row, col) = (index as usize / cols, index as usize % cols);
            let at = |v: usize| (v as f64 * scale).floor() as u32;
            let (x0, y0) = (at(col * stride), at(row * stride));
            (
                left + x0,
                top + y0,
                left + at(col * stride + patch),
                top + at(row * stride + patch),
            )
        };
        let mut expected = std::collections::HashMap::new();
        for (key, c) in [("sub_salient", sub_color), ("salient", salient_color)] {
            for index in m[key].as_array().unwrap() {
                let (x0, y0, x1, y1) = rect(index.as_u64().unwrap());
                // The outline's outermost ring: every pixel of it has the colour.
                for x in x0..x1 {
                    for y in [y0, y1 - 1] {
                        assert_eq!(png.get_pixel(x, y).0, c, "{key} {index} at ({x}, {y})");
                        expected.insert((x, y), c);
                    }
                }
                for y in y0..y1 {
                    for x in [x0, x1 - 1] {
                        assert_eq!(png.get_pixel(x, y).0, c, "{key} {index} at ({x}, {y})");
                        expected.insert((x, y), c);
                    }
                }
                // The centre of the patch is image, not outline.
                let centre = png.get_pixel((x0 + x1) / 2, (y0 + y1) / 2).0;
                assert!(
                    centre != salient_color && centre != sub_color,
                    "{key} {index} is filled"
                );
            }
        }
        // Outline pixels off every picked patch's ring would be outlines in the wrong place:
        // allow the second, inner ring of each rectangle only.
        for y in top..top + ph {
            for x in left..left + pw {
                let px = png.get_pixel(x, y).0;
                if px != salient_color && px != sub_color || expected.contains_key(&(x, y)) {
                    continue;
                }
                let inner = [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .any(|(dx, dy)| {
                        expected.get(&((x as i64 + dx) as u32, (y as i64 + dy) as u32)) == Some(&px)
                    });
                assert!(
                    inner,
                    "an outline pixel at ({x}, {y}) belongs to no picked patch"
                );
            }
        }
    }
}

/// A gray pyramid whose level 0 is `size`, black but for `placed` images at their top-left
/// level-0 pixels; reduced levels sample level 0 at their downsample.
fn write_slide(
    path: &Path,
    levels: &[[usize; 2]],
    tile: usize,
    compression: TileCompression,
    placed: &[(&image::GrayImage, [usize; 2])],
) {
    let spec = PyramidSpec {
        levels: levels.to_vec(),
        tile,
        channels: 1,
        compression,
        big: levels[0][0] * levels[0][1] > 1 << 30,
        description: None,
        mpp: None,
    };
    let full = levels[0];
    write_tiled_tiff(path, &spec, |level, [y0, x0], side| {
        let d = full[1] / levels[level][1];
        let mut out = vec![0u8; side * side];
        for (image, [py, px]) in placed {
            let (h, w) = (image.height() as usize, image.width() as usize);
            // Level-0 extent of the tile against the placed image's.
            if y0 * d >= py + h
                || (y0 + side) * d <= *py
                || x0 * d >= px + w
                || (x0 + side) * d <= *px
            {
                continue;
            }
            for y in 0..side {
                for x in 0..side {
                    let (fy, fx) = ((y0 + y) * d, (x0 + x) * d);
                    if (*py..py + h).contains(&fy) && (*px..px + w).contains(&fx) {
                        out[y * side + x] =
                            image.get_pixel((fx - px) as u32, (fy - py) as u32).0[0];
                    }
                }
            }
        }
        out
    })
    .unwrap();
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "dbps failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Slides: the same pixels as a tiled TIFF and as a PNG predict alike; a 1.07-gigapixel
/// BigTIFF predicts in under 1 GiB with only its tissue read; bad slides are named.
fn check_slides(dir: &Path, run: &Path, images: &[PathBuf]) {
    let canvas = image::open(&images[0]).unwrap().to_luma8();
    let run = run.to_str().unwrap();

    // One 256 × 256 canvas as a single-level LZW slide with 64 px tiles.
    let small = dir.join("canvas.tif");
    write_slide(
        &small,
        &[[256, 256]],
        64,
        TileCompression::Lzw,
        &[(&canvas, [0, 0])],
    );
    let as_png = json(&dbps(&[
        "predict",
        images[0].to_str().unwrap(),
        "--checkpoint",
        run,
        "--json",
    ]));
    let as_slide = json(&dbps(&[
        "predict",
        small.to_str().unwrap(),
        "--checkpoint",
        run,
        "--json",
    ]));
    for (a, b) in as_png["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(as_slide["predictions"].as_array().unwrap())
    {
        assert_eq!(a["salient"], b["salient"]);
        assert_eq!(a["sub_salient"], b["sub_salient"]);
        let p = |v: &Value| -> Vec<f64> {
            v["tasks"][0]["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        assert!(
            p(a).iter().zip(p(b)).all(|(x, y)| (x - y).abs() < 1e-5),
            "{a} vs {b}"
        );
        assert_eq!(b["slide"]["level"], 0);
    }

    // 32768 × 32768 px, four levels, three canvases on black.
    let huge = dir.join("gigapixel.tif");
    let others: Vec<image::GrayImage> = images[1..3]
        .iter()
        .map(|p| image::open(p).unwrap().to_luma8())
        .collect();
    let spots = [[4096, 4096], [20_000, 12_000], [30_000, 30_500]];
    let placed = [
        (&canvas, spots[0]),
        (&others[0], spots[1]),
        (&others[1], spots[2]),
    ];
    write_slide(
        &huge,
        &[[32_768, 32_768], [8192, 8192], [2048, 2048], [512, 512]],
        512,
        TileCompression::Deflate,
        &placed,
    );
    let report = json(&dbps(&[
        "predict",
        huge.to_str().unwrap(),
        "--checkpoint",
        run,
        "--tissue-mask",
        "--json",
    ]));
    let peak = report["peak_resident_mib"]
        .as_f64()
        .expect("Linux reports VmHWM");
    assert!(peak < 1024.0, "peak resident memory {peak} MiB");
    eprintln!("gigapixel predict: peak resident {peak:.0} MiB");
    for p in report["predictions"].as_array().unwrap() {
        assert_eq!(p["patches"], 2048 * 2048);
        let reading = &p["slide"];
        assert!(
            reading["patches_skipped"].as_u64().unwrap() > 4_000_000,
            "{reading}"
        );
        // Each canvas overlaps at most 4 of the 4096 level-0 tiles.
        assert!(reading["tiles_read"].as_u64().unwrap() <= 12, "{reading}");
        for key in ["salient", "sub_salient"] {
            for index in p[key].as_array().unwrap() {
                let i = index.as_u64().unwrap() as usize;
                let (y, x) = ((i / 2048) * 16, (i % 2048) * 16);
                // On a canvas, give or take the mask's 32 px thumbnail pixels.
                let near = spots.iter().any(|[sy, sx]| {
                    (sy - 32..sy + 256 + 32).contains(&y) && (sx - 32..sx + 256 + 32).contains(&x)
                });
                assert!(near, "{key} patch {i} at ({y}, {x}) is background");
            }
        }
    }
    // explain draws the slide on a thumbnail, with the picks predict made.
    let figure = dir.join("gigapixel.png");
    let out = dbps(&[
        "explain",
        huge.to_str().unwrap(),
        "--checkpoint",
        run,
        "--tissue-mask",
        "--out",
        figure.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "explain failed: {}", stderr(&out));
    let geometry: Value =
        serde_json::from_str(&std::fs::read_to_string(figure.with_extension("json")).unwrap())
            .unwrap();
    assert!(
        geometry["scale"].as_f64().unwrap() < 0.02,
        "{}",
        geometry["scale"]
    );
    assert!(image::open(&figure).unwrap().width() >= 2 * 512);
    for m in geometry["methods"].as_array().unwrap() {
        let predicted = report["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["method"] == m["method"])
            .unwrap();
        assert_eq!(m["salient"], predicted["salient"]);
        assert_eq!(m["sub_salient"], predicted["sub_salient"]);
        let kept = 2048 * 2048 - predicted["slide"]["patches_skipped"].as_u64().unwrap();
        assert_eq!(m["candidates"].as_array().unwrap().len() as u64, kept);
        assert_eq!(m["attention"].as_array().unwrap().len() as u64, kept);
    }
    let quarter = json(&dbps(&[
        "predict",
        huge.to_str().unwrap(),
        "--checkpoint",
        run,
        "--tissue-mask",
        "--downsample",
        "4",
        "--json",
    ]));
    assert_eq!(quarter["predictions"][0]["slide"]["level"], 1);
    assert_eq!(quarter["predictions"][0]["patches"], 512 * 512);

    // Bad slides: the file and the fix are named.
    let canvas_slide = |name: &str, compression| {
        let path = dir.join(name);
        write_slide(&path, &[[256, 256]], 64, compression, &[(&canvas, [0, 0])]);
        (path.clone(), std::fs::read(&path).unwrap())
    };
    let (damaged, mut bytes) = canvas_slide("damaged.tif", TileCompression::Deflate);
    bytes[8..10].fill(0xff); // the first tile's zlib header
    std::fs::write(&damaged, &bytes).unwrap();
    let (j2k, mut bytes) = canvas_slide("j2k.tif", TileCompression::None);
    // The compression entry: tag 259, type SHORT, one value; its value becomes 34712 (JPEG 2000).
    let at = bytes
        .windows(8)
        .position(|w| w == [3, 1, 3, 0, 1, 0, 0, 0])
        .unwrap();
    bytes[at + 8..at + 10].copy_from_slice(&34712u16.to_le_bytes());
    std::fs::write(&j2k, &bytes).unwrap();
    let tiny = dir.join("tiny.tif");
    write_slide(&tiny, &[[8, 8]], 16, TileCompression::None, &[]);
    let junk = dir.join("junk.tif");
    std::fs::write(&junk, b"II*\0 but nothing after the magic").unwrap();
    for (file, says) in [
        (&damaged, "tile 0 of level 0 cannot be read"),
        (&j2k, "compression 34712"),
        (&tiny, "16 px patches"),
        (&junk, "not a readable TIFF"),
    ] {
        let out = dbps(&["predict", file.to_str().unwrap(), "--checkpoint", run]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    // An ordinary image: a JPEG cut short (decoders fill the rest with grey and succeed), and
    // one larger than the pixel budget.
    let cut = dir.join("cut.jpg");
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::open(&images[0])
        .unwrap()
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let out = dbps(&["predict", cut.to_str().unwrap(), "--checkpoint", run]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );
    let image = images[0].to_str().unwrap();
    let out = dbps(&["predict", image, "--checkpoint", run, "--max-pixels", "100"]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains(image) && err.contains("--max-pixels"),
        "{err}"
    );

    // A checkpoint whose config builds a model of another shape.
    let other = dir.join("other");
    std::fs::create_dir_all(other.join("DBPS/checkpoint")).unwrap();
    for entry in std::fs::read_dir(Path::new(run).join("DBPS/checkpoint")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            other.join("DBPS/checkpoint").join(entry.file_name()),
        )
        .unwrap();
    }
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(run).join("DBPS/method.json")).unwrap(),
    )
    .unwrap();
    let inner = manifest["config"]["aggregator"]["d_inner"]
        .as_u64()
        .unwrap();
    manifest["config"]["aggregator"]["d_inner"] = Value::from(inner * 2);
    std::fs::write(other.join("DBPS/method.json"), manifest.to_string()).unwrap();
    let out = dbps(&[
        "predict",
        images[0].to_str().unwrap(),
        "--checkpoint",
        other.join("DBPS").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("does not fit this model") && err.contains("parameter"),
        "{err}"
    );
}

#[test]
fn predict_and_explain_after_a_brief_training_of_the_embedded_default() {
    let dir = scratch("e2e");
    let run = dir.join("run");
    let out = dbps(&["train", "--epochs", "2", "--output", run.to_str().unwrap()]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let images = fresh_images(&dir.join("fresh"), 3);

    let mut args = vec!["predict"];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--checkpoint", run.to_str().unwrap()]);
    let out = dbps(&args);
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for name in ["fresh-0.png", "fresh-2.png", "IPS", "DBPS", "majority"] {
        assert!(table.contains(name), "{table}");
    }

    // A folder is its images; JSON has one entry per image and method.
    let out = dbps(&[
        "predict",
        dir.join("fresh").to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let predictions = report["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3 * 2);
    for p in predictions {
        assert_eq!(p["patches"], 256);
        let task = &p["tasks"][0];
        let probabilities: Vec<f64> = task["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(probabilities.len(), 2);
        assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        let argmax = usize::from(probabilities[1] > probabilities[0]);
        assert_eq!(task["classes"], serde_json::json!([argmax]));
        let picks = |key: &str| -> Vec<u64> {
            p[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        };
        let (salient, sub) = (picks("salient"), picks("sub_salient"));
        assert_eq!(salient.len(), 10);
        let expected_sub = if p["method"] == "DBPS" { 20 } else { 0 };
        assert_eq!(sub.len(), expected_sub);
        let mut all: Vec<u64> = salient.iter().chain(&sub).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), salient.len() + sub.len(), "picks are distinct");
        assert!(all.iter().all(|&i| i < 256));
    }

    // The same image twice gives the same answer.
    let first = predictions
        .iter()
        .find(|p| p["method"] == "IPS" && p["image"] == images[0].to_str().unwrap())
        .expect("IPS predicted fresh-0.png");
    let out = dbps(&[
        "predict",
        images[0].to_str().unwrap(),
        "--checkpoint",
        run.join("IPS").to_str().unwrap(),
        "--json",
    ]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["predictions"][0], *first);

    // explain draws the same picks predict reported, outlined exactly on their patches.
    let figure = dir.join("explain").join("fresh-0.png");
    std::fs::create_dir_all(figure.parent().unwrap()).unwrap();
    let out = dbps(&[
        "explain",
        images[0].to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        figure.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "explain failed: {}", stderr(&out));
    let geometry: Value =
        serde_json::from_str(&std::fs::read_to_string(figure.with_extension("json")).unwrap())
            .unwrap();
    let png = image::open(&figure).unwrap().to_rgb8();
    check_outlines(&png, &geometry, predictions, &images[0]);

    // One head, percentile scale; a head the model lacks is named with the range.
    let out = dbps(&[
        "explain",
        images[1].to_str().unwrap(),
        "--checkpoint",
        run.join("DBPS").to_str().unwrap(),
        "--out",
        dir.join("explain").join("head.png").to_str().unwrap(),
        "--head",
        "1",
        "--norm",
        "percentile:5,95",
    ]);
    assert!(out.status.success(), "explain failed: {}", stderr(&out));
    let out = dbps(&[
        "explain",
        images[1].to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        dir.join("explain").join("bad.png").to_str().unwrap(),
        "--head",
        "99",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`--head`"), "{}", stderr(&out));
    assert!(!dir.join("explain").join("bad.png").exists());

    check_slides(&dir, &run, &images);

    // Bad input is named with the fix.
    let junk = dir.join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let tiny = dir.join("tiny.png");
    image::GrayImage::new(8, 40).save(&tiny).unwrap();
    for (input, says) in [
        (&junk, "cannot decode the image"),
        (&tiny, "16 px"),
        (&dir.join("absent.png"), "not found"),
    ] {
        let out = dbps(&[
            "predict",
            input.to_str().unwrap(),
            "--checkpoint",
            run.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(input.file_name().unwrap().to_str().unwrap()) && err.contains(says),
            "{err}"
        );
    }
    let out = dbps(&[
        "predict",
        images[0].to_str().unwrap(),
        "--checkpoint",
        dir.join("fresh").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds no method.json"),
        "{}",
        stderr(&out)
    );
}
