//! Results of a run: what `metrics.json` holds and the table the CLI prints.

use serde::{Deserialize, Serialize};

use dbps_model::meter::EfficiencyFigures;

/// Test figures of one model on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalFigures {
    /// Mean loss over tasks and images.
    pub loss: f64,
    /// Accuracy per task, as a fraction, in the dataset's task order.
    pub tasks: Vec<TaskAccuracy>,
    /// Images evaluated.
    pub images: usize,
    /// Seconds the evaluation took.
    pub seconds: f64,
}

/// Accuracy of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAccuracy {
    /// Task name.
    pub task: String,
    /// Fraction of images right.
    pub accuracy: f64,
    /// Area under the ROC curve of the second class's probability, for two-class tasks whose
    /// split holds both classes (CAMELYON16 reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
}

/// Train and validation figures of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochFigures {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean training accuracy over tasks (%).
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Mean validation accuracy over tasks (%).
    pub valid_accuracy: f64,
    /// Time and peak memory per optimizer step over the epoch (see [`dbps_model::meter`]).
    pub efficiency: Option<EfficiencyFigures>,
}

/// Everything measured for one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    /// Method name.
    pub method: String,
    /// M, S, L and r.
    pub selection: SelectionFigures,
    /// Epochs trained.
    pub epochs: usize,
    /// Training wall time in seconds (all epochs, validation included).
    pub train_seconds: f64,
    /// Time and peak memory per optimizer step in the last epoch (see [`dbps_model::meter`]).
    pub efficiency: Option<EfficiencyFigures>,
    /// Epoch whose weights did best on validation.
    pub best_epoch: usize,
    /// Per-epoch history.
    pub history: Vec<EpochFigures>,
    /// Test figures of the last epoch's weights.
    pub test_last: EvalFigures,
    /// Test figures of the best-on-validation weights.
    pub test_best_valid: EvalFigures,
}

/// The selection settings of a method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionFigures {
    /// Patches per image N (0 for bags of features, whose N differs from bag to bag).
    pub n: usize,
    /// Salient patches M.
    pub m: usize,
    /// Salient patches M′ at evaluation.
    pub m_eval: usize,
    /// Sub-salient patches S.
    pub s: usize,
    /// Patches per iteration L.
    pub l: usize,
    /// Patch-drop ratio r.
    pub drop: f64,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run name.
    pub run: String,
    /// The run directory.
    pub dir: std::path::PathBuf,
    /// Backend and device.
    pub device: String,
    /// Per method, in config order.
    pub methods: Vec<MethodReport>,
}

impl RunReport {
    /// The table the CLI prints: one row per method and task.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<10} {:<10} {:>11} {:>14} {:>9} {:>7} {:>10} {:>9} {:>9} {:>12}\n",
            "method",
            "task",
            "test acc",
            "test acc",
            "test loss",
            "epochs",
            "train time",
            "step",
            "step mem",
            "test AUC"
        );
        out += &format!(
            "{:<10} {:<10} {:>11} {:>14} {:>9} {:>7} {:>10} {:>9} {:>9} {:>12}\n",
            "",
            "",
            "(last ep.)",
            "(best valid)",
            "(last)",
            "",
            "",
            "(median)",
            "(peak)",
            "(best valid)"
        );
        for m in &self.methods {
            for (last, best) in m.test_last.tasks.iter().zip(&m.test_best_valid.tasks) {
                out += &format!(
                    "{:<10} {:<10} {:>10.2}% {:>13.2}% {:>9.4} {:>7} {:>9.1}s {:>9} {:>9} {:>12}\n",
                    m.method,
                    last.task,
                    100.0 * last.accuracy,
                    100.0 * best.accuracy,
                    m.test_last.loss,
                    m.epochs,
                    m.train_seconds,
                    m.efficiency
                        .as_ref()
                        .map_or_else(|| "-".into(), |e| format!("{:.0}ms", e.ms_per_step)),
                    m.efficiency
                        .as_ref()
                        .and_then(|e| e.peak_step_bytes)
                        .map_or_else(|| "-".into(), |b| format!("{:.0}MB", b as f64 / 1e6)),
                    best.auc.map_or_else(|| "-".into(), |a| format!("{a:.4}")),
                );
            }
        }
        out
    }
}
