use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::{Tensor, backend::Backend};

use crate::ips::{batched, layer_norm, query_tokens};
use crate::{AggregatorConfig, FeedForward, MultiHeadCrossAttention};

/// DBPS dual-attention MIL (paper eq. 5–8): the salient bag's aggregate queries the sub-salient bag.
///
/// Z₁ = q + MHCA(q, Ê_M); q_s = LN(Z₁); Z₂ = MHCA(q_s, E_S); Z = LN(Z₁ + Z₂); Z′ = LN(Z + MLP(Z)).
/// By default both attentions and both first LayerNorms share weights, as in the authors' code;
/// `mhca_sub`/`ln_sub` hold separate weights when configured.
#[derive(Module, Debug)]
pub struct DualAttentionMil<B: Backend> {
    /// One query token per task.
    pub query: Param<Tensor<B, 2>>,
    /// Attention over the salient bag (also the selection scorer).
    pub mhca: MultiHeadCrossAttention<B>,
    /// LayerNorm giving the salient query q_s (and Z, when shared).
    pub ln1: LayerNorm<B>,
    /// Separate attention over the sub-salient bag, if not shared.
    pub mhca_sub: Option<MultiHeadCrossAttention<B>>,
    /// Separate LayerNorm for Z, if not shared.
    pub ln_sub: Option<LayerNorm<B>>,
    /// The MLP block.
    pub mlp: FeedForward<B>,
    /// LayerNorm after the MLP.
    pub ln2: LayerNorm<B>,
}

impl<B: Backend> DualAttentionMil<B> {
    /// The same MIL with every dropout off.
    pub fn without_dropout(&self) -> Self {
        Self {
            mhca: self.mhca.without_dropout(),
            mhca_sub: self
                .mhca_sub
                .as_ref()
                .map(MultiHeadCrossAttention::without_dropout),
            mlp: self.mlp.without_dropout(),
            ..self.clone()
        }
    }

    pub(crate) fn new(cfg: &AggregatorConfig, device: &B::Device) -> Self {
        let separate = !cfg.attention.shared_weights;
        Self {
            query: query_tokens(cfg, device),
            mhca: cfg.mhca().init(device),
            ln1: layer_norm(cfg.embed_dim, device),
            mhca_sub: separate.then(|| cfg.mhca().init(device)),
            ln_sub: separate.then(|| layer_norm(cfg.embed_dim, device)),
            mlp: FeedForward::new(cfg, device),
            ln2: layer_norm(cfg.embed_dim, device),
        }
    }

    /// Eq. 5–8 on the salient bag `[B, M, D]` and the sub-salient bag `[B, S, D]` (absent or empty: Z₂ = 0).
    pub fn forward(
        &self,
        salient: Tensor<B, 3>,
        sub_salient: Option<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        let q = batched(&self.query, salient.dims()[0]);
        let z1 = q.clone() + self.mhca.forward(q, salient);
        let ln_z = self.ln_sub.as_ref().unwrap_or(&self.ln1);
        let z = match sub_salient.filter(|s| s.dims()[1] > 0) {
            Some(sub) => {
                let q_s = self.ln1.forward(z1.clone());
                let mhca_sub = self.mhca_sub.as_ref().unwrap_or(&self.mhca);
                ln_z.forward(z1 + mhca_sub.forward(q_s, sub))
            }
            None => ln_z.forward(z1),
        };
        self.ln2.forward(z.clone() + self.mlp.forward(z))
    }
}
