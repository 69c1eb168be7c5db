//! Slides as pathologists handle them, end to end through the CLI: a config in µm per pixel
//! trains on slides that state their resolution; `predict --geojson` and `explain --geojson`
//! write what QuPath imports (checked against the GeoJSON spec with the `geojson` crate, and
//! every salient patch's polygon in level-0 pixels at any level read); `slides check` reports
//! every slide and fails on those a run would stop at; with the `openslide` feature, both
//! readers predict a slide alike.

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::{dbps, stderr, train, write_slide_at};
use geojson::{FeatureCollection, GeoJson, Value as Geometry};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-qupath-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data/slides")).unwrap();
    dir
}

/// Eight 256 px slides at 0.5 µm/px, half tumor: four train, two val, two test.
fn slides(root: &Path) {
    let mut labels = String::from("slide,label,split\n");
    for i in 0..8usize {
        let tumor = i % 2 == 1;
        write_slide_at(
            &root.join(format!("slides/s{i}.tif")),
            256,
            tumor,
            i,
            Some(0.5),
        );
        let split = [
            "train", "train", "train", "train", "val", "val", "test", "test",
        ][i];
        let label = if tumor { "tumor" } else { "normal" };
        labels += &format!("slides/s{i}.tif,{label},{split}\n");
    }
    std::fs::write(root.join("labels.csv"), labels).unwrap();
}

/// Patches of 16 px at 0.75 µm/px: level 0 (0.5 µm/px) shrunk by 1.5, a 170 × 170 px view.
fn config(root: &Path) -> Value {
    json!({
        "name": "microns",
        "dataset": { "slides": { "root": root } },
        "patch": { "size": 16, "mpp": 0.75 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 3, "width": 4 } },
        "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 8, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [
            { "name": "IPS", "m": 4, "l": 16, "aggregator": "ips" },
            { "name": "DBPS", "m": 4, "s": 8, "l": 16, "drop": 0.3 }
        ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
    })
}

fn collection(path: &Path) -> FeatureCollection {
    let text = std::fs::read_to_string(path).unwrap();
    match GeoJson::from_str(&text).expect("valid GeoJSON (RFC 7946)") {
        GeoJson::FeatureCollection(c) => c,
        other => panic!("a FeatureCollection, not {other:?}"),
    }
}

fn property<'a>(feature: &'a geojson::Feature, key: &str) -> &'a Value {
    feature
        .properties
        .as_ref()
        .unwrap()
        .get(key)
        .unwrap_or(&Value::Null)
}

/// Checks that every salient and sub-salient patch of each prediction is one Feature whose
/// polygon is the patch's square in level-0 pixels: `cols` patches of 16 px per row of the
/// view, `level0` level-0 pixels per view pixel (worked out by the test from the slide's
/// geometry, not read from dbps).
fn check_picks(geo: &FeatureCollection, predictions: &[Value], cols: usize, level0: f64) {
    for p in predictions {
        let method = p["method"].as_str().unwrap();
        for (key, role) in [("salient", "salient"), ("sub_salient", "sub-salient")] {
            for index in p[key].as_array().unwrap() {
                let i = index.as_u64().unwrap() as usize;
                let feature = geo
                    .features
                    .iter()
                    .find(|f| {
                        property(f, "method") == method
                            && property(f, "role") == role
                            && property(f, "grid_index") == i
                    })
                    .unwrap_or_else(|| panic!("{method} {role} patch {i} is a Feature"));
                let (y, x) = (
                    (i / cols * 16) as f64 * level0,
                    (i % cols * 16) as f64 * level0,
                );
                let side = 16.0 * level0;
                let want = vec![vec![
                    vec![x, y],
                    vec![x + side, y],
                    vec![x + side, y + side],
                    vec![x, y + side],
                    vec![x, y],
                ]];
                match &feature.geometry.as_ref().unwrap().value {
                    Geometry::Polygon(rings) => assert_eq!(rings, &want, "{method} patch {i}"),
                    other => panic!("a patch is a Polygon, not {other:?}"),
                }
            }
        }
    }
}

/// `dbps predict FILES… --checkpoint RUN EXTRA…`.
fn predict(files: &[&Path], run: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["predict"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend(["--checkpoint", run.to_str().unwrap()]);
    args.extend_from_slice(extra);
    dbps(&args)
}

#[test]
fn a_micron_config_trains_and_its_picks_open_in_qupath() {
    let dir = scratch("microns");
    let root = dir.join("data");
    slides(&root);
    let out = train(&dir, &config(&root));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let run = dir.join("run");
    let slide = root.join("slides/s7.tif");
    let geo_dir = dir.join("geojson");

    // At the trained resolution: 0.75 µm/px is level 0 shrunk by 1.5 (170 px, 10 patches a row).
    let geojson = ["--json", "--geojson", geo_dir.to_str().unwrap()];
    let out = predict(&[&slide], &run, &geojson);
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let predictions = report["predictions"].as_array().unwrap();
    assert_eq!(predictions[0]["size"], json!([170, 170]), "{report}");
    assert_eq!(predictions[0]["slide"]["mpp"], json!(0.75), "{report}");
    let geo = collection(&geo_dir.join("s7.tif.geojson"));
    check_picks(&geo, predictions, 170 / 16, 1.5);
    // The tissue band covers level-0 rows 64..192 across the whole width.
    let tissue = geo
        .features
        .iter()
        .find(|f| property(f, "objectType") == "annotation")
        .expect("the tissue outline");
    let Geometry::MultiPolygon(polygons) = &tissue.geometry.as_ref().unwrap().value else {
        panic!("the tissue is a MultiPolygon")
    };
    let corners: Vec<&Vec<f64>> = polygons.iter().flatten().flatten().collect();
    let span = |k: usize| {
        corners
            .iter()
            .map(|c| c[k])
            .fold([f64::MAX, f64::MIN], |[lo, hi], v| [lo.min(v), hi.max(v)])
    };
    assert_eq!((span(0), span(1)), ([0.0, 256.0], [64.0, 192.0]));

    // An explicit --downsample 2 overrides the µm (level 1, 128 px, 8 patches a row, level-0
    // coordinates twice the grid's).
    let out = predict(
        &[&slide],
        &run,
        &[&geojson[..], &["--downsample", "2"]].concat(),
    );
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    assert!(stderr(&out).contains("overrides"), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let predictions = report["predictions"].as_array().unwrap();
    assert_eq!(predictions[0]["size"], json!([128, 128]), "{report}");
    check_picks(
        &collection(&geo_dir.join("s7.tif.geojson")),
        predictions,
        8,
        2.0,
    );

    // explain: picks carry attention per head and its mean; --geojson-all adds every patch.
    let figure = dir.join("explain.png");
    let file = dir.join("explain.geojson");
    let out = dbps(&[
        "explain",
        slide.to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        figure.to_str().unwrap(),
        "--geojson",
        file.to_str().unwrap(),
        "--geojson-all",
    ]);
    assert!(out.status.success(), "explain failed: {}", stderr(&out));
    let sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(figure.with_extension("json")).unwrap())
            .unwrap();
    let geo = collection(&file);
    for m in sidecar["methods"].as_array().unwrap() {
        let method = m["method"].as_str().unwrap();
        let patches: Vec<&geojson::Feature> = geo
            .features
            .iter()
            .filter(|f| property(f, "method") == method)
            .collect();
        assert_eq!(
            patches.len(),
            m["candidates"].as_array().unwrap().len(),
            "{method}"
        );
        for f in &patches {
            let measured = property(f, "measurements");
            let heads = [0, 1].map(|h| measured[format!("attention head {h}")].as_f64().unwrap());
            let mean = measured["attention mean"].as_f64().unwrap();
            assert!(
                (mean - (heads[0] + heads[1]) / 2.0).abs() < 1e-6,
                "{measured}"
            );
        }
        let salient = patches
            .iter()
            .filter(|f| property(f, "role") == "salient")
            .count();
        assert_eq!(salient, m["salient"].as_array().unwrap().len(), "{method}");
    }
    let picks: Vec<Value> = sidecar["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!({ "method": m["method"], "salient": m["salient"], "sub_salient": m["sub_salient"] }))
        .collect();
    check_picks(&geo, &picks, 170 / 16, 1.5);

    // Two slides of one file name cannot share a GeoJSON folder; an ordinary image has no
    // level-0 coordinates and is skipped with a warning.
    let twin = dir.join("twin");
    std::fs::create_dir_all(&twin).unwrap();
    std::fs::copy(&slide, twin.join("s7.tif")).unwrap();
    let png = dir.join("photo.png");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .save(&png)
        .unwrap();
    let crowded = dir.join("crowded");
    let into_crowded = ["--geojson", crowded.to_str().unwrap()];
    let out = predict(&[&slide, &twin.join("s7.tif")], &run, &into_crowded);
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("would both be written to s7.tif.geojson"),
        "{e}"
    );
    assert!(!crowded.exists(), "nothing is written");
    let out = predict(&[&png], &run, &into_crowded);
    let e = stderr(&out);
    assert!(
        out.status.success() && e.contains("photo.png") && e.contains("not a slide"),
        "{e}"
    );
    assert!(!crowded.join("photo.png.geojson").exists());

    // A slide without a stated resolution cannot be read in µm.
    let plain = dir.join("plain.tif");
    write_slide_at(&plain, 256, false, 0, None);
    let out = predict(&[&plain], &run, &[]);
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("plain.tif") && e.contains("states no resolution"),
        "{e}"
    );
}

/// `dbps slides check LIST --out OUT --patch 16 EXTRA…`: whether it succeeded, its stderr and
/// the CSV it wrote.
fn slides_check(list: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "slides",
        "check",
        list.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--patch",
        "16",
    ];
    args.extend_from_slice(extra);
    let run = dbps(&args);
    let csv = std::fs::read_to_string(out.join("slides-check.csv")).unwrap_or_default();
    (run.status.success(), stderr(&run), csv)
}

#[test]
fn slides_check_reports_every_slide_and_fails_on_those_a_run_would_stop_at() {
    let dir = scratch("check");
    let slides = dir.join("data/slides");
    write_slide_at(&slides.join("good.tif"), 256, true, 1, Some(0.5));
    dbps_slide::write_tiled_tiff(
        &slides.join("blank.tif"),
        &dbps_slide::PyramidSpec::new(vec![[128, 128]], 64, 3, dbps_slide::TileCompression::None),
        |_, _, side| vec![240; side * side * 3],
    )
    .unwrap();
    std::fs::write(slides.join("junk.svs"), b"not a slide").unwrap();
    let list = dir.join("data/list.txt");
    let listing = |names: &[&str]| {
        let lines: Vec<String> = names.iter().map(|n| format!("slides/{n}\n")).collect();
        std::fs::write(&list, lines.concat()).unwrap();
    };
    let qc = dir.join("qc");

    listing(&["good.tif", "blank.tif", "junk.svs"]);
    let (ok, e, csv) = slides_check(&list, &qc, &[]);
    assert!(!ok && e.contains("2 of 3 slides would fail"), "{e}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("file,reader,levels"), "{csv}");
    // 16 px patches at full resolution: the band's 8 of 16 patch rows, 16 patches each.
    for (row, file, says) in [
        (1, "good.tif", ",builtin,2,256,256,0.5000,0,1.000,"),
        (1, "good.tif", ",128,ok,"),
        (2, "blank.tif", ",fail,"),
        (2, "blank.tif", "no tissue"),
        (3, "junk.svs", ",fail,"),
        (3, "junk.svs", "unreadable"),
    ] {
        assert!(
            rows[row].contains(file) && rows[row].contains(says),
            "{says}: {csv}"
        );
    }
    let png = image::open(qc.join("good.png")).unwrap().to_rgb8();
    assert_eq!(
        png.dimensions(),
        (128, 128),
        "the thumbnail of the 128 px level"
    );

    // In µm: the good slide passes, read at its level 1 as it is (1 µm/px); a slide that
    // states no resolution fails with `level missing`.
    write_slide_at(&slides.join("plain.tif"), 256, true, 1, None);
    listing(&["good.tif", "plain.tif"]);
    let (ok, _, csv) = slides_check(&list, &qc, &["--mpp", "1.0"]);
    assert!(
        !ok && csv.contains("plain.tif")
            && csv.contains("level missing")
            && csv.contains("states no resolution"),
        "{csv}"
    );
    listing(&["good.tif"]);
    let (ok, e, csv) = slides_check(&list, &qc, &["--mpp", "1.0"]);
    assert!(ok, "{e}");
    assert!(
        csv.contains(",1,2.000,") && csv.contains(",32,ok,"),
        "level 1 read as it is: {csv}"
    );

    // A JPEG tile under tissue cut short: the slide opens, its thumbnail reads (level 1), but
    // the tiles under its patches do not decode. Level 0's stored tiles are the blank one
    // (tile 0, reused by every blank tile) and then tile 4, the first on the tissue band.
    let cut = slides.join("cut.tif");
    common::write_slide_with(
        &cut,
        256,
        true,
        1,
        dbps_slide::TileCompression::Jpeg { quality: 90 },
        None,
        None,
    );
    let mut bytes = std::fs::read(&cut).unwrap();
    let second = bytes
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF])
        .nth(1)
        .unwrap()
        .0;
    let end = second
        + bytes[second..]
            .windows(2)
            .position(|w| w == [0xFF, 0xD9])
            .unwrap();
    bytes[end..end + 2].fill(0);
    std::fs::write(&cut, &bytes).unwrap();
    listing(&["cut.tif"]);
    let (ok, _, csv) = slides_check(&list, &qc, &[]);
    assert!(
        !ok && csv.contains("unreadable tiles") && csv.contains("tile 4 of level 0"),
        "{csv}"
    );
    let (ok, _, csv) = slides_check(&list, &qc, &["--quick"]);
    assert!(ok && csv.contains(",ok,"), "--quick decodes no tile: {csv}");
}

/// Both readers predict a lossless (deflate) slide to the same probabilities and picks, and
/// an Aperio-style SVS (JPEG tiles, two decoders) to probabilities within 0.01.
#[cfg(feature = "openslide")]
#[test]
fn both_readers_predict_a_slide_alike() {
    let dir = scratch("readers");
    let root = dir.join("data");
    slides(&root);
    let out = train(&dir, &config(&root));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    // Training through OpenSlide reads the same pixels: the same run, to the last figure.
    let other = dir.join("through-openslide");
    std::fs::create_dir_all(&other).unwrap();
    let mut through = config(&root);
    through["dataset"]["slides"]["reader"] = json!("openslide");
    let out = train(&other, &through);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    assert_eq!(
        common::outcome(&common::metrics(&other)),
        common::outcome(&common::metrics(&dir))
    );
    let svs = root.join("slides/s6.svs");
    common::write_slide_with(
        &svs,
        256,
        false,
        6,
        dbps_slide::TileCompression::Jpeg { quality: 90 },
        Some(
            "Aperio Image Library v12.0.15 \r\n256x256 (64x64) JPEG/RGB Q=90|AppMag = 20|MPP = 0.5"
                .into(),
        ),
        None,
    );
    let run = dir.join("run");
    let through = |slide: &Path, reader: &str| -> Value {
        let out = predict(
            &[slide],
            &run,
            &["--json", "--tissue-mask", "--reader", reader],
        );
        assert!(out.status.success(), "{reader}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let slide = root.join("slides/s6.tif");
    let (a, b) = (through(&slide, "builtin"), through(&slide, "openslide"));
    for (p, q) in a["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["predictions"].as_array().unwrap())
    {
        assert_eq!(p["slide"]["reader"], "builtin");
        assert_eq!(q["slide"]["reader"], "openslide");
        for key in ["tasks", "salient", "sub_salient", "size"] {
            assert_eq!(p[key], q[key], "{key}");
        }
    }
    let probabilities = |v: &Value| -> Vec<f64> {
        v["tasks"][0]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (through(&svs, "builtin"), through(&svs, "openslide"));
    for (p, q) in a["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["predictions"].as_array().unwrap())
    {
        assert_eq!(p["size"], q["size"]);
        for (x, y) in probabilities(p).iter().zip(probabilities(q)) {
            assert!((x - y).abs() < 0.01, "{p} / {q}");
        }
    }
}
