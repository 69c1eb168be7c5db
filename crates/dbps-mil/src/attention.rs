use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, activation::softmax, backend::Backend};

/// Configuration of a [`MultiHeadCrossAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadCrossAttentionConfig {
    /// Embedding width D.
    pub d_model: usize,
    /// Heads H.
    #[config(default = 8)]
    pub heads: usize,
    /// Per-head key/query width D_k.
    #[config(default = 16)]
    pub d_k: usize,
    /// Per-head value width D_v.
    #[config(default = 16)]
    pub d_v: usize,
    /// Dropout on the output.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Dropout on the attention weights.
    #[config(default = 0.1)]
    pub attn_dropout: f64,
}

impl MultiHeadCrossAttentionConfig {
    /// Builds the layer with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiHeadCrossAttention<B> {
        let proj = |d_in, d_out| LinearConfig::new(d_in, d_out).with_bias(false).init(device);
        MultiHeadCrossAttention {
            w_q: proj(self.d_model, self.heads * self.d_k),
            w_k: proj(self.d_model, self.heads * self.d_k),
            w_v: proj(self.d_model, self.heads * self.d_v),
            w_o: proj(self.heads * self.d_v, self.d_model),
            dropout: DropoutConfig::new(self.dropout).init(),
            attn_dropout: DropoutConfig::new(self.attn_dropout).init(),
            heads: self.heads,
            d_k: self.d_k,
            d_v: self.d_v,
        }
    }
}

/// MHCA(Q, X) = Dropout(W_o · concat_h[Dropout(softmax((Q W_q)_h (X W_k)_hᵀ / √D_k)) (X W_v)_h]).
#[derive(Module, Debug)]
pub struct MultiHeadCrossAttention<B: Backend> {
    /// Query projection D → H·D_k (no bias).
    pub w_q: Linear<B>,
    /// Key projection D → H·D_k (no bias).
    pub w_k: Linear<B>,
    /// Value projection D → H·D_v (no bias).
    pub w_v: Linear<B>,
    /// Output projection H·D_v → D (no bias).
    pub w_o: Linear<B>,
    dropout: Dropout,
    attn_dropout: Dropout,
    heads: usize,
    d_k: usize,
    d_v: usize,
}

impl<B: Backend> MultiHeadCrossAttention<B> {
    /// The same attention with both dropouts off (inference on an autodiff backend, where
    /// Burn's dropout would otherwise drop).
    pub fn without_dropout(&self) -> Self {
        let mut out = self.clone();
        out.dropout.prob = 0.0;
        out.attn_dropout.prob = 0.0;
        out
    }

    /// Number of heads H.
    pub fn heads(&self) -> usize {
        self.heads
    }

    fn split_heads(&self, x: Tensor<B, 3>, d_head: usize) -> Tensor<B, 4> {
        let [b, n, _] = x.dims();
        x.reshape([b, n, self.heads, d_head]).swap_dims(1, 2)
    }

    /// Attention logits `[B, H, T, n]` of queries `[B, T, D]` over inputs `[B, n, D]`.
    pub fn logits(&self, queries: Tensor<B, 3>, inputs: Tensor<B, 3>) -> Tensor<B, 4> {
        let q = self.split_heads(self.w_q.forward(queries), self.d_k);
        let k = self.split_heads(self.w_k.forward(inputs), self.d_k);
        q.matmul(k.swap_dims(2, 3)) / (self.d_k as f64).sqrt()
    }

    /// Selection scores `[B, n]`: softmax over the n inputs, averaged over heads and queries (method.md §4).
    pub fn salience(&self, queries: Tensor<B, 3>, inputs: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, n, _] = inputs.dims();
        let t = queries.dims()[1];
        softmax(self.logits(queries, inputs), 3)
            .reshape([b, self.heads * t, n])
            .mean_dim(1)
            .reshape([b, n])
    }

    /// Attends queries `[B, T, D]` over inputs `[B, n, D]`, giving `[B, T, D]`.
    pub fn forward(&self, queries: Tensor<B, 3>, inputs: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, _] = queries.dims();
        let attn = softmax(self.logits(queries, inputs.clone()), 3);
        let attn = self.attn_dropout.forward(attn);
        let v = self.split_heads(self.w_v.forward(inputs), self.d_v);
        let heads = attn
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, self.heads * self.d_v]);
        self.dropout.forward(self.w_o.forward(heads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn salience_sums_to_one_over_candidates() {
        let device = Default::default();
        let mhca = MultiHeadCrossAttentionConfig::new(8)
            .with_heads(2)
            .with_d_k(4)
            .init::<Flex>(&device);
        let q = Tensor::<Flex, 3>::random([3, 2, 8], burn::tensor::Distribution::Default, &device);
        let x = Tensor::<Flex, 3>::random([3, 5, 8], burn::tensor::Distribution::Default, &device);
        let s = mhca.salience(q, x);
        assert_eq!(s.dims(), [3, 5]);
        let sums = s.sum_dim(1).into_data().to_vec::<f32>().unwrap();
        assert!(sums.iter().all(|v| (v - 1.0).abs() < 1e-5), "{sums:?}");
    }
}
