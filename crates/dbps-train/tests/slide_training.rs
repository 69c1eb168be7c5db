//! Training on whole-slide images: a batch of slides is selected slide by slide among the
//! patches on tissue only, the M winners are read again from the slide for the gradient pass,
//! and the encoder learns from them.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor};
use dbps_model::batch::{BatchImages, ImageBatch, ImageBatcher};
use dbps_model::loss::loss_and_hits;
use dbps_slide::{PyramidSpec, TileCompression, write_tiled_tiff};
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;
use dbps_train::config::CheckedRun;
use dbps_train::datasets::Splits;

type A = Autodiff<Flex>;

/// Level 0 is 128 × 192 px: an 8 × 12 grid of 16 px patches.
const SIZE: [usize; 2] = [128, 192];
/// The tissue: pixels [32, 64) × [48, 96), the six patches of rows 2–3, columns 3–5.
const TISSUE: ([usize; 2], [usize; 2]) = ([32, 64], [48, 96]);

fn tissue_patch(index: i64) -> bool {
    let (row, col) = (index as usize / 12, index as usize % 12);
    (2..4).contains(&row) && (3..6).contains(&col)
}

/// A bright-field RGB slide: white background, textured dark tissue in [`TISSUE`].
fn write_slide(path: &Path, shade: u8) {
    let spec = PyramidSpec {
        levels: vec![SIZE, [64, 96]],
        tile: 32,
        channels: 3,
        compression: TileCompression::Deflate,
        big: false,
        description: None,
        mpp: None,
    };
    write_tiled_tiff(path, &spec, |level, [y0, x0], side| {
        let d = 1 << level;
        let mut tile = vec![235u8; side * side * 3];
        for y in 0..side {
            for x in 0..side {
                let (fy, fx) = ((y0 + y) * d, (x0 + x) * d);
                let ([ya, yb], [xa, xb]) = TISSUE;
                if (ya..yb).contains(&fy) && (xa..xb).contains(&fx) {
                    let v = shade.wrapping_add(((fx * 7 + fy * 13) % 60) as u8);
                    tile[(y * side + x) * 3..][..3].copy_from_slice(&[v, v / 2, v]);
                }
            }
        }
        tile
    })
    .unwrap();
}

fn dataset(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("dbps-slidetrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut labels = String::from("slide,label,split\n");
    for (i, split) in ["train", "train", "val", "test"].iter().enumerate() {
        write_slide(&root.join(format!("s{i}.tif")), 30 + 20 * i as u8);
        labels += &format!("s{i}.tif,{},{split}\n", ["normal", "tumor"][i % 2]);
    }
    std::fs::write(root.join("labels.csv"), labels).unwrap();
    root
}

fn config(root: &Path) -> CheckedRun {
    let json = serde_json::json!({
        "name": "slides",
        "dataset": { "slides": { "root": root } },
        "patch": { "size": 16 },
        "encoder": { "resnet18": { "stages": 2, "in_channels": 3, "width": 4 } },
        "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16, "dropout": 0.0, "attn_dropout": 0.0 },
        "methods": [ { "name": "DBPS", "m": 4, "s": 4, "l": 4, "drop": 0.3, "aggregator": "dual_attention" } ],
        "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2 }
    });
    RunConfig::from_json(&json.to_string(), "test").unwrap()
}

fn ints<B: burn::tensor::backend::Backend>(t: Tensor<B, 2, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

#[test]
fn slides_train_on_tissue_patches_read_from_disk() {
    let root = dataset("train");
    let config = config(&root);
    let splits = Splits::open(&config).unwrap();
    assert_eq!(splits.train.len(), 2);
    let device = Default::default();
    let model = build_classifier::<A>(&config, 0, &splits.tasks, &device).unwrap();
    let batcher = ImageBatcher::for_split(splits.tasks.clone(), &splits.train);
    let samples = (0..2).map(|i| splits.train.get(i).unwrap()).collect();
    let batch: ImageBatch<A> = batcher.batch(samples, &device);
    assert!(matches!(batch.images, BatchImages::Separate { .. }));

    let out = model.forward_train(&batch.images, &batch.key).unwrap();
    let salient = ints(out.salient.clone());
    let sub = ints(out.sub_salient.clone().expect("S = 4"));
    // Six tissue patches per slide: M = 4 salient, the 2 left sub-salient (padded with −1).
    assert_eq!(
        (salient.len(), sub.len()),
        (2 * 4, 2 * 2),
        "{salient:?} {sub:?}"
    );
    for &i in salient.iter().chain(&sub) {
        assert!(
            tissue_patch(i),
            "patch {i} lies off the tissue: {salient:?} {sub:?}"
        );
    }

    // The winners were read again from the slides with gradients: the encoder learns.
    let (loss, _) = loss_and_hits(out.logits, &batch.targets);
    let grads = GradientsParams::from_grads(loss.backward(), &model.encoder);
    assert!(
        !grads.is_empty(),
        "no encoder parameter received a gradient"
    );

    // Evaluation reads every tissue patch of each slide, no drop.
    let eval = model.valid().forward_eval(&batch.images.inner()).unwrap();
    for &i in &ints(eval.salient) {
        assert!(
            tissue_patch(i),
            "evaluation picked patch {i} off the tissue"
        );
    }
}
