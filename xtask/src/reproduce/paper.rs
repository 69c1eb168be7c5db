//! The paper's numbers (`configs/paper/tables.json`, transcribed once from the DBPS paper) and
//! the rows `cargo xtask reproduce` measures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Where the transcription lives, relative to the workspace root.
pub const TABLES: &str = "configs/paper/tables.json";

/// What a dataset's rows report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Accuracy in %.
    Accuracy,
    /// Area under the ROC curve in % (CAMELYON16).
    Auc,
}

/// A dataset of the tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    /// Name in the paper.
    pub title: String,
    /// What its rows report.
    pub metric: Metric,
    /// Classes of its single task: the head size when the cost is measured without data.
    pub classes: usize,
    /// Patches per image N (none for CAMELYON16, whose bags vary).
    pub patches: Option<usize>,
    /// Patch side in pixels (1 for bags of features: one patch per feature vector).
    pub patch: usize,
    /// For bags of features: the bag length of the generated input the cost columns are
    /// measured on (real bags differ in length).
    #[serde(default)]
    pub generated_bag: Option<usize>,
}

/// The paper's figures of one row; absent where the paper gives none.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaperFigures {
    /// Accuracy or AUC in %.
    pub metric: Option<f64>,
    /// Peak GPU memory of a training step in GB (Tables 1–2).
    pub vram_gb: Option<f64>,
    /// Peak GPU memory of an inference batch in MB (Table 3).
    pub memory_mb: Option<f64>,
    /// Milliseconds per training step or inference batch of 16.
    pub ms: Option<f64>,
}

/// One row of a table: a method setting on a dataset, the config that trains it, and the
/// paper's figures.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PaperRow {
    /// Dataset key (`cqu-bpdd`, `fmow`, …).
    pub dataset: String,
    /// Row name, also the config's file stem.
    pub row: String,
    /// The row's config (none for a row dbps cannot run).
    pub config: Option<PathBuf>,
    /// The method's name in the paper.
    #[serde(default)]
    pub paper_method: Option<String>,
    /// Salient patches in training M.
    #[serde(default)]
    pub m: Option<usize>,
    /// Salient patches in evaluation M′.
    #[serde(default)]
    pub m_eval: Option<usize>,
    /// Sub-salient patches S.
    #[serde(default)]
    pub s: Option<usize>,
    /// Patch-drop ratio r.
    #[serde(default)]
    pub drop: Option<f64>,
    /// `ips` or `dual_attention`.
    #[serde(default)]
    pub aggregator: Option<String>,
    /// Table 2: the dual buffer is on.
    #[serde(default)]
    pub dual_buffer: Option<bool>,
    /// Table 2: the dual-attention MIL is on.
    #[serde(default)]
    pub dual_attention: Option<bool>,
    /// The paper's figures (none for the IPS paper's megapixel-MNIST setting).
    pub paper: Option<PaperFigures>,
}

/// The whole transcription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperTables {
    /// Where the numbers come from and their units.
    pub source: String,
    /// Every dataset of the tables.
    pub datasets: BTreeMap<String, DatasetInfo>,
    /// Table 1: methods and settings on six datasets.
    pub table1: Vec<PaperRow>,
    /// Table 2: the ablation on CQU-BPDD and fMoW.
    pub table2: Vec<PaperRow>,
    /// Table 3: inference cost per batch of 16.
    pub table3: Vec<PaperRow>,
    /// The IPS paper's megapixel-MNIST setting (M = 100), IPS and DBPS.
    pub megapixel_mnist: Vec<PaperRow>,
}

/// Which table a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Table {
    /// Table 1.
    One,
    /// Table 2.
    Two,
    /// Table 3 (inference).
    Three,
    /// The IPS paper's megapixel-MNIST experiment.
    MegapixelMnist,
}

impl Table {
    /// The output files' stem.
    pub fn stem(self) -> &'static str {
        match self {
            Self::One => "table1",
            Self::Two => "table2",
            Self::Three => "table3",
            Self::MegapixelMnist => "megapixel-mnist",
        }
    }

    /// Heading of the written table.
    pub fn title(self) -> &'static str {
        match self {
            Self::One => "Table 1: methods and settings",
            Self::Two => "Table 2: ablation (M = 12, S = 24)",
            Self::Three => "Table 3: inference cost per batch of 16",
            Self::MegapixelMnist => "Megapixel MNIST at the IPS setting (M = 100, L = 100)",
        }
    }
}

impl PaperTables {
    /// Reads the transcription from the workspace root.
    pub fn read(root: &Path) -> Result<Self> {
        let path = root.join(TABLES);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// The dataset of a row.
    pub fn dataset(&self, row: &PaperRow) -> Result<&DatasetInfo> {
        self.datasets.get(&row.dataset).with_context(|| {
            format!(
                "{TABLES}: row {} names dataset {}, which `datasets` lacks",
                row.row, row.dataset
            )
        })
    }

    /// The rows to measure: `table` (all tables and the megapixel-MNIST rows when absent),
    /// restricted to `dataset` when given. An unknown table or dataset is an error listing
    /// the known ones.
    pub fn select(
        &self,
        table: Option<u8>,
        dataset: Option<&str>,
    ) -> Result<Vec<(Table, &PaperRow)>> {
        if let Some(name) = dataset
            && !self.datasets.contains_key(name)
        {
            bail!(
                "--dataset {name}: unknown; use one of {}",
                self.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let tables: Vec<(Table, &Vec<PaperRow>)> = match table {
            None => vec![
                (Table::One, &self.table1),
                (Table::Two, &self.table2),
                (Table::Three, &self.table3),
                (Table::MegapixelMnist, &self.megapixel_mnist),
            ],
            Some(1) => vec![(Table::One, &self.table1)],
            Some(2) => vec![(Table::Two, &self.table2)],
            Some(3) => vec![(Table::Three, &self.table3)],
            Some(other) => bail!("--table {other}: the paper has tables 1, 2 and 3"),
        };
        let rows: Vec<(Table, &PaperRow)> = tables
            .into_iter()
            .flat_map(|(t, rows)| rows.iter().map(move |r| (t, r)))
            .filter(|(_, r)| dataset.is_none_or(|d| r.dataset == d))
            .collect();
        if rows.is_empty() {
            bail!(
                "no row of table {} is on dataset {}; Table 2 and 3 cover cqu-bpdd and fmow only",
                table.map_or_else(|| "any".into(), |t| t.to_string()),
                dataset.unwrap_or("any")
            );
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reproduce::row::{Effort, resolve};
    use dbps_mil::AggregatorKind;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Every row's config trains exactly the setting the row names, so that the written tables
    /// put our figures beside the right paper numbers.
    #[test]
    fn every_config_matches_its_row() {
        let tables = PaperTables::read(&root()).unwrap();
        let mut checked = 0;
        for (table, row) in tables.select(None, None).unwrap() {
            tables.dataset(row).unwrap();
            let Some(config) = &row.config else {
                panic!("{table:?} {} has no config", row.row);
            };
            assert_eq!(
                config.file_stem().and_then(|s| s.to_str()),
                Some(row.row.as_str())
            );
            // The weights' path is checked by `resolve`; here only the settings.
            let resolved = resolve(
                &root(),
                config,
                Path::new("/nonexistent"),
                &Effort::new(false),
            )
            .unwrap();
            let config = resolved.config;
            assert_eq!(config.methods.len(), 1, "{}", row.row);
            let dataset = tables.dataset(row).unwrap();
            assert_eq!(config.patch.size, dataset.patch, "{}", row.row);
            if config.bags() {
                assert!(dataset.generated_bag.is_some(), "{}", row.row);
            } else {
                assert_eq!(Some(config.grid().len()), dataset.patches, "{}", row.row);
            }
            let method = &config.methods[0];
            let expect = |field: &str, ours: Option<f64>, paper: Option<f64>| {
                if let Some(paper) = paper {
                    assert_eq!(ours, Some(paper), "{table:?} {} {field}", row.row);
                }
            };
            let m = method.m as f64;
            expect("m", Some(m), row.m.map(|v| v as f64));
            expect(
                "m_eval",
                Some(method.m_eval.map_or(m, |v| v as f64)),
                row.m_eval.map(|v| v as f64),
            );
            expect("s", Some(method.s as f64), row.s.map(|v| v as f64));
            expect("drop", Some(method.drop), row.drop);
            if let Some(kind) = &row.aggregator {
                let ours = match method.aggregator {
                    AggregatorKind::Ips => "ips",
                    AggregatorKind::DualAttention => "dual_attention",
                };
                assert_eq!(ours, kind, "{table:?} {}", row.row);
            }
            if let Some(on) = row.dual_attention {
                assert_eq!(
                    on,
                    method.aggregator == AggregatorKind::DualAttention,
                    "{}",
                    row.row
                );
            }
            if let Some(on) = row.dual_buffer {
                assert_eq!(on, method.s > 0, "{}", row.row);
            }
            checked += 1;
        }
        // 56 of Table 1, 18 of Table 2, 4 of Table 3, 2 of megapixel MNIST.
        assert_eq!(checked, 80);
    }

    #[test]
    fn selection_names_what_exists() {
        let tables = PaperTables::read(&root()).unwrap();
        assert_eq!(tables.select(Some(2), None).unwrap().len(), 18);
        assert_eq!(tables.select(Some(2), Some("fmow")).unwrap().len(), 9);
        let err = tables
            .select(None, Some("imagenet"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cqu-bpdd") && err.contains("megapixel-mnist"),
            "{err}"
        );
        let err = tables.select(Some(4), None).unwrap_err().to_string();
        assert!(err.contains("1, 2 and 3"), "{err}");
        let err = tables.select(Some(2), Some("ddr")).unwrap_err().to_string();
        assert!(err.contains("cqu-bpdd and fmow"), "{err}");
    }
}
