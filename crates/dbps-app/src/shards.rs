//! Slide lists predicted in shards: `dbps predict --list LIST --shard K/N --out DIR` predicts
//! every N-th slide of the list (one process of a Slurm array each), writing one result file
//! per slide; `dbps predict --merge DIR` gathers them into one CSV and one JSON.
//!
//! A result file is written whole under a temporary name and renamed, and records the
//! checkpoint it came from: a restarted shard skips the slides whose result exists and came
//! from the same checkpoint, and predicts again those from another.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use burn::tensor::backend::Backend;
use dbps_model::atomic_write::write_json_atomic;
use dbps_model::progress::progress_bar;
use dbps_train::backend::{DeviceChoice, OnBackend};

use crate::predict::{ImagePrediction, PredictReport, Predictor, SlideOptions};
use serde::{Deserialize, Serialize};

use crate::{AppError, Result};

/// Shard `K` of `N` (`--shard K/N`, K counting from 1): the list's entries at positions
/// `K−1, K−1+N, K−1+2N, …`, so that shards of a list sorted by size stay balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// The whole list as one shard.
    pub fn whole() -> Self {
        Self { index: 1, count: 1 }
    }

    /// True when this shard holds list position `position` (0-based).
    pub fn holds(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = AppError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: String| AppError::Option {
            option: "--shard",
            reason,
        };
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| bad(format!("`{text}` is not K/N, e.g. 2/8 (shard 2 of 8)")))?;
        let (index, count): (usize, usize) = match (k.trim().parse(), n.trim().parse()) {
            (Ok(k), Ok(n)) => (k, n),
            _ => {
                return Err(bad(format!(
                    "`{text}` is not K/N with whole numbers, e.g. 2/8"
                )));
            }
        };
        if count == 0 {
            return Err(bad(format!("`{text}`: N must be at least 1")));
        }
        if index == 0 || index > count {
            return Err(bad(format!(
                "`{text}`: K counts from 1 to N (1/{count} … {count}/{count}); with Slurm use --shard $((SLURM_ARRAY_TASK_ID+1))/{count} for an array 0-{}",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }
}

/// One slide of a prediction list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedSlide {
    /// Position in the list, from 0.
    pub index: usize,
    /// The entry as the list spells it.
    pub entry: String,
    /// The file it names.
    pub path: PathBuf,
    /// Its label, when the list is a `labels.csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The result file's name, without `.json`: the file's stem, made unique in the list.
    pub name: String,
}

/// A prediction list: a `labels.csv` of slides (`slide,label[,split]`, paths relative to its
/// folder, as `dataset.slides` reads it) or a text file of paths, one per line (absolute, or
/// relative to the list's folder; empty lines and `#` comments skipped).
pub fn read_list(list: &Path) -> Result<Vec<ListedSlide>> {
    let bad = |reason: String| AppError::List {
        path: list.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(list)
        .map_err(|e| bad(format!("cannot be read ({e}); check --list")))?;
    let folder = list.parent().unwrap_or(Path::new("."));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    let csv = lines
        .peek()
        .is_some_and(|(_, l)| l.split(',').next().map(str::trim) == Some("slide"));
    if csv {
        let (_, header) = lines.next().unwrap_or((1, ""));
        if header.split(',').nth(1).map(str::trim) != Some("label") {
            return Err(bad(format!(
                "line 1 `{header}`: a labels.csv starts `slide,label` (optionally `,split`)"
            )));
        }
    }
    let mut slides = Vec::new();
    for (line, text) in lines {
        let (entry, label) = if csv {
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if fields.len() < 2 || fields[0].is_empty() {
                return Err(bad(format!(
                    "line {line} `{text}` is not `slide,label[,split]`"
                )));
            }
            (fields[0].to_string(), Some(fields[1].to_string()))
        } else {
            (text.to_string(), None)
        };
        let path = Path::new(&entry);
        if csv && (path.is_absolute() || path.components().any(|c| c == Component::ParentDir)) {
            return Err(bad(format!(
                "line {line}: `{entry}` leaves the list's folder; a labels.csv names slides inside its folder (write a text list of paths for slides elsewhere)"
            )));
        }
        slides.push(ListedSlide {
            index: slides.len(),
            path: folder.join(path),
            entry,
            label,
            name: String::new(),
        });
    }
    if slides.is_empty() {
        return Err(bad("lists no slide".into()));
    }
    name_results(&mut slides);
    Ok(slides)
}

/// Gives each slide a result name: its file stem with anything but letters, digits, `.`,
/// `-` and `_` replaced, and `-2`, `-3`, … on repeats, in list order.
fn name_results(slides: &mut [ListedSlide]) {
    let mut taken: HashMap<String, usize> = HashMap::new();
    for slide in slides {
        let stem = slide
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut base: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if base.is_empty() || base.starts_with('.') {
            base.insert_str(0, "slide");
        }
        let mut name = base.clone();
        while let Some(seen) = taken.get_mut(&name) {
            *seen += 1;
            name = format!("{base}-{seen}");
        }
        taken.insert(name.clone(), 1);
        slide.name = name;
    }
}

/// Which weights a result came from: per method, its best epoch and a digest of the weight
/// file's bytes (the run's folder may move; its weights may not change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointId {
    /// One entry per method, in name order.
    pub methods: Vec<MethodWeights>,
}

/// One method's weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodWeights {
    /// Method name.
    pub method: String,
    /// The best epoch, whose weights predict.
    pub epoch: usize,
    /// FNV-1a of the weight file, hexadecimal.
    pub digest: String,
}

/// What one slide's result file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideResult {
    /// The slide, as listed.
    pub slide: ListedSlide,
    /// Entries in the list.
    pub of: usize,
    /// The weights used.
    pub checkpoint: CheckpointId,
    /// One prediction per method.
    pub predictions: Vec<ImagePrediction>,
}

/// What a shard did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSummary {
    /// The shard.
    pub shard: Shard,
    /// Slides it holds.
    pub slides: usize,
    /// Slides predicted now.
    pub predicted: usize,
    /// Slides whose result from the same checkpoint already existed (skipped).
    pub kept: usize,
    /// Slides whose result came from another checkpoint (predicted again).
    pub redone: usize,
}

impl std::fmt::Display for ShardSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {}: {} slides, {} predicted, {} already done (kept), {} from another checkpoint (predicted again)",
            self.shard, self.slides, self.predicted, self.kept, self.redone
        )
    }
}

/// Predicts shard `shard` of `list` with the run under `checkpoint`, one result file per
/// slide in `out`.
pub struct ShardJob<'a> {
    /// The list.
    pub list: &'a Path,
    /// The run directory (or one method folder).
    pub checkpoint: &'a Path,
    /// The shard.
    pub shard: Shard,
    /// The results folder.
    pub out: &'a Path,
    /// How slides are read.
    pub slides: SlideOptions,
    /// Where to write each slide's picks as GeoJSON (`<name>.geojson`, the result file's name),
    /// if anywhere.
    pub geojson: Option<&'a Path>,
}

impl ShardJob<'_> {
    /// Runs the shard on `device`.
    pub fn run(&self, device: DeviceChoice) -> Result<ShardSummary> {
        let listed = read_list(self.list)?;
        for dir in std::iter::once(self.out).chain(self.geojson) {
            std::fs::create_dir_all(dir).map_err(|e| AppError::Results {
                path: dir.to_path_buf(),
                reason: format!("cannot be created ({e}); check --out and --geojson"),
            })?;
        }
        device.dispatch(RunShard { job: self, listed })
    }
}

struct RunShard<'a, 'b> {
    job: &'a ShardJob<'b>,
    listed: Vec<ListedSlide>,
}

impl OnBackend for RunShard<'_, '_> {
    type Output = Result<ShardSummary>;

    fn run<B: Backend>(self, device: B::Device, _name: &str) -> Result<ShardSummary> {
        let job = self.job;
        let predictor = Predictor::<B>::open(job.checkpoint, &job.slides, &device)?;
        let id = checkpoint_id(&predictor)?;
        let mine: Vec<&ListedSlide> = self
            .listed
            .iter()
            .filter(|s| job.shard.holds(s.index))
            .collect();
        let mut summary = ShardSummary {
            shard: job.shard,
            slides: mine.len(),
            predicted: 0,
            kept: 0,
            redone: 0,
        };
        let bar = progress_bar(mine.len(), &format!("predict shard {}", job.shard));
        let mut failures = Vec::new();
        for slide in mine {
            let file = job.out.join(format!("{}.json", slide.name));
            let geojson = job
                .geojson
                .map(|dir| dir.join(format!("{}.geojson", slide.name)));
            match read_result(&file) {
                Some(done) if done.slide == *slide && done.checkpoint == id => {
                    tracing::info!(slide = %slide.entry, result = %file.display(), "already predicted with this checkpoint; kept");
                    if let Some(path) = geojson.as_ref().filter(|p| !p.exists()) {
                        // A result written without its GeoJSON (asked for now, or killed in
                        // between): the picks are in the result file.
                        if let Err(error) = write_slide_geojson(path, slide, &done.predictions, job)
                        {
                            failures.push(format!("{}: {error}", slide.entry));
                        }
                    }
                    summary.kept += 1;
                    bar.inc(1);
                    continue;
                }
                Some(_) => {
                    tracing::info!(slide = %slide.entry, result = %file.display(), "result from another checkpoint or list; predicting again");
                    summary.redone += 1;
                }
                None => {}
            }
            match predictor.predict_file(&slide.path) {
                Ok(predictions) => {
                    let result = SlideResult {
                        slide: slide.clone(),
                        of: self.listed.len(),
                        checkpoint: id.clone(),
                        predictions,
                    };
                    write_json_atomic(&file, &result)?;
                    tracing::info!(slide = %slide.entry, result = %file.display(), "predicted");
                    summary.predicted += 1;
                    if let Some(path) = &geojson
                        && let Err(error) =
                            write_slide_geojson(path, slide, &result.predictions, job)
                    {
                        failures.push(format!("{}: {error}", slide.entry));
                    }
                }
                Err(error) => {
                    tracing::error!(slide = %slide.entry, %error, "slide failed");
                    failures.push(format!("{}: {error}", slide.entry));
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        if let Some(first) = failures.first() {
            return Err(AppError::SlidesFailed {
                shard: job.shard.to_string(),
                failed: failures.len(),
                total: summary.slides,
                first: first.clone(),
            });
        }
        Ok(summary)
    }
}

/// A slide's picks as GeoJSON; a prediction without slide geometry (an ordinary image in the
/// list, or a result written before dbps recorded it) is an error naming the slide.
fn write_slide_geojson(
    path: &Path,
    slide: &ListedSlide,
    predictions: &[ImagePrediction],
    job: &ShardJob<'_>,
) -> Result<()> {
    if predictions
        .iter()
        .any(|p| p.slide.as_ref().is_none_or(|r| r.level0_per_pixel <= 0.0))
    {
        return Err(AppError::Results {
            path: slide.path.clone(),
            reason: "has no slide geometry to write as GeoJSON (an ordinary image, or a result file from an older dbps: delete it to predict the slide again)".into(),
        });
    }
    let predictions: Vec<&ImagePrediction> = predictions.iter().collect();
    crate::geojson::write_slide(path, &slide.path, &predictions, job.slides.reader)
}

/// The checkpoint identity of the predictor's weights.
fn checkpoint_id<B: Backend>(predictor: &Predictor<B>) -> Result<CheckpointId> {
    let methods = predictor
        .methods()
        .iter()
        .map(|m| {
            let file = m.manifest.best_checkpoint(&m.dir)?;
            let bytes = std::fs::read(&file).map_err(|e| AppError::Results {
                path: file.clone(),
                reason: format!("the weight file cannot be read ({e})"),
            })?;
            Ok(MethodWeights {
                method: m.manifest.name().to_string(),
                epoch: m.manifest.best_epoch,
                digest: format!("{:016x}", dbps_parallel::fnv1a(&bytes)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CheckpointId { methods })
}

/// A result file, if it exists and reads as one (a damaged one is predicted again).
fn read_result(file: &Path) -> Option<SlideResult> {
    let text = std::fs::read_to_string(file).ok()?;
    match serde_json::from_str(&text) {
        Ok(result) => Some(result),
        Err(error) => {
            tracing::warn!(result = %file.display(), %error, "damaged result; predicting again");
            None
        }
    }
}

/// The file names `merge` writes.
pub const MERGED_CSV: &str = "predictions.csv";
/// See [`MERGED_CSV`].
pub const MERGED_JSON: &str = "predictions.json";

/// What `merge` gathered: the predictions in list order, as `dbps predict` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedResults {
    /// Slides in the list.
    pub slides: usize,
    /// The weights every result came from.
    pub checkpoint: CheckpointId,
    /// Each slide as listed, in list order.
    pub listed: Vec<ListedSlide>,
    /// The predictions, slide by slide in list order, method by method.
    pub report: PredictReport,
}

/// Gathers the result files of `dir` into `dir/predictions.csv` and `dir/predictions.json`.
/// Every slide of the list must have a result, and all from one checkpoint.
pub fn merge(dir: &Path) -> Result<MergedResults> {
    let bad = |path: &Path, reason: String| AppError::Results {
        path: path.to_path_buf(),
        reason,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        bad(
            dir,
            format!("cannot be read ({e}); pass the --out folder of the shards"),
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != MERGED_JSON))
        .collect();
    files.sort();
    let mut results: BTreeMap<usize, SlideResult> = BTreeMap::new();
    let mut total = None;
    let mut checkpoint: Option<(CheckpointId, PathBuf)> = None;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| bad(file, format!("cannot be read ({e})")))?;
        let result: SlideResult = serde_json::from_str(&text).map_err(|e| {
            bad(
                file,
                format!("is not a slide result ({e}); move it out of the results folder"),
            )
        })?;
        match &checkpoint {
            None => checkpoint = Some((result.checkpoint.clone(), file.clone())),
            Some((id, first)) if *id != result.checkpoint => {
                return Err(bad(
                    file,
                    format!(
                        "comes from another checkpoint than {}; run its shard again with the same --checkpoint (it predicts again what another checkpoint wrote)",
                        first.display()
                    ),
                ));
            }
            Some(_) => {}
        }
        if *total.get_or_insert(result.of) != result.of {
            return Err(bad(
                file,
                format!(
                    "belongs to a list of {} slides, the others to one of {}; keep one list's results per folder",
                    result.of,
                    total.unwrap_or(0)
                ),
            ));
        }
        if let Some(other) = results.insert(result.slide.index, result) {
            return Err(bad(
                file,
                format!(
                    "holds list position {} like the result of {}; keep one list's results per folder",
                    other.slide.index, other.slide.entry
                ),
            ));
        }
    }
    let Some((checkpoint, _)) = checkpoint else {
        return Err(bad(
            dir,
            "holds no slide result; run `dbps predict --list … --shard K/N --out` first".into(),
        ));
    };
    let total = total.unwrap_or(0);
    let missing: Vec<usize> = (0..total).filter(|i| !results.contains_key(i)).collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        return Err(bad(
            dir,
            format!(
                "{} of {total} slides have no result yet (list positions {}{}); run the shards that hold them (position p is in shard p mod N + 1)",
                missing.len(),
                shown.join(", "),
                if missing.len() > 10 { ", …" } else { "" }
            ),
        ));
    }
    let listed: Vec<ListedSlide> = results.values().map(|r| r.slide.clone()).collect();
    let predictions: Vec<ImagePrediction> =
        results.into_values().flat_map(|r| r.predictions).collect();
    let merged = MergedResults {
        slides: total,
        checkpoint,
        listed,
        report: PredictReport {
            device: "merged shards".into(),
            // Each shard's memory was its own process's; the merge's says nothing.
            peak_resident_mib: None,
            predictions,
        },
    };
    write_json_atomic(&dir.join(MERGED_JSON), &merged)?;
    let csv = merged.csv();
    dbps_model::atomic_write::write_atomic(&dir.join(MERGED_CSV), csv.as_bytes())?;
    Ok(merged)
}

impl MergedResults {
    /// One row per slide, method and task: the slide as listed, its label (if any), the
    /// method and its epoch, the predicted class(es), their probability, every probability.
    pub fn csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::from("slide,label,method,epoch,task,prediction,p,probabilities\n");
        let per_slide = self.report.predictions.len() / self.listed.len().max(1);
        for (i, p) in self.report.predictions.iter().enumerate() {
            let slide = &self.listed[i / per_slide.max(1)];
            for t in &p.tasks {
                let names: Vec<String> = if t.labels.is_empty() {
                    t.classes.iter().map(|c| c.to_string()).collect()
                } else {
                    t.labels.clone()
                };
                let top = t
                    .classes
                    .first()
                    .map_or(String::new(), |&c| format!("{:.6}", t.probabilities[c]));
                let all: Vec<String> = t.probabilities.iter().map(|q| format!("{q:.6}")).collect();
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    quote(&slide.entry),
                    quote(slide.label.as_deref().unwrap_or("")),
                    quote(&p.method),
                    p.epoch,
                    quote(&t.task),
                    quote(&names.join(";")),
                    top,
                    quote(&all.join(";"))
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_with_their_fix_and_partition_the_list() {
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
        for (text, says) in [
            ("0/3", "K counts from 1"),
            ("4/3", "K counts from 1"),
            ("1/0", "at least 1"),
            ("2", "K/N"),
            ("a/b", "whole numbers"),
        ] {
            let err = text.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        let shards: Vec<Shard> = (1..=3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for position in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.holds(position)).count(), 1);
        }
    }

    fn scratch(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dbps-list-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn lists_of_paths_and_labels_csv_read_with_unique_names() {
        let list = scratch(
            "paths.txt",
            "# slides\na/s1.tif\n\nb/s1.tif\n/abs/s 2.svs\n",
        );
        let slides = read_list(&list).unwrap();
        let names: Vec<&str> = slides.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "s1-2", "s_2"]);
        assert_eq!(slides[0].path, list.parent().unwrap().join("a/s1.tif"));
        assert_eq!(slides[2].path, Path::new("/abs/s 2.svs"));
        assert_eq!(slides[1].index, 1);

        let csv = scratch(
            "labels.csv",
            "slide,label,split\nx.tif,tumor,test\ny.tif,normal,test\n",
        );
        let slides = read_list(&csv).unwrap();
        assert_eq!(slides[1].label.as_deref(), Some("normal"));
        assert_eq!(slides[1].entry, "y.tif");

        for (text, says) in [
            ("slide,label\n../x.tif,a\n", "leaves the list's folder"),
            ("slide,label\nx.tif\n", "line 2"),
            ("slide,split\nx.tif,a\n", "starts `slide,label`"),
            ("# nothing\n", "lists no slide"),
        ] {
            let err = read_list(&scratch("bad.csv", text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
