//! The official IPS code's state dict (`IPSNet`, github.com/benbergner/ips) under dbps's
//! names and layouts: what `dbps import-ips` and the official-step test load.
//!
//! | official | dbps |
//! |---|---|
//! | `encoder.0` (conv1), `encoder.1` (bn1) | `encoder.backbone.ResNet.conv1`, `….bn1` |
//! | `encoder.4`…`encoder.7`, block b | `encoder.backbone.ResNet.layer1`…`layer4`, block b |
//! | `….downsample.0`, `….downsample.1` | `….downsample.conv`, `….downsample.bn` |
//! | BatchNorm / LayerNorm `weight`, `bias` | `gamma`, `beta` |
//! | `transf.crs_attn.q` `[1, T, D]` | `aggregator.core.Ips.query` `[T, D]` |
//! | `transf.crs_attn.{q_w,k_w,v_w,fc}` | `aggregator.core.Ips.mhca.{w_q,w_k,w_v,w_o}`, transposed |
//! | `transf.crs_attn.layer_norm`, `transf.mlp.layer_norm` | `….ln1`, `….ln2` |
//! | `transf.mlp.w_1`, `transf.mlp.w_2` | `….mlp.fc1`, `….mlp.fc2`, weights transposed |
//! | `output_layers.<task>.0` | `aggregator.heads.<index of the task>`, weight transposed |
//!
//! PyTorch's `Linear` stores `[out, in]`, Burn's `[in, out]`. `num_batches_tracked` is not a
//! weight (the reader skips integer tensors).

use std::collections::BTreeMap;

use dbps_data::TaskSpec;
use dbps_encoder::{HostTensor, TorchvisionWeights};

/// What cannot be mapped from an official state dict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfficialImportError {
    /// Tensors with no dbps counterpart.
    #[error(
        "no dbps counterpart for {}: the file is not an official IPSNet state dict with a ResNet encoder and the cross-attention transformer, or its output layers are not named after the config's tasks ({})",
        .names.join(", "), .tasks.join(", ")
    )]
    Unmapped {
        /// The official names.
        names: Vec<String>,
        /// The config's task names, which the output layers must carry.
        tasks: Vec<String>,
    },
    /// A tensor that should be a matrix (or the query tokens) has another rank.
    #[error("tensor `{name}` has shape {shape:?}, expected {expected}")]
    Rank {
        /// The official name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What was expected.
        expected: &'static str,
    },
}

/// How a tensor's values move from the official layout to dbps's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    AsIs,
    /// A `Linear` weight: `[out, in]` → `[in, out]`.
    Transposed,
    /// The query tokens: `[1, T, D]` → `[T, D]`.
    QueryTokens,
}

const RESNET: &str = "encoder.backbone.ResNet";
const IPS: &str = "aggregator.core.Ips";

/// BatchNorm's and LayerNorm's parameter names: `weight`/`bias` are γ/β.
fn norm_field(field: &str) -> Option<&'static str> {
    match field {
        "weight" => Some("gamma"),
        "bias" => Some("beta"),
        "running_mean" => Some("running_mean"),
        "running_var" => Some("running_var"),
        _ => None,
    }
}

/// The dbps name of a tensor inside a residual block (`conv2.weight`, `bn1.bias`,
/// `downsample.1.running_var`).
fn block_tensor(rest: &str) -> Option<String> {
    let (module, field) = rest.rsplit_once('.')?;
    if module.starts_with("conv") && field == "weight" {
        return Some(rest.to_string());
    }
    if module.starts_with("bn") {
        return Some(format!("{module}.{}", norm_field(field)?));
    }
    match (module, field) {
        ("downsample.0", "weight") => Some("downsample.conv.weight".into()),
        ("downsample.1", _) => Some(format!("downsample.bn.{}", norm_field(field)?)),
        _ => None,
    }
}

/// The dbps name and layout of the official tensor `name`, if it has one; `tasks` name the
/// output layers.
fn dbps_name(name: &str, tasks: &[TaskSpec]) -> Option<(String, Layout)> {
    use Layout::*;
    if let Some(rest) = name.strip_prefix("encoder.") {
        let (child, rest) = rest.split_once('.')?;
        return match child {
            "0" if rest == "weight" => Some((format!("{RESNET}.conv1.weight"), AsIs)),
            "1" => Some((format!("{RESNET}.bn1.{}", norm_field(rest)?), AsIs)),
            "4" | "5" | "6" | "7" => {
                let layer = child.parse::<usize>().ok()? - 3;
                let (block, rest) = rest.split_once('.')?;
                block.parse::<usize>().ok()?;
                Some((
                    format!("{RESNET}.layer{layer}.{block}.{}", block_tensor(rest)?),
                    AsIs,
                ))
            }
            _ => None,
        };
    }
    if let Some(rest) = name.strip_prefix("transf.") {
        let mapped = match rest {
            "crs_attn.q" => ("query".to_string(), QueryTokens),
            "crs_attn.q_w.weight" => ("mhca.w_q.weight".into(), Transposed),
            "crs_attn.k_w.weight" => ("mhca.w_k.weight".into(), Transposed),
            "crs_attn.v_w.weight" => ("mhca.w_v.weight".into(), Transposed),
            "crs_attn.fc.weight" => ("mhca.w_o.weight".into(), Transposed),
            "mlp.w_1.weight" => ("mlp.fc1.weight".into(), Transposed),
            "mlp.w_1.bias" => ("mlp.fc1.bias".into(), AsIs),
            "mlp.w_2.weight" => ("mlp.fc2.weight".into(), Transposed),
            "mlp.w_2.bias" => ("mlp.fc2.bias".into(), AsIs),
            _ => {
                let (norm, field) = rest.rsplit_once('.')?;
                let ln = match norm {
                    "crs_attn.layer_norm" => "ln1",
                    "mlp.layer_norm" => "ln2",
                    _ => return None,
                };
                (format!("{ln}.{}", norm_field(field)?), AsIs)
            }
        };
        return Some((format!("{IPS}.{}", mapped.0), mapped.1));
    }
    let rest = name.strip_prefix("output_layers.")?;
    let (task, field) = rest.split_once(".0.")?;
    // One head and one task need no matching names (the official configs name their task
    // freely); several are matched by name.
    let index = match tasks {
        [_] => 0,
        _ => tasks.iter().position(|t| t.name == task)?,
    };
    match field {
        "weight" => Some((format!("aggregator.heads.{index}.weight"), Transposed)),
        "bias" => Some((format!("aggregator.heads.{index}.bias"), AsIs)),
        _ => None,
    }
}

/// Moves one tensor into dbps's layout.
fn relayout(
    name: &str,
    tensor: &HostTensor,
    layout: Layout,
) -> Result<HostTensor, OfficialImportError> {
    let rank = |expected| OfficialImportError::Rank {
        name: name.to_string(),
        shape: tensor.shape.clone(),
        expected,
    };
    match layout {
        Layout::AsIs => Ok(tensor.clone()),
        Layout::QueryTokens => match tensor.shape[..] {
            [1, t, d] => Ok(HostTensor {
                shape: vec![t, d],
                values: tensor.values.clone(),
            }),
            _ => Err(rank("[1, tokens, D]")),
        },
        Layout::Transposed => match tensor.shape[..] {
            [rows, cols] => {
                let mut values = vec![0f32; rows * cols];
                for (r, row) in tensor.values.chunks_exact(cols).enumerate() {
                    for (c, &v) in row.iter().enumerate() {
                        values[c * rows + r] = v;
                    }
                }
                Ok(HostTensor {
                    shape: vec![cols, rows],
                    values,
                })
            }
            _ => Err(rank("[out, in]")),
        },
    }
}

/// Every tensor of an official IPSNet state dict under its dbps name, in dbps's layout,
/// ready for [`crate::named_weights::load_named`]. Names without a counterpart are an error listing them.
pub fn from_official_ips(
    state: &TorchvisionWeights,
    tasks: &[TaskSpec],
) -> Result<BTreeMap<String, HostTensor>, OfficialImportError> {
    let mut mapped = BTreeMap::new();
    let mut unmapped = Vec::new();
    for name in state.names() {
        let Some(tensor) = state.get(name) else {
            continue;
        };
        match dbps_name(name, tasks) {
            Some((dbps, layout)) => {
                mapped.insert(dbps, relayout(name, tensor, layout)?);
            }
            None => unmapped.push(name.to_string()),
        }
    }
    if !unmapped.is_empty() {
        return Err(OfficialImportError::Unmapped {
            names: unmapped,
            tasks: tasks.iter().map(|t| t.name.clone()).collect(),
        });
    }
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> Vec<TaskSpec> {
        vec![
            TaskSpec::softmax("majority", 10),
            TaskSpec::softmax("max", 10),
        ]
    }

    #[test]
    fn names_follow_the_table() {
        let t = tasks();
        let name = |n: &str| dbps_name(n, &t).map(|(name, _)| name);
        assert_eq!(
            name("encoder.0.weight").unwrap(),
            format!("{RESNET}.conv1.weight")
        );
        assert_eq!(
            name("encoder.1.bias").unwrap(),
            format!("{RESNET}.bn1.beta")
        );
        assert_eq!(
            name("encoder.5.0.downsample.1.running_var").unwrap(),
            format!("{RESNET}.layer2.0.downsample.bn.running_var")
        );
        assert_eq!(
            name("encoder.7.2.conv3.weight").unwrap(),
            format!("{RESNET}.layer4.2.conv3.weight")
        );
        assert_eq!(
            name("transf.mlp.layer_norm.weight").unwrap(),
            format!("{IPS}.ln2.gamma")
        );
        assert_eq!(
            name("output_layers.max.0.bias").unwrap(),
            "aggregator.heads.1.bias"
        );
        assert_eq!(name("output_layers.other.0.bias"), None);
        assert_eq!(name("encoder.2.weight"), None);
        assert_eq!(name("transf.crs_attn.q_w.bias"), None);
    }

    #[test]
    fn linear_weights_are_transposed_and_tokens_lose_their_batch_axis() {
        let w = HostTensor {
            shape: vec![2, 3],
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        let t = relayout("w", &w, Layout::Transposed).unwrap();
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.values, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let q = HostTensor {
            shape: vec![1, 2, 3],
            values: vec![0.0; 6],
        };
        assert_eq!(
            relayout("q", &q, Layout::QueryTokens).unwrap().shape,
            [2, 3]
        );
        assert!(relayout("q", &w, Layout::QueryTokens).is_err());
    }
}
