//! A dataset config that lists slides, end to end: tiled TIFF pyramids and a `labels.csv`
//! train both methods through `dbps train` (patches read from disk, tissue only), the trained
//! model predicts a slide and an ordinary RGB image, and bad slide lists fail naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::{dbps, metrics, stderr, train, write_slide, write_slide_set};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-slidecli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data/slides")).unwrap();
    dir
}

/// Eight slides, half tumor: four train, two val, two test.
fn slides(root: &Path) {
    write_slide_set(root, "s");
}

fn config(root: &Path) -> Value {
    json!({
        "name": "slides",
        "dataset": { "slides": { "root": root, "downsample": 1 } },
        "patch": { "size": 16 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 3, "width": 4 } },
        "aggregator": { "heads": 1, "d_k": 4, "d_v": 4, "d_inner": 8, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [
            { "name": "IPS", "m": 4, "l": 16, "aggregator": "ips" },
            { "name": "DBPS", "m": 4, "s": 8, "l": 16, "drop": 0.3 }
        ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
    })
}

#[test]
fn a_slide_dataset_trains_and_its_model_predicts() {
    let dir = scratch("ok");
    let root = dir.join("data");
    slides(&root);
    let out = train(&dir, &config(&root));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let metrics = metrics(&dir);
    for method in metrics["methods"].as_array().unwrap() {
        assert_eq!(method["selection"]["n"], 0, "slides have no one N");
        assert_eq!(method["test_best_valid"]["images"], 2, "{metrics}");
        let loss = method["history"][0]["train_loss"].as_f64();
        assert!(loss.is_some_and(f64::is_finite), "{metrics}");
    }

    // The trained model reads a slide (tissue only) and an ordinary RGB image of any size.
    let run = dir.join("run");
    let slide = root.join("slides/s7.tif");
    let out = dbps(&[
        "predict",
        slide.to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--tissue-mask",
        "--json",
    ]);
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for p in report["predictions"].as_array().unwrap() {
        let probs: f64 = p["tasks"][0]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((probs - 1.0).abs() < 1e-4, "{p}");
        let label = p["tasks"][0]["labels"][0].as_str();
        assert!(
            matches!(label, Some("normal" | "tumor")),
            "classes are named by labels.csv: {p}"
        );
        // The band's 128 rows hold 8 of the 16 patch rows; the mask skips the other half.
        assert_eq!(p["slide"]["patches_skipped"], 128, "{p}");
        for index in p["salient"].as_array().unwrap() {
            let row = index.as_u64().unwrap() / 16;
            assert!((4..12).contains(&row), "patch {index} lies off the tissue");
        }
    }
    let png = dir.join("photo.png");
    image::RgbImage::from_fn(80, 112, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 2) as u8, 90])
    })
    .save(&png)
    .unwrap();
    let out = dbps(&[
        "predict",
        png.to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["predictions"][0]["patches"], 5 * 7, "{report}");
}

#[test]
fn bad_slide_lists_are_named() {
    let dir = scratch("bad");
    let root = dir.join("data");
    slides(&root);
    let labels = root.join("labels.csv");
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&labels, text.replace("slides/s3.tif", "slides/gone.tif")).unwrap();
    let out = train(&dir, &config(&root));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("gone.tif") && e.contains("does not exist"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");

    std::fs::write(&labels, &text).unwrap();
    std::fs::write(root.join("slides/s3.tif"), b"not a tiff at all").unwrap();
    let out = train(&dir, &config(&root));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("s3.tif"), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    write_slide(&root.join("slides/s3.tif"), true, 3);
    let mut gray = config(&root);
    gray["encoder"]["resnet18"]["in_channels"] = json!(1);
    let out = train(&dir, &gray);
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("the data has 3 channel(s) but the encoder reads 1"),
        "{e}"
    );

    let mut positional = config(&root);
    positional["aggregator"]["positional"] = json!(true);
    let out = train(&dir, &positional);
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("aggregator.positional"),
        "{e}"
    );
}
