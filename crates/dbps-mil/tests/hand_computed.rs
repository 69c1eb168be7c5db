//! The aggregators against the paper's equations computed by hand, in f64, on small inputs.
//!
//! The reference reads the modules' weights as data and never calls their code: every
//! projection, softmax (with its 1/√D_k scale), LayerNorm and MLP is written out here.

use burn::backend::Flex;
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Distribution, Tensor, TensorData};
use dbps_mil::{AggregatorConfig, AggregatorKind, FeedForward, MultiHeadCrossAttention};

type B = Flex;
/// Rows of a matrix.
type Mat = Vec<Vec<f64>>;

const HEADS: usize = 2;
const D_K: usize = 3;
const D_V: usize = 2;
const D: usize = 6;
/// LayerNorm's ε in the aggregators (the authors' value).
const EPS: f64 = 1e-6;

fn rows(t: Tensor<B, 2>) -> Mat {
    let [r, c] = t.dims();
    let v: Vec<f64> = t.into_data().iter::<f64>().collect();
    (0..r).map(|i| v[i * c..(i + 1) * c].to_vec()).collect()
}

fn vector(t: Tensor<B, 1>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

/// x · W (+ b), W stored `[d_in, d_out]` as Burn's `Linear` keeps it.
fn linear(x: &Mat, layer: &Linear<B>) -> Mat {
    let w = rows(layer.weight.val());
    let b = layer.bias.as_ref().map(|b| vector(b.val()));
    x.iter()
        .map(|row| {
            (0..w[0].len())
                .map(|j| {
                    let dot: f64 = row.iter().zip(&w).map(|(xi, wi)| xi * wi[j]).sum();
                    dot + b.as_ref().map_or(0.0, |b| b[j])
                })
                .collect()
        })
        .collect()
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Attention weights per head `[H][T][n]`: softmax_j(q_h,t · k_h,j / √D_k).
fn attention(att: &MultiHeadCrossAttention<B>, queries: &Mat, inputs: &Mat) -> Vec<Mat> {
    let (q, k) = (linear(queries, &att.w_q), linear(inputs, &att.w_k));
    (0..HEADS)
        .map(|h| {
            let head = h * D_K..(h + 1) * D_K;
            q.iter()
                .map(|qt| {
                    let logits: Vec<f64> = k
                        .iter()
                        .map(|kj| {
                            let dot: f64 = qt[head.clone()]
                                .iter()
                                .zip(&kj[head.clone()])
                                .map(|(a, b)| a * b)
                                .sum();
                            dot / (D_K as f64).sqrt()
                        })
                        .collect();
                    softmax(&logits)
                })
                .collect()
        })
        .collect()
}

/// MHCA(Q, X) = W_o · concat_h[softmax(Q_h K_hᵀ / √D_k) V_h] (no dropout).
fn mhca(att: &MultiHeadCrossAttention<B>, queries: &Mat, inputs: &Mat) -> Mat {
    let weights = attention(att, queries, inputs);
    let v = linear(inputs, &att.w_v);
    let concat: Mat = (0..queries.len())
        .map(|t| {
            (0..HEADS)
                .flat_map(|h| {
                    let w = &weights[h][t];
                    (0..D_V)
                        .map(|c| w.iter().zip(&v).map(|(a, vj)| a * vj[h * D_V + c]).sum())
                        .collect::<Vec<f64>>()
                })
                .collect()
        })
        .collect();
    linear(&concat, &att.w_o)
}

fn layer_norm(x: &Mat, ln: &LayerNorm<B>) -> Mat {
    let gamma = vector(ln.gamma.val());
    let beta = ln.beta.as_ref().map(|b| vector(b.val()));
    x.iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            row.iter()
                .enumerate()
                .map(|(i, v)| {
                    (v - mean) / (var + EPS).sqrt() * gamma[i] + beta.as_ref().map_or(0.0, |b| b[i])
                })
                .collect()
        })
        .collect()
}

/// MLP(z) = fc2(ReLU(fc1(z))).
fn mlp(x: &Mat, ff: &FeedForward<B>) -> Mat {
    let hidden: Mat = linear(x, &ff.fc1)
        .into_iter()
        .map(|r| r.into_iter().map(|v| v.max(0.0)).collect())
        .collect();
    linear(&hidden, &ff.fc2)
}

fn add(a: &Mat, b: &Mat) -> Mat {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(u, v)| u + v).collect())
        .collect()
}

/// Z′ = LN₂(Z + MLP(Z)) and the per-task heads.
fn heads_of(
    z: &Mat,
    ff: &FeedForward<B>,
    ln2: &LayerNorm<B>,
    heads: &[Linear<B>],
) -> Vec<Vec<f64>> {
    let z = layer_norm(&add(z, &mlp(z, ff)), ln2);
    heads
        .iter()
        .enumerate()
        .map(|(t, head)| linear(&vec![z[t].clone()], head).remove(0))
        .collect()
}

fn random(shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

fn image(bag: &Tensor<B, 3>, b: usize) -> Mat {
    let [_, n, d] = bag.dims();
    rows(bag.clone().slice([b..b + 1, 0..n, 0..d]).reshape([n, d]))
}

fn config(kind: AggregatorKind, shared: bool) -> AggregatorConfig {
    let mut cfg = AggregatorConfig::new(D, vec![3, 2])
        .with_kind(kind)
        .with_shared_weights(shared)
        .with_dropout(0.0);
    cfg.attention.heads = HEADS;
    cfg.attention.d_k = D_K;
    cfg.attention.d_v = D_V;
    cfg.attention.d_inner = 8;
    cfg
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() < 1e-4,
            "{what}[{i}]: got {g}, hand computation {w}"
        );
    }
}

/// Selection scores: softmax over the candidates of (q W_q)(x W_k)ᵀ / √D_k, averaged over heads
/// and query tokens (method.md §4).
#[test]
fn salience_is_the_scaled_softmax_averaged_over_heads_and_queries() {
    let device = Default::default();
    let aggregator = config(AggregatorKind::Ips, true)
        .init::<B>(&device)
        .unwrap();
    let ips = aggregator.ips().expect("IPS aggregator");
    let bag = random([2, 5, D]);
    let got: Vec<f32> = aggregator
        .salience(bag.clone())
        .into_data()
        .iter::<f32>()
        .collect();
    let queries = rows(ips.query.val());
    let want: Vec<f64> = (0..2)
        .flat_map(|b| {
            let weights = attention(&ips.mhca, &queries, &image(&bag, b));
            (0..5)
                .map(|j| {
                    let sum: f64 = weights.iter().flatten().map(|row| row[j]).sum();
                    sum / (HEADS * queries.len()) as f64
                })
                .collect::<Vec<f64>>()
        })
        .collect();
    assert_close(&got, &want, "salience");
}

/// IPS: Z = LN(q + MHCA(q, Ê)); Z′ = LN(Z + MLP(Z)); one linear head per task.
#[test]
fn ips_aggregator_matches_its_equations() {
    let device = Default::default();
    let aggregator = config(AggregatorKind::Ips, true)
        .init::<B>(&device)
        .unwrap();
    let ips = aggregator.ips().expect("IPS aggregator");
    let bag = random([2, 4, D]);
    let logits = aggregator.forward(bag.clone(), None);
    let q = rows(ips.query.val());
    for b in 0..2 {
        let z = layer_norm(&add(&q, &mhca(&ips.mhca, &q, &image(&bag, b))), &ips.ln1);
        let want = heads_of(&z, &ips.mlp, &ips.ln2, &aggregator.heads);
        for (t, task) in logits.iter().enumerate() {
            let got: Vec<f32> = task
                .clone()
                .narrow(0, b, 1)
                .into_data()
                .iter::<f32>()
                .collect();
            assert_close(&got, &want[t], &format!("IPS logits, image {b}, task {t}"));
        }
    }
}

/// DBPS dual MIL (paper eq. 5–8): Z₁ = q + MHCA(q, Ê_M); q_s = LN(Z₁); Z₂ = MHCA_S(q_s, E_S);
/// Z = LN_S(Z₁ + Z₂); Z′ = LN(Z + MLP(Z)); with separate and with shared weights, and with no
/// sub-salient bag (Z = LN_S(Z₁)).
#[test]
fn dual_mil_matches_equations_5_to_8() {
    let device = Default::default();
    for shared in [false, true] {
        let aggregator = config(AggregatorKind::DualAttention, shared)
            .init::<B>(&device)
            .unwrap();
        let dual = aggregator.dual().expect("dual-attention MIL");
        // Fresh LayerNorms are the identity affine map: give them weights so that using one in
        // place of another shows.
        let dual = {
            let mut dual = dual.clone();
            let affine = |ln: &mut LayerNorm<B>| {
                ln.gamma = Param::from_tensor(Tensor::random(
                    [D],
                    Distribution::Normal(1.0, 0.3),
                    &device,
                ));
                ln.beta = Some(Param::from_tensor(Tensor::random(
                    [D],
                    Distribution::Normal(0.0, 0.3),
                    &device,
                )));
            };
            affine(&mut dual.ln1);
            affine(&mut dual.ln2);
            if let Some(ln) = dual.ln_sub.as_mut() {
                affine(ln);
            }
            dual
        };
        let salient = random([2, 4, D]);
        let sub = random([2, 3, D]);
        let q = rows(dual.query.val());
        let ln_s = dual.ln_sub.as_ref().unwrap_or(&dual.ln1);
        let mhca_s = dual.mhca_sub.as_ref().unwrap_or(&dual.mhca);
        assert_eq!(dual.mhca_sub.is_none(), shared);
        let with_sub = dual.forward(salient.clone(), Some(sub.clone()));
        let without = dual.forward(salient.clone(), None);
        for b in 0..2 {
            let z1 = add(&q, &mhca(&dual.mhca, &q, &image(&salient, b)));
            let q_s = layer_norm(&z1, &dual.ln1);
            let z2 = mhca(mhca_s, &q_s, &image(&sub, b));
            for (out, z) in [
                (&with_sub, layer_norm(&add(&z1, &z2), ln_s)),
                (&without, layer_norm(&z1, ln_s)),
            ] {
                let z_prime = layer_norm(&add(&z, &mlp(&z, &dual.mlp)), &dual.ln2);
                let got: Vec<f32> = out
                    .clone()
                    .narrow(0, b, 1)
                    .into_data()
                    .iter::<f32>()
                    .collect();
                let want: Vec<f64> = z_prime.into_iter().flatten().collect();
                assert_close(&got, &want, &format!("Z′ (shared {shared}), image {b}"));
            }
        }
    }
}

/// One query over two inputs with weights written out: every number checkable on paper.
/// With D_k = 3, a 1/D_k scale instead of 1/√D_k moves the attention from 0.6637 to 0.6225.
#[test]
fn attention_of_a_worked_example() {
    let device = Default::default();
    let mut att = dbps_mil::MultiHeadCrossAttentionConfig::new(3)
        .with_heads(1)
        .with_d_k(3)
        .with_d_v(1)
        .with_dropout(0.0)
        .with_attn_dropout(0.0)
        .init::<B>(&device);
    let matrix = |v: Vec<f32>, shape: [usize; 2]| {
        Param::from_tensor(Tensor::<B, 2>::from_data(
            TensorData::new(v, shape),
            &device,
        ))
    };
    // W_q = W_k = I: logits are plain dot products; W_v picks feature 0; W_o copies it 3 times.
    let eye = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    att.w_q.weight = matrix(eye.clone(), [3, 3]);
    att.w_k.weight = matrix(eye, [3, 3]);
    att.w_v.weight = matrix(vec![1.0, 0.0, 0.0], [3, 1]);
    att.w_o.weight = matrix(vec![1.0, 1.0, 1.0], [1, 3]);
    let query =
        Tensor::<B, 3>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [1, 1, 3]), &device);
    let inputs = Tensor::<B, 3>::from_data(
        TensorData::new(vec![2.0f32, 0.0, 0.0, 0.0, 1.0, 1.0], [1, 2, 3]),
        &device,
    );
    // logits: q·x₁ = 2, q·x₂ = 1, each / √3; softmax → a₁ = 1 / (1 + e^{−1/√3}) = 0.663706.
    let a1 = 1.0 / (1.0 + (-1.0 / 3f64.sqrt()).exp());
    let salience: Vec<f32> = att
        .salience(query.clone(), inputs.clone())
        .into_data()
        .iter::<f32>()
        .collect();
    assert_close(&salience, &[a1, 1.0 - a1], "salience");
    // Output: W_o(a₁·2 + a₂·0) = 2a₁ in every feature.
    let out: Vec<f32> = att
        .forward(query, inputs)
        .into_data()
        .iter::<f32>()
        .collect();
    assert_close(&out, &[2.0 * a1; 3], "output");
}
