//! The two numeric metrics burn-train logs per epoch: loss and accuracy averaged over tasks.

use std::sync::Arc;

use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::step::StepStats;

/// Name under which the loss is logged.
pub const LOSS: &str = "Loss";
/// Name under which the mean task accuracy is logged.
pub const ACCURACY: &str = "Accuracy";

/// Which figure of a [`StepStats`] a [`TaskMetric`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    Loss,
    Accuracy,
}

/// Mean loss over tasks, or accuracy averaged over tasks in percent.
#[derive(Clone)]
pub struct TaskMetric {
    name: MetricName,
    figure: Figure,
    state: NumericMetricState,
}

impl TaskMetric {
    fn new(name: &str, figure: Figure) -> Self {
        Self {
            name: Arc::new(name.into()),
            figure,
            state: NumericMetricState::new(),
        }
    }

    /// The mean loss over tasks (logged as `Loss`).
    pub fn loss() -> Self {
        Self::new(LOSS, Figure::Loss)
    }

    /// The accuracy averaged over tasks, in percent (logged as `Accuracy`).
    pub fn accuracy() -> Self {
        Self::new(ACCURACY, Figure::Accuracy)
    }
}

impl Metric for TaskMetric {
    type Input = StepStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        let accuracy = self.figure == Figure::Accuracy;
        NumericAttributes {
            unit: accuracy.then(|| "%".into()),
            higher_is_better: accuracy,
        }
        .into()
    }

    fn update(&mut self, item: &StepStats, _: &MetricMetadata) -> SerializedEntry {
        let format = FormatOptions::new(self.name());
        let (value, format) = match self.figure {
            Figure::Loss => (item.loss, format.precision(4)),
            Figure::Accuracy => (100.0 * item.mean_accuracy(), format.unit("%").precision(2)),
        };
        self.state.update(value, item.batch, format)
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for TaskMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Area under the ROC curve of `scores` for the `positive` labels: the probability that a
/// random positive scores above a random negative, ties counting one half (Mann–Whitney U
/// with mid-ranks). `None` when either class is absent.
pub fn binary_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n = scores.len().min(positive.len());
    let positives = positive[..n].iter().filter(|&&p| p).count();
    let negatives = n - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (1-based start+1..=end) share their mean.
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum += mid_rank * order[start..end].iter().filter(|&&i| positive[i]).count() as f64;
        start = end;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counted by hand over all positive–negative pairs.
    #[test]
    fn auc_counts_ordered_pairs_and_half_ties() {
        // Positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) → 3/4.
        let auc = binary_auc(&[0.9, 0.5, 0.4, 0.1], &[true, false, true, false]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12, "{auc}");
        // Positives 0.7, 0.9 against the negative 0.7: a tie counts one half, (0.5 + 1) / 2.
        let auc = binary_auc(&[0.7, 0.7, 0.9], &[true, false, true]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12, "{auc}");
        assert_eq!(binary_auc(&[0.3, 0.8], &[true, true]), None);
        assert_eq!(binary_auc(&[0.8, 0.3], &[true, false]), Some(1.0));
        assert_eq!(binary_auc(&[0.8, 0.3], &[false, true]), Some(0.0));
    }
}
