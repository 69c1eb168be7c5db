//! Every numeric setting of a run config has a range: a value outside it is refused before
//! anything is allocated or any run directory exists, by an error that names the setting by
//! its JSON path. Absurd values once ran on (a `d_inner` of 2^40 built a model until memory
//! ran out; a noise of 50 drew canvases of pure noise).

use dbps_train::RunConfig;
use dbps_train::datasets::Splits;
use serde_json::{Value, json};

const QUICKSTART: &str = include_str!("../../../configs/quickstart.json");

/// What `dbps train` does before it writes anything: parse, check, open the data.
fn check(config: &Value) -> Result<(), String> {
    let config = RunConfig::from_json(&config.to_string(), "test").map_err(|e| e.to_string())?;
    Splits::open(&config).map(|_| ()).map_err(|e| e.to_string())
}

fn set(v: &mut Value, path: &str, value: Value) {
    let mut at = v;
    let keys: Vec<&str> = path.split('.').collect();
    for key in &keys[..keys.len() - 1] {
        at = match key.strip_suffix("[0]") {
            Some(list) => &mut at[list][0],
            None => &mut at[*key],
        };
    }
    at[keys[keys.len() - 1]] = value;
}

#[test]
fn the_quickstart_passes() {
    check(&serde_json::from_str(QUICKSTART).unwrap()).unwrap();
}

#[test]
fn every_numeric_setting_outside_its_range_is_named() {
    let huge = json!(1u64 << 40);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("patch.size", huge.clone(), "patch.size"),
        ("patch.stride", huge.clone(), "patch.stride"),
        ("methods[0].m", json!(-1), "methods[0].m"),
        ("methods[0].l", huge.clone(), "methods[0].l"),
        ("methods[0].drop", json!(1.5), "methods[0].drop"),
        ("train.epochs", huge.clone(), "train.epochs"),
        ("train.batch_size", huge.clone(), "train.batch_size"),
        ("train.workers", huge.clone(), "train.workers"),
        ("train.lr", json!(50.0), "train.lr"),
        ("train.warmup_epochs", json!(-1.0), "train.warmup_epochs"),
        ("aggregator.heads", huge.clone(), "aggregator.heads"),
        ("aggregator.d_k", huge.clone(), "aggregator.d_k"),
        ("aggregator.d_v", huge.clone(), "aggregator.d_v"),
        ("aggregator.d_inner", huge.clone(), "aggregator.d_inner"),
        ("aggregator.dropout", json!(-0.5), "aggregator.dropout"),
        (
            "encoder.resnet18.width",
            huge.clone(),
            "encoder.resnet18.width",
        ),
        (
            "encoder.resnet18.stages",
            json!(9),
            "encoder.resnet18.stages",
        ),
        (
            "encoder.resnet18.in_channels",
            huge.clone(),
            "encoder.resnet18.in_channels",
        ),
        (
            "encoder.resnet18.projector",
            huge.clone(),
            "encoder.resnet18.projector",
        ),
        (
            "dataset.synthetic_majority.canvas",
            huge.clone(),
            "dataset.synthetic_majority.canvas",
        ),
        (
            "dataset.synthetic_majority.noise",
            json!(50.0),
            "dataset.synthetic_majority.noise",
        ),
        (
            "dataset.synthetic_majority.noise",
            json!(-0.1),
            "dataset.synthetic_majority.noise",
        ),
        (
            "dataset.synthetic_majority.sizes",
            json!([1u64 << 40, 10, 10]),
            "dataset.synthetic_majority.sizes",
        ),
        (
            "dataset.synthetic_majority.clutter_size",
            huge.clone(),
            "dataset.synthetic_majority.clutter_size",
        ),
    ];
    let quickstart: Value = serde_json::from_str(QUICKSTART).unwrap();
    let with_dataset = |dataset: Value| {
        let mut v = quickstart.clone();
        v["dataset"] = dataset;
        v
    };
    let slides = with_dataset(json!({"slides": {"root": "/nonexistent"}}));
    let folder = with_dataset(
        json!({"image_folder": {"root": "/nonexistent", "height": 256, "width": 256}}),
    );
    let digits = with_dataset(json!({"synthetic_digits": {"canvas": 256}}));
    let mut failures = Vec::new();
    let more = [
        (
            &slides,
            "dataset.slides.downsample",
            json!(1e9),
            "dataset.slides.downsample",
        ),
        (
            &slides,
            "dataset.slides.cache_mib",
            huge.clone(),
            "dataset.slides.cache_mib",
        ),
        (
            &folder,
            "dataset.image_folder.max_shift",
            json!(256),
            "dataset.image_folder.max_shift",
        ),
        (
            &folder,
            "dataset.image_folder.height",
            huge.clone(),
            "dataset.image_folder.height/width",
        ),
        (
            &digits,
            "dataset.synthetic_digits.noise",
            json!(2.0),
            "dataset.synthetic_digits.noise",
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(path, value, names)| (&quickstart, path, value, names))
        .chain(more);
    for (base, path, value, names) in cases {
        let mut config = base.clone();
        set(&mut config, path, value.clone());
        match check(&config) {
            Ok(()) => failures.push(format!("{path} = {value}: accepted")),
            Err(e) if !e.contains(&format!("`{names}`")) => failures.push(format!(
                "{path} = {value}: error does not name `{names}`: {e}"
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
