use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::{Tensor, activation::relu, backend::Backend};

use crate::{AggregatorConfig, MultiHeadCrossAttention};

/// Linear(D→D_inner) → ReLU → Linear(D_inner→D) → Dropout.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// Expansion.
    pub fc1: Linear<B>,
    /// Contraction.
    pub fc2: Linear<B>,
    dropout: Dropout,
}

impl<B: Backend> FeedForward<B> {
    /// The same block with its dropout off.
    pub fn without_dropout(&self) -> Self {
        let mut out = self.clone();
        out.dropout.prob = 0.0;
        out
    }

    pub(crate) fn new(cfg: &AggregatorConfig, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(cfg.embed_dim, cfg.attention.d_inner).init(device),
            fc2: LinearConfig::new(cfg.attention.d_inner, cfg.embed_dim).init(device),
            dropout: DropoutConfig::new(cfg.attention.dropout).init(),
        }
    }

    /// Applies the block to `[B, T, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.dropout
            .forward(self.fc2.forward(relu(self.fc1.forward(x))))
    }
}

pub(crate) fn layer_norm<B: Backend>(d: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(1e-6).init(device)
}

/// The learnable query tokens q ∈ R^{T×D}, U(−1/√D_k, 1/√D_k).
pub(crate) fn query_tokens<B: Backend>(
    cfg: &AggregatorConfig,
    device: &B::Device,
) -> Param<Tensor<B, 2>> {
    let bound = 1.0 / (cfg.attention.d_k as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init([cfg.tasks.len(), cfg.embed_dim], device)
}

/// The queries repeated over a batch: `[B, T, D]`.
pub(crate) fn batched<B: Backend>(query: &Param<Tensor<B, 2>>, batch: usize) -> Tensor<B, 3> {
    query.val().unsqueeze_dim::<3>(0).repeat_dim(0, batch)
}

/// IPS cross-attention transformer: Z = LN(q + MHCA(q, Ê)); Z′ = LN(Z + MLP(Z)) (method.md §3).
#[derive(Module, Debug)]
pub struct IpsAggregator<B: Backend> {
    /// One query token per task.
    pub query: Param<Tensor<B, 2>>,
    /// The cross-attention, also the selection scorer.
    pub mhca: MultiHeadCrossAttention<B>,
    /// LayerNorm after attention.
    pub ln1: LayerNorm<B>,
    /// The MLP block.
    pub mlp: FeedForward<B>,
    /// LayerNorm after the MLP.
    pub ln2: LayerNorm<B>,
}

impl<B: Backend> IpsAggregator<B> {
    /// The same layer with every dropout off.
    pub fn without_dropout(&self) -> Self {
        Self {
            mhca: self.mhca.without_dropout(),
            mlp: self.mlp.without_dropout(),
            ..self.clone()
        }
    }

    pub(crate) fn new(cfg: &AggregatorConfig, device: &B::Device) -> Self {
        Self {
            query: query_tokens(cfg, device),
            mhca: cfg.mhca().init(device),
            ln1: layer_norm(cfg.embed_dim, device),
            mlp: FeedForward::new(cfg, device),
            ln2: layer_norm(cfg.embed_dim, device),
        }
    }

    /// Aggregates a bag `[B, n, D]` into one vector per task `[B, T, D]`.
    pub fn forward(&self, bag: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = batched(&self.query, bag.dims()[0]);
        let z = self.ln1.forward(q.clone() + self.mhca.forward(q, bag));
        self.ln2.forward(z.clone() + self.mlp.forward(z))
    }
}
