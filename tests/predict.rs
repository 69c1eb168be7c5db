//! `dbps predict`: the embedded default trained briefly, then class probabilities of fresh
//! images written as PNG files, as a table and as JSON; bad input named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};
use serde_json::Value;

fn dbps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbps"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the dbps binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

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

#[test]
fn predict_after_a_brief_training_of_the_embedded_default() {
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
