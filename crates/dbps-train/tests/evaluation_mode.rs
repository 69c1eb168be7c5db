//! Evaluation is inference on every backend: on `Autodiff<Flex>`, where Burn's BatchNorm would
//! normalise with batch statistics (and update the running ones) and its dropout would drop,
//! `forward_eval` gives what the same model gives without autodiff, twice over, and leaves the
//! running statistics as they were.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use dbps_data::TaskSpec;
use dbps_model::batch::BatchImages;
use dbps_model::named_weights::named_tensors;
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;

#[test]
fn forward_eval_on_an_autodiff_backend_is_inference() {
    let config = RunConfig::from_json(
        r#"{
          "name": "eval-mode",
          "dataset": { "synthetic_digits": { "canvas": 64, "digit_height": [10, 14], "clutter": 2, "clutter_size": 8, "sizes": [2, 2, 2] } },
          "patch": { "size": 16 },
          "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 4 } },
          "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 8, "dropout": 0.5, "attn_dropout": 0.5 },
          "methods": [ { "name": "DBPS", "m": 2, "s": 3, "l": 4, "aggregator": "dual_attention" } ],
          "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2, "selection_engine": "burn" }
        }"#,
        "eval-mode",
    )
    .unwrap();
    let device = Default::default();
    let tasks = [TaskSpec::softmax("digit", 10)];
    let model = build_classifier::<Autodiff<Flex>>(&config, 0, &tasks, &device).unwrap();
    // Running statistics away from their initial (0, 1), so that batch statistics differ.
    let images = Tensor::<Autodiff<Flex>, 4>::random(
        [2, 1, 64, 64],
        Distribution::Uniform(0.0, 3.0),
        &device,
    );
    let _ = model
        .forward_train(
            &BatchImages::Device(images.clone()),
            &dbps_model::batch::BatchKey::whole(2),
        )
        .unwrap();
    let before = named_tensors(&model);

    let logits = |out: dbps_model::classifier::ForwardOutput<Autodiff<Flex>>| -> Vec<f32> {
        out.logits[0]
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap()
    };
    let first = logits(
        model
            .forward_eval(&BatchImages::Device(images.clone()))
            .unwrap(),
    );
    let second = logits(
        model
            .forward_eval(&BatchImages::Device(images.clone()))
            .unwrap(),
    );
    let inner: Vec<f32> = model
        .valid()
        .forward_eval(&BatchImages::Device(images.inner()))
        .unwrap()
        .logits[0]
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    assert_eq!(first, second, "dropout is off");
    for (a, b) in first.iter().zip(&inner) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{a} vs {b} without autodiff"
        );
    }
    for (name, t) in named_tensors(&model) {
        assert_eq!(
            t.tensor, before[&name].tensor,
            "{name} changed in evaluation"
        );
    }
}
