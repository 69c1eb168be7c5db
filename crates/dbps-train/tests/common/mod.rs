//! The official-step fixtures (`../shared/fixtures/{ips,dbps}-official-step`): one training
//! step of the official code, read back and replayed through dbps's library, with the checks
//! and bounds the fixtures' READMEs give.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::module::ParamId;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use dbps_data::{TaskKind, TaskSpec};
use dbps_encoder::HostTensor;
use dbps_model::batch::{BatchImages, BatchKey, ImageBatch, TaskTargets};
use dbps_model::named_weights::{CHECKPOINT_PREFIX, load_named, named_tensors};
use dbps_model::step::{TrainedClassifier, TrainingMonitor, TrainingPass};
use dbps_tiling::{HostImages, HostPixels, PixelNorm};
use dbps_train::RunConfig;
use dbps_train::build::build_classifier;
use dbps_train::config::CheckedRun;
use serde_json::Value;

pub type Train = Autodiff<Flex>;

/// The fixture folder `variable` names, else `../shared/fixtures/<folder>`; `None` (and a
/// loud note) when it is not there.
pub fn fixture_dir(variable: &str, folder: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os(variable) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures")
            .join(folder),
    };
    if dir.join("settings.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no official step fixture at {} (set {variable})",
            dir.display()
        );
        None
    }
}

/// A safetensors file's tensors as f32 (floats) or i64 (integers), by name.
pub struct Tensors {
    /// Float tensors.
    pub floats: HashMap<String, HostTensor>,
    /// Integer tensors.
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

impl Tensors {
    pub fn open(path: &Path) -> Self {
        use safetensors::{Dtype, SafeTensors};
        let bytes = std::fs::read(path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let (mut floats, mut ints) = (HashMap::new(), HashMap::new());
        for (name, view) in file.tensors() {
            let shape = view.shape().to_vec();
            match view.dtype() {
                Dtype::F32 => {
                    let values = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    floats.insert(name, HostTensor { shape, values });
                }
                Dtype::I64 => {
                    let values = view
                        .data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    ints.insert(name, (shape, values));
                }
                other => panic!("{name}: unexpected dtype {other:?}"),
            }
        }
        Self { floats, ints }
    }

    pub fn float(&self, name: &str) -> &HostTensor {
        self.floats
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no float tensor {name}"))
    }

    pub fn int(&self, name: &str) -> &[i64] {
        &self
            .ints
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no int tensor {name}"))
            .1
    }
}

/// The fixture: settings, the model's weights under dbps's names, batch, expected results.
pub struct Fixture {
    pub settings: Value,
    pub weights: BTreeMap<String, HostTensor>,
    pub inputs: Tensors,
    pub expected: Tensors,
    pub tasks: Vec<TaskSpec>,
}

impl Fixture {
    pub fn open(dir: &Path) -> Self {
        let settings: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("settings.json")).unwrap())
                .unwrap();
        let weights = Tensors::open(&dir.join("weights.safetensors"))
            .floats
            .into_iter()
            .map(|(name, t)| {
                let name = name
                    .strip_prefix(CHECKPOINT_PREFIX)
                    .unwrap_or_else(|| panic!("{name} lacks the checkpoint prefix"))
                    .to_string();
                (name, t)
            })
            .collect();
        let tasks = settings["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| TaskSpec {
                name: t["name"].as_str().unwrap().into(),
                kind: match t["kind"].as_str().unwrap() {
                    "softmax" => TaskKind::Softmax,
                    _ => TaskKind::MultiLabel,
                },
                classes: t["classes"].as_u64().unwrap() as usize,
                class_names: Vec::new(),
            })
            .collect();
        Self {
            settings,
            weights,
            inputs: Tensors::open(&dir.join("inputs.safetensors")),
            expected: Tensors::open(&dir.join("expected.safetensors")),
            tasks,
        }
    }

    pub fn usize(&self, key: &str) -> usize {
        self.settings[key]
            .as_u64()
            .unwrap_or_else(|| panic!("settings.json: {key}")) as usize
    }

    pub fn f64(&self, path: &[&str]) -> f64 {
        path.iter()
            .fold(&self.settings, |v, k| &v[*k])
            .as_f64()
            .unwrap_or_else(|| panic!("settings.json: {path:?}"))
    }

    pub fn shape(&self, name: &str) -> &[usize] {
        &self
            .weights
            .get(name)
            .unwrap_or_else(|| panic!("weights lack {name}"))
            .shape
    }

    /// The run config of the fixture's model: the encoder and aggregator sizes read from the
    /// weights' shapes, the rest from `settings.json`.
    pub fn config(&self) -> CheckedRun {
        let conv1 = self.shape("encoder.backbone.ResNet.conv1.weight");
        let (width, in_channels) = (conv1[0], conv1[1]);
        let layer = |k: usize| {
            (0..)
                .take_while(|b| {
                    self.weights.contains_key(&format!(
                        "encoder.backbone.ResNet.layer{k}.{b}.conv1.weight"
                    ))
                })
                .count()
        };
        let stages = (1..=4).take_while(|&k| layer(k) > 0).count();
        let bottleneck = self
            .weights
            .contains_key("encoder.backbone.ResNet.layer1.0.conv3.weight");
        let arch = match (bottleneck, layer(1)) {
            (true, _) => "resnet50",
            (false, 2) => "resnet18",
            (false, _) => "resnet34",
        };
        // IPS's transformer or DBPS's dual attention, by the weights' names; DBPS in the
        // authors' selection rule (their code made the fixture).
        let dual = self.weights.contains_key("aggregator.core.Dual.query");
        let core = if dual { "Dual" } else { "Ips" };
        let query = self.shape(&format!("aggregator.core.{core}.query"));
        assert_eq!(query[0], self.tasks.len(), "one query token per task");
        let d_inner = self.shape(&format!("aggregator.core.{core}.mlp.fc1.weight"))[1];
        let method = match dual {
            true => serde_json::json!({ "name": "DBPS", "m": self.usize("M"), "s": self.usize("S"),
                "l": self.usize("L"), "aggregator": "dual_attention", "selection": "authors" }),
            false => serde_json::json!({ "name": "IPS", "m": self.usize("M"), "l": self.usize("L"),
                "aggregator": "ips" }),
        };
        let image = self.settings["image"].as_array().unwrap();
        assert_eq!(image[1], image[2], "square canvases");
        let dropout = |key: &str| self.settings[key].as_f64().unwrap();
        let json = serde_json::json!({
            "name": "ips-official-step",
            "dataset": { "synthetic_digits": {
                "canvas": image[1], "digit_height": [10, 14], "clutter": 0,
                "clutter_size": 8, "sizes": [2, 2, 2] } },
            "patch": { "size": self.usize("patch_size"), "stride": self.usize("patch_stride") },
            "encoder": { arch: { "stages": stages, "in_channels": in_channels, "width": width } },
            "aggregator": {
                "heads": self.usize("heads"), "d_k": self.usize("d_k"), "d_v": self.usize("d_v"),
                "d_inner": d_inner, "dropout": dropout("dropout"),
                "attn_dropout": dropout("attn_dropout"),
                "positional": self.settings["positional"].as_bool().unwrap() },
            "methods": [ method ],
            "train": {
                "epochs": 1, "batch_size": self.usize("batch"), "lr": self.f64(&["lr"]),
                "warmup_epochs": 0, "weight_decay": self.f64(&["adamw", "weight_decay"]),
                "shuffle_patches": self.settings["shuffle"].as_bool().unwrap(),
                "loss_eps": self.f64(&["loss_eps"]) }
        });
        RunConfig::from_json(&json.to_string(), "the fixture's settings").unwrap()
    }

    pub fn batch(&self, device: &burn::tensor::Device<Train>) -> ImageBatch<Train> {
        let images = self.inputs.float("images");
        let dims: [usize; 4] = images.shape[..].try_into().unwrap();
        let host = HostImages::new(
            HostPixels::F32(images.values.clone()),
            dims,
            PixelNorm::identity(dims[1]),
        )
        .unwrap();
        let targets = self
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| match task.kind {
                TaskKind::Softmax => TaskTargets::Classes(Tensor::<Train, 1, Int>::from_data(
                    TensorData::new(self.inputs.int(&format!("labels.{t}")).to_vec(), [dims[0]]),
                    device,
                )),
                TaskKind::MultiLabel => {
                    let hot = self.inputs.float(&format!("labels.{t}"));
                    TaskTargets::MultiHot(Tensor::from_data(
                        TensorData::new(hot.values.clone(), hot.shape.clone()),
                        device,
                    ))
                }
            })
            .collect();
        ImageBatch {
            images: BatchImages::host(host, device),
            targets,
            key: BatchKey::whole(dims[0]),
        }
    }

    /// A model of the fixture's config holding `weights`.
    pub fn model(&self, weights: &BTreeMap<String, HostTensor>) -> TrainedClassifier<Train> {
        let config = self.config();
        let device = Default::default();
        let built = build_classifier::<Train>(&config, 0, &self.tasks, &device).unwrap();
        let classifier = load_named(built, weights).unwrap();
        TrainedClassifier::new(classifier, TrainingMonitor::default())
            .with_loss(config.train.loss_form())
    }
}

/// Largest |a − b| and largest |b|.
pub fn spread(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0f64, 0f64), |(d, m), (&x, &y)| {
        (d.max(f64::from((x - y).abs())), m.max(f64::from(y.abs())))
    })
}

pub fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// The gradient of parameter `id` of shape `rank`, if the pass has one.
pub fn gradient(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Vec<f32>> {
    match rank {
        1 => grads.get::<Flex, 1>(id).map(values),
        2 => grads.get::<Flex, 2>(id).map(values),
        3 => grads.get::<Flex, 3>(id).map(values),
        4 => grads.get::<Flex, 4>(id).map(values),
        _ => panic!("rank {rank}"),
    }
}

pub fn register(grads: &mut GradientsParams, id: ParamId, t: &HostTensor) {
    let device = Default::default();
    let data = TensorData::new(t.values.clone(), t.shape.clone());
    match t.shape.len() {
        1 => grads.register::<Flex, 1>(id, Tensor::from_data(data, &device)),
        2 => grads.register::<Flex, 2>(id, Tensor::from_data(data, &device)),
        3 => grads.register::<Flex, 3>(id, Tensor::from_data(data, &device)),
        4 => grads.register::<Flex, 4>(id, Tensor::from_data(data, &device)),
        rank => panic!("rank {rank}"),
    }
}

pub fn optimizer_step(
    fixture: &Fixture,
    model: TrainedClassifier<Train>,
    grads: GradientsParams,
) -> BTreeMap<String, HostTensor> {
    let config = fixture.config();
    let mut optimizer = config
        .train
        .adamw()
        .init::<Train, TrainedClassifier<Train>>();
    let updated = optimizer.step(fixture.f64(&["lr"]), model, grads);
    named_tensors(&updated.classifier)
        .into_iter()
        .map(|(name, t)| (name, t.tensor))
        .collect()
}

/// One dbps training step from the fixture's weights and batch, checked against the
/// official one: picks (salient in order, sub-salient as a set per image), loss, logits, every
/// gradient, every parameter after AdamW and the running statistics.
pub fn check_training_step(fixture: &Fixture) {
    let device = Default::default();
    let model = fixture.model(&fixture.weights);
    let ids: BTreeMap<String, (ParamId, usize)> = named_tensors(&model.classifier)
        .into_iter()
        .map(|(name, t)| (name, (t.id, t.tensor.shape.len())))
        .collect();

    let TrainingPass {
        grads,
        stats,
        logits,
        salient,
        sub_salient,
    } = model.training_pass(fixture.batch(&device)).unwrap();

    // Selection: the same patches in the same order (decreasing score).
    let picked: Vec<i64> = salient.into_data().convert::<i64>().into_vec().unwrap();
    assert_eq!(picked, fixture.expected.int("selected"), "selected patches");
    if fixture.expected.ints.contains_key("selected_sub") {
        let want = fixture.expected.int("selected_sub");
        let got: Vec<i64> = sub_salient
            .expect("sub-salient patches")
            .into_data()
            .convert::<i64>()
            .into_vec()
            .unwrap();
        let s = fixture.usize("S");
        let sets = |v: &[i64]| -> Vec<Vec<i64>> {
            v.chunks(s)
                .map(|c| {
                    let mut c = c.to_vec();
                    c.sort_unstable();
                    c
                })
                .collect()
        };
        assert_eq!(sets(&got), sets(want), "sub-salient patches (as sets)");
    }

    // Loss and logits.
    let loss = f64::from(fixture.expected.float("loss").values[0]);
    assert!(
        (stats.loss - loss).abs() <= 1e-5,
        "loss {} vs official {loss}",
        stats.loss
    );
    let mut worst_logit = 0f64;
    for (t, l) in logits.into_iter().enumerate() {
        let want = fixture.expected.float(&format!("logits.{t}"));
        let (d, _) = spread(&values(l), &want.values);
        assert!(d <= 2e-5, "logits.{t}: max difference {d:e}");
        worst_logit = worst_logit.max(d);
    }
    eprintln!(
        "loss {:.1e} from the official, logits {worst_logit:.1e}",
        (stats.loss - loss).abs()
    );

    // Gradients, per tensor, scaled by the official tensor's largest magnitude.
    let mut checked = 0;
    let mut worst = (0f64, String::new());
    for (name, want) in &fixture.expected.floats {
        let Some(param) = name.strip_prefix("grad.") else {
            continue;
        };
        let param = param.strip_prefix(CHECKPOINT_PREFIX).unwrap_or(param);
        let &(id, rank) = ids
            .get(param)
            .unwrap_or_else(|| panic!("no parameter {param}"));
        let got = gradient(&grads, id, rank).unwrap_or_else(|| panic!("no gradient for {param}"));
        let (d, m) = spread(&got, &want.values);
        let scaled = d / m.max(f64::MIN_POSITIVE);
        assert!(scaled <= 1e-4, "gradient of {param}: {scaled:e} scaled");
        if scaled > worst.0 {
            worst = (scaled, param.to_string());
        }
        checked += 1;
    }
    assert_eq!(checked, grads.len(), "every parameter's gradient compared");
    eprintln!(
        "{checked} gradients; worst {:.1e} scaled ({})",
        worst.0, worst.1
    );

    // Parameters after AdamW, end to end, and the running statistics of the training forward.
    let grad_of = |name: &str| {
        fixture
            .expected
            .float(&format!("grad.{CHECKPOINT_PREFIX}{name}"))
    };
    let lr = fixture.f64(&["lr"]);
    let after = optimizer_step(fixture, model, grads);
    let (mut worst_running, mut worst_param) = (0f64, 0f64);
    for (name, got) in &after {
        let want = fixture
            .expected
            .float(&format!("after.{CHECKPOINT_PREFIX}{name}"));
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            let (d, m) = spread(&got.values, &want.values);
            assert!(d / m <= 1e-5, "{name} after the step: {:e} scaled", d / m);
            worst_running = worst_running.max(d / m);
            continue;
        }
        let g = &grad_of(name).values;
        let g_max = g.iter().fold(0f32, |m, x| m.max(x.abs()));
        for ((x, y), gi) in got.values.iter().zip(&want.values).zip(g) {
            let bound = if gi.abs() >= 1e-3 * g_max {
                2e-6
            } else {
                2.0 * lr + 1e-6
            };
            assert!(
                f64::from((x - y).abs()) <= bound,
                "{name} after the step: {x} vs official {y} (gradient {gi})"
            );
            if gi.abs() >= 1e-3 * g_max {
                worst_param = worst_param.max(f64::from((x - y).abs()));
            }
        }
    }
    eprintln!(
        "after the step: parameters {worst_param:.1e} (where |g| ≥ 1e-3 max), running statistics {worst_running:.1e} scaled"
    );
}

/// dbps's AdamW applied to the fixture's own weights and gradients reproduces the official
/// parameters after the step to 1e-6 · max(|p|, lr): the optimizer alone, apart from any
/// difference in the gradients.
pub fn check_adamw(fixture: &Fixture) {
    let model = fixture.model(&fixture.weights);
    let mut grads = GradientsParams::new();
    for (name, t) in named_tensors(&model.classifier) {
        if let Some(g) = fixture
            .expected
            .floats
            .get(&format!("grad.{CHECKPOINT_PREFIX}{name}"))
        {
            register(&mut grads, t.id, g);
        }
    }
    let lr = fixture.f64(&["lr"]);
    let after = optimizer_step(fixture, model, grads);
    let mut compared = 0;
    for (name, got) in &after {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let want = fixture
            .expected
            .float(&format!("after.{CHECKPOINT_PREFIX}{name}"));
        for (x, y) in got.values.iter().zip(&want.values) {
            let bound = 1e-6 * f64::from(x.abs().max(y.abs())).max(lr);
            assert!(
                f64::from((x - y).abs()) <= bound,
                "{name}: {x} vs official {y}"
            );
            compared += 1;
        }
    }
    assert!(compared > 0);
}
