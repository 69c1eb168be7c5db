//! A run that started from torchvision weights keeps working after that file moves: its
//! checkpoints hold every weight, so `predict`, `explain` and `eval` rebuild the model without
//! reading the file (before: "cannot read weight file …" for a file the model no longer
//! needed). Reads `../shared/fixtures/torchvision/resnet18.pth` (or `$DBPS_TORCHVISION_DIR`)
//! and says SKIPPED without it.

mod common;

use std::path::{Path, PathBuf};

use common::{dbps, stderr, train};
use serde_json::{Value, json};

fn fixture() -> Option<PathBuf> {
    let dir = std::env::var_os("DBPS_TORCHVISION_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torchvision"),
        PathBuf::from,
    );
    let file = dir.join("resnet18.pth");
    file.is_file().then_some(file)
}

/// Two classes of 64 × 48 photographs, three to train on and one to test, per class.
fn photos(root: &Path) {
    for (class, name) in ["cracks", "potholes"].iter().enumerate() {
        for (split, count) in [("train", 3), ("test", 1)] {
            for i in 0..count {
                let path = root.join(format!("{split}/{name}/{i}.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                image::RgbImage::from_fn(64, 48, |x, y| {
                    let v = ((x * 7 + y * 5 + i * 31) % 200) as u8;
                    if class == 0 {
                        image::Rgb([v, 40, 200 - v])
                    } else {
                        image::Rgb([40, v, 90])
                    }
                })
                .save(&path)
                .unwrap();
            }
        }
    }
}

#[test]
fn a_run_predicts_explains_and_evaluates_after_its_starting_weights_moved() {
    let Some(fixture) = fixture() else {
        eprintln!(
            "SKIPPED: no resnet18.pth in ../shared/fixtures/torchvision; set DBPS_TORCHVISION_DIR"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("dbps-moved-weights-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    photos(&dir.join("data"));
    let weights = dir.join("resnet18.pth");
    std::fs::copy(&fixture, &weights).unwrap();
    let config = json!({
        "name": "moved",
        "dataset": { "image_folder": { "root": dir.join("data"), "height": 48, "width": 64, "val_fraction": 0.34, "max_shift": 0 } },
        "patch": { "size": 16 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 3, "weights": weights } },
        "aggregator": { "heads": 2, "d_k": 8, "d_v": 8, "d_inner": 16, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [ { "name": "IPS", "m": 2, "l": 4, "aggregator": "ips" } ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
    });
    let out = train(&dir, &config);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let run = dir.join("run");
    let image = dir.join("data/test/cracks/0.png");
    let figure = dir.join("where.png");
    let outcome = || -> (Value, Value, Vec<u8>) {
        let out = dbps(&[
            "predict",
            image.to_str().unwrap(),
            "--checkpoint",
            run.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "predict: {}", stderr(&out));
        let mut predicted: Value = serde_json::from_slice(&out.stdout).unwrap();
        predicted["peak_resident_mib"] = Value::Null;
        let out = dbps(&["eval", "--checkpoint", run.to_str().unwrap()]);
        assert!(out.status.success(), "eval: {}", stderr(&out));
        let mut evaluated: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
        evaluated["methods"][0]["test"]["seconds"] = Value::Null;
        let out = dbps(&[
            "explain",
            image.to_str().unwrap(),
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            figure.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "explain: {}", stderr(&out));
        (predicted, evaluated, std::fs::read(&figure).unwrap())
    };
    let before = outcome();
    std::fs::rename(&weights, dir.join("elsewhere.pth")).unwrap();
    assert_eq!(
        outcome(),
        before,
        "the same answers without the starting file"
    );
}
