//! The settings the bench measures: the paper's geometries and methods (method.md §11).

use dbps_data::{DatasetConfig, ImageFolderConfig, MegapixelMnist, MegapixelMnistConfig, TaskSpec};
use dbps_encoder::{EncoderConfig, ResNetConfig};
use dbps_mil::{AggregatorKind, AttentionSettings};
use dbps_model::classifier::SelectionEngine;
use dbps_train::RunConfig;
use dbps_train::config::{MethodConfig, PatchConfig, TrainConfig};

/// An image size with its patch grid, encoder and attention settings.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Short name used in results.
    pub name: String,
    /// Image rows.
    pub height: usize,
    /// Image columns.
    pub width: usize,
    /// Image channels.
    pub channels: usize,
    /// Patch side (stride = patch).
    pub patch: usize,
    /// The encoder.
    pub encoder: EncoderConfig,
    /// The cross-attention settings.
    pub attention: AttentionSettings,
    /// The tasks (one query token each).
    pub tasks: Vec<TaskSpec>,
    /// Bags of features (`1 × width` each): the batch keeps each image as its own bag and the
    /// model selects bag by bag, as it does for real feature bags.
    pub bags: bool,
    /// The dataset whose images have this geometry: what a run config of it names (the bench
    /// feeds generated batches; the dataset is never opened).
    pub dataset: DatasetConfig,
}

impl Geometry {
    /// Megapixel MNIST (IPS protocol): `side`² canvas, 50² patches, ResNet-18 2 stages 1 channel,
    /// D = 128, H = 8, D_k = 16, D_inner = 512, positions, four tasks. `side` = 1500 gives N = 900.
    pub fn megapixel_mnist(side: usize) -> Self {
        Self {
            name: format!("megapixel MNIST {side}²"),
            height: side,
            width: side,
            channels: 1,
            patch: 50,
            encoder: EncoderConfig::Resnet18(
                ResNetConfig {
                    stages: 2,
                    in_channels: 1,
                    ..ResNetConfig::default()
                }
                .into(),
            ),
            attention: AttentionSettings {
                positional: true,
                ..AttentionSettings::default()
            },
            tasks: MegapixelMnist::tasks(),
            bags: false,
            dataset: DatasetConfig::MegapixelMnist(MegapixelMnistConfig {
                canvas: side,
                ..MegapixelMnistConfig::default()
            }),
        }
    }

    /// CQU-BPDD: 1200×900 RGB, 100² patches (N = 108), ResNet-18 4 stages, D = 512, H = 8,
    /// D_k = D_v = 64, D_inner = 2048, one 7-class task.
    pub fn cqu() -> Self {
        Self {
            name: "CQU-BPDD 1200×900".into(),
            height: 900,
            width: 1200,
            channels: 3,
            patch: 100,
            encoder: EncoderConfig::default(),
            attention: AttentionSettings {
                d_k: 64,
                d_v: 64,
                d_inner: 2048,
                ..AttentionSettings::default()
            },
            tasks: vec![TaskSpec::softmax("distress", 7)],
            bags: false,
            dataset: DatasetConfig::ImageFolder(
                serde_json::from_value::<ImageFolderConfig>(serde_json::json!({
                    "root": "CQU-BPDD", "height": 900, "width": 1200
                }))
                .expect("an image folder's settings with their defaults"),
            ),
        }
    }

    /// Patches per image N.
    /// The run config of `method` on this geometry, selection on `engine`, seed 0 with patch
    /// shuffling (what the bench has always measured).
    pub fn run_config(&self, method: &Method, engine: SelectionEngine) -> RunConfig {
        let count = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        RunConfig {
            name: "bench".into(),
            output_dir: None,
            dataset: self.dataset.clone(),
            patch: PatchConfig {
                size: self.patch,
                stride: None,
                remainder: Default::default(),
                mpp: None,
            },
            encoder: self.encoder.clone(),
            aggregator: self.attention.clone(),
            methods: vec![MethodConfig {
                name: method.name.clone(),
                m: count(method.m),
                m_eval: Some(count(method.m_eval)),
                s: count(method.s),
                l: count(method.l),
                drop: method.drop,
                aggregator: method.aggregator,
                selection: Default::default(),
            }],
            train: TrainConfig {
                shuffle_patches: true,
                seed: 0,
                selection_engine: engine,
                ..TrainConfig::default()
            },
        }
    }

    pub fn patches(&self) -> usize {
        (self.height / self.patch) * (self.width / self.patch)
    }
}

/// M, S, L, r and the aggregator of one method.
#[derive(Debug, Clone)]
pub struct Method {
    /// Name used in results.
    pub name: String,
    /// Salient patches M.
    pub m: usize,
    /// Salient patches M′ at evaluation.
    pub m_eval: usize,
    /// Sub-salient patches S (0: IPS).
    pub s: usize,
    /// Patches per iteration L.
    pub l: usize,
    /// Patch-drop ratio r.
    pub drop: f64,
    /// Which aggregator.
    pub aggregator: AggregatorKind,
}

impl Method {
    /// IPS with M salient patches, L per iteration.
    pub fn ips(m: usize, l: usize) -> Self {
        Self {
            name: format!("IPS M={m}"),
            m,
            m_eval: m,
            s: 0,
            l,
            drop: 0.0,
            aggregator: AggregatorKind::Ips,
        }
    }

    /// DBPS with M salient and S sub-salient patches, dual attention, patch drop r.
    pub fn dbps(m: usize, s: usize, l: usize, drop: f64) -> Self {
        let name = if drop > 0.0 {
            format!("DBPS M={m} S={s} r={drop}")
        } else {
            format!("DBPS M={m} S={s}")
        };
        Self {
            name,
            m,
            m_eval: m,
            s,
            l,
            drop,
            aggregator: AggregatorKind::DualAttention,
        }
    }
}
