//! The worked examples of `docs/extending.md`: an encoder added through the seam (`tiny_cnn`)
//! is built from a run config and trained for one step; a dataset added through the seam
//! (`toy_bars`) is opened, checked, trained on and evaluated by a whole run.

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use dbps_encoder::{Backbone, PatchEncoder};
use dbps_model::batch::ImageBatcher;
use dbps_model::loss::loss_and_hits;
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;
use dbps_train::datasets::Splits;
use dbps_train::runner::{Placement, run};

type A = Autodiff<Flex>;

const CONFIG: &str = r#"{
  "name": "extending",
  "dataset": { "synthetic_digits": { "canvas": 64, "digit_height": [10, 14], "clutter": 2, "clutter_size": 8, "sizes": [4, 2, 2] } },
  "patch": { "size": 16 },
  "encoder": { "tiny_cnn": { "in_channels": 1, "width": 8 } },
  "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16 },
  "methods": [ { "name": "DBPS", "m": 3, "s": 5, "l": 4 } ],
  "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
}"#;

fn conv1(model: &dbps_model::PatchClassifier<A>) -> Vec<f32> {
    let Backbone::TinyCnn(net) = &model.encoder.backbone else {
        panic!("the config asks for tiny_cnn")
    };
    net.conv1.weight.val().into_data().iter::<f32>().collect()
}

#[test]
fn tiny_cnn_from_a_config_trains_one_step() {
    let device = Default::default();
    let config = RunConfig::from_json(CONFIG, "extending").unwrap();
    let splits = Splits::open(&config).unwrap();
    let model = build_classifier::<A>(&config, 0, &splits.tasks, &device).unwrap();
    assert_eq!(model.encoder.embed_dim(), 8);

    let samples = (0..2).filter_map(|i| splits.train.get(i)).collect();
    let batch = ImageBatcher::new(splits.tasks.clone()).batch(samples, &device);
    let out = model.forward_train(&batch.images, &batch.key).unwrap();
    let (loss, _) = loss_and_hits(out.logits, &batch.targets);
    let value: f32 = loss.clone().into_scalar();
    assert!(value.is_finite(), "loss {value}");

    let before = conv1(&model);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamWConfig::new().init().step(1e-2, model, grads);
    let after = conv1(&model);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        moved > before.len() / 2,
        "the new encoder learns through the salient patches: {moved} of {} weights moved",
        before.len()
    );
    // The trained model still selects and classifies.
    let out = model.forward_train(&batch.images, &batch.key).unwrap();
    assert_eq!(out.logits[0].dims(), [2, 10]);
}

const TOY_BARS: &str = r#"{
  "name": "toy-bars",
  "dataset": { "toy_bars": { "canvas": 32, "length": 10, "sizes": [8, 4, 4], "seed": 1 } },
  "patch": { "size": 8 },
  "encoder": { "tiny_cnn": { "in_channels": 1, "width": 8 } },
  "aggregator": { "heads": 1, "d_k": 4, "d_v": 4, "d_inner": 8 },
  "methods": [ { "name": "IPS", "m": 2, "l": 4 } ],
  "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 4, "workers": 0 }
}"#;

#[test]
fn toy_bars_from_a_config_runs_end_to_end() {
    let config = RunConfig::from_json(TOY_BARS, "toy bars").unwrap();
    assert_eq!(config.image_size(), [32, 32]);
    assert_eq!(config.grid().len(), 16);
    let root = std::env::temp_dir().join(format!("dbps-toy-bars-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let placement = Placement::<A>::single(Default::default());
    let report = run(&config, &root.join("run"), &placement, "cpu").unwrap();
    let method = &report.methods[0];
    assert_eq!(method.epochs, 1);
    // The dataset's one task (direction, 2 classes) reached the model and the test split.
    assert_eq!(method.test_last.tasks.len(), 1);
    assert!(method.test_last.loss.is_finite(), "{:?}", method.test_last);
    assert!(report.dir.join("IPS").join("method.json").is_file());
    std::fs::remove_dir_all(&root).unwrap();
}
