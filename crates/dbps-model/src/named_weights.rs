//! A classifier's tensors by name: the names its checkpoints give them under `item.classifier.`
//! (`encoder.backbone.ResNet.layer1.0.bn1.gamma`, `aggregator.core.Ips.mhca.w_q.weight`), read
//! out to host memory or set from it. This is how weights from another implementation come in
//! (`dbps import-ips`, the official-step fixtures) and how per-tensor figures are named.

use std::collections::BTreeMap;

use burn::module::{Module, ParamId};
use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, TensorSnapshot};
use dbps_encoder::HostTensor;

use crate::PatchClassifier;

/// The prefix of a [`PatchClassifier`]'s tensor names inside a training checkpoint (`.mpk`).
pub const CHECKPOINT_PREFIX: &str = "item.classifier.";

/// What does not fit between a set of named tensors and a classifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamedWeightsError {
    /// The model has tensors the set lacks.
    #[error("no tensor for {}: the weights are for another architecture or config", .0.join(", "))]
    Missing(Vec<String>),
    /// The set has tensors the model has no place for.
    #[error("the model has no tensor named {}: the weights are for another architecture or config", .0.join(", "))]
    Unused(Vec<String>),
    /// A tensor's shape differs from the model's.
    #[error(
        "tensor `{name}` has shape {found:?}, the model's is {expected:?}: check the config's encoder and aggregator sizes"
    )]
    Shape {
        /// The tensor.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The given shape.
        found: Vec<usize>,
    },
}

/// Every tensor of `model` (parameters and BatchNorm running statistics), by name, with the
/// parameter id that keys its gradient.
pub fn named_tensors<B: Backend>(model: &PatchClassifier<B>) -> BTreeMap<String, NamedTensor> {
    // A training forward leaves running statistics as per-thread updates; taking the record
    // folds them into the values the module shares with its clones, as a checkpoint does.
    let _ = model.clone().into_record();
    model
        .collect(None, None, false)
        .into_iter()
        .filter_map(|snapshot| {
            let id = snapshot.tensor_id?;
            let data = snapshot.to_data().ok()?;
            let values = data.convert::<f32>().into_vec::<f32>().ok()?;
            Some((
                snapshot.full_path(),
                NamedTensor {
                    id,
                    tensor: HostTensor {
                        shape: snapshot.shape.to_vec(),
                        values,
                    },
                },
            ))
        })
        .collect()
}

/// One tensor of a model, read out.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    /// The parameter id (what [`burn::optim::GradientsParams`] is keyed by).
    pub id: ParamId,
    /// Its values.
    pub tensor: HostTensor,
}

/// `model` with every tensor taken from `tensors`, which must hold exactly the model's
/// tensors, by name and shape: anything missing, extra or misshapen is an error and the model
/// is not returned half-loaded.
pub fn load_named<B: Backend>(
    mut model: PatchClassifier<B>,
    tensors: &BTreeMap<String, HostTensor>,
) -> Result<PatchClassifier<B>, NamedWeightsError> {
    let present = named_tensors(&model);
    let missing: Vec<String> = present
        .keys()
        .filter(|name| !tensors.contains_key(*name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(NamedWeightsError::Missing(missing));
    }
    let unused: Vec<String> = tensors
        .keys()
        .filter(|name| !present.contains_key(*name))
        .cloned()
        .collect();
    if !unused.is_empty() {
        return Err(NamedWeightsError::Unused(unused));
    }
    let mut snapshots = Vec::with_capacity(tensors.len());
    for (name, own) in &present {
        let given = &tensors[name];
        if given.shape != own.tensor.shape {
            return Err(NamedWeightsError::Shape {
                name: name.clone(),
                expected: own.tensor.shape.clone(),
                found: given.shape.clone(),
            });
        }
        let data = TensorData::new(given.values.clone(), given.shape.clone());
        let path = name.split('.').map(str::to_string).collect();
        snapshots.push(TensorSnapshot::from_data(data, path, Vec::new(), own.id));
    }
    let result = model.apply(snapshots, None, None, false);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        // Names and shapes were checked above, so this is a mismatch inside burn-store.
        let missing = result.missing.into_iter().map(|(path, _)| path);
        let errors = result.errors.iter().map(ToString::to_string);
        return Err(NamedWeightsError::Missing(missing.chain(errors).collect()));
    }
    Ok(model)
}
