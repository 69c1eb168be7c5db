//! What the CLI tests share: running `dbps train` on a config written to a scratch folder.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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
