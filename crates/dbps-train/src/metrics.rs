//! The two numeric metrics burn-train logs per epoch: loss and accuracy averaged over tasks.

use burn_train::metric::state::{FormatOptions, NumericMetricState};
use burn_train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use std::sync::Arc;

use crate::StepStats;

/// Name under which the loss is logged.
pub const LOSS: &str = "Loss";
/// Name under which the mean task accuracy is logged.
pub const ACCURACY: &str = "Accuracy";

/// Mean loss over tasks.
#[derive(Clone)]
pub struct TaskLossMetric {
    name: MetricName,
    state: NumericMetricState,
}

/// Accuracy averaged over tasks, in percent.
#[derive(Clone)]
pub struct TaskAccuracyMetric {
    name: MetricName,
    state: NumericMetricState,
}

impl Default for TaskLossMetric {
    fn default() -> Self {
        Self {
            name: Arc::new(LOSS.into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Default for TaskAccuracyMetric {
    fn default() -> Self {
        Self {
            name: Arc::new(ACCURACY.into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for TaskLossMetric {
    type Input = StepStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(&mut self, item: &StepStats, _: &MetricMetadata) -> SerializedEntry {
        self.state.update(
            item.loss,
            item.batch,
            FormatOptions::new(self.name()).precision(4),
        )
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for TaskLossMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

impl Metric for TaskAccuracyMetric {
    type Input = StepStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("%".into()),
            higher_is_better: true,
        }
        .into()
    }

    fn update(&mut self, item: &StepStats, _: &MetricMetadata) -> SerializedEntry {
        let format = FormatOptions::new(self.name()).unit("%").precision(2);
        self.state
            .update(100.0 * item.mean_accuracy(), item.batch, format)
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for TaskAccuracyMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
