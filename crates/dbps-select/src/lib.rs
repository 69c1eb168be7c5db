//! Iterative patch selection, run without gradients (method.md §4–6).
//!
//! [`DualBuffer`] streams candidate patches through any [`PatchEncoder`] in chunks of L, scores the
//! buffers plus the chunk with any [`SalienceScorer`], and keeps the top M (salient) and, for
//! DBPS, the next S (sub-salient). With S = 0 it is the IPS single buffer.
//!
//! Run it on the inner (non-autodiff) backend: the embeddings it returns carry no graph.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Int, Tensor};
//! use dbps_encoder::IdentityEncoder;
//! use dbps_select::{DualBuffer, SalienceScorer};
//!
//! /// Scores a candidate by its first feature.
//! struct FirstFeature;
//! impl SalienceScorer<Flex> for FirstFeature {
//!     fn score(&self, embeddings: Tensor<Flex, 3>, _indices: Tensor<Flex, 2, Int>) -> Tensor<Flex, 2> {
//!         let [b, n, _] = embeddings.dims();
//!         embeddings.slice([0..b, 0..n, 0..1]).reshape([b, n])
//!     }
//! }
//!
//! let device = Default::default();
//! // One image, N = 6 precomputed 2-d features; feature 0 of patch i is i.
//! let feats: Vec<f32> = (0..6).flat_map(|i| [i as f32, 0.0]).collect();
//! let patches = Tensor::<Flex, 1>::from_floats(feats.as_slice(), &device).reshape([1, 6, 2, 1, 1]);
//! let indices = Tensor::<Flex, 1, Int>::arange(0..6, &device).reshape([1, 6]);
//! let buffer = DualBuffer::new(2, 3, 2).unwrap(); // M = 2, S = 3, L = 2
//! let sel = buffer.select(&IdentityEncoder::new(2), &FirstFeature, patches, indices);
//! assert_eq!(sel.salient.indices.into_data().iter::<i64>().collect::<Vec<_>>(), vec![5, 4]);
//! let sub = sel.sub_salient.expect("3 sub-salient patches");
//! assert_eq!(sub.indices.into_data().iter::<i64>().collect::<Vec<_>>(), vec![3, 2, 1]);
//! ```

#![warn(missing_docs)]

mod buffer;
mod error;

pub use buffer::{
    BufferRule, CandidateChunks, DualBuffer, InMemoryCandidates, PatchBag, Selection,
};
pub use dbps_encoder::PatchEncoder;
pub use error::SelectError;

use burn::tensor::{Int, Tensor, backend::Backend};

/// Scores candidate patches for selection; implemented by the aggregator's cross-attention.
pub trait SalienceScorer<B: Backend> {
    /// Salience `[B, n]` of candidates with embeddings `[B, n, D]` and grid indices `[B, n]`,
    /// relative to the whole candidate set (scores are recomputed at every iteration).
    fn score(&self, embeddings: Tensor<B, 3>, indices: Tensor<B, 2, Int>) -> Tensor<B, 2>;
}
