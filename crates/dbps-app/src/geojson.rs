//! `dbps predict … --geojson DIR` and `dbps explain … --geojson F.geojson`: where the model
//! looked, as a GeoJSON FeatureCollection that QuPath opens with "Import objects".
//!
//! Coordinates are level-0 pixels (x right, y down), as QuPath and OpenSlide address a slide,
//! whatever level or resolution the model read: a patch at grid origin `[y, x]` of side `p`
//! covers `[x·s, (x + p)·s] × [y·s, (y + p)·s]` with `s` the level-0 pixels per model pixel.
//! Each picked patch is one Feature (a detection whose classification is its role, salient
//! or sub-salient; its grid index, method and, from `explain`, attention per head and mean
//! as QuPath measurements); `explain --geojson-all` adds every scored patch; the tissue mask's
//! outline is one annotation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dbps_slide::{Slide, SlideReader, TissueMask, TissuePolygon};
use dbps_train::TrainError;

use crate::explain::{Explanation, SALIENT_COLOR, SUB_SALIENT_COLOR};
use crate::predict::{GridGeometry, ImagePrediction, PredictReport, SlideReading};
use serde_json::{Map, Value, json};

use crate::{AppError, Result};

/// Colours (RGB) of the classifications QuPath shows: the roles as `explain` draws them, grey
/// for scored patches, green for tissue.
const SALIENT: [u8; 3] = SALIENT_COLOR;
const SUB_SALIENT: [u8; 3] = SUB_SALIENT_COLOR;
const SCORED: [u8; 3] = [128, 128, 128];
const TISSUE: [u8; 3] = [0, 160, 0];

/// What a patch is to the method that scored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One of the M salient patches.
    Salient,
    /// One of the S sub-salient patches (DBPS).
    SubSalient,
    /// Scored, not picked (`--geojson-all` only).
    Scored,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Salient => "salient",
            Self::SubSalient => "sub-salient",
            Self::Scored => "scored",
        }
    }

    fn color(self) -> [u8; 3] {
        match self {
            Self::Salient => SALIENT,
            Self::SubSalient => SUB_SALIENT,
            Self::Scored => SCORED,
        }
    }
}

/// The closed ring of the level-0 square of patch `index`.
fn patch_ring(grid: &GridGeometry, index: usize, level0_per_pixel: f64) -> Value {
    let [y, x] = grid.origin(index);
    let s = level0_per_pixel;
    let (x0, y0) = (x as f64 * s, y as f64 * s);
    let (x1, y1) = ((x + grid.patch) as f64 * s, (y + grid.patch) as f64 * s);
    json!([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
}

/// One patch as a Feature; `attention` is per head, over the candidates.
fn patch_feature(
    method: &str,
    role: Role,
    index: usize,
    grid: &GridGeometry,
    level0_per_pixel: f64,
    attention: Option<&[f32]>,
) -> Value {
    let mut measurements = Map::new();
    measurements.insert("grid index".into(), json!(index));
    if let Some(heads) = attention {
        for (h, a) in heads.iter().enumerate() {
            measurements.insert(format!("attention head {h}"), json!(a));
        }
        let mean = heads.iter().sum::<f32>() / heads.len().max(1) as f32;
        measurements.insert("attention mean".into(), json!(mean));
    }
    let [r, g, b] = role.color();
    json!({
        "type": "Feature",
        "geometry": { "type": "Polygon", "coordinates": patch_ring(grid, index, level0_per_pixel) },
        "properties": {
            "objectType": "detection",
            "name": format!("{method} {} {index}", role.name()),
            "classification": { "name": role.name(), "color": [r, g, b] },
            "method": method,
            "role": role.name(),
            "grid_index": index,
            "measurements": measurements,
        }
    })
}

/// The tissue mask's outline in level-0 pixels, as one annotation (a MultiPolygon); `None`
/// when the mask holds no tissue.
pub fn tissue_feature(slide: &Slide, mask: &TissueMask) -> Option<Value> {
    let [h0, w0] = slide.levels()[0].size;
    let [mh, mw] = mask.size;
    let (sx, sy) = (w0 as f64 / mw as f64, h0 as f64 / mh as f64);
    let ring = |r: &[[i64; 2]]| -> Value {
        r.iter()
            .map(|&[x, y]| json!([x as f64 * sx, y as f64 * sy]))
            .collect()
    };
    let polygons: Vec<Value> = mask
        .contours()
        .iter()
        .map(|TissuePolygon { exterior, holes }| {
            std::iter::once(ring(exterior))
                .chain(holes.iter().map(|h| ring(h)))
                .collect()
        })
        .collect();
    if polygons.is_empty() {
        return None;
    }
    let [r, g, b] = TISSUE;
    Some(json!({
        "type": "Feature",
        "geometry": { "type": "MultiPolygon", "coordinates": polygons },
        "properties": {
            "objectType": "annotation",
            "name": format!("tissue (Otsu threshold {})", mask.threshold),
            "classification": { "name": "Tissue", "color": [r, g, b] },
            "isLocked": true,
        }
    }))
}

/// The picks of every method's prediction of one slide (`predict` has no attention), plus
/// `tissue`. Predictions of an ordinary image (no slide reading) are an error.
pub fn predictions_geojson(
    predictions: &[&ImagePrediction],
    tissue: Option<Value>,
) -> Result<Value> {
    let mut features = Vec::new();
    for p in predictions {
        let reading = slide_reading(&p.image, p.slide.as_ref())?;
        for (indices, role) in [
            (&p.salient, Role::Salient),
            (&p.sub_salient, Role::SubSalient),
        ] {
            features.extend(indices.iter().map(|&i| {
                patch_feature(
                    &p.method,
                    role,
                    i,
                    &reading.grid,
                    reading.level0_per_pixel,
                    None,
                )
            }));
        }
    }
    features.extend(tissue);
    Ok(json!({ "type": "FeatureCollection", "features": features }))
}

/// An explanation's picks with their attention per head and mean (every scored patch when
/// `all`), plus `tissue`.
pub fn explanation_geojson(
    explanation: &Explanation,
    all: bool,
    tissue: Option<Value>,
) -> Result<Value> {
    let reading = slide_reading(&explanation.image, explanation.slide.as_ref())?;
    let s = reading.level0_per_pixel;
    let mut features = Vec::new();
    for m in &explanation.methods {
        let column = |k: usize| -> Vec<f32> { m.head_weights.iter().map(|h| h[k]).collect() };
        let at: std::collections::HashMap<usize, usize> = m
            .candidates
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, k))
            .collect();
        let mut picked = std::collections::HashSet::new();
        for (indices, role) in [
            (&m.salient, Role::Salient),
            (&m.sub_salient, Role::SubSalient),
        ] {
            for &i in indices {
                picked.insert(i);
                let weights = at.get(&i).map(|&k| column(k));
                features.push(patch_feature(
                    &m.method,
                    role,
                    i,
                    &explanation.grid,
                    s,
                    weights.as_deref(),
                ));
            }
        }
        if all {
            for (k, &i) in m.candidates.iter().enumerate() {
                if !picked.contains(&i) {
                    features.push(patch_feature(
                        &m.method,
                        Role::Scored,
                        i,
                        &explanation.grid,
                        s,
                        Some(&column(k)),
                    ));
                }
            }
        }
    }
    features.extend(tissue);
    Ok(json!({ "type": "FeatureCollection", "features": features }))
}

fn slide_reading<'a>(image: &Path, reading: Option<&'a SlideReading>) -> Result<&'a SlideReading> {
    reading.ok_or_else(|| AppError::Option {
        option: "--geojson",
        reason: format!(
            "{} is an ordinary image, not a slide: GeoJSON holds level-0 slide coordinates, so it is written for slides only",
            image.display()
        ),
    })
}

/// Writes `collection` to `path` whole or not at all.
pub fn write_geojson(path: &Path, collection: &Value) -> Result<()> {
    let text = serde_json::to_string(collection).map_err(|e| AppError::Option {
        option: "--geojson",
        reason: e.to_string(),
    })?;
    Ok(dbps_model::atomic_write::write_atomic(
        path,
        text.as_bytes(),
    )?)
}

/// `dbps predict --geojson DIR`: writes `DIR/<file name>.geojson` for each slide of `report`
/// (every method's picks and the slide's tissue outline, the slide reopened with `reader` for
/// its mask) and returns the files written. Ordinary images have no level-0 coordinates and
/// are skipped with a warning; two slides of one file name are refused before anything is
/// written.
pub fn write_predictions(
    dir: &Path,
    report: &PredictReport,
    reader: SlideReader,
) -> Result<Vec<PathBuf>> {
    let mut by_image: BTreeMap<&Path, Vec<&ImagePrediction>> = BTreeMap::new();
    for p in &report.predictions {
        by_image.entry(p.image.as_path()).or_default().push(p);
    }
    let mut named: BTreeMap<String, (&Path, Vec<&ImagePrediction>)> = BTreeMap::new();
    for (image, predictions) in by_image {
        if predictions.iter().any(|p| p.slide.is_none()) {
            tracing::warn!(image = %image.display(), "not a slide: no GeoJSON written (it holds level-0 slide coordinates)");
            continue;
        }
        let name = format!(
            "{}.geojson",
            image.file_name().unwrap_or_default().to_string_lossy()
        );
        if let Some((other, _)) = named.get(&name) {
            return Err(AppError::Option {
                option: "--geojson",
                reason: format!(
                    "{} and {} would both be written to {name} in {}; predict them into separate folders",
                    other.display(),
                    image.display(),
                    dir.display()
                ),
            });
        }
        named.insert(name, (image, predictions));
    }
    if named.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|e| AppError::Option {
        option: "--geojson",
        reason: format!(
            "{} cannot be created ({e}); give a writable folder",
            dir.display()
        ),
    })?;
    let mut written = Vec::with_capacity(named.len());
    for (name, (image, predictions)) in named {
        let path = dir.join(name);
        write_slide(&path, image, &predictions, reader)?;
        written.push(path);
    }
    Ok(written)
}

/// One slide's predictions (every method's picks) and its tissue outline, the slide reopened
/// with `reader` for its mask, written to `path`.
pub fn write_slide(
    path: &Path,
    slide: &Path,
    predictions: &[&ImagePrediction],
    reader: SlideReader,
) -> Result<()> {
    let opened = Slide::open_with(slide, reader, 16 << 20).map_err(TrainError::from)?;
    let mask = TissueMask::of_slide(&opened).map_err(TrainError::from)?;
    let collection = predictions_geojson(predictions, tissue_feature(&opened, &mask))?;
    write_geojson(path, &collection)
}

/// `dbps explain --geojson FILE`: the explanation of `slide` (every scored patch when `all`)
/// with its tissue outline, written to `file`.
pub fn write_explanation(
    file: &Path,
    explanation: &Explanation,
    slide: &Slide,
    all: bool,
) -> Result<()> {
    let mask = TissueMask::of_slide(slide).map_err(TrainError::from)?;
    let collection = explanation_geojson(explanation, all, tissue_feature(slide, &mask))?;
    write_geojson(file, &collection)
}
