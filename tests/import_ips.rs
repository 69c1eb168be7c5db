//! `dbps import-ips`: the official code's `torch.save` state dict of the IPS step fixture
//! (`../shared/fixtures/ips-official-step/official_state_dict.pth`, read without Python)
//! becomes a run directory; its weights, loaded through the library's checkpoint path, give the
//! fixture's picks and loss in a training step, and eval and `--resume` accept the directory.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use common::{dbps, stderr};
use dbps_model::batch::{BatchImages, BatchKey, ImageBatch, TaskTargets};
use dbps_model::step::{TrainedClassifier, TrainingMonitor};
use dbps_tiling::{HostImages, HostPixels, PixelNorm};
use dbps_train::build::build_classifier;
use dbps_train::checkpoint::{MethodManifest, initial_weights_path, load_weights};
use serde_json::{Value, json};

type Train = Autodiff<Flex>;

fn fixture_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("DBPS_IPS_STEP_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/ips-official-step"),
    };
    dir.join("official_state_dict.pth").is_file().then_some(dir)
}

fn mnist_dir() -> Option<PathBuf> {
    [
        std::env::var_os("DBPS_MNIST_DIR").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("digits8k-labels-idx1-ubyte.gz").is_file())
}

/// `dbps import-ips CHECKPOINT --config CONFIG --out RUN`.
fn import(checkpoint: &Path, config: &Path, run: &Path) -> std::process::Output {
    dbps(&[
        "import-ips",
        checkpoint.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ])
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbps-import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture's model as a dbps config: megapixel MNIST's four tasks on 200 px canvases.
fn config(fixture: &Path, digits: &Path) -> Value {
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("settings.json")).unwrap())
            .unwrap();
    json!({
        "name": "imported",
        "dataset": { "megapixel_mnist": {
            "digits_dir": digits, "canvas": settings["image"][1], "noise_stamps": 5,
            "sizes": [4, 2, 2], "seed": 3 } },
        "patch": { "size": settings["patch_size"] },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 64 } },
        "aggregator": { "heads": settings["heads"], "d_k": settings["d_k"], "d_v": settings["d_v"],
                        "d_inner": settings["d_inner"], "dropout": 0.0, "attn_dropout": 0.0,
                        "positional": true },
        "methods": [ { "name": "IPS", "m": settings["M"], "l": settings["L"], "aggregator": "ips" } ],
        "train": { "epochs": 1, "batch_size": 2, "lr": settings["lr"], "warmup_epochs": 0,
                   "weight_decay": 0.1, "shuffle_patches": false, "loss_eps": settings["loss_eps"] }
    })
}

/// The fixture's batch and what the official step computed: (batch, selected, loss).
fn fixture_batch(dir: &Path) -> (ImageBatch<Train>, Vec<i64>, f64) {
    use safetensors::SafeTensors;
    let device = Default::default();
    let inputs = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let floats = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let view = inputs.tensor(name).unwrap();
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (view.shape().to_vec(), values)
    };
    let ints = |file: &SafeTensors, name: &str| -> Vec<i64> {
        file.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let (shape, pixels) = floats("images");
    let dims: [usize; 4] = shape.try_into().unwrap();
    let images = HostImages::new(HostPixels::F32(pixels), dims, PixelNorm::identity(1)).unwrap();
    let mut targets: Vec<TaskTargets<Train>> = (0..3)
        .map(|t| {
            let labels = ints(&inputs, &format!("labels.{t}"));
            TaskTargets::Classes(Tensor::<Train, 1, Int>::from_data(
                TensorData::new(labels, [dims[0]]),
                &device,
            ))
        })
        .collect();
    let (shape, hot) = floats("labels.3");
    targets.push(TaskTargets::MultiHot(Tensor::from_data(
        TensorData::new(hot, shape),
        &device,
    )));
    let expected = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&expected).unwrap();
    let loss = expected.tensor("loss").unwrap().data();
    let loss = f64::from(f32::from_le_bytes(loss[..4].try_into().unwrap()));
    let batch = ImageBatch {
        images: BatchImages::host(images, &device),
        targets,
        key: BatchKey::whole(dims[0]),
    };
    (batch, ints(&expected, "selected"), loss)
}

#[test]
fn an_official_checkpoint_becomes_a_run_that_steps_like_the_official_code() {
    let (Some(fixture), Some(digits)) = (fixture_dir(), mnist_dir()) else {
        eprintln!(
            "SKIPPED: needs ../shared/fixtures/ips-official-step (or DBPS_IPS_STEP_FIXTURE) and the MNIST digits (DBPS_MNIST_DIR)"
        );
        return;
    };
    let dir = scratch("fixture");
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config(&fixture, &digits).to_string()).unwrap();
    let run = dir.join("run");
    let out = import(&fixture.join("official_state_dict.pth"), &config_path, &run);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 71 tensors"));

    // The weights, as every command reads them, step like the official code.
    let method_dir = run.join("IPS");
    let (manifest, trained) = MethodManifest::read_checked(&method_dir).unwrap();
    let device = Default::default();
    let built = build_classifier::<Train>(&trained, 0, &manifest.tasks, &device).unwrap();
    let model = load_weights(
        TrainedClassifier::new(built, TrainingMonitor::default())
            .with_loss(manifest.config.train.loss_form()),
        &initial_weights_path(&method_dir),
        &device,
    )
    .unwrap();
    let (batch, selected, loss) = fixture_batch(&fixture);
    let pass = model.training_pass(batch).unwrap();
    let picked: Vec<i64> = pass
        .salient
        .into_data()
        .convert::<i64>()
        .into_vec()
        .unwrap();
    assert_eq!(picked, selected);
    assert!(
        (pass.stats.loss - loss).abs() <= 1e-5,
        "{} vs {loss}",
        pass.stats.loss
    );

    // eval reads the imported weights; --resume trains from them and keeps them.
    let out = dbps(&["eval", "--checkpoint", run.to_str().unwrap()]);
    assert!(out.status.success(), "eval: {}", stderr(&out));
    let out = dbps(&["train", "--resume", run.to_str().unwrap()]);
    assert!(out.status.success(), "resume: {}", stderr(&out));
    let manifest = MethodManifest::read(&method_dir).unwrap();
    assert_eq!(manifest.epochs, 1);
    assert!(initial_weights_path(&method_dir).is_file());
    // The same epoch from a fresh initialisation (same seed, same data) ends elsewhere: the
    // resumed run trained the imported weights.
    let fresh = dir.join("fresh");
    let out = dbps(&[
        "train",
        "--config",
        config_path.to_str().unwrap(),
        "--output",
        fresh.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "fresh: {}", stderr(&out));
    let loss = |run: &Path| -> f64 {
        let text = std::fs::read_to_string(run.join("metrics.json")).unwrap();
        let metrics: Value = serde_json::from_str(&text).unwrap();
        metrics["methods"][0]["history"][0]["train_loss"]
            .as_f64()
            .unwrap()
    };
    assert_ne!(loss(&run), loss(&fresh));
}

#[test]
fn a_state_dict_with_foreign_tensors_is_refused_with_their_names() {
    let (Some(fixture), Some(digits)) = (fixture_dir(), mnist_dir()) else {
        eprintln!("SKIPPED: needs the IPS step fixture and the MNIST digits");
        return;
    };
    let dir = scratch("foreign");
    // A config with another MLP width does not build the model the file holds.
    let mut config = config(&fixture, &digits);
    config["aggregator"]["d_inner"] = json!(256);
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let run = dir.join("run");
    let out = import(&fixture.join("official_state_dict.pth"), &config_path, &run);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("official_state_dict.pth") && err.contains("mlp.fc1"),
        "{err}"
    );
    assert!(
        !run.exists(),
        "nothing is written for a file that does not fit"
    );

    // A file that is not an IPSNet state dict: its tensors are listed.
    let foreign = dir.join("resnet.safetensors");
    let data = vec![0u8; 4 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap();
    safetensors::serialize_to_file([("backbone.fc.weight", view)], None, &foreign).unwrap();
    let out = import(&foreign, &config_path, &run);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("backbone.fc.weight") && err.contains("no dbps counterpart"),
        "{err}"
    );
}
