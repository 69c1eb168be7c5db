//! Bags of precomputed features of different lengths batch together: each bag is selected and
//! aggregated at its own length, so no placeholder patch reaches selection or the aggregator.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use dbps_data::write_npy;
use dbps_model::batch::ImageBatcher;
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;
use dbps_train::config::CheckedRun;
use dbps_train::datasets::Splits;

type A = Autodiff<Flex>;

/// Bags of 3, 9, 5 and 12 features of width 6; the tumor bags carry a bright feature.
fn dataset() -> PathBuf {
    let root = std::env::temp_dir().join(format!("dbps-bags-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("features")).unwrap();
    let mut labels = String::from("slide,label,split\n");
    for (i, (rows, tumor)) in [(3, false), (9, true), (5, true), (12, false)]
        .into_iter()
        .enumerate()
    {
        let values: Vec<f32> = (0..rows * 6)
            .map(|k| {
                let bright = tumor && k / 6 == rows / 2;
                if bright {
                    4.0
                } else {
                    ((k * 7 + i) % 11) as f32 / 11.0
                }
            })
            .collect();
        write_npy(&root.join(format!("features/s{i}.npy")), rows, 6, &values).unwrap();
        let label = if tumor { "tumor" } else { "normal" };
        labels += &format!("s{i},{label},train\ns{i}t,{label},test\n");
        write_npy(&root.join(format!("features/s{i}t.npy")), rows, 6, &values).unwrap();
    }
    std::fs::write(root.join("labels.csv"), labels).unwrap();
    root
}

fn config(root: &std::path::Path) -> CheckedRun {
    let text = serde_json::json!({
        "name": "bags",
        "dataset": { "feature_bags": { "root": root, "feature_dim": 6, "val_fraction": 0.5 } },
        "patch": { "size": 1 },
        "encoder": { "identity": { "feature_dim": 6, "projector": 4 } },
        "aggregator": { "heads": 1, "d_k": 4, "d_v": 4, "d_inner": 8, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [ { "name": "DBPS", "m": 2, "s": 4, "l": 3 } ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 4 }
    })
    .to_string();
    RunConfig::from_json(&text, "bags").unwrap()
}

#[test]
fn bags_of_different_lengths_batch_without_placeholders() {
    let root = dataset();
    let config = config(&root);
    let device = Default::default();
    let splits = Splits::open(&config).unwrap();
    let model = build_classifier::<A>(&config, 0, &splits.tasks, &device).unwrap();
    let batcher = ImageBatcher::for_split(splits.tasks.clone(), &splits.test);
    let samples: Vec<_> = (0..4).filter_map(|i| splits.test.get(i)).collect();
    let lengths: Vec<i64> = samples.iter().map(|s| s.width as i64).collect();
    assert_eq!(lengths, vec![3, 9, 5, 12]);
    let batch = batcher.batch(samples.clone(), &device);

    let out = model.forward_eval(&batch.images).unwrap();
    let salient: Vec<i64> = out.salient.clone().into_data().iter::<i64>().collect();
    let sub = out.sub_salient.clone().expect("S = 4");
    assert_eq!(sub.dims(), [4, 4]);
    let sub: Vec<i64> = sub.into_data().iter::<i64>().collect();
    for (bag, n) in lengths.iter().enumerate() {
        let picks: Vec<i64> = salient[bag * 2..bag * 2 + 2]
            .iter()
            .chain(&sub[bag * 4..bag * 4 + 4])
            .copied()
            .collect();
        let real: Vec<i64> = picks.iter().copied().filter(|&p| p >= 0).collect();
        // Every pick is a real feature of this bag, none twice; only the 3-long bag is short
        // of M + S = 6 and pads its sub-salient row with −1.
        assert!(real.iter().all(|&p| p < *n), "bag {bag}: {picks:?}");
        let mut unique = real.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), real.len(), "bag {bag}: {picks:?}");
        assert_eq!(real.len() as i64, (*n).min(6), "bag {bag}: {picks:?}");
    }

    // Each bag's logits are what it gets alone: nothing of the other bags leaks in.
    let together: Vec<f32> = out.logits[0].clone().into_data().iter::<f32>().collect();
    for (bag, sample) in samples.into_iter().enumerate() {
        let alone = batcher.batch(vec![sample], &device);
        let alone: Vec<f32> = model.forward_eval(&alone.images).unwrap().logits[0]
            .clone()
            .into_data()
            .iter::<f32>()
            .collect();
        for (a, b) in alone.iter().zip(&together[bag * 2..bag * 2 + 2]) {
            assert!(
                (a - b).abs() < 1e-5,
                "bag {bag}: alone {alone:?}, batched {together:?}"
            );
        }
    }

    // Training steps through the same path (gradients reach the projector).
    let out = model.forward_train(&batch.images, &batch.key).unwrap();
    assert_eq!(out.logits[0].dims(), [4, 2]);
}
