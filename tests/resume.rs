//! `dbps train --resume`: a run killed with SIGKILL mid-training continues from its last
//! complete checkpoint and ends with the metrics of an uninterrupted run with the same seed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::outcome;
use serde_json::{Value, json};

fn dbps(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbps"));
    command.args(args).env("RUST_LOG", "warn");
    command
}

fn finished(mut command: Command) -> Output {
    command.output().expect("the dbps binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Five epochs of both methods, with everything random switched on: dropout, patch drop,
/// shuffled candidates, shuffled batches.
fn config() -> Value {
    json!({
        "name": "resume",
        "dataset": { "synthetic_digits": {
            "canvas": 64, "digit_height": [10, 14], "copies": 1, "clutter": 3, "clutter_size": 8, "sizes": [64, 16, 16]
        } },
        "patch": { "size": 16 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 4 } },
        "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16, "dropout": 0.2, "attn_dropout": 0.1 },
        "methods": [
            { "name": "IPS", "m": 2, "s": 0, "l": 4, "aggregator": "ips" },
            { "name": "DBPS", "m": 2, "s": 4, "l": 4, "drop": 0.3, "aggregator": "dual_attention" }
        ],
        "train": { "epochs": 5, "batch_size": 8, "lr": 0.001, "warmup_epochs": 0.5, "shuffle_patches": true, "seed": 3 }
    })
}

/// Checkpoint files left in a method folder.
fn checkpoint_files(method_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(method_dir.join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `config()` with `epochs`, written to `dir/config.json`; returns its path.
fn write_config(dir: &Path, epochs: u64) -> PathBuf {
    let path = dir.join("config.json");
    let mut config = config();
    config["train"]["epochs"] = json!(epochs);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A finished run of `epochs` epochs in `scratch(name)/run` whose `metrics.json` is then made to
/// hold IPS alone, so that `--resume` continues DBPS from its checkpoints; returns the run
/// directory and the finished run's metrics.
fn run_with_dbps_unfinished(name: &str, epochs: u64) -> (PathBuf, Value) {
    let dir = scratch(name);
    let config_path = write_config(&dir, epochs);
    let run = dir.join("run");
    let out = finished(dbps(&[
        "train",
        "--config",
        config_path.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let whole = read_json(&run.join("metrics.json"));
    let mut metrics = whole.clone();
    metrics["methods"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["method"] == "IPS");
    std::fs::write(run.join("metrics.json"), metrics.to_string()).unwrap();
    (run, whole)
}

#[test]
fn a_killed_run_resumes_to_the_metrics_of_an_uninterrupted_one() {
    let dir = scratch("kill");
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config().to_string()).unwrap();
    let config_arg = config_path.to_str().unwrap();

    let whole = dir.join("whole");
    let out = finished(dbps(&[
        "train",
        "--config",
        config_arg,
        "--output",
        whole.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let expected = outcome(&read_json(&whole.join("metrics.json")));

    // Once training ends, only the last and the best epoch's checkpoints are kept.
    for m in read_json(&whole.join("metrics.json"))["methods"]
        .as_array()
        .unwrap()
    {
        let best = m["best_epoch"].as_u64().unwrap();
        let mut kept: Vec<String> = [5, best]
            .iter()
            .flat_map(|e| ["model", "optim", "scheduler"].map(|p| format!("{p}-{e}.mpk")))
            .collect();
        kept.sort();
        kept.dedup();
        let method_dir = whole.join(m["method"].as_str().unwrap());
        assert_eq!(checkpoint_files(&method_dir), kept);
    }

    // The same run, killed while IPS trains its third epoch.
    let killed = dir.join("killed");
    let mut child = dbps(&[
        "train",
        "--config",
        config_arg,
        "--output",
        killed.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let second = killed.join("IPS/checkpoint/model-2.mpk");
    let start = Instant::now();
    while !second.is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its second checkpoint"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run finished before it could be killed; make the config larger"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("metrics.json").exists(),
        "IPS had not finished"
    );
    // What `dbps eval` and `--resume` need exists before the run ends.
    let manifest = read_json(&killed.join("IPS/method.json"));
    assert!(manifest["epochs"].as_u64().unwrap() >= 2, "{manifest}");

    let out = finished(dbps(&["train", "--resume", killed.to_str().unwrap()]));
    assert!(out.status.success(), "resume failed: {}", stderr(&out));
    let resumed = outcome(&read_json(&killed.join("metrics.json")));
    assert_eq!(resumed, expected);

    // A finished run resumes to itself without training.
    let before = std::fs::read(killed.join("metrics.json")).unwrap();
    let out = finished(dbps(&["train", "--resume", killed.to_str().unwrap()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DBPS"));
    assert_eq!(std::fs::read(killed.join("metrics.json")).unwrap(), before);
}

/// `--resume` never deletes checkpoints whose epochs' figures were lost: a method whose
/// `history.json` is missing or empty while its checkpoints are complete is refused, naming the
/// file, and its checkpoints stay.
#[test]
fn resume_never_discards_checkpoints_whose_figures_are_lost() {
    let (run, _) = run_with_dbps_unfinished("history", 2);
    let method_dir = run.join("DBPS");
    let kept = checkpoint_files(&method_dir);
    assert!(kept.iter().any(|f| f == "model-2.mpk"), "{kept:?}");
    for history in [None, Some("[]")] {
        let path = method_dir.join("history.json");
        match history {
            None => std::fs::remove_file(&path).unwrap(),
            Some(text) => std::fs::write(&path, text).unwrap(),
        }
        let out = finished(dbps(&["train", "--resume", run.to_str().unwrap()]));
        assert!(
            !out.status.success(),
            "resumed over checkpoints whose figures are lost"
        );
        let err = stderr(&out);
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains("--output"),
            "{err}"
        );
        assert_eq!(checkpoint_files(&method_dir), kept, "{history:?}");
    }
}

/// A truncated optimizer or schedule file (burn-train panicked on it) makes `--resume` fall
/// back to the newest epoch it can read, saying so and keeping the damaged files aside, and
/// the run still ends with the uninterrupted run's metrics.
#[test]
fn a_damaged_checkpoint_falls_back_to_the_epoch_before() {
    let (run, whole) = run_with_dbps_unfinished("damaged", 3);
    let expected = outcome(&whole);
    let metrics = read_json(&run.join("metrics.json"));
    let checkpoints = run.join("DBPS/checkpoint");
    for (part, keep) in [("optim", 0), ("scheduler", 7)] {
        let file = checkpoints.join(format!("{part}-3.mpk"));
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..keep.min(bytes.len())]).unwrap();
        let out = finished(dbps(&["train", "--resume", run.to_str().unwrap()]));
        let err = stderr(&out);
        assert!(out.status.success(), "{part}: resume failed: {err}");
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("resuming from the epoch before"),
            "{part}: {err}"
        );
        assert!(
            checkpoints.join(format!("damaged/{part}-3.mpk")).is_file(),
            "{part}: the damaged file was not kept"
        );
        assert_eq!(
            outcome(&read_json(&run.join("metrics.json"))),
            expected,
            "{part}"
        );
        std::fs::write(run.join("metrics.json"), metrics.to_string()).unwrap();
    }
}

/// While a run trains, a second process cannot write its directory: `--resume` on it is
/// refused, naming the lock, and the first run is not disturbed.
#[test]
fn a_run_directory_being_written_refuses_a_second_writer() {
    let dir = scratch("locked");
    let config_path = write_config(&dir, 50);
    let run = dir.join("run");
    let mut child = dbps(&[
        "train",
        "--config",
        config_path.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let start = Instant::now();
    while !run.join("IPS/method.json").is_file() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(300), "no method.json");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = finished(dbps(&["train", "--resume", run.to_str().unwrap()]));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.status.success(),
        "a second process resumed a running run"
    );
    let err = stderr(&out);
    assert!(
        err.contains("another dbps process") && err.contains("run.lock"),
        "{err}"
    );
}

/// A config.json edited between a run and its resume is refused, naming the JSON path and the
/// manifest that says what the checkpoints were trained with; nothing is written.
#[test]
fn resume_refuses_a_config_that_is_not_the_one_trained_with() {
    let (run, _) = run_with_dbps_unfinished("edited", 2);
    let mut edited = read_json(&run.join("config.json"));
    edited["methods"][1]["s"] = json!(3);
    std::fs::write(run.join("config.json"), edited.to_string()).unwrap();
    let manifest = std::fs::read(run.join("DBPS/method.json")).unwrap();
    let kept = checkpoint_files(&run.join("DBPS"));
    let out = finished(dbps(&["train", "--resume", run.to_str().unwrap()]));
    assert!(!out.status.success(), "resumed with another config");
    let err = stderr(&out);
    assert!(
        err.contains("`methods[1].s` to 3") && err.contains("method.json"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run.join("DBPS/method.json")).unwrap(),
        manifest
    );
    assert_eq!(checkpoint_files(&run.join("DBPS")), kept);
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` where this process may not mount (not root, or no CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills while training fails the run: non-zero exit, the cause at the default log
/// level, the method not recorded as done — so `--resume` continues it.
#[test]
fn a_full_disk_fails_the_run_loudly() {
    let dir = scratch("full-disk");
    let Some(disk) = SmallDisk::mount(&dir.join("disk"), "160k") else {
        eprintln!("SKIPPED a_full_disk_fails_the_run_loudly: cannot mount a tmpfs (needs root)");
        return;
    };
    let config_path = write_config(&dir, 20);
    let run = disk.0.join("run");
    let out = finished(dbps(&[
        "train",
        "--config",
        config_path.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ]));
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a full disk ended the run with success: {err}"
    );
    assert!(
        err.contains("No space left on device") && err.contains("--resume"),
        "{err}"
    );
    let done = std::fs::read_to_string(run.join("metrics.json")).unwrap_or_default();
    assert!(
        !done.contains("\"IPS\""),
        "metrics.json records the stopped method as done: {done}"
    );
}

#[test]
fn resume_on_a_directory_without_a_run_says_so() {
    let dir = scratch("empty");
    let out = finished(dbps(&["train", "--resume", dir.to_str().unwrap()]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(dir.to_str().unwrap()) && err.contains("holds no run"),
        "{err}"
    );

    let out = finished(dbps(&[
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--epochs",
        "3",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}
