//! The worked example of `docs/extending.md`: an encoder added through the seam (`tiny_cnn`)
//! is built from a run config and trained for one step.

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use dbps_encoder::{Backbone, PatchEncoder};
use dbps_train::{ImageBatcher, RunConfig, Splits, build_classifier, loss_and_hits};

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

fn conv1(model: &dbps_train::PatchClassifier<A>) -> Vec<f32> {
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
