//! Per-task losses and hits (method.md §9).

use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::batch::TaskTargets;

/// PyTorch's `BCELoss` clamps each logarithm at −100, so a saturated sigmoid costs 100, not ∞.
const BCE_LOG_FLOOR: f64 = -100.0;

/// How a task's loss is computed from its logits. Both forms are the same function of exact
/// arithmetic up to ε; in f32 they differ by about 1e-4 on the loss (method.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossForm {
    /// Exact log-softmax cross-entropy and binary cross-entropy with logits: finite and
    /// accurate for any logit (the default).
    #[default]
    Stable,
    /// The official IPS code's form (`train.loss_eps`): NLL of ln(softmax + ε) and `BCELoss`
    /// on the sigmoid output, each logarithm clamped at −100. It caps a softmax task's loss
    /// at −ln ε and makes the gradient vanish where the true class's probability is far below ε.
    Official {
        /// ε added to the softmax probabilities (the official configs use 1e-6).
        eps: f64,
    },
}

impl LossForm {
    /// The loss of one task, averaged over images (and labels): `[1]`.
    pub fn task_loss<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        targets: &TaskTargets<B>,
    ) -> Tensor<B, 1> {
        match *self {
            Self::Stable => task_loss(logits, targets),
            Self::Official { eps } => official_task_loss(logits, targets, eps),
        }
    }

    /// Mean loss over tasks `[1]` and hits per task `[T]`.
    pub fn loss_and_hits<B: Backend>(
        &self,
        logits: Vec<Tensor<B, 2>>,
        targets: &[TaskTargets<B>],
    ) -> (Tensor<B, 1>, Tensor<B, 1, Int>) {
        let tasks = logits.len();
        let (losses, hits): (Vec<_>, Vec<_>) = logits
            .into_iter()
            .zip(targets)
            .map(|(l, t)| (self.task_loss(l.clone(), t), task_hits(l, t)))
            .unzip();
        (
            Tensor::cat(losses, 0).sum() / tasks as f64,
            Tensor::cat(hits, 0),
        )
    }
}

/// The official form: ℓ = −(1/B)·Σ_b ln(softmax(z_b)[y_b] + ε) for a softmax task, and
/// ℓ = −(1/(B·C))·Σ_b,c [y·max(ln σ(z), −100) + (1 − y)·max(ln(1 − σ(z)), −100)] for a
/// multi-label one (ε plays no part there, as in the official code).
fn official_task_loss<B: Backend>(
    logits: Tensor<B, 2>,
    targets: &TaskTargets<B>,
    eps: f64,
) -> Tensor<B, 1> {
    match targets {
        TaskTargets::Classes(classes) => {
            let b = classes.dims()[0];
            let picked = softmax(logits, 1).gather(1, classes.clone().reshape([b, 1]));
            picked.add_scalar(eps).log().mean().neg()
        }
        TaskTargets::MultiHot(hot) => {
            let p = sigmoid(logits);
            let log_p = p.clone().log().clamp_min(BCE_LOG_FLOOR);
            let log_not_p = p.neg().add_scalar(1.0).log().clamp_min(BCE_LOG_FLOOR);
            let not_hot = hot.clone().neg().add_scalar(1.0);
            (hot.clone() * log_p + not_hot * log_not_p).mean().neg()
        }
    }
}

/// Cross-entropy (softmax task) or binary cross-entropy with logits (multi-label), averaged: `[1]`.
pub fn task_loss<B: Backend>(logits: Tensor<B, 2>, targets: &TaskTargets<B>) -> Tensor<B, 1> {
    match targets {
        TaskTargets::Classes(classes) => {
            let b = classes.dims()[0];
            let picked = log_softmax(logits, 1).gather(1, classes.clone().reshape([b, 1]));
            picked.mean().neg()
        }
        TaskTargets::MultiHot(hot) => {
            // max(x, 0) − x·y + log(1 + e^−|x|): stable for large |x|.
            let x = logits;
            (x.clone().clamp_min(0.0) - x.clone() * hot.clone() + x.abs().neg().exp().log1p())
                .mean()
        }
    }
}

/// Number of correct images `[1]`: argmax = class, or every label right at threshold 0.5.
pub fn task_hits<B: Backend>(logits: Tensor<B, 2>, targets: &TaskTargets<B>) -> Tensor<B, 1, Int> {
    match targets {
        TaskTargets::Classes(classes) => {
            let b = classes.dims()[0];
            logits
                .argmax(1)
                .reshape([b])
                .equal(classes.clone())
                .int()
                .sum()
        }
        TaskTargets::MultiHot(hot) => {
            let predicted = logits.greater_elem(0.0).float();
            (predicted - hot.clone())
                .abs()
                .sum_dim(1)
                .lower_elem(0.5)
                .int()
                .sum()
        }
    }
}

/// Mean loss over tasks `[1]` and hits per task `[T]`, in the stable form.
pub fn loss_and_hits<B: Backend>(
    logits: Vec<Tensor<B, 2>>,
    targets: &[TaskTargets<B>],
) -> (Tensor<B, 1>, Tensor<B, 1, Int>) {
    LossForm::Stable.loss_and_hits(logits, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let d = Default::default();
        let logits = Tensor::<Flex, 2>::from_floats([[0.0, 0.0], [2.0, 0.0]], &d);
        let t = TaskTargets::Classes(Tensor::from_ints([1, 0], &d));
        let loss: f32 = task_loss(logits.clone(), &t).into_scalar();
        let want = (2f32.ln() + (1.0 + (-2f32).exp()).ln()) / 2.0;
        assert!((loss - want).abs() < 1e-5);
        assert_eq!(task_hits(logits, &t).into_scalar(), 1);
    }

    /// BCE with logits by hand: −[y·ln σ(x) + (1−y)·ln(1−σ(x))], averaged over every label;
    /// a confident right answer costs little, the same logit on the wrong label much.
    #[test]
    fn binary_cross_entropy_matches_hand_computation() {
        let d = Default::default();
        let logits = Tensor::<Flex, 2>::from_floats([[2.0, -1.0], [-30.0, 0.5]], &d);
        let hot = TaskTargets::MultiHot(Tensor::from_floats([[1.0, 0.0], [1.0, 1.0]], &d));
        let loss: f64 = task_loss(logits, &hot).into_scalar().into();
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let bce = |x: f64, y: f64| -(y * sigmoid(x).ln() + (1.0 - y) * (1.0 - sigmoid(x)).ln());
        let want = (bce(2.0, 1.0) + bce(-1.0, 0.0) + bce(-30.0, 1.0) + bce(0.5, 1.0)) / 4.0;
        assert!((loss - want).abs() < 1e-4, "{loss} vs {want}");
        // Sign: the right label at logit 2 costs ln(1 + e^−2) ≈ 0.127, the wrong one ≈ 2.127.
        let one = |y: f32| -> f64 {
            let t = TaskTargets::MultiHot(Tensor::from_floats([[y]], &d));
            task_loss(Tensor::<Flex, 2>::from_floats([[2.0]], &d), &t)
                .into_scalar()
                .into()
        };
        assert!((one(1.0) - (1.0 + (-2f64).exp()).ln()).abs() < 1e-5);
        assert!((one(0.0) - (1.0 + 2f64.exp()).ln()).abs() < 1e-5);
    }

    /// The official form by hand, in f64: −ln(softmax + ε) and BCE on σ with logs floored
    /// at −100; a saturated wrong label costs 100, where the stable form grows without bound.
    #[test]
    fn official_form_matches_hand_computation() {
        let d = Default::default();
        let form = LossForm::Official { eps: 1e-6 };
        // Image 2's true class has p ≈ 2e-9 ≪ ε: the official loss is ≈ −ln ε, not 20.
        let logits = Tensor::<Flex, 2>::from_floats([[1.0, -2.0, 0.5], [0.0, 20.0, -1.0]], &d);
        let t = TaskTargets::Classes(Tensor::from_ints([2, 0], &d));
        let loss: f64 = form.task_loss(logits, &t).into_scalar().into();
        let p = |row: [f64; 3], k: usize| row[k].exp() / row.iter().map(|x| x.exp()).sum::<f64>();
        let want =
            -((p([1.0, -2.0, 0.5], 2) + 1e-6).ln() + (p([0.0, 20.0, -1.0], 0) + 1e-6).ln()) / 2.0;
        assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");

        let hot = TaskTargets::MultiHot(Tensor::from_floats([[1.0, 0.0], [0.0, 1.0]], &d));
        let logits = Tensor::<Flex, 2>::from_floats([[2.0, -1.0], [40.0, 0.5]], &d);
        let loss: f64 = form.task_loss(logits, &hot).into_scalar().into();
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        // σ(40) is 1 in f32: ln(1 − σ) = −∞, floored at −100.
        let want = (-(s(2.0).ln()) - (1.0 - s(-1.0)).ln() + 100.0 - s(0.5).ln()) / 4.0;
        assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    }

    #[test]
    fn multilabel_exact_match() {
        let d = Default::default();
        let logits = Tensor::<Flex, 2>::from_floats([[3.0, -3.0], [3.0, 3.0]], &d);
        let t = TaskTargets::MultiHot(Tensor::from_floats([[1.0, 0.0], [1.0, 0.0]], &d));
        assert_eq!(task_hits(logits.clone(), &t).into_scalar(), 1);
        let loss: f32 = task_loss(logits, &t).into_scalar();
        assert!(loss > 0.0 && loss.is_finite());
    }
}
