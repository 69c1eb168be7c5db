//! Progress bars for burn-train's training loop.

use burn_train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn_train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static BARS_HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every progress bar of this process (`--quiet`: logs only).
pub fn hide_progress_bars() {
    BARS_HIDDEN.store(true, Ordering::Relaxed);
}

/// Every bar of the process draws through one `MultiProgress`, so that bars open at once (a
/// reproduction's rows around each row's training) stack instead of overwriting one line.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

fn new_bar(len: u64) -> ProgressBar {
    if BARS_HIDDEN.load(Ordering::Relaxed) {
        ProgressBar::hidden()
    } else {
        bars().add(ProgressBar::new(len))
    }
}

/// Runs `print` with every bar cleared from the terminal, then draws them again below what
/// it wrote (a binary's own log lines).
pub fn suspend_bars<R>(print: impl FnOnce() -> R) -> R {
    bars().suspend(print)
}

/// A bar over `len` items of long work (data preparation, evaluation, prediction,
/// reproduction) labelled `prefix`; indicatif hides it when stderr is not a terminal, and
/// [`hide_progress_bars`] hides it always.
pub fn progress_bar(len: usize, prefix: &str) -> ProgressBar {
    let bar = new_bar(len as u64).with_prefix(prefix.to_string());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({elapsed}<{eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

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
            let bar = new_bar(progress.items_total as u64);
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
