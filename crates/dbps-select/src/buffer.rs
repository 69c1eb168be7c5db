use burn::tensor::{Int, Tensor, backend::Backend};

use crate::{PatchEncoder, SalienceScorer, SelectError};

/// What selection keeps for one batch; every tensor is free of autodiff graph.
#[derive(Debug, Clone)]
pub struct Selection<B: Backend> {
    /// The M' = min(M, candidates) salient patches, by decreasing score; their no-gradient
    /// embeddings are for evaluation, training re-embeds the patches with gradients.
    pub salient: PatchBag<B>,
    /// The S' = min(S, candidates − M') sub-salient patches, by decreasing score; `None` when
    /// S' = 0, so no placeholder embedding ever exists.
    pub sub_salient: Option<PatchBag<B>>,
}

/// The IPS buffer of M salient patches plus the DBPS buffer of S sub-salient ones, filled by
/// streaming candidates in chunks of L.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DualBuffer {
    salient: usize,
    sub_salient: usize,
    chunk: usize,
    rule: BufferRule,
}

/// How the two buffers are refilled at each iteration (method.md §5); the two agree when
/// S = 0 (IPS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferRule {
    /// The paper's equations 3–4: one ranking of P_M ∪ P_S ∪ C_L, scored over the whole union;
    /// P_M ← its top M, P_S ← the next S. A sub-salient patch can climb back into P_M.
    #[default]
    Paper,
    /// What the DBPS authors' code does: P_M ← top-M of P_M ∪ C_L scored over that union alone
    /// (P_S never competes for P_M); then P_S ← top-S of the rest of that union together with
    /// the old P_S, scored by a softmax over those patches only.
    Authors,
}

/// Patch embeddings `[B, n, D]` with the grid indices `[B, n]` they came from.
#[derive(Debug, Clone)]
pub struct PatchBag<B: Backend> {
    /// Grid indices (row-major) of the patches.
    pub indices: Tensor<B, 2, Int>,
    /// Their embeddings.
    pub embeddings: Tensor<B, 3>,
}

impl<B: Backend> PatchBag<B> {
    /// Patches per image.
    pub fn len(&self) -> usize {
        self.indices.dims()[1]
    }

    fn cat(bags: Vec<Self>) -> Self {
        let (embeddings, indices): (Vec<_>, Vec<_>) =
            bags.into_iter().map(|b| (b.embeddings, b.indices)).unzip();
        Self {
            embeddings: Tensor::cat(embeddings, 1),
            indices: Tensor::cat(indices, 1),
        }
    }

    /// The members at positions `order` `[B, k]`.
    fn gather(&self, order: Tensor<B, 2, Int>) -> Self {
        let [b, k] = order.dims();
        let d = self.embeddings.dims()[2];
        Self {
            embeddings: self
                .embeddings
                .clone()
                .gather(1, order.clone().reshape([b, k, 1]).repeat_dim(2, d)),
            indices: self.indices.clone().gather(1, order),
        }
    }

    /// True when the bag holds no patch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DualBuffer {
    /// Buffers of M salient and S sub-salient patches, filled L candidates at a time (S = 0: IPS).
    pub fn new(salient: usize, sub_salient: usize, chunk: usize) -> Result<Self, SelectError> {
        if salient == 0 {
            return Err(SelectError::ZeroSalient);
        }
        if chunk == 0 {
            return Err(SelectError::ZeroChunk);
        }
        Ok(Self {
            salient,
            sub_salient,
            chunk,
            rule: BufferRule::Paper,
        })
    }

    /// The same buffers refilled by `rule`.
    pub fn with_rule(self, rule: BufferRule) -> Self {
        Self { rule, ..self }
    }

    /// How the buffers are refilled.
    pub fn rule(&self) -> BufferRule {
        self.rule
    }

    /// M.
    pub fn salient(&self) -> usize {
        self.salient
    }

    /// S.
    pub fn sub_salient(&self) -> usize {
        self.sub_salient
    }

    /// L.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// The same buffers with another chunk size (L̂ under patch drop).
    pub fn with_chunk(self, chunk: usize) -> Result<Self, SelectError> {
        Ok(Self::new(self.salient, self.sub_salient, chunk)?.with_rule(self.rule))
    }

    /// Runs selection over candidates `[B, K, C, p, p]` held in memory, with grid indices
    /// `[B, K]`, in that order (see [`DualBuffer::select_from`]).
    pub fn select<B, E, S>(
        &self,
        encoder: &E,
        scorer: &S,
        patches: Tensor<B, 5>,
        indices: Tensor<B, 2, Int>,
    ) -> Selection<B>
    where
        B: Backend,
        E: PatchEncoder<B>,
        S: SalienceScorer<B>,
    {
        match self.select_from(encoder, scorer, &InMemoryCandidates::new(patches, indices)) {
            Ok(selection) => selection,
            Err(never) => match never {},
        }
    }

    /// Runs selection over the candidates of `source`, asking it for one chunk at a time, so
    /// only L candidates per image are ever cut and embedded together.
    ///
    /// P_M starts as the first M candidates and P_S empty; each chunk C_L is embedded, then
    /// the buffers are refilled by the [`BufferRule`]: by default P_M ← Top-M(P_M ∪ P_S ∪ C_L)
    /// and P_S ← Top-S((P_M ∪ P_S ∪ C_L) − P_M) (paper eq. 3–4), with scores recomputed over
    /// the whole union. The top-k stays on the device. With K ≤ M every candidate is salient. The first chunk the source cannot deliver ends selection with
    /// its error.
    pub fn select_from<B, E, S, C>(
        &self,
        encoder: &E,
        scorer: &S,
        source: &C,
    ) -> Result<Selection<B>, C::Error>
    where
        B: Backend,
        E: PatchEncoder<B>,
        S: SalienceScorer<B>,
        C: CandidateChunks<B>,
    {
        let (batch, candidates) = (source.batch(), source.candidates());
        let indices = source.indices();
        assert_eq!(
            indices.dims(),
            [batch, candidates],
            "one grid index per candidate patch"
        );
        let embed = |start: usize, end: usize| -> Result<PatchBag<B>, C::Error> {
            Ok(PatchBag {
                embeddings: encoder.embed(source.chunk(start, end)?).reshape([
                    batch,
                    end - start,
                    encoder.embed_dim(),
                ]),
                indices: indices.clone().slice([0..batch, start..end]),
            })
        };
        let first = self.salient.min(candidates);
        let mut salient = embed(0, first)?;
        let mut sub_salient: Option<PatchBag<B>> = None;
        for start in (first..candidates).step_by(self.chunk) {
            let chunk = embed(start, (start + self.chunk).min(candidates))?;
            (salient, sub_salient) = match self.rule {
                BufferRule::Paper => self.refill_paper(scorer, salient, sub_salient, chunk),
                BufferRule::Authors => self.refill_authors(scorer, salient, sub_salient, chunk),
            };
        }
        Ok(Selection {
            salient,
            sub_salient,
        })
    }
}

impl DualBuffer {
    /// Eq. 3–4: P_M and P_S from one ranking of P_M ∪ P_S ∪ C_L.
    fn refill_paper<B: Backend, S: SalienceScorer<B>>(
        &self,
        scorer: &S,
        salient: PatchBag<B>,
        sub_salient: Option<PatchBag<B>>,
        chunk: PatchBag<B>,
    ) -> (PatchBag<B>, Option<PatchBag<B>>) {
        let union = PatchBag::cat(
            [Some(salient), sub_salient, Some(chunk)]
                .into_iter()
                .flatten()
                .collect(),
        );
        let batch = union.indices.dims()[0];
        let kept_sub = self.sub_salient.min(union.len() - self.salient);
        let (_, order) = scorer
            .score(union.embeddings.clone(), union.indices.clone())
            .topk_with_indices(self.salient + kept_sub, 1);
        let salient = union.gather(order.clone().slice([0..batch, 0..self.salient]));
        let sub_salient = (kept_sub > 0)
            .then(|| union.gather(order.slice([0..batch, self.salient..self.salient + kept_sub])));
        (salient, sub_salient)
    }

    /// The authors' rule: P_M from P_M ∪ C_L alone, P_S from the rest of it and the old P_S,
    /// ranked by a softmax over those only. The scorer recomputes the old P_S's attention
    /// logits, which equal the ones the authors store: a logit depends on its patch and the
    /// query alone, and the selection pass does not change the weights.
    fn refill_authors<B: Backend, S: SalienceScorer<B>>(
        &self,
        scorer: &S,
        salient: PatchBag<B>,
        sub_salient: Option<PatchBag<B>>,
        chunk: PatchBag<B>,
    ) -> (PatchBag<B>, Option<PatchBag<B>>) {
        let union = PatchBag::cat(vec![salient, chunk]);
        let [batch, size] = union.indices.dims();
        let (_, order) = scorer
            .score(union.embeddings.clone(), union.indices.clone())
            .topk_with_indices(size, 1);
        let salient = union.gather(order.clone().slice([0..batch, 0..self.salient]));
        if self.sub_salient == 0 {
            return (salient, None);
        }
        let rest = union.gather(order.slice([0..batch, self.salient..size]));
        let pool = PatchBag::cat([Some(rest), sub_salient].into_iter().flatten().collect());
        let kept = self.sub_salient.min(pool.len());
        let (_, order) = scorer
            .score(pool.embeddings.clone(), pool.indices.clone())
            .topk_with_indices(kept, 1);
        (salient, Some(pool.gather(order)))
    }
}

/// Where selection gets its candidate patches from, a chunk at a time.
pub trait CandidateChunks<B: Backend> {
    /// Why a chunk could not be delivered (a file that cannot be read, images that do not fit
    /// the grid); `Infallible` for candidates already in memory.
    type Error;

    /// Images B.
    fn batch(&self) -> usize;

    /// Candidates per image K.
    fn candidates(&self) -> usize;

    /// Grid indices of the candidates `[B, K]`, in processing order.
    fn indices(&self) -> Tensor<B, 2, Int>;

    /// Candidates `start..end` of every image, image-major: `[B · (end − start), C, p, p]`.
    fn chunk(&self, start: usize, end: usize) -> Result<Tensor<B, 4>, Self::Error>;
}

/// Candidates already cut, `[B, K, C, p, p]`, with their grid indices `[B, K]`.
#[derive(Debug, Clone)]
pub struct InMemoryCandidates<B: Backend> {
    patches: Tensor<B, 5>,
    indices: Tensor<B, 2, Int>,
}

impl<B: Backend> InMemoryCandidates<B> {
    /// Wraps cut patches and their indices.
    pub fn new(patches: Tensor<B, 5>, indices: Tensor<B, 2, Int>) -> Self {
        Self { patches, indices }
    }
}

impl<B: Backend> CandidateChunks<B> for InMemoryCandidates<B> {
    type Error = std::convert::Infallible;

    fn batch(&self) -> usize {
        self.patches.dims()[0]
    }

    fn candidates(&self) -> usize {
        self.patches.dims()[1]
    }

    fn indices(&self) -> Tensor<B, 2, Int> {
        self.indices.clone()
    }

    fn chunk(&self, start: usize, end: usize) -> Result<Tensor<B, 4>, Self::Error> {
        let [batch, _, c, h, w] = self.patches.dims();
        Ok(self
            .patches
            .clone()
            .slice([0..batch, start..end, 0..c, 0..h, 0..w])
            .reshape([batch * (end - start), c, h, w]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_buffers() {
        assert_eq!(DualBuffer::new(0, 4, 8), Err(SelectError::ZeroSalient));
        assert_eq!(DualBuffer::new(4, 4, 0), Err(SelectError::ZeroChunk));
    }
}
