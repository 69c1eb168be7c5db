//! CAMELYON16-style feature bags end to end: `labels.csv` and one feature file per slide
//! (`.npy` and `.safetensors`, lengths differing) train through the real loader and config and
//! report AUC; bad feature files fail naming the file and the problem.

mod common;

use std::path::{Path, PathBuf};

use common::{metrics, stderr, train};
use dbps_data::{write_npy, write_safetensors};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-bagcli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data/features")).unwrap();
    dir
}

/// Eight slides, four per class, 4 to 11 features of width 5 each; half `.npy`, half
/// `.safetensors`; six for training, two for testing (one per class).
fn fake_slides(root: &Path) {
    let mut labels = String::from("slide,label,split\n");
    for i in 0..8usize {
        let tumor = i % 2 == 1;
        let rows = 4 + i;
        let values: Vec<f32> = (0..rows * 5)
            .map(|k| {
                if tumor && k % 5 == 0 {
                    3.0
                } else {
                    (k % 7) as f32 / 7.0
                }
            })
            .collect();
        let path = root.join(format!("features/slide_{i}"));
        if i % 2 == 0 {
            write_npy(&path.with_extension("npy"), rows, 5, &values).unwrap();
        } else {
            write_safetensors(&path.with_extension("safetensors"), rows, 5, &values).unwrap();
        }
        let split = if i >= 6 { "test" } else { "train" };
        let label = if tumor { "tumor" } else { "normal" };
        labels += &format!("slide_{i},{label},{split}\n");
    }
    std::fs::write(root.join("labels.csv"), labels).unwrap();
}

fn config(root: &Path) -> Value {
    json!({
        "name": "bags",
        "dataset": { "feature_bags": { "root": root, "feature_dim": 5, "val_fraction": 0.34 } },
        "patch": { "size": 1 },
        "encoder": { "identity": { "feature_dim": 5, "projector": 4 } },
        "aggregator": { "heads": 1, "d_k": 4, "d_v": 4, "d_inner": 8, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [
            { "name": "IPS", "m": 3, "l": 2, "aggregator": "ips" },
            { "name": "DBPS", "m": 3, "s": 5, "l": 2, "drop": 0.3 }
        ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 3 }
    })
}

#[test]
fn feature_bags_train_and_report_auc() {
    let dir = scratch("ok");
    let root = dir.join("data");
    fake_slides(&root);
    let out = train(&dir, &config(&root));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let metrics = metrics(&dir);
    for method in metrics["methods"].as_array().unwrap() {
        assert_eq!(method["selection"]["n"], 0, "bags have no one N");
        let test = &method["test_best_valid"];
        assert_eq!(test["images"], 2, "{metrics}");
        let auc = test["tasks"][0]["auc"].as_f64();
        assert!(
            auc.is_some_and(|a| (0.0..=1.0).contains(&a)),
            "a two-class test split with both classes reports AUC: {metrics}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("test AUC"));
}

fn failure(name: &str, break_it: impl FnOnce(&Path)) -> String {
    let dir = scratch(name);
    let root = dir.join("data");
    fake_slides(&root);
    break_it(&root);
    let out = train(&dir, &config(&root));
    assert!(!out.status.success(), "{name}: training should fail");
    stderr(&out)
}

#[test]
fn bad_feature_files_fail_naming_the_file_and_the_problem() {
    let err = failure("width", |root| {
        write_npy(&root.join("features/slide_2.npy"), 3, 4, &[0.5; 12]).unwrap()
    });
    assert!(
        err.contains("slide_2.npy") && err.contains("width 4") && err.contains("feature_dim"),
        "{err}"
    );
    let err = failure("nan", |root| {
        let mut values = vec![0.5; 20];
        values[7] = f32::NAN;
        write_npy(&root.join("features/slide_0.npy"), 4, 5, &values).unwrap()
    });
    assert!(
        err.contains("slide_0.npy") && err.contains("row 1 column 2") && err.contains("NaN"),
        "{err}"
    );
    let err = failure("truncated", |root| {
        let path = root.join("features/slide_1.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap()
    });
    assert!(
        err.contains("slide_1.safetensors") && err.contains("truncated"),
        "{err}"
    );
    let err = failure("label", |root| {
        let labels = root.join("labels.csv");
        let text = std::fs::read_to_string(&labels).unwrap();
        std::fs::write(&labels, text.replace("slide_3,tumor", "slide_3,metastasis")).unwrap()
    });
    assert!(
        err.contains("labels.csv") && err.contains("line 5") && err.contains("metastasis"),
        "{err}"
    );
    let err = failure("missing", |root| {
        std::fs::remove_file(root.join("features/slide_4.npy")).unwrap()
    });
    assert!(
        err.contains("slide_4") && err.contains("no feature file"),
        "{err}"
    );
}
