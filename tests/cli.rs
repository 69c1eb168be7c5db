//! End-to-end tests of the `dbps` binary: tiny runs, evaluation, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn dbps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbps"))
        .args(args)
        .env("RUST_LOG", "warn")
        // Tests name their digits folder in the config; the override would hide that.
        .env_remove("DBPS_MNIST_DIR")
        .output()
        .expect("the dbps binary runs")
}

/// `dbps train --config CONFIG --output RUN [extra…]`.
fn train(config: &Path, run: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dbps(&args)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run small enough for a test: 64×64 canvases, 16 patches, a 4-wide ResNet.
fn tiny_config() -> Value {
    json!({
        "name": "tiny",
        "dataset": { "synthetic_digits": {
            "canvas": 64, "digit_height": [10, 14], "copies": 1, "clutter": 3, "clutter_size": 8, "sizes": [32, 16, 16]
        } },
        "patch": { "size": 16 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 4 } },
        "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16 },
        "methods": [
            { "name": "IPS", "m": 2, "s": 0, "l": 4, "aggregator": "ips" },
            { "name": "DBPS", "m": 2, "s": 4, "l": 4, "drop": 0.3, "aggregator": "dual_attention" }
        ],
        "train": { "epochs": 2, "batch_size": 8, "lr": 0.001, "warmup_epochs": 0.5 }
    })
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn trains_both_methods_then_evaluates_without_touching_results() {
    let dir = scratch("train");
    let config = write_config(&dir, &tiny_config());
    let run = dir.join("run");
    let out = train(&config, &run, &[]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("IPS") && table.contains("DBPS") && table.contains("digit"),
        "{table}"
    );

    let metrics = read_json(&run.join("metrics.json"));
    let methods = metrics["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2);
    for m in methods {
        assert_eq!(m["epochs"], 2);
        assert_eq!(m["history"].as_array().unwrap().len(), 2);
        let acc = m["test_last"]["tasks"][0]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(m["train_seconds"].as_f64().unwrap() > 0.0);
        // The last epoch's weights and the best on validation are kept.
        for epoch in [2, m["best_epoch"].as_u64().unwrap()] {
            assert!(
                run.join(m["method"].as_str().unwrap())
                    .join(format!("checkpoint/model-{epoch}.mpk"))
                    .is_file()
            );
        }
    }
    assert_eq!(
        methods[1]["selection"],
        json!({"n": 16, "m": 2, "m_eval": 2, "s": 4, "l": 4, "drop": 0.3})
    );

    // Evaluation writes eval.json and leaves metrics.json as it was.
    let before = std::fs::read(run.join("metrics.json")).unwrap();
    let out = dbps(&["eval", "--checkpoint", run.to_str().unwrap()]);
    assert!(out.status.success(), "eval failed: {}", stderr(&out));
    let eval = read_json(&run.join("eval.json"));
    assert_eq!(eval["methods"].as_array().unwrap().len(), 2);
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), before);

    // The same output again goes to a new directory; the first run is untouched.
    let out = train(&config, &run, &["--epochs", "1"]);
    assert!(
        out.status.success(),
        "second train failed: {}",
        stderr(&out)
    );
    assert!(dir.join("run-2/metrics.json").is_file());
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), before);

    // A damaged weight file is named in the error, and nothing is written over.
    let weights = run.join("DBPS/checkpoint");
    for entry in std::fs::read_dir(&weights).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("model-")
        {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    // Cut short: named as truncated (before: burn's "the internal data format has changed
    // since version 0.14.0").
    let out = dbps(&["eval", "--checkpoint", run.join("DBPS").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("model-") && err.contains("is truncated or damaged") && !err.contains("0.14"),
        "{err}"
    );
    assert!(!run.join("DBPS/eval.json").exists());
    // Whole but of something else: does not fit.
    for entry in std::fs::read_dir(&weights).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("model-") {
            std::fs::write(&path, b"not a checkpoint").unwrap();
        }
    }
    let out = dbps(&["eval", "--checkpoint", run.join("DBPS").to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("model-")
            && err.contains("another config or is damaged"),
        "{err}"
    );
}

/// Runs `dbps train` on the tiny config after `edit` and returns its error output.
fn rejected(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let dir = scratch(name);
    let mut config = tiny_config();
    edit(&mut config);
    let path = write_config(&dir, &config);
    let out = train(&path, &dir.join("run"), &[]);
    assert!(!out.status.success(), "{name}: a bad config was accepted");
    let err = stderr(&out);
    assert!(
        !err.contains("panicked"),
        "{name}: panicked instead of reporting: {err}"
    );
    assert!(
        !dir.join("run").exists(),
        "{name}: a run directory was created for a bad config"
    );
    err
}

#[test]
fn bad_configs_get_errors_that_name_the_setting_and_the_fix() {
    let err = rejected("m-over-n", |c| c["methods"][0]["m"] = json!(17));
    assert!(
        err.contains("methods[0].m") && err.contains("exceed the N = 16"),
        "{err}"
    );
    let err = rejected("negative-s", |c| c["methods"][1]["s"] = json!(-1));
    assert!(
        err.contains("methods[1].s") && err.contains("use 0 (IPS) or more"),
        "{err}"
    );
    for r in [1.0, -0.5] {
        let err = rejected("drop", |c| c["methods"][1]["drop"] = json!(r));
        assert!(
            err.contains("methods[1].drop") && err.contains("[0, 1)"),
            "{err}"
        );
    }
    let err = rejected("big-patch", |c| c["patch"]["size"] = json!(65));
    assert!(
        err.contains("larger than the 64×64") && err.contains("`patch.size`"),
        "{err}"
    );
    let err =
        rejected(
            "encoder",
            |c| c["encoder"] = json!({ "resnet19": { "stages": 2, "in_channels": 1, "width": 4 } }),
        );
    assert!(
        err.contains("unknown variant `resnet19`")
            && err.contains("resnet18")
            && err.contains("tiny_cnn"),
        "{err}"
    );
    // A method name becomes a folder of the run: one that leaves it, or is empty, would write
    // into (and prune) another run's folder or the run root.
    for name in ["../victim/IPS", ""] {
        let err = rejected("method-name", |c| c["methods"][1]["name"] = json!(name));
        assert!(
            err.contains("methods[1].name") && err.contains("one plain folder name"),
            "{err}"
        );
        let victim = std::env::temp_dir()
            .join(format!("dbps-cli-method-name-{}", std::process::id()))
            .join("victim");
        assert!(!victim.exists(), "a folder outside the run was written");
    }
    let err = rejected(
        "digits",
        |c| c["dataset"] = json!({ "megapixel_mnist": { "digits_dir": "/nonexistent/mnist", "canvas": 128, "sizes": [4, 4, 4] } }),
    );
    assert!(
        err.contains("/nonexistent/mnist") && err.contains("DBPS_MNIST_DIR"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let out = dbps(&["train", "--config", "/nonexistent/dbps.json"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/dbps.json") && err.contains("--config"),
        "{err}"
    );
    // The cause is said once, not once more after the fix.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// `--weights` with a file that is not a state dict: the file is named, no run directory is made.
#[test]
fn bad_weight_file_is_named_before_the_run_starts() {
    let dir = scratch("weights");
    let path = write_config(&dir, &tiny_config());
    let weights = dir.join("notes.pth");
    std::fs::write(&weights, "not a state dict").unwrap();
    let out = train(
        &path,
        &dir.join("run"),
        &["--weights", weights.to_str().unwrap()],
    );
    assert!(!out.status.success(), "a text file was accepted as weights");
    let err = stderr(&out);
    assert!(
        err.contains(weights.to_str().unwrap())
            && err.contains(".safetensors")
            && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.matches("cannot read weight file").count(), 1, "{err}");
    assert!(!dir.join("run").exists(), "a run directory was created");
}

/// The shared MNIST digits: `$DBPS_MNIST_DIR`, else `../shared/data/mnist` beside the checkout.
fn mnist_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("DBPS_MNIST_DIR").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("digits8k-labels-idx1-ubyte.gz").is_file())
}

/// Issue test (e): a short megapixel-MNIST run from the shared digits lowers the training loss.
#[test]
fn megapixel_mnist_training_loss_decreases() {
    let Some(digits) = mnist_dir() else {
        eprintln!(
            "SKIPPED megapixel_mnist_training_loss_decreases: no MNIST digits found; set DBPS_MNIST_DIR or \
             place ../shared/data/mnist beside the checkout"
        );
        return;
    };
    let dir = scratch("mnist");
    let config = json!({
        "name": "mnist-short",
        "dataset": { "megapixel_mnist": {
            "digits_dir": digits, "canvas": 200, "noise_stamps": 10, "sizes": [96, 16, 16], "seed": 1
        } },
        "patch": { "size": 20 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 8 } },
        "aggregator": { "heads": 2, "d_k": 8, "d_v": 8, "d_inner": 32, "positional": true },
        "methods": [ { "name": "DBPS", "m": 10, "s": 10, "l": 20, "aggregator": "dual_attention" } ],
        "train": { "epochs": 3, "batch_size": 8, "lr": 0.002, "warmup_epochs": 0.5 }
    });
    let path = write_config(&dir, &config);
    let run = dir.join("run");
    let out = train(&path, &run, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = read_json(&run.join("metrics.json"));
    let history = metrics["methods"][0]["history"].as_array().unwrap().clone();
    let losses: Vec<f64> = history
        .iter()
        .map(|e| e["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(
        losses[2] < losses[0],
        "training loss did not decrease: {losses:?}"
    );
    let tasks: Vec<&str> = metrics["methods"][0]["test_last"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["majority", "max", "top", "multi"]);
}

/// A `DBPS_KERNEL_ISA` that names no instruction set, or one this CPU lacks, is refused before
/// anything runs, with the variable and the names this CPU does run.
#[test]
fn an_unusable_kernel_isa_is_an_error() {
    let dir = scratch("isa");
    for name in ["sse9", "AVX2 "] {
        let out = Command::new(env!("CARGO_BIN_EXE_dbps"))
            .args(["train", "--output"])
            .arg(dir.join("run"))
            .env("DBPS_KERNEL_ISA", name)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("DBPS_KERNEL_ISA={name}")) && err.contains("portable"),
            "{err}"
        );
        assert!(!dir.join("run").exists(), "nothing was written");
    }
}
