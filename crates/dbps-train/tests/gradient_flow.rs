//! Issue test (c): the encoder learns only through the M re-embedded patches; the S sub-salient
//! embeddings carry no autodiff graph, yet the aggregator learns from them.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor};
use dbps_encoder::Backbone;
use dbps_model::batch::{BatchImages, BatchKey, TaskTargets};
use dbps_model::loss::loss_and_hits;
use dbps_tiling::extract_patches;
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;

type A = Autodiff<Flex>;

const CONFIG: &str = r#"{
  "name": "gradient-flow",
  "dataset": { "synthetic_digits": { "canvas": 64, "digit_height": [10, 14], "clutter": 2, "clutter_size": 8, "sizes": [4, 4, 4] } },
  "patch": { "size": 16 },
  "encoder": { "resnet18": { "stages": 2, "in_channels": 1, "width": 4 } },
  "aggregator": { "heads": 2, "d_k": 4, "d_v": 4, "d_inner": 16, "dropout": 0.0, "attn_dropout": 0.0, "shared_weights": false },
  "methods": [ { "name": "DBPS", "m": 3, "s": 5, "l": 4, "aggregator": "dual_attention" } ],
  "train": { "epochs": 1, "warmup_epochs": 0, "batch_size": 2, "shuffle_patches": true }
}"#;

fn ints(t: Tensor<A, 2, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

#[test]
fn encoder_gradients_flow_only_through_the_salient_patches() {
    let device = Default::default();
    let config = RunConfig::from_json(CONFIG, "test").unwrap();
    let tasks = dbps_data::SyntheticDigits::tasks();
    let model = build_classifier::<A>(&config, 0, &tasks, &device).unwrap();
    let grid = config.grid();
    let n = grid.len();

    // Pixels as a leaf: any pixel whose patch reaches the loss through the encoder gets a gradient.
    let images =
        Tensor::<A, 4>::random([2, 1, 64, 64], Distribution::Default, &device).require_grad();
    let out = model
        .forward_train(&BatchImages::Device(images.clone()), &BatchKey::whole(2))
        .unwrap();
    let targets = vec![TaskTargets::Classes(Tensor::from_ints([3, 7], &device))];
    let (loss, _) = loss_and_hits(out.logits, &targets);
    let grads = loss.backward();

    let salient = ints(out.salient.clone());
    let sub = ints(out.sub_salient.clone().expect("S = 5 sub-salient patches"));
    assert_eq!((salient.len(), sub.len()), (2 * 3, 2 * 5));

    let pixel_grads = images
        .grad(&grads)
        .expect("salient pixels receive gradients");
    let per_patch: Vec<f32> = extract_patches(&grid, pixel_grads)
        .unwrap()
        .abs()
        .sum_dim(4)
        .sum_dim(3)
        .sum_dim(2)
        .into_data()
        .iter::<f32>()
        .collect();
    for b in 0..2 {
        for p in 0..n {
            let g = per_patch[b * n + p];
            let is_salient = salient[b * 3..(b + 1) * 3].contains(&(p as i64));
            if is_salient {
                assert!(g > 0.0, "salient patch {p} of image {b} got no gradient");
            } else {
                let kind = if sub[b * 5..(b + 1) * 5].contains(&(p as i64)) {
                    "sub-salient"
                } else {
                    "unselected"
                };
                assert_eq!(
                    g, 0.0,
                    "{kind} patch {p} of image {b} leaked gradient {g} into the encoder"
                );
            }
        }
    }

    // The encoder learns (through the salient patches) …
    let Backbone::ResNet(net) = &model.encoder.backbone else {
        panic!("resnet encoder")
    };
    let conv1 = net
        .conv1
        .weight
        .grad(&grads)
        .expect("encoder weights get gradients");
    assert!(conv1.abs().sum().into_scalar() > 0.0);
    // … and the aggregator's sub-salient attention, used only by the S branch, learns too.
    let dual = model.aggregator.dual().expect("dual attention");
    let sub_attention = dual.mhca_sub.as_ref().expect("separate weights");
    for (name, w) in [
        ("w_k", &sub_attention.w_k.weight),
        ("w_v", &sub_attention.w_v.weight),
    ] {
        let g = w
            .grad(&grads)
            .unwrap_or_else(|| panic!("sub-salient attention {name} got no gradient"));
        assert!(
            g.abs().sum().into_scalar() > 0.0,
            "sub-salient attention {name} has zero gradient"
        );
    }
}

/// Host images (cut chunk by chunk, next chunk prepared in the background, only chunks
/// uploaded) and the same pixels as a device tensor select the same patches and give the same
/// logits and loss, in evaluation and in training (unshuffled there, so both calls see the
/// same candidate order, and on twin models: a training pass updates BatchNorm's running
/// statistics, which the next selection reads).
#[test]
fn host_images_select_and_train_like_device_tensors() {
    let device = Default::default();
    let config = RunConfig::from_json(CONFIG, "test").unwrap();
    let tasks = dbps_data::SyntheticDigits::tasks();
    let pixels = Tensor::<A, 4>::random([2, 1, 64, 64], Distribution::Default, &device);
    let values: Vec<f32> = pixels.to_data().iter::<f32>().collect();
    let host = dbps_tiling::HostImages::new(
        dbps_tiling::HostPixels::F32(values),
        [2, 1, 64, 64],
        dbps_tiling::PixelNorm::identity(1),
    )
    .unwrap();
    let host = BatchImages::<A>::host(host, &device);
    let tensor = BatchImages::Device(pixels);

    let model = build_classifier::<A>(&config, 0, &tasks, &device).unwrap();
    let (a, b) = (
        model.forward_eval(&host).unwrap(),
        model.forward_eval(&tensor).unwrap(),
    );
    assert_eq!(ints(a.salient), ints(b.salient));
    assert_eq!(ints(a.sub_salient.unwrap()), ints(b.sub_salient.unwrap()));
    a.logits[0].to_data().assert_approx_eq::<f32>(
        &b.logits[0].to_data(),
        burn::tensor::Tolerance::absolute(1e-6),
    );

    let unshuffled = CONFIG.replace(r#""shuffle_patches": true"#, r#""shuffle_patches": false"#);
    let config = RunConfig::from_json(&unshuffled, "test").unwrap();
    let model = build_classifier::<A>(&config, 0, &tasks, &device).unwrap();
    let twin = build_classifier::<A>(&config, 0, &tasks, &device)
        .unwrap()
        .load_record(model.clone().into_record());
    let targets = vec![TaskTargets::Classes(Tensor::from_ints([3, 7], &device))];
    let (a, b) = (
        model.forward_train(&host, &BatchKey::whole(2)).unwrap(),
        twin.forward_train(&tensor, &BatchKey::whole(2)).unwrap(),
    );
    assert_eq!(ints(a.salient), ints(b.salient));
    let (la, _) = loss_and_hits(a.logits, &targets);
    let (lb, _) = loss_and_hits(b.logits, &targets);
    let (la, lb) = (la.into_scalar(), lb.into_scalar());
    assert!((la - lb).abs() < 1e-6, "{la} vs {lb}");
}

/// Images that do not fit the model's patch grid are an error naming both sizes, in
/// evaluation and in training, never a panic.
#[test]
fn images_of_another_size_are_an_error() {
    let device = Default::default();
    let config = RunConfig::from_json(CONFIG, "test").unwrap();
    let tasks = dbps_data::SyntheticDigits::tasks();
    let model = build_classifier::<A>(&config, 0, &tasks, &device).unwrap();
    let small = dbps_tiling::HostImages::new(
        dbps_tiling::HostPixels::F32(vec![0.5; 2 * 48 * 48]),
        [2, 1, 48, 48],
        dbps_tiling::PixelNorm::identity(1),
    )
    .unwrap();
    let host = BatchImages::<A>::host(small, &device);
    for err in [
        model.forward_eval(&host).err(),
        model.forward_train(&host, &BatchKey::whole(2)).err(),
        model
            .forward_train(
                &BatchImages::Device(Tensor::zeros([2, 1, 48, 48], &device)),
                &BatchKey::whole(2),
            )
            .err(),
    ] {
        let err = err.expect("48×48 images on a 64×64 grid").to_string();
        assert!(err.contains("48×48") && err.contains("64×64"), "{err}");
    }
}
