//! Image-folder datasets end to end: a tiny fake `ROOT/{train,test}/<class>/` tree trains
//! through the real loader and config, and bad data fails naming the file and the problem.

mod common;

use std::path::{Path, PathBuf};

use common::{metrics, stderr, train};
use image::{Rgb, RgbImage};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-folder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `w`×`h` image whose colour says its class, with a bright square somewhere.
fn write_image(path: &Path, [w, h]: [u32; 2], class: usize, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let base = [(200, 40, 40), (40, 40, 200)][class];
    let image = RgbImage::from_fn(w, h, |x, y| {
        let spot = (x / 8 + seed).is_multiple_of(5) && (y / 8 + seed).is_multiple_of(3);
        if spot {
            Rgb([255, 255, 255])
        } else {
            Rgb([base.0, base.1, base.2])
        }
    });
    image.save(path).unwrap();
}

/// Two classes, three training and one test image each, of `size`; no `val/`.
fn fake_dataset(root: &Path, size: [u32; 2]) {
    for (class, name) in ["cracks", "potholes"].iter().enumerate() {
        for i in 0..3 {
            write_image(&root.join(format!("train/{name}/{i}.png")), size, class, i);
        }
        write_image(&root.join(format!("test/{name}/0.jpg")), size, class, 7);
    }
}

fn config(root: &Path) -> Value {
    json!({
        "name": "folder",
        "dataset": { "image_folder": { "root": root, "height": 48, "width": 64, "val_fraction": 0.34, "max_shift": 8 } },
        "patch": { "size": 16 },
        "encoder": { "tiny_cnn": { "in_channels": 3, "width": 4 } },
        "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [ { "name": "DBPS", "m": 2, "s": 3, "l": 4 } ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
    })
}

#[test]
fn image_folder_trains_through_the_real_loader() {
    let dir = scratch("ok");
    let root = dir.join("data");
    // Images larger than the configured size: decoded, resized to 64×48, normalised.
    fake_dataset(&root, [96, 72]);
    let out = train(&dir, &config(&root));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let metrics = metrics(&dir);
    let method = &metrics["methods"][0];
    assert_eq!(method["epochs"], 1);
    // The carved validation split (one image per class) and the test split were scored.
    let test = &method["test_last"];
    assert!(
        test["loss"].as_f64().is_some_and(f64::is_finite),
        "{metrics}"
    );
    assert_eq!(test["images"], 2, "{metrics}");
}

/// Runs `break_it` on a fresh fake dataset and returns the error the run ends with; no run
/// directory may be left behind when the data is checked before training.
fn failure(name: &str, break_it: impl FnOnce(&Path)) -> (String, bool) {
    let dir = scratch(name);
    let root = dir.join("data");
    fake_dataset(&root, [64, 48]);
    break_it(&root);
    let out = train(&dir, &config(&root));
    assert!(!out.status.success(), "{name}: training should fail");
    (stderr(&out), dir.join("run").exists())
}

#[test]
fn bad_image_folders_fail_naming_the_file_and_the_problem() {
    let (err, run) = failure("no-test", |root| {
        std::fs::remove_dir_all(root.join("test")).unwrap()
    });
    assert!(
        err.contains("test/ split is absent") && err.contains("ROOT/{train,val,test}"),
        "{err}"
    );
    assert!(!run, "checked before the run directory");

    // One class: every prediction would be right by construction.
    let (err, run) = failure("one-class", |root| {
        for split in ["train", "test"] {
            std::fs::remove_dir_all(root.join(split).join("potholes")).unwrap()
        }
    });
    assert!(
        err.contains("1 class(es) (cracks)") && err.contains("at least two classes"),
        "{err}"
    );
    assert!(!run, "checked before the run directory");

    let (err, _) = failure("empty-class", |root| {
        std::fs::create_dir_all(root.join("train/empty")).unwrap()
    });
    assert!(
        err.contains("train/empty") && err.contains("holds no image"),
        "{err}"
    );

    let (err, _) = failure("not-an-image", |root| {
        std::fs::write(root.join("train/cracks/notes.png"), "not a png").unwrap()
    });
    assert!(
        err.contains("notes.png") && err.contains("not a readable image"),
        "{err}"
    );

    let (err, _) = failure("unknown-class", |root| {
        write_image(&root.join("test/puddles/0.png"), [64, 48], 0, 1)
    });
    assert!(
        err.contains("test/puddles") && err.contains("not among the training classes"),
        "{err}"
    );

    let (err, run) = failure("too-small", |root| {
        write_image(&root.join("train/cracks/tiny.png"), [12, 48], 0, 1)
    });
    assert!(
        err.contains("tiny.png") && err.contains("smaller than one 16 px patch"),
        "{err}"
    );
    assert!(!run, "checked before the run directory");

    // A truncated file keeps its header, so only decoding finds it: training stops and the
    // run fails naming the file, leaving no directory (no epoch completed).
    let (err, run) = failure("truncated", |root| {
        for name in ["cracks", "potholes"] {
            for i in 0..3 {
                let path = root.join(format!("train/{name}/{i}.png"));
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }
        }
    });
    assert!(
        err.contains(".png") && err.contains("cannot decode the image"),
        "{err}"
    );
    assert!(
        !run,
        "a run that failed in its first epoch left its directory"
    );
}

/// Swedish traffic signs: `Set1/` and `Set2/` with `annotations.txt`, filtered to the four
/// speed-limit classes, train one step through the real loader and config.
#[test]
fn traffic_signs_train_through_the_real_loader() {
    let dir = scratch("signs");
    let root = dir.join("sts");
    let sign = |name: &str| format!("VISIBLE, 40, 30, 20, 10, SPEED_LIMIT, {name}");
    for (set, per_class) in [("Set1", 3), ("Set2", 1)] {
        let mut lines = Vec::new();
        for (class, name) in ["", "50_SIGN", "70_SIGN", "80_SIGN"].iter().enumerate() {
            for i in 0..per_class {
                let file = format!("img{class}{i}.jpg");
                write_image(&root.join(set).join(&file), [96, 72], class % 2, i);
                let signs = if name.is_empty() {
                    String::new()
                } else {
                    sign(name)
                };
                lines.push(format!("{file}:{signs}"));
            }
        }
        // Dropped by the filtering rule: a blurred limit, and a sign that is no speed limit.
        lines.push("blurred.jpg:BLURRED, 40, 30, 20, 10, SPEED_LIMIT, 50_SIGN".to_string());
        lines.push(format!("parking.jpg:{}", sign("NO_PARKING")));
        std::fs::write(root.join(set).join("annotations.txt"), lines.join("\n")).unwrap();
    }
    let mut config = config(&root);
    config["dataset"] = json!({ "traffic_signs": { "root": root, "height": 48, "width": 64, "val_fraction": 0.34, "max_shift": 8 } });
    let out = train(&dir, &config);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let metrics = metrics(&dir);
    // Set2's four kept images (the dropped ones are never opened: they do not exist).
    assert_eq!(metrics["methods"][0]["test_last"]["images"], 4, "{metrics}");
}
