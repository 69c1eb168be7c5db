//! Selection against brute force (one head, one token) and against a plain reference loop
//! (several heads), method.md §4–6.

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use dbps_encoder::IdentityEncoder;
use dbps_mil::{Aggregator, AggregatorConfig, AggregatorKind};
use dbps_select::{BufferRule, DualBuffer, SalienceScorer};
use proptest::prelude::*;

type B = Flex;
const D: usize = 8;

struct Scorer(Aggregator<B>);

impl SalienceScorer<B> for Scorer {
    fn score(&self, embeddings: Tensor<B, 3>, _indices: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.0.salience(embeddings)
    }
}

fn aggregator(heads: usize, tasks: usize, seed: u64) -> Aggregator<B> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let agg = AggregatorConfig::new(D, vec![3; tasks])
        .with_heads(heads)
        .with_kind(AggregatorKind::DualAttention)
        .init(&device)
        .unwrap();
    // Burn initialises parameters lazily and each clone would draw its own: materialise them once.
    let record = agg.clone().into_record();
    agg.load_record(record)
}

/// Random embeddings `[batch, n, D]`, presented as 1×1 "patches" with grid indices in a random order.
fn inputs(batch: usize, n: usize, seed: u64) -> (Tensor<B, 3>, Tensor<B, 5>, Tensor<B, 2, Int>) {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let emb = Tensor::<B, 3>::random([batch, n, D], Distribution::Normal(0.0, 1.0), &device);
    let patches = emb.clone().reshape([batch, n, D, 1, 1]);
    // Candidate order differs from grid order: reverse it, so indices are bookkeeping, not positions.
    let idx: Vec<i64> = (0..batch).flat_map(|_| (0..n as i64).rev()).collect();
    let indices = Tensor::from_data(TensorData::new(idx, [batch, n]), &device);
    (emb, patches, indices)
}

fn rows<const N: usize>(t: Tensor<B, N, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

/// Grid indices of candidates sorted by their brute-force logit (1 head, 1 token), per image.
fn ranks_by_logit(
    agg: &Aggregator<B>,
    emb: Tensor<B, 3>,
    indices: &[i64],
    n: usize,
) -> Vec<Vec<i64>> {
    let [batch, ..] = emb.dims();
    let query = agg.query_tokens();
    let q = query.unsqueeze_dim::<3>(0).repeat_dim(0, batch);
    let logits: Vec<f32> = agg
        .scorer()
        .logits(q, emb)
        .into_data()
        .iter::<f32>()
        .collect();
    (0..batch)
        .map(|b| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&i, &j| logits[b * n + j].total_cmp(&logits[b * n + i]));
            order.into_iter().map(|i| indices[b * n + i]).collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// (a) With H = 1 and T = 1 the buffers are the global ranks 1..M and M+1..M+S by logit.
    #[test]
    fn one_head_equals_global_top_m_and_next_s(
        n in 1usize..48, m in 1usize..16, s in 0usize..16, l in 1usize..20, batch in 1usize..3, seed in any::<u64>()
    ) {
        let agg = aggregator(1, 1, seed);
        let (emb, patches, indices) = inputs(batch, n, seed ^ 1);
        let grid = rows(indices.clone());
        let want = ranks_by_logit(&agg, emb, &grid, n);
        let sel = DualBuffer::new(m, s, l).unwrap().select(&IdentityEncoder::new(D), &Scorer(agg), patches, indices);
        let m_eff = m.min(n);
        let s_eff = s.min(n - m_eff);
        let salient = rows(sel.salient.indices);
        prop_assert_eq!(salient.len(), batch * m_eff);
        let sub = sel.sub_salient.map(|bag| rows(bag.indices)).unwrap_or_default();
        prop_assert_eq!(sub.len(), batch * s_eff);
        for b in 0..batch {
            let got_m = &salient[b * m_eff..(b + 1) * m_eff];
            if n > m {
                prop_assert_eq!(got_m, &want[b][..m_eff]);
            } else {
                // M ≥ N: every patch, no scoring needed.
                let mut all = got_m.to_vec();
                all.sort_unstable();
                prop_assert_eq!(all, (0..n as i64).collect::<Vec<_>>());
            }
            prop_assert_eq!(&sub[b * s_eff..(b + 1) * s_eff], &want[b][m_eff..m_eff + s_eff]);
        }
    }
}

/// Straightforward method.md §5–6 for one image: lists, a per-union softmax by hand, a stable sort;
/// also the smallest score gap between neighbours in the kept buffers (near-ties have no order).
fn reference_dual_buffer(
    agg: &Aggregator<B>,
    emb: &[Vec<f32>],
    grid: &[i64],
    m: usize,
    s: usize,
    l: usize,
) -> (Vec<i64>, Vec<i64>, f64) {
    let n = emb.len();
    let mut salient: Vec<usize> = (0..m.min(n)).collect();
    let mut sub: Vec<usize> = Vec::new();
    let mut next = salient.len();
    let mut min_gap = f64::INFINITY;
    while next < n {
        let chunk: Vec<usize> = (next..(next + l).min(n)).collect();
        next += chunk.len();
        let union: Vec<usize> = salient.iter().chain(&sub).chain(&chunk).copied().collect();
        // The kept buffers are ordered lists: a gap between neighbours inside them (or at their
        // end) below float32 resolution makes either order correct.
        let (order, gap) = ranked(&union, &scores_among(agg, emb, &union), m + s);
        min_gap = min_gap.min(gap);
        salient = order[..m].to_vec();
        sub = order[m..(m + s).min(union.len())].to_vec();
    }
    (
        salient.iter().map(|&i| grid[i]).collect(),
        sub.iter().map(|&i| grid[i]).collect(),
        min_gap,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// (b) With several heads and tokens the batched iterative selection equals the reference loop.
    #[test]
    fn several_heads_match_the_reference_loop(
        n in 2usize..40, m in 1usize..10, s in 0usize..12, l in 1usize..12, heads in 2usize..5,
        tasks in 1usize..4, batch in 1usize..3, seed in any::<u64>()
    ) {
        prop_assume!(m < n);
        let agg = aggregator(heads, tasks, seed);
        let (emb, patches, indices) = inputs(batch, n, seed ^ 2);
        let grid = rows(indices.clone());
        let values: Vec<f32> = emb.into_data().iter::<f32>().collect();
        let sel = DualBuffer::new(m, s, l).unwrap().select(&IdentityEncoder::new(D), &Scorer(agg.clone()), patches, indices);
        let salient = rows(sel.salient.indices);
        let sub = sel.sub_salient.map(|bag| rows(bag.indices)).unwrap_or_default();
        let s_eff = s.min(n - m);
        for b in 0..batch {
            let image: Vec<Vec<f32>> = (0..n).map(|i| values[(b * n + i) * D..(b * n + i + 1) * D].to_vec()).collect();
            let (want_m, want_s, gap) = reference_dual_buffer(&agg, &image, &grid[b * n..(b + 1) * n], m, s, l);
            // Scores closer than f32 can tell apart (1e-6 on values near 1/n) have no defined order.
            prop_assume!(gap > 1e-6);
            prop_assert_eq!(&salient[b * m..(b + 1) * m], want_m.as_slice());
            prop_assert_eq!(&sub[b * s_eff..(b + 1) * s_eff], want_s.as_slice());
        }
    }
}

/// Softmax attention scores by hand, in f64, of the candidates `members` (indices into `emb`)
/// against one another: per head and token a softmax over `members` alone, then the mean.
fn scores_among(agg: &Aggregator<B>, emb: &[Vec<f32>], members: &[usize]) -> Vec<f64> {
    let device = Default::default();
    let u = members.len();
    let flat: Vec<f32> = members.iter().flat_map(|&i| emb[i].clone()).collect();
    let x = Tensor::<B, 3>::from_data(TensorData::new(flat, [1, u, D]), &device);
    let query = agg.query_tokens();
    let logits: Vec<f32> = agg
        .scorer()
        .logits(query.unsqueeze_dim(0), x)
        .into_data()
        .iter::<f32>()
        .collect();
    let rows = logits.len() / u;
    let mut score = vec![0f64; u];
    for row in logits.chunks_exact(u) {
        let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (j, &v) in row.iter().enumerate() {
            score[j] += (v as f64 - max).exp() / z / rows as f64;
        }
    }
    score
}

/// Members sorted by decreasing score, and the smallest gap between neighbours among the
/// first `kept` + 1 (near-ties have no defined order).
fn ranked(members: &[usize], score: &[f64], kept: usize) -> (Vec<usize>, f64) {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&i, &j| score[j].total_cmp(&score[i]));
    let gap = order[..(kept + 1).min(order.len())]
        .windows(2)
        .map(|p| score[p[0]] - score[p[1]])
        .fold(f64::INFINITY, f64::min);
    (order.into_iter().map(|k| members[k]).collect(), gap)
}

/// The DBPS authors' refill for one image, by hand: P_M ← top-M of P_M ∪ C_L scored among
/// themselves; P_S ← top-S of the rest of that union with the old P_S, scored among those.
fn reference_authors(
    agg: &Aggregator<B>,
    emb: &[Vec<f32>],
    grid: &[i64],
    m: usize,
    s: usize,
    l: usize,
) -> (Vec<i64>, Vec<i64>, f64) {
    let n = emb.len();
    let mut salient: Vec<usize> = (0..m.min(n)).collect();
    let mut sub: Vec<usize> = Vec::new();
    let mut next = salient.len();
    let mut min_gap = f64::INFINITY;
    while next < n {
        let chunk: Vec<usize> = (next..(next + l).min(n)).collect();
        next += chunk.len();
        let union: Vec<usize> = salient.iter().chain(&chunk).copied().collect();
        let (order, gap) = ranked(&union, &scores_among(agg, emb, &union), m);
        min_gap = min_gap.min(gap);
        salient = order[..m].to_vec();
        if s > 0 {
            let pool: Vec<usize> = order[m..].iter().chain(&sub).copied().collect();
            let kept = s.min(pool.len());
            let (order, gap) = ranked(&pool, &scores_among(agg, emb, &pool), kept);
            min_gap = min_gap.min(gap);
            sub = order[..kept].to_vec();
        }
    }
    (
        salient.iter().map(|&i| grid[i]).collect(),
        sub.iter().map(|&i| grid[i]).collect(),
        min_gap,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The authors' rule equals its reference loop: salient in order, sub-salient in order,
    /// P_S kept to min(S, the patches that exist) — no placeholder ever joins it.
    #[test]
    fn the_authors_rule_matches_its_reference_loop(
        n in 2usize..40, m in 1usize..10, s in 0usize..12, l in 1usize..12, heads in 1usize..5,
        tasks in 1usize..3, batch in 1usize..3, seed in any::<u64>()
    ) {
        prop_assume!(m < n);
        let agg = aggregator(heads, tasks, seed);
        let (emb, patches, indices) = inputs(batch, n, seed ^ 5);
        let grid = rows(indices.clone());
        let values: Vec<f32> = emb.into_data().iter::<f32>().collect();
        let buffer = DualBuffer::new(m, s, l).unwrap().with_rule(BufferRule::Authors);
        let sel = buffer.select(&IdentityEncoder::new(D), &Scorer(agg.clone()), patches, indices);
        let salient = rows(sel.salient.indices);
        let sub = sel.sub_salient.map(|bag| rows(bag.indices)).unwrap_or_default();
        let s_eff = s.min(n - m);
        prop_assert_eq!(sub.len(), batch * s_eff);
        for b in 0..batch {
            let image: Vec<Vec<f32>> = (0..n).map(|i| values[(b * n + i) * D..(b * n + i + 1) * D].to_vec()).collect();
            let (want_m, want_s, gap) = reference_authors(&agg, &image, &grid[b * n..(b + 1) * n], m, s, l);
            prop_assume!(gap > 1e-6);
            prop_assert_eq!(&salient[b * m..(b + 1) * m], want_m.as_slice());
            prop_assert_eq!(&sub[b * s_eff..(b + 1) * s_eff], want_s.as_slice());
        }
    }
}
