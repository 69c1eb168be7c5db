//! What the CLI tests share: running `dbps`, training a config written to a scratch folder,
//! reading what a run wrote. Each test crate uses some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use dbps_slide::{PyramidSpec, TileCompression, write_tiled_tiff};
use serde_json::{Value, json};

/// Runs `dbps args…` (logs at `warn`).
pub fn dbps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbps"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the dbps binary runs")
}

/// The `metrics.json` that training `dir` (see [`train`]) wrote.
pub fn metrics(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("run/metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Writes `config` to `dir/config.json` and trains it into `dir/run`.
pub fn train(dir: &Path, config: &Value) -> Output {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_dbps"))
        .args(["train", "--config", path.to_str().unwrap(), "--output"])
        .arg(dir.join("run"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("the dbps binary runs")
}

/// What the run printed to stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 256 × 256 bright-field RGB slide (two levels, 64 px JPEG-free deflate tiles): white, with
/// a textured tissue band over rows [64, 192); tumor slides carry a dark red square in it.
pub fn write_slide(path: &Path, tumor: bool, seed: usize) {
    write_slide_of(path, 256, tumor, seed);
}

/// [`write_slide`] at `side` × `side` pixels, the tissue band over the middle half.
pub fn write_slide_of(path: &Path, side: usize, tumor: bool, seed: usize) {
    write_slide_at(path, side, tumor, seed, None);
}

/// [`write_slide_of`] stating `mpp` µm per level-0 pixel in its resolution tags.
pub fn write_slide_at(path: &Path, side: usize, tumor: bool, seed: usize, mpp: Option<f64>) {
    write_slide_with(path, side, tumor, seed, TileCompression::Deflate, None, mpp);
}

/// [`write_slide_at`] with tiles compressed as `compression` and level 0's ImageDescription
/// set to `description` (an Aperio SVS starts it with "Aperio Image Library").
pub fn write_slide_with(
    path: &Path,
    side: usize,
    tumor: bool,
    seed: usize,
    compression: TileCompression,
    description: Option<String>,
    mpp: Option<f64>,
) {
    let spec = PyramidSpec {
        levels: vec![[side, side], [side / 2, side / 2]],
        tile: 64,
        channels: 3,
        compression,
        big: seed.is_multiple_of(2),
        description,
        mpp,
    };
    let band = side / 4..side * 3 / 4;
    write_tiled_tiff(path, &spec, |level, [y0, x0], tile_side| {
        let d = 1 << level;
        let mut tile = vec![240u8; tile_side * tile_side * 3];
        for y in 0..tile_side {
            for x in 0..tile_side {
                let (fy, fx) = ((y0 + y) * d, (x0 + x) * d);
                if !band.contains(&fy) {
                    continue;
                }
                let v = 120 + ((fx * 7 + fy * 13 + seed * 31) % 50) as u8;
                let spot =
                    (96 + seed * 8..128 + seed * 8).contains(&fx) && (112..144).contains(&fy);
                let px = if tumor && spot {
                    [90, 10, 20]
                } else {
                    [v, v / 2, v]
                };
                tile[(y * tile_side + x) * 3..][..3].copy_from_slice(&px);
            }
        }
        tile
    })
    .unwrap();
}

/// What must agree between two runs: everything but clocks and memory.
pub fn outcome(metrics: &Value) -> Vec<Value> {
    metrics["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let history: Vec<Value> = m["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    json!([
                        e["epoch"],
                        e["train_loss"],
                        e["train_accuracy"],
                        e["valid_loss"],
                        e["valid_accuracy"]
                    ])
                })
                .collect();
            let test = |t: &Value| json!([t["loss"], t["tasks"]]);
            json!({
                "method": m["method"],
                "best_epoch": m["best_epoch"],
                "history": history,
                "test_last": test(&m["test_last"]),
                "test_best_valid": test(&m["test_best_valid"]),
            })
        })
        .collect()
}

/// Eight 256-px slides under `root/slides/{stem}{i}.tif`, half tumor, listed in
/// `root/labels.csv`: four train, two val, two test.
pub fn write_slide_set(root: &Path, stem: &str) {
    let mut labels = String::from("slide,label,split\n");
    for i in 0..8usize {
        let tumor = i % 2 == 1;
        write_slide(&root.join(format!("slides/{stem}{i}.tif")), tumor, i);
        let split = [
            "train", "train", "train", "train", "val", "val", "test", "test",
        ][i];
        let label = if tumor { "tumor" } else { "normal" };
        labels += &format!("slides/{stem}{i}.tif,{label},{split}\n");
    }
    std::fs::write(root.join("labels.csv"), labels).unwrap();
}
