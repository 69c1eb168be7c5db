use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::{
    Aggregator, AggregatorCore, DualAttentionMil, IpsAggregator, MilError,
    MultiHeadCrossAttentionConfig,
};

/// The most attention heads an aggregator may have.
pub const MAX_HEADS: usize = 256;
/// The widest an aggregator's layers may be (`d_k`, `d_v`, `d_inner`, heads · d_k): 32 times
/// the papers' 2048, and a `d_inner × D` weight of a 2048-wide embedding still only 512 MiB.
pub const MAX_WIDTH: usize = 65_536;

/// Which aggregator sits on top of the selected patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregatorKind {
    /// IPS cross-attention transformer; with a sub-salient bag it attends over Ê_M ∪ E_S
    /// (the "dual buffer without dual attention" ablation, Table 2 row 2).
    Ips,
    /// DBPS dual-attention MIL (eq. 5–8).
    #[default]
    DualAttention,
}

/// The attention hyper-parameters of method.md §3 (the `aggregator` block of a dbps config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttentionSettings {
    /// Heads H.
    pub heads: usize,
    /// Per-head key/query width D_k.
    pub d_k: usize,
    /// Per-head value width D_v.
    pub d_v: usize,
    /// Hidden width of the MLP.
    pub d_inner: usize,
    /// Dropout after attention and in the MLP.
    pub dropout: f64,
    /// Dropout on attention weights.
    pub attn_dropout: f64,
    /// Share MHCA and LayerNorm weights between the two attentions of the dual MIL.
    pub shared_weights: bool,
    /// Add 1-D sinusoidal encodings of the patch indices.
    pub positional: bool,
}

impl Default for AttentionSettings {
    /// The MNIST-like defaults: H = 8, D_k = D_v = 16, D_inner = 512, dropout 0.1, shared weights.
    fn default() -> Self {
        Self {
            heads: 8,
            d_k: 16,
            d_v: 16,
            d_inner: 512,
            dropout: 0.1,
            attn_dropout: 0.1,
            shared_weights: true,
            positional: false,
        }
    }
}

/// Everything needed to build an [`Aggregator`]: width, tasks, kind and attention settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatorConfig {
    /// Embedding width D (the encoder's output).
    pub embed_dim: usize,
    /// Classes of each task; one query token and one head per task.
    pub tasks: Vec<usize>,
    /// Which aggregator.
    pub kind: AggregatorKind,
    /// Heads, widths, dropout, weight sharing, positions.
    pub attention: AttentionSettings,
}

impl AggregatorConfig {
    /// The default attention settings for width `embed_dim` and the given tasks.
    pub fn new(embed_dim: usize, tasks: Vec<usize>) -> Self {
        Self {
            embed_dim,
            tasks,
            kind: AggregatorKind::default(),
            attention: AttentionSettings::default(),
        }
    }

    /// Sets the aggregator kind.
    pub fn with_kind(mut self, kind: AggregatorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the number of heads.
    pub fn with_heads(mut self, heads: usize) -> Self {
        self.attention.heads = heads;
        self
    }

    /// Chooses shared (default) or separate weights for the two attentions.
    pub fn with_shared_weights(mut self, shared: bool) -> Self {
        self.attention.shared_weights = shared;
        self
    }

    /// Turns the positional encoding on or off.
    pub fn with_positional(mut self, positional: bool) -> Self {
        self.attention.positional = positional;
        self
    }

    /// Sets both dropout rates.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.attention.dropout = dropout;
        self.attention.attn_dropout = dropout;
        self
    }

    pub(crate) fn mhca(&self) -> MultiHeadCrossAttentionConfig {
        let a = &self.attention;
        MultiHeadCrossAttentionConfig::new(self.embed_dim)
            .with_heads(a.heads)
            .with_d_k(a.d_k)
            .with_d_v(a.d_v)
            .with_dropout(a.dropout)
            .with_attn_dropout(a.attn_dropout)
    }

    /// Checks the configuration without building anything.
    pub fn validate(&self) -> Result<(), MilError> {
        if self.embed_dim == 0 {
            return Err(MilError::ZeroWidth);
        }
        for (name, value) in [
            ("heads", self.attention.heads),
            ("d_k", self.attention.d_k),
            ("d_v", self.attention.d_v),
            ("d_inner", self.attention.d_inner),
        ] {
            if value == 0 {
                return Err(MilError::Zero(name));
            }
        }
        let a = &self.attention;
        let limits = [
            ("heads", a.heads, MAX_HEADS, "the papers use 8"),
            (
                "d_k",
                a.d_k,
                MAX_WIDTH,
                "the papers use 64 (one head's width)",
            ),
            (
                "d_v",
                a.d_v,
                MAX_WIDTH,
                "the papers use 64 (one head's width)",
            ),
            ("d_inner", a.d_inner, MAX_WIDTH, "the papers use 2048"),
            (
                "heads",
                a.heads.saturating_mul(a.d_k.max(a.d_v)),
                MAX_WIDTH,
                "heads · max(d_k, d_v) is the width of the attention projections",
            ),
        ];
        for (field, value, max, why) in limits {
            if value > max {
                return Err(MilError::TooLarge {
                    field,
                    value,
                    max,
                    why,
                });
            }
        }
        if self.tasks.is_empty() {
            return Err(MilError::NoTasks);
        }
        if self.tasks.contains(&0) {
            return Err(MilError::NoClasses);
        }
        if self.attention.positional && self.embed_dim % 2 == 1 {
            return Err(MilError::OddWidth(self.embed_dim));
        }
        Ok(())
    }

    /// Builds the aggregator with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Aggregator<B>, MilError> {
        self.validate()?;
        let core = match self.kind {
            AggregatorKind::Ips => AggregatorCore::Ips(IpsAggregator::new(self, device)),
            AggregatorKind::DualAttention => {
                AggregatorCore::Dual(DualAttentionMil::new(self, device))
            }
        };
        Ok(Aggregator::new(core, self, device))
    }
}
