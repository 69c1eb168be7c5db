//! torchvision ResNet weights from a local file: a state dict saved with `torch.save` (`.pth`,
//! `.pt`, read by burn-store's PyTorch reader) or a `.safetensors` file.
//!
//! Names follow torchvision exactly — `conv1.weight`, `bn1.{weight,bias,running_mean,
//! running_var}`, `layer2.0.conv1.weight`, `layer2.0.downsample.0.weight` (the 1×1 convolution),
//! `layer2.0.downsample.1.*` (its BatchNorm) — with no remapping: dbps's modules carry the same
//! names (BatchNorm's `weight`/`bias` are its γ/β). `fc.*`, `num_batches_tracked` and the layers a
//! truncated model lacks (`layer3`, `layer4` of a 2-stage ResNet) are ignored. A model with one
//! input channel takes conv1 as the RGB kernel summed over its three input channels (what a
//! grey image replicated to RGB would see).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::batchnorm::BatchNorm2d;
use crate::pth_archive::check_pth_archive;
use crate::{Downsample, ResNet, ResNetBlock};

/// What can be wrong with a weight file or between it and the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    /// The file cannot be read as a state dict.
    #[error(
        "cannot read weight file {path}: {reason}; give a torchvision state dict saved with torch.save (.pth, .pt) or a .safetensors file"
    )]
    NotAWeightFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A tensor the model needs is not in the file.
    #[error(
        "weight file {path} has no tensor `{tensor}` (shape {expected:?}), which this model needs: use the state dict of the same torchvision architecture (the `encoder` arm, resnet18/34/50, and its `stages`)"
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// torchvision name of the tensor.
        tensor: String,
        /// Shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor's shape differs from the model's.
    #[error(
        "tensor `{tensor}` in {path} has shape {found:?}, this model needs {expected:?}: check the `encoder` arm (resnet18/34/50) and its `width` and `in_channels` against the file"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// torchvision name of the tensor.
        tensor: String,
        /// Shape the model needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor holds values no trained network has: NaN or infinite weights, a negative
    /// BatchNorm variance.
    #[error(
        "tensor `{tensor}` in {path} {problem}: the file is damaged or was saved from a diverged training; use the original weights"
    )]
    Values {
        /// The file.
        path: PathBuf,
        /// torchvision name of the tensor.
        tensor: String,
        /// What is wrong, with the first offending element.
        problem: String,
    },
    /// The file holds a tensor of a kept stage that the model has no place for.
    #[error(
        "weight file {path} holds `{tensor}`, which this model has no place for: the file is for another architecture (check the `encoder` arm: resnet18, resnet34 or resnet50)"
    )]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// torchvision name of the tensor.
        tensor: String,
    },
}

/// One tensor of a weight file, as f32 on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// The floating-point tensors of a state dict, by name: their values, or (from
/// [`TorchvisionWeights::header`]) their shapes alone.
#[derive(Debug, Clone)]
pub struct TorchvisionWeights {
    path: PathBuf,
    tensors: HashMap<String, HostTensor>,
    /// Shapes only: every `values` is empty.
    header_only: bool,
}

impl TorchvisionWeights {
    /// Reads `path` by its extension: `.safetensors`, or `.pth` / `.pt` / `.bin` (PyTorch).
    /// Integer tensors (`num_batches_tracked`) are skipped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref().to_path_buf();
        let fail = |reason: String| WeightsError::NotAWeightFile {
            path: path.clone(),
            reason,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let tensors = match extension.as_deref() {
            Some("safetensors") => read_safetensors(&path).map_err(fail)?,
            Some("pth" | "pt" | "bin") => read_pytorch(&path).map_err(fail)?,
            _ => {
                return Err(fail(
                    "the name ends neither in .safetensors nor in .pth/.pt/.bin".into(),
                ));
            }
        };
        if tensors.is_empty() {
            return Err(fail("it holds no floating-point tensor".into()));
        }
        Ok(Self {
            path,
            tensors,
            header_only: false,
        })
    }

    /// The names and shapes of `path`'s floating-point tensors, read from the file's header
    /// alone (a safetensors file's JSON header; a torch.save archive's pickle and directory,
    /// checked as [`TorchvisionWeights::open`] checks them): no value is read, so a weight
    /// file is checked against a model in milliseconds, before any run starts. Loading such
    /// weights checks names and shapes only.
    pub fn header(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref().to_path_buf();
        let fail = |reason: String| WeightsError::NotAWeightFile {
            path: path.clone(),
            reason,
        };
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let shapes = match extension.as_deref() {
            Some("safetensors") => safetensors_shapes(&path).map_err(fail)?,
            Some("pth" | "pt" | "bin") => pytorch_shapes(&path).map_err(fail)?,
            _ => {
                return Err(fail(
                    "the name ends neither in .safetensors nor in .pth/.pt/.bin".into(),
                ));
            }
        };
        if shapes.is_empty() {
            return Err(fail("it holds no floating-point tensor".into()));
        }
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let tensor = HostTensor {
                    shape,
                    values: Vec::new(),
                };
                (name, tensor)
            })
            .collect();
        Ok(Self {
            path,
            tensors,
            header_only: true,
        })
    }

    /// The file these weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor called `name`, if the file has it.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

fn read_safetensors(path: &Path) -> Result<HashMap<String, HostTensor>, String> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL => continue,
            other => return Err(format!("tensor `{name}` is {other:?}; save it as float32")),
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// The largest safetensors header read (a ResNet-50's is about 30 KB).
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

/// Float tensors' shapes from a safetensors file's header; the dtypes
/// [`read_safetensors`] refuses are refused here too.
fn safetensors_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size)
        .map_err(|_| "it is shorter than a safetensors header".to_string())?;
    let size = u64::from_le_bytes(size);
    if size > len.saturating_sub(8) || size > MAX_SAFETENSORS_HEADER {
        return Err(format!(
            "its header declares {size} bytes in a file of {len}: it is not a safetensors file, or it is damaged"
        ));
    }
    let mut header = vec![0u8; size as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| format!("its header is not JSON ({e})"))?;
    let mut out = Vec::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry["dtype"].as_str().unwrap_or("");
        match dtype {
            "F32" | "F64" => {}
            "I64" | "I32" | "U8" | "BOOL" => continue,
            other => return Err(format!("tensor `{name}` is {other}; save it as float32")),
        }
        let shape = entry["shape"]
            .as_array()
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
            })
            .ok_or_else(|| format!("tensor `{name}` has no shape in the header"))?;
        out.push((name, shape));
    }
    Ok(out)
}

/// Float tensors' shapes from a torch.save archive's pickle, after checking every tensor lies
/// inside its storage.
fn pytorch_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let tensors = check_pth_archive(std::io::BufReader::new(file), len)?;
    tensors
        .into_iter()
        .filter(|t| t.float)
        .map(|t| {
            let shape = t
                .sizes
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| format!("tensor `{}` declares a dimension past usize", t.name))?;
            Ok((t.name, shape))
        })
        .collect()
}

fn read_pytorch(path: &Path) -> Result<HashMap<String, HostTensor>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    check_pth_archive(std::io::BufReader::new(file), len)?;
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for (name, snapshot) in reader.into_tensors() {
        if !snapshot.dtype.is_float() {
            continue;
        }
        let data = snapshot
            .to_data()
            .map_err(|e| format!("tensor `{name}`: {e:?}"))?;
        let values = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| format!("tensor `{name}`: {e:?}"))?;
        out.insert(
            name,
            HostTensor {
                shape: snapshot.shape.to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// Walks a model's parameters by torchvision name, taking each from the file.
struct Loader<'a> {
    weights: &'a TorchvisionWeights,
    /// Names taken so far.
    used: Vec<String>,
}

impl Loader<'_> {
    /// The values of `name`, checked against `expected`; `None` for weights read from a
    /// header, which have shapes only.
    fn take(&mut self, name: &str, expected: &[usize]) -> Result<Option<Vec<f32>>, WeightsError> {
        let tensor = self
            .weights
            .get(name)
            .ok_or_else(|| WeightsError::Missing {
                path: self.weights.path.clone(),
                tensor: name.into(),
                expected: expected.to_vec(),
            })?;
        if tensor.shape != expected {
            return Err(WeightsError::Shape {
                path: self.weights.path.clone(),
                tensor: name.into(),
                expected: expected.to_vec(),
                found: tensor.shape.clone(),
            });
        }
        if self.weights.header_only {
            self.used.push(name.into());
            return Ok(None);
        }
        let bad = |problem: String| WeightsError::Values {
            path: self.weights.path.clone(),
            tensor: name.into(),
            problem,
        };
        if let Some((i, v)) = tensor
            .values
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(bad(format!("holds {v} at element {i}")));
        }
        if name.ends_with("running_var")
            && let Some((i, v)) = tensor.values.iter().enumerate().find(|(_, v)| **v < 0.0)
        {
            return Err(bad(format!(
                "holds the negative variance {v} at element {i}"
            )));
        }
        self.used.push(name.into());
        Ok(Some(tensor.values.clone()))
    }

    fn conv<B: Backend>(&mut self, conv: Conv2d<B>, name: &str) -> Result<Conv2d<B>, WeightsError> {
        // The shape a lazily initialised parameter will have, without initialising it.
        let dims = conv.weight.lazy_shape().to_vec();
        Ok(match self.take(&format!("{name}.weight"), &dims)? {
            Some(values) => with_weight(conv, values),
            None => conv,
        })
    }

    /// conv1 of a model with `c` input channels: the file's kernel as it is for c = 3, summed
    /// over its RGB channels for c = 1.
    fn stem<B: Backend>(&mut self, conv: Conv2d<B>) -> Result<Conv2d<B>, WeightsError> {
        let [c_out, c_in, kh, kw] = conv.weight.lazy_shape().dims::<4>();
        if c_in != 1 {
            return self.conv(conv, "conv1");
        }
        let Some(rgb) = self.take("conv1.weight", &[c_out, 3, kh, kw])? else {
            return Ok(conv);
        };
        let taps = kh * kw;
        let summed: Vec<f32> = (0..c_out * taps)
            .map(|i| {
                let (co, tap) = (i / taps, i % taps);
                (0..3).map(|ci| rgb[(co * 3 + ci) * taps + tap]).sum()
            })
            .collect();
        Ok(with_weight(conv, summed))
    }

    fn bn<B: Backend>(
        &mut self,
        bn: BatchNorm2d<B>,
        name: &str,
    ) -> Result<BatchNorm2d<B>, WeightsError> {
        let dims = bn.gamma.lazy_shape().to_vec();
        let mut vector = |field: &str| self.take(&format!("{name}.{field}"), &dims);
        let (Some(gamma), Some(beta), Some(mean), Some(var)) = (
            vector("weight")?,
            vector("bias")?,
            vector("running_mean")?,
            vector("running_var")?,
        ) else {
            return Ok(bn);
        };
        let device = bn.gamma.device();
        let vector = |values: Vec<f32>| -> Tensor<B, 1> {
            Tensor::from_data(TensorData::new(values, dims.clone()), &device)
        };
        let (gamma, beta, mean, var) = (vector(gamma), vector(beta), vector(mean), vector(var));
        Ok(BatchNorm2d {
            gamma: Param::from_tensor(gamma),
            beta: Param::from_tensor(beta),
            running_mean: RunningState::new(mean),
            running_var: RunningState::new(var),
            ..bn
        })
    }

    fn block<B: Backend>(
        &mut self,
        block: ResNetBlock<B>,
        name: &str,
    ) -> Result<ResNetBlock<B>, WeightsError> {
        Ok(ResNetBlock {
            conv1: self.conv(block.conv1, &format!("{name}.conv1"))?,
            bn1: self.bn(block.bn1, &format!("{name}.bn1"))?,
            conv2: self.conv(block.conv2, &format!("{name}.conv2"))?,
            bn2: self.bn(block.bn2, &format!("{name}.bn2"))?,
            conv3: block
                .conv3
                .map(|c| self.conv(c, &format!("{name}.conv3")))
                .transpose()?,
            bn3: block
                .bn3
                .map(|b| self.bn(b, &format!("{name}.bn3")))
                .transpose()?,
            downsample: block
                .downsample
                .map(|d| -> Result<_, WeightsError> {
                    Ok(Downsample {
                        conv: self.conv(d.conv, &format!("{name}.downsample.0"))?,
                        bn: self.bn(d.bn, &format!("{name}.downsample.1"))?,
                    })
                })
                .transpose()?,
        })
    }

    fn layer<B: Backend>(
        &mut self,
        blocks: Vec<ResNetBlock<B>>,
        name: &str,
    ) -> Result<Vec<ResNetBlock<B>>, WeightsError> {
        blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| self.block(b, &format!("{name}.{i}")))
            .collect()
    }

    /// Fails on a tensor of a kept part (`conv1`, `bn1`, a kept `layerK`) that nothing took.
    fn finish(&self, kept_layers: usize) -> Result<(), WeightsError> {
        let kept = |name: &str| {
            let head = name.split('.').next().unwrap_or("");
            matches!(head, "conv1" | "bn1")
                || (1..=kept_layers).any(|k| head == format!("layer{k}"))
        };
        let mut names = self.weights.names();
        names.retain(|n| kept(n) && !self.used.iter().any(|u| u == n));
        match names.first() {
            Some(name) => Err(WeightsError::Unexpected {
                path: self.weights.path.clone(),
                tensor: (*name).into(),
            }),
            None => Ok(()),
        }
    }
}

/// `conv` with its kernel replaced by `values`, laid out in the kernel's own shape.
fn with_weight<B: Backend>(conv: Conv2d<B>, values: Vec<f32>) -> Conv2d<B> {
    let weight = Tensor::from_data(
        TensorData::new(values, conv.weight.dims()),
        &conv.weight.device(),
    );
    Conv2d {
        weight: Param::from_tensor(weight),
        ..conv
    }
}

impl<B: Backend> ResNet<B> {
    /// This ResNet with every parameter and BatchNorm statistic taken from `weights`
    /// (torchvision names; see the module doc for what is ignored and how one input channel is
    /// handled). Fails, naming the tensor, on a missing, misshaped or unexpected one.
    pub fn load_torchvision(self, weights: &TorchvisionWeights) -> Result<Self, WeightsError> {
        let mut loader = Loader {
            weights,
            used: Vec::new(),
        };
        let kept_layers = [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .iter()
            .take_while(|l| !l.is_empty())
            .count();
        let model = ResNet {
            conv1: loader.stem(self.conv1)?,
            bn1: loader.bn(self.bn1, "bn1")?,
            layer1: loader.layer(self.layer1, "layer1")?,
            layer2: loader.layer(self.layer2, "layer2")?,
            layer3: loader.layer(self.layer3, "layer3")?,
            layer4: loader.layer(self.layer4, "layer4")?,
            ..self
        };
        loader.finish(kept_layers)?;
        Ok(model)
    }
}
