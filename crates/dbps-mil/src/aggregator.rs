use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::{
    AggregatorConfig, DualAttentionMil, IpsAggregator, MultiHeadCrossAttention, PositionalEncoding,
};

/// The aggregation layer proper; users reach it through [`Aggregator::ips`] and
/// [`Aggregator::dual`].
// Built once per model and never moved in a hot loop: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub(crate) enum AggregatorCore<B: Backend> {
    /// IPS cross-attention transformer.
    Ips(IpsAggregator<B>),
    /// DBPS dual-attention MIL.
    Dual(DualAttentionMil<B>),
}

/// Aggregator with one linear head per task and optional positional encoding.
#[derive(Module, Debug)]
pub struct Aggregator<B: Backend> {
    core: AggregatorCore<B>,
    /// Linear(D → classes) per task.
    pub heads: Vec<Linear<B>>,
    positional: bool,
    embed_dim: usize,
}

impl<B: Backend> Aggregator<B> {
    /// The same aggregator with every dropout off: what an evaluation forward runs, on any
    /// backend (Burn's dropout drops whenever the backend records gradients).
    pub fn without_dropout(&self) -> Self {
        Self {
            core: match &self.core {
                AggregatorCore::Ips(ips) => AggregatorCore::Ips(ips.without_dropout()),
                AggregatorCore::Dual(dual) => AggregatorCore::Dual(dual.without_dropout()),
            },
            ..self.clone()
        }
    }

    pub(crate) fn new(core: AggregatorCore<B>, cfg: &AggregatorConfig, device: &B::Device) -> Self {
        Self {
            core,
            heads: cfg
                .tasks
                .iter()
                .map(|&classes| LinearConfig::new(cfg.embed_dim, classes).init(device))
                .collect(),
            positional: cfg.attention.positional,
            embed_dim: cfg.embed_dim,
        }
    }

    /// The IPS transformer, when this aggregator is one.
    pub fn ips(&self) -> Option<&IpsAggregator<B>> {
        match &self.core {
            AggregatorCore::Ips(ips) => Some(ips),
            AggregatorCore::Dual(_) => None,
        }
    }

    /// The DBPS dual-attention MIL, when this aggregator is one.
    pub fn dual(&self) -> Option<&DualAttentionMil<B>> {
        match &self.core {
            AggregatorCore::Dual(dual) => Some(dual),
            AggregatorCore::Ips(_) => None,
        }
    }

    /// The cross-attention whose per-head softmax scores patches for selection.
    pub fn scorer(&self) -> &MultiHeadCrossAttention<B> {
        match &self.core {
            AggregatorCore::Ips(ips) => &ips.mhca,
            AggregatorCore::Dual(dual) => &dual.mhca,
        }
    }

    /// The learnable query tokens q `[T, D]`, one per task, that score and aggregate patches.
    pub fn query_tokens(&self) -> Tensor<B, 2> {
        self.query().val()
    }

    fn query(&self) -> &Param<Tensor<B, 2>> {
        match &self.core {
            AggregatorCore::Ips(ips) => &ips.query,
            AggregatorCore::Dual(dual) => &dual.query,
        }
    }

    fn queries(&self, batch: usize) -> Tensor<B, 3> {
        crate::ips::batched(self.query(), batch)
    }

    /// Adds the positional encoding of `positions` `[B, n]` to embeddings `[B, n, D]`, if enabled.
    pub fn with_positions(
        &self,
        embeddings: Tensor<B, 3>,
        positions: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        if self.positional {
            embeddings + PositionalEncoding::new(self.embed_dim).encode(positions)
        } else {
            embeddings
        }
    }

    /// Selection scores `[B, n]` of candidate embeddings `[B, n, D]` (positions already added).
    pub fn salience(&self, embeddings: Tensor<B, 3>) -> Tensor<B, 2> {
        let queries = self.queries(embeddings.dims()[0]);
        self.scorer().salience(queries, embeddings)
    }

    /// Per-task logits `[B, classes_t]` from the salient bag and, for DBPS, the sub-salient bag.
    pub fn forward(
        &self,
        salient: Tensor<B, 3>,
        sub_salient: Option<Tensor<B, 3>>,
    ) -> Vec<Tensor<B, 2>> {
        let z = match &self.core {
            AggregatorCore::Ips(ips) => match sub_salient {
                Some(sub) if sub.dims()[1] > 0 => ips.forward(Tensor::cat(vec![salient, sub], 1)),
                _ => ips.forward(salient),
            },
            AggregatorCore::Dual(dual) => dual.forward(salient, sub_salient),
        };
        let [b, _, d] = z.dims();
        self.heads
            .iter()
            .enumerate()
            .map(|(t, head)| head.forward(z.clone().slice([0..b, t..t + 1, 0..d]).reshape([b, d])))
            .collect()
    }
}
