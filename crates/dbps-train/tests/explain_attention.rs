//! `dbps explain`'s attention map comes from selection's own embeddings: the fused pass picks
//! what evaluation picks and gives the logits a separate pass over every candidate gives.

use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::{Distribution, Int, Tensor};
use dbps_model::candidates::HostCandidates;
use dbps_model::classifier::Mode;
use dbps_tiling::{HostImages, HostPixels, PixelNorm};
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;

const CONFIG: &str = r#"{
  "name": "explain-attention",
  "dataset": { "synthetic_digits": { "canvas": 96, "digit_height": [10, 14], "clutter": 2, "clutter_size": 8, "sizes": [4, 4, 4] } },
  "patch": { "size": 16 },
  "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 4 } },
  "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16, "dropout": 0.0, "attn_dropout": 0.0, "positional": true },
  "methods": [ { "name": "DBPS", "m": 3, "s": 5, "l": 4, "aggregator": "dual_attention" } ],
  "train": { "epochs": 2, "warmup_epochs": 0, "batch_size": 1, "shuffle_patches": true }
}"#;

fn ints(t: Tensor<Flex, 2, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

#[test]
fn fused_attention_equals_a_separate_pass() {
    let device = Default::default();
    let config = RunConfig::from_json(CONFIG, "test").unwrap();
    let tasks = dbps_data::SyntheticDigits::tasks();
    let model = build_classifier::<Flex>(&config, 0, &tasks, &device).unwrap();
    let grid = model.plan().grid;
    let values: Vec<f32> =
        Tensor::<Flex, 4>::random([1, 1, 96, 96], Distribution::Default, &device)
            .into_data()
            .iter::<f32>()
            .collect();
    let images = Arc::new(
        HostImages::new(
            HostPixels::F32(values),
            [1, 1, 96, 96],
            PixelNorm::identity(1),
        )
        .unwrap(),
    );
    let source = || {
        let order = model.plan().candidates(1, Mode::Eval);
        HostCandidates::new(&grid, Arc::clone(&images), order, device)
    };

    let (fused, logits) = model.forward_eval_with_attention(&source()).unwrap();
    let apart = model.forward_eval_from(&source()).unwrap();
    let reference = model.attention_logits(&source()).unwrap();

    assert_eq!(ints(fused.salient), ints(apart.salient));
    assert_eq!(
        ints(fused.sub_salient.unwrap()),
        ints(apart.sub_salient.unwrap())
    );
    assert_eq!(logits.dims(), [1, 2, 1, 36]);
    assert_eq!(logits.dims(), reference.dims());
    let (a, b): (Vec<f32>, Vec<f32>) = (
        logits.into_data().iter().collect(),
        reference.into_data().iter().collect(),
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "largest difference {worst}");
    let (fl, al): (Vec<f32>, Vec<f32>) = (
        fused.logits[0].clone().into_data().iter().collect(),
        apart.logits[0].clone().into_data().iter().collect(),
    );
    assert_eq!(fl, al);
}
