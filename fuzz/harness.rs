//! What each fuzz target does with its bytes: write them where a parser of dbps reads a file
//! and run the parser as dbps would. Shared, by `#[path]`, between the cargo-fuzz targets
//! (nightly, by hand) and the stable test that replays their corpora in CI
//! (`tests/fuzz_corpora.rs`), so that both exercise the same code.
//!
//! A parser may refuse any input with an error; it must never panic, hang or allocate beyond
//! what the file holds or a documented limit.

use std::path::{Path, PathBuf};

use dbps_data::{
    FeatureBags, FeatureBagsConfig, FeatureFile, FileInput, ImageFolderConfig, SlideSet,
    SlidesConfig, Split, open_traffic_signs, read_idx_digits,
};
use dbps_slide::{Resolution, Slide, SlideReader, SlideView, TissueMask};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus folder.
pub const TARGETS: [(&str, Target); 6] = [
    ("slide", slide),
    ("idx", idx),
    ("features", features),
    ("labels", labels),
    ("weights", weights),
    ("config", config),
];

/// A folder of its own for this thread, emptied.
fn scratch(target: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dbps-fuzz-{target}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("a scratch folder");
    }
    std::fs::write(path, bytes).expect("a scratch file");
}

/// The bytes after the first written to a scratch file of `target` named `names[0]` when the
/// first byte is even, `names[1]` when odd (one input reaches either format); `None` when
/// there are no bytes.
fn file_named_by_first_byte(target: &str, data: &[u8], names: [&str; 2]) -> Option<PathBuf> {
    let (&head, rest) = data.split_first()?;
    let path = scratch(target).join(names[usize::from(head & 1)]);
    write(&path, rest);
    Some(path)
}

/// A TIFF pyramid as `predict` reads it (levels, regions, thumbnail, tissue mask and its
/// outline, a view resampled to a resolution between levels), and the same bytes as an
/// ordinary image decoded whole (PNG, JPEG, BMP, TIFF).
pub fn slide(data: &[u8]) {
    let dir = scratch("slide");
    let path = dir.join("slide.tif");
    write(&path, data);
    if let Ok(Some(slide)) = Slide::open_if_slide(&path, SlideReader::Builtin, 1 << 20) {
        for (i, level) in slide.levels().iter().enumerate().take(4) {
            let [h, w] = level.size;
            let _ = slide.read_region(i, [h / 3, w / 3], [h.min(48), w.min(48)]);
        }
        if let Ok(mask) = TissueMask::of_slide(&slide) {
            let _ = mask.contours();
        }
        let slide = std::sync::Arc::new(slide);
        let between = slide.mpp().unwrap_or(1.0) * 1.5;
        if let Ok(view) = SlideView::new(slide, Resolution::MicronsPerPixel(between)) {
            let [h, w] = view.size();
            let _ = view.read_region([h / 3, w / 3], [h.min(32), w.min(32)]);
        }
    }
    let _ = FileInput::Rgb.read(&path, 1 << 22);
    let _ = FileInput::Gray.read(&path, 1 << 22);
}

/// An IDX image/label pair; the first byte says whether the images are gzipped and where
/// the bytes split between the two files.
pub fn idx(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch("idx");
    let cut = (usize::from(head >> 1) * rest.len() / 128).min(rest.len());
    let (images, labels) = rest.split_at(cut);
    let images_path = dir.join(if head & 1 == 1 {
        "t-images-idx3-ubyte.gz"
    } else {
        "t-images-idx3-ubyte"
    });
    write(&images_path, images);
    write(&dir.join("t-labels-idx1-ubyte"), labels);
    let _ = read_idx_digits(&images_path, &dir.join("t-labels-idx1-ubyte"));
}

/// A feature file, as `.npy` (first byte even) or `.safetensors`: header, then values.
pub fn features(data: &[u8]) {
    let Some(path) = file_named_by_first_byte("features", data, ["bag.npy", "bag.safetensors"])
    else {
        return;
    };
    if let Ok(file) = FeatureFile::open(&path) {
        let _ = file.read();
    }
}

/// A `labels.csv` read by the slide and feature-bag datasets, and the same text as the
/// traffic signs' `annotations.txt`. One small slide and one feature file exist, so that lines
/// naming them get past the existence check.
pub fn labels(data: &[u8]) {
    let dir = scratch("labels");
    write(&dir.join("labels.csv"), data);
    write(&dir.join("a.tif"), b"II*\0");
    write(&dir.join("features/a.npy"), b"");
    let slides = SlidesConfig::new(&dir);
    for split in [Split::Train, Split::Valid, Split::Test] {
        let _ = SlideSet::open(&slides, None, split, |_, _| {});
    }
    let bags = FeatureBagsConfig {
        root: dir.clone(),
        feature_dim: 4,
        val_fraction: 0.25,
        seed: 0,
    };
    let _ = FeatureBags::open(&bags, Split::Train);
    write(&dir.join("Set1/annotations.txt"), data);
    let signs: ImageFolderConfig = serde_json::from_value(serde_json::json!({
        "root": dir, "height": 8, "width": 8
    }))
    .expect("a traffic-sign config");
    let _ = open_traffic_signs(&signs, Split::Train, |_, _| {});
}

/// A weight file, as `.pth` (first byte even) or `.safetensors`.
pub fn weights(data: &[u8]) {
    let Some(path) = file_named_by_first_byte("weights", data, ["w.pth", "w.safetensors"]) else {
        return;
    };
    let _ = dbps_encoder::TorchvisionWeights::open(&path);
}

/// A run config, parsed and checked as `dbps train --config` does before any data is read.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dbps_train::RunConfig::from_json(text, "fuzz input");
    }
}
