//! Progress bars for burn-train's training loop.

use burn_train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn_train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

use dbps_model::progress::unstyled_bar;
use indicatif::{ProgressBar, ProgressStyle};

/// Shows one bar per epoch phase with the running loss and accuracy; hidden when not a terminal.
pub struct ProgressRenderer {
    label: String,
    bar: Option<ProgressBar>,
    phase: &'static str,
    names: Vec<(MetricId, String)>,
    values: Vec<(String, f64)>,
}

impl ProgressRenderer {
    /// A renderer whose bars are labelled `label` (the method's name).
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            bar: None,
            phase: "",
            names: Vec::new(),
            values: Vec::new(),
        }
    }

    fn record(&mut self, state: MetricState) {
        let MetricState::Numeric(entry, value) = state else {
            return;
        };
        let Some((_, name)) = self.names.iter().find(|(id, _)| *id == entry.metric_id) else {
            return;
        };
        let value = match value {
            NumericEntry::Value(v) => v,
            NumericEntry::Aggregated {
                aggregated_value, ..
            } => aggregated_value,
        };
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.clone(), value)),
        }
    }

    fn render(&mut self, phase: &'static str, item: TrainingProgress) {
        let Some(progress) = item.progress else {
            return;
        };
        if self.phase != phase
            || self
                .bar
                .as_ref()
                .is_none_or(|b| b.position() > progress.items_processed as u64)
        {
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
            let bar = unstyled_bar(progress.items_total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!(
                "{} {phase} epoch {}/{}",
                self.label, item.global_progress.items_processed, item.global_progress.items_total
            ));
            self.bar = Some(bar);
            self.phase = phase;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(progress.items_processed as u64);
            let msg: Vec<String> = self
                .values
                .iter()
                .map(|(n, v)| format!("{n} {v:.3}"))
                .collect();
            bar.set_message(msg.join(" "));
        }
    }
}

impl MetricsRendererTraining for ProgressRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.render("train", item);
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.render("valid", item);
    }

    fn on_train_end(
        &mut self,
        _: Option<burn_train::LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.manual_close();
        Ok(())
    }
}

impl MetricsRendererEvaluation for ProgressRenderer {
    fn update_test(&mut self, _: EvaluationName, state: MetricState) {
        self.record(state);
    }

    fn render_test(&mut self, item: EvaluationProgress, _: Vec<ProgressType>) {
        self.render("test", TrainingProgress::from(&item));
    }

    fn on_test_end(
        &mut self,
        _: Option<burn_train::LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.manual_close();
        Ok(())
    }
}

impl MetricsRenderer for ProgressRenderer {
    fn manual_close(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.push((definition.metric_id, definition.name));
    }
}
