//! Slide lists predicted in shards (`dbps predict --list … --shard K/N --out DIR`), as a Slurm
//! array would: three shards over ten slides, one of them killed midway and run again, merged
//! (`--merge DIR`) into the table one unsharded run gives; no slide is predicted twice, a
//! result from another checkpoint is predicted again, and a merge with slides missing names them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{stderr, train, write_slide_of, write_slide_set};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-shards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data/slides")).unwrap();
    dir
}

/// A model trained for one epoch on eight small slides.
fn trained(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    write_slide_set(&root, "t");
    let config = json!({
        "name": "shards",
        "dataset": { "slides": { "root": root, "downsample": 1 } },
        "patch": { "size": 16 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 3, "width": 4 } },
        "aggregator": { "heads": 1, "d_k": 4, "d_v": 4, "d_inner": 8, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [
            { "name": "IPS", "m": 4, "l": 16, "aggregator": "ips" },
            { "name": "DBPS", "m": 4, "s": 8, "l": 16 }
        ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
    });
    let out = train(dir, &config);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    dir.join("run")
}

/// Ten 768-px slides to predict (large enough that a shard takes a while), listed in a text
/// file of paths relative to it.
fn slide_list(dir: &Path) -> PathBuf {
    let mut list = String::from("# ten slides\n");
    for i in 0..10usize {
        write_slide_of(
            &dir.join(format!("data/slides/p{i}.tif")),
            768,
            i % 3 == 0,
            i,
        );
        list += &format!("slides/p{i}.tif\n");
    }
    let path = dir.join("data/list.txt");
    std::fs::write(&path, list).unwrap();
    path
}

fn predict(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dbps"));
    c.arg("predict").args(args).env("RUST_LOG", "warn");
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

fn shard(list: &Path, run_dir: &Path, k: usize, out: &Path) -> Command {
    predict(&[
        "--list",
        list.to_str().unwrap(),
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--shard",
        &format!("{k}/3"),
        "--out",
        out.to_str().unwrap(),
        "--tissue-mask",
    ])
}

/// Result files and when each was last written.
fn written(out: &Path) -> BTreeMap<String, SystemTime> {
    std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, e.metadata().unwrap().modified().unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn shards_killed_and_rerun_merge_into_the_unsharded_table() {
    let dir = scratch("ok");
    let run_dir = trained(&dir);
    let list = slide_list(&dir);

    // One unsharded run.
    let whole = dir.join("whole");
    run(predict(&[
        "--list",
        list.to_str().unwrap(),
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--out",
        whole.to_str().unwrap(),
        "--tissue-mask",
    ]));
    let merged = run(predict(&["--merge", whole.to_str().unwrap()]));
    let table = String::from_utf8_lossy(&merged.stdout).into_owned();
    assert!(table.contains("merged 10 slides"), "{table}");

    // Shard 1/3 (list positions 0, 3, 6, 9) is stopped after its first result, then killed.
    let out = dir.join("shards");
    let mut first = shard(&list, &run_dir, 1, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while written(&out).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "shard 1 wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = first.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let before = written(&out);
    first.kill().unwrap();
    let _ = first.wait();
    assert!(
        (1..4).contains(&before.len()),
        "shard 1 was to be killed midway, but had written {before:?}"
    );
    // No half-written result under a result's name.
    for name in before.keys() {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    for k in [2, 3] {
        run(shard(&list, &run_dir, k, &out));
    }
    let rerun = run(shard(&list, &run_dir, 1, &out));
    let done = before.len();
    assert_eq!(
        summary(&rerun),
        format!(
            "shard 1/3: 4 slides, {} predicted, {done} already done (kept), 0 from another checkpoint (predicted again)",
            4 - done
        )
    );
    let after = written(&out);
    for (name, when) in &before {
        assert_eq!(after.get(name), Some(when), "{name} was predicted twice");
    }
    let merged = run(predict(&["--merge", out.to_str().unwrap()]));
    assert_eq!(
        String::from_utf8_lossy(&merged.stdout).replace(&out.display().to_string(), ""),
        table.replace(&whole.display().to_string(), "")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("predictions.csv")).unwrap(),
        std::fs::read_to_string(whole.join("predictions.csv")).unwrap()
    );
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 10 * 2,
        "a row per slide and method:\n{csv}"
    );
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("slides/p0.tif,,DBPS,"),
        "{csv}"
    );

    // GeoJSON per slide of a shard (2/3: p1, p4, p7), what `predict --geojson` writes for the
    // slide alone: from the kept result files, and from a slide predicted now.
    let geo = dir.join("geojson");
    let with_geojson = || {
        let mut c = shard(&list, &run_dir, 2, &out);
        c.args(["--geojson", geo.to_str().unwrap()]);
        c
    };
    run(with_geojson());
    let alone = dir.join("alone");
    let p1 = dir.join("data/slides/p1.tif");
    run(predict(&[
        p1.to_str().unwrap(),
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--tissue-mask",
        "--geojson",
        alone.to_str().unwrap(),
    ]));
    let parsed = |path: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let mut files: Vec<String> = std::fs::read_dir(&geo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["p1.geojson", "p4.geojson", "p7.geojson"]);
    let single = parsed(alone.join("p1.tif.geojson"));
    assert_eq!(
        parsed(geo.join("p1.geojson")),
        single,
        "from the kept result"
    );
    std::fs::remove_file(out.join("p1.json")).unwrap();
    std::fs::remove_file(geo.join("p1.geojson")).unwrap();
    let again = run(with_geojson());
    assert!(
        summary(&again).contains("1 predicted, 2 already done"),
        "{}",
        summary(&again)
    );
    assert_eq!(
        parsed(geo.join("p1.geojson")),
        single,
        "from the slide predicted again"
    );

    // A result from another checkpoint is predicted again, not kept.
    let name = before.keys().next().unwrap();
    let path = out.join(name);
    let mut result: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    result["checkpoint"]["methods"][0]["digest"] = json!("0000000000000000");
    std::fs::write(&path, serde_json::to_string(&result).unwrap()).unwrap();
    let merge = predict(&["--merge", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!merge.status.success());
    assert!(
        stderr(&merge).contains("another checkpoint"),
        "{}",
        stderr(&merge)
    );
    let again = run(shard(&list, &run_dir, 1, &out));
    assert_eq!(
        summary(&again),
        "shard 1/3: 4 slides, 1 predicted, 3 already done (kept), 1 from another checkpoint (predicted again)"
    );

    // A merge with a slide missing names it and the shard to run.
    std::fs::remove_file(out.join("p4.json")).unwrap();
    let merge = predict(&["--merge", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!merge.status.success());
    let e = stderr(&merge);
    assert!(
        e.contains("1 of 10 slides have no result") && e.contains("positions 4"),
        "{e}"
    );
}

#[test]
fn bad_shards_and_lists_are_named() {
    let dir = scratch("bad");
    let list = dir.join("data/list.txt");
    std::fs::write(&list, "slides/none.tif\n").unwrap();
    for (args, says) in [
        (vec!["--shard", "0/3"], "K counts from 1"),
        (vec!["--shard", "4/3"], "K counts from 1"),
        (vec!["--shard", "three"], "K/N"),
    ] {
        let mut all = vec![
            "--list",
            list.to_str().unwrap(),
            "--checkpoint",
            "nowhere",
            "--out",
        ];
        let out_dir = dir.join("out");
        all.push(out_dir.to_str().unwrap());
        all.extend(args);
        let out = predict(&all).output().unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let csv = dir.join("data/labels.csv");
    std::fs::write(&csv, "slide,label\n/etc/passwd,x\n").unwrap();
    let out = predict(&[
        "--list",
        csv.to_str().unwrap(),
        "--checkpoint",
        "nowhere",
        "--out",
        "o",
    ])
    .output()
    .unwrap();
    assert!(
        stderr(&out).contains("leaves the list's folder"),
        "{}",
        stderr(&out)
    );
    let out = predict(&["--merge", dir.join("nothing").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("--out folder"),
        "{}",
        stderr(&out)
    );
}
