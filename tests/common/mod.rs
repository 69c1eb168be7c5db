//! What the CLI tests share: running `dbps`, training a config written to a scratch folder,
//! reading what a run wrote. Each test crate uses some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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
