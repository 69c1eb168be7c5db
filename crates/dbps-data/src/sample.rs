use serde::{Deserialize, Serialize};

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training images.
    Train,
    /// Model-selection images.
    Valid,
    /// Held-out images, reported only.
    Test,
}

impl Split {
    /// All splits.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// Position in [`Split::ALL`], which indexes per-split settings such as `sizes`.
    pub fn index(self) -> usize {
        match self {
            Split::Train => 0,
            Split::Valid => 1,
            Split::Test => 2,
        }
    }

    /// A salt so that the splits draw different canvases from one seed.
    pub(crate) fn salt(self) -> u64 {
        match self {
            Split::Train => 0x9e37_79b9_7f4a_7c15,
            Split::Valid => 0xbf58_476d_1ce4_e5b9,
            Split::Test => 0x94d0_49bb_1331_11eb,
        }
    }
}

/// How a task's target is encoded and scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One class out of `classes`: cross-entropy, accuracy.
    Softmax,
    /// Any subset of `classes`: binary cross-entropy, exact-match accuracy at 0.5.
    MultiLabel,
}

/// A named classification task of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Short name, used in tables and metrics.json.
    pub name: String,
    /// Softmax or multi-label.
    pub kind: TaskKind,
    /// Number of classes.
    pub classes: usize,
    /// The classes' names in target order (folder names, `labels.csv` labels); empty when the
    /// classes are only numbered (digits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
}

impl TaskSpec {
    /// A softmax task.
    pub fn softmax(name: &str, classes: usize) -> Self {
        Self {
            name: name.into(),
            kind: TaskKind::Softmax,
            classes,
            class_names: Vec::new(),
        }
    }

    /// The same task with its classes named (`names.len()` must be `classes`).
    pub fn with_class_names(self, names: Vec<String>) -> Self {
        Self {
            class_names: names,
            ..self
        }
    }

    /// Class `index` by name when the task names its classes, else by number.
    pub fn class_name(&self, index: usize) -> String {
        self.class_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }
}

/// The ground truth of one task for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Class index.
    Class(usize),
    /// Multi-hot vector.
    MultiHot(Vec<bool>),
}

/// The pixel values of a sample, `channels × height × width`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 8-bit RGB as decoded from a photograph; kept 8-bit in memory and normalised with the
    /// ImageNet statistics only when a patch is cut (`dbps_tiling::PixelNorm::imagenet`).
    ImageNet8(Vec<u8>),
    /// Values ready for the model (the generated datasets: [0, 1]).
    F32(Vec<f32>),
    /// A whole-slide image left on disk: the model reads the patches it needs
    /// ([`crate::SlideSet`]).
    Slide(std::sync::Arc<crate::SlideImage>),
}

impl Pixels {
    /// Number of values (of a slide: at the level read, were it decoded).
    pub fn len(&self) -> usize {
        match self {
            Self::ImageNet8(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Slide(s) => {
                let [h, w] = s.size();
                s.input.channels() * h * w
            }
        }
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One image, channel-major `[C, H, W]`, with a target per task.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Pixels, `channels × height × width`, row-major.
    pub image: Pixels,
    /// Channels C.
    pub channels: usize,
    /// Height H.
    pub height: usize,
    /// Width W.
    pub width: usize,
    /// One target per task, in the dataset's task order.
    pub targets: Vec<Target>,
}
