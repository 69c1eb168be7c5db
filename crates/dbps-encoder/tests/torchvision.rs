//! torchvision weight files (`../shared/fixtures/torchvision`, or `$DBPS_TORCHVISION_DIR`):
//! loaded ResNets give the embeddings torchvision computed, on Burn's forward and on the
//! selection pass's native kernels; bad files fail naming the tensor or the file.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, Tolerance};
use dbps_encoder::{
    EncoderConfig, EncoderError, IdentityConfig, NativeEncoder, PatchEncoder, ResNetConfig,
    TorchvisionWeights, WeightsError,
};

/// The fixture folder, or `None` after saying loudly that the test is skipped.
fn fixtures(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DBPS_TORCHVISION_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/torchvision")
        });
    if dir.join("expected.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED {test}: no torchvision fixtures at {}; set DBPS_TORCHVISION_DIR or place \
             ../shared/fixtures/torchvision beside the checkout",
            dir.display()
        );
        None
    }
}

fn tensor<const D: usize>(expected: &TorchvisionWeights, name: &str) -> Tensor<Flex, D> {
    let t = expected
        .get(name)
        .unwrap_or_else(|| panic!("{name} in expected.safetensors"));
    let dims: [usize; D] = t.shape.clone().try_into().expect("rank");
    Tensor::from_data(TensorData::new(t.values.clone(), dims), &Default::default())
}

fn resnet(name: &str, c: ResNetConfig) -> EncoderConfig {
    match name {
        "resnet18" => EncoderConfig::Resnet18(c.into()),
        "resnet34" => EncoderConfig::Resnet34(c.into()),
        "resnet50" => EncoderConfig::Resnet50(c.into()),
        other => panic!("no ResNet called {other}"),
    }
}

fn config(name: &str, stages: usize, in_channels: usize, weights: PathBuf) -> EncoderConfig {
    resnet(
        name,
        ResNetConfig {
            stages,
            in_channels,
            weights: Some(weights),
            ..ResNetConfig::default()
        },
    )
}

/// Burn's forward (BatchNorm folded with the running statistics) and the native kernels both
/// reproduce torchvision's eval-mode embeddings within 1e-4.
#[test]
fn loaded_resnets_give_torchvisions_embeddings() {
    let Some(dir) = fixtures("loaded_resnets_give_torchvisions_embeddings") else {
        return;
    };
    let expected = TorchvisionWeights::open(dir.join("expected.safetensors")).unwrap();
    for (name, stages, channels, file, input, output) in [
        (
            "resnet18",
            4,
            3,
            "resnet18.pth",
            "input_3ch_100",
            "resnet18_4stage",
        ),
        (
            "resnet18",
            2,
            3,
            "resnet18.pth",
            "input_3ch_100",
            "resnet18_2stage",
        ),
        (
            "resnet18",
            2,
            3,
            "resnet18-2stage.safetensors",
            "input_3ch_100",
            "resnet18_2stage",
        ),
        (
            "resnet18",
            2,
            1,
            "resnet18.pth",
            "input_1ch_50",
            "resnet18_1ch_2stage",
        ),
        (
            "resnet50",
            2,
            3,
            "resnet50-2stage.safetensors",
            "input_3ch_64",
            "resnet50_2stage",
        ),
    ] {
        let encoder = config(name, stages, channels, dir.join(file))
            .init::<Flex>(&Default::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let x = tensor::<4>(&expected, input);
        let want = tensor::<2>(&expected, output).into_data();
        let tol = Tolerance::absolute(1e-4);
        encoder
            .embed(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&want, tol);
        let native = NativeEncoder::freeze(&encoder)
            .expect("a ResNet has a native path")
            .expect("the native path accepts the loaded weights");
        native
            .embed(x)
            .into_data()
            .assert_approx_eq::<f32>(&want, tol);
    }
}

/// A config that names weights is checked, file included, by `validate`.
#[test]
fn bad_weight_files_are_named() {
    let Some(dir) = fixtures("bad_weight_files_are_named") else {
        return;
    };
    let validate = |c: EncoderConfig| c.validate().unwrap_err();

    // A 4-stage model from a file holding only two stages: the first layer3 tensor is missing.
    let err = validate(config(
        "resnet18",
        4,
        3,
        dir.join("resnet18-2stage.safetensors"),
    ));
    assert!(
        matches!(&err, EncoderError::Weights(WeightsError::Missing { tensor, .. }) if tensor == "layer3.0.conv1.weight"),
        "{err}"
    );

    // A narrower stem than the file's: conv1 named with both shapes.
    let err = validate(resnet(
        "resnet18",
        ResNetConfig {
            stages: 2,
            width: 32,
            weights: Some(dir.join("resnet18.pth")),
            ..ResNetConfig::default()
        },
    ));
    let message = err.to_string();
    assert!(
        message.contains("conv1.weight")
            && message.contains("[64, 3, 7, 7]")
            && message.contains("[32, 3, 7, 7]"),
        "{message}"
    );

    // ResNet-50 weights in a ResNet-18: a Bottleneck's 1×1 conv1 where a 3×3 is needed.
    let err = validate(config(
        "resnet18",
        2,
        3,
        dir.join("resnet50-2stage.safetensors"),
    ));
    assert!(
        matches!(&err, EncoderError::Weights(WeightsError::Shape { tensor, .. }) if tensor == "layer1.0.conv1.weight"),
        "{err}"
    );

    // Not a weight file at all (this test's source), and an unknown extension.
    let not_weights = std::env::temp_dir().join("dbps-not-weights.pth");
    std::fs::write(&not_weights, "hello").unwrap();
    for path in [not_weights, Path::new(file!()).to_path_buf()] {
        let err = validate(config("resnet18", 2, 3, path.clone()));
        assert!(
            matches!(&err, EncoderError::Weights(WeightsError::NotAWeightFile { path: p, .. }) if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    // Weights for an encoder that has none.
    let identity = EncoderConfig::Identity(IdentityConfig {
        feature_dim: 8,
        projector: None,
    });
    let err = identity.with_weights(dir.join("resnet18.pth")).unwrap_err();
    assert!(matches!(err, EncoderError::WeightsUnused), "{err}");
}

/// A tensor of a kept stage that the model has no place for is named; a deeper model than the
/// file misses a named tensor.
#[test]
fn unexpected_and_missing_tensors_are_named() {
    let Some(dir) = fixtures("unexpected_and_missing_tensors_are_named") else {
        return;
    };
    // The 2-stage file plus a Bottleneck-only tensor in layer1.
    let weights = TorchvisionWeights::open(dir.join("resnet18-2stage.safetensors")).unwrap();
    let extra = [0f32; 4];
    let mut bytes: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .names()
        .into_iter()
        .map(|n| {
            let t = weights.get(n).unwrap();
            (
                n.to_string(),
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    bytes.push((
        "layer1.0.conv3.weight".into(),
        extra.iter().flat_map(|v| v.to_le_bytes()).collect(),
        vec![4],
    ));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let path = std::env::temp_dir().join("dbps-extra-tensor.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let err = config("resnet18", 2, 3, path).validate().unwrap_err();
    assert!(
        matches!(&err, EncoderError::Weights(WeightsError::Unexpected { tensor, .. }) if tensor == "layer1.0.conv3.weight"),
        "{err}"
    );

    // A ResNet-34 has a third block in layer1 that ResNet-18 weights lack.
    let err = config("resnet34", 2, 3, dir.join("resnet18.pth"))
        .validate()
        .unwrap_err();
    assert!(
        matches!(&err, EncoderError::Weights(WeightsError::Missing { tensor, .. }) if tensor == "layer1.2.conv1.weight"),
        "{err}"
    );
}

/// The 2-stage fixture written again as `.safetensors` after `edit` changed its values.
fn edited_copy(dir: &Path, file: &str, edit: impl Fn(&str, &mut Vec<f32>)) -> PathBuf {
    let weights = TorchvisionWeights::open(dir.join("resnet18-2stage.safetensors")).unwrap();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .names()
        .into_iter()
        .map(|n| {
            let t = weights.get(n).unwrap();
            let mut values = t.values.clone();
            edit(n, &mut values);
            let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.to_string(), raw, t.shape.clone())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), view.unwrap())
        })
        .collect();
    let path = std::env::temp_dir().join(format!("dbps-{}-{file}", std::process::id()));
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

/// NaN or infinite weights and negative BatchNorm variances are refused when loaded, naming
/// the tensor and the element (before: loaded without a word); a `.pth` cut short is named as
/// truncated (before: "Invalid pickle opcode").
#[test]
fn damaged_values_and_truncated_archives_are_named() {
    let Some(dir) = fixtures("damaged_values_and_truncated_archives_are_named") else {
        return;
    };
    let cases: [(&str, f32, &str); 3] = [
        ("layer1.0.conv2.weight", f32::NAN, "holds NaN at element 3"),
        ("layer2.0.bn1.bias", f32::INFINITY, "holds inf at element 3"),
        (
            "bn1.running_var",
            -0.5,
            "negative variance -0.5 at element 3",
        ),
    ];
    for (tensor, value, says) in cases {
        let path = edited_copy(&dir, "values.safetensors", |name, values| {
            if name == tensor {
                values[3] = value;
            }
        });
        // The header holds names and shapes only: values are checked as they are loaded.
        let encoder = config("resnet18", 2, 3, path.clone());
        encoder.validate().unwrap();
        let err = encoder.init::<Flex>(&Default::default()).unwrap_err();
        assert!(
            matches!(&err, EncoderError::Weights(WeightsError::Values { tensor: t, .. }) if t == tensor),
            "{err}"
        );
        assert!(err.to_string().contains(says), "{err}");
        std::fs::remove_file(path).unwrap();
    }
    // A negative running mean is an ordinary value.
    let path = edited_copy(&dir, "mean.safetensors", |name, values| {
        if name == "bn1.running_mean" {
            values[3] = -0.5;
        }
    });
    config("resnet18", 2, 3, path.clone())
        .init::<Flex>(&Default::default())
        .unwrap();
    std::fs::remove_file(path).unwrap();

    let bytes = std::fs::read(dir.join("resnet18.pth")).unwrap();
    let cut = std::env::temp_dir().join(format!("dbps-{}-cut.pth", std::process::id()));
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = config("resnet18", 2, 3, cut.clone())
        .validate()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&cut.display().to_string()) && message.contains("truncated or damaged"),
        "{message}"
    );
    std::fs::remove_file(cut).unwrap();
}
