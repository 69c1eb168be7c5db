//! The two numeric metrics burn-train logs per epoch: loss and accuracy averaged over tasks.

use std::sync::Arc;

use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::StepStats;

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
