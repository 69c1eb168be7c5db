//! Swedish traffic signs as the speed-limit task of IPS and DBPS (method.md §11): `Set1/` for
//! training (and validation, carved out), `Set2/` for testing, each with `annotations.txt`.

use std::path::{Path, PathBuf};

use crate::folder::carve_validation;
use crate::{DataError, ImageFolder, ImageFolderConfig, Split};

/// The four classes, in label order: no sign, then the three speed limits.
pub const SIGN_CLASSES: [&str; 4] = ["EMPTY", "50_SIGN", "70_SIGN", "80_SIGN"];
/// Visibility grades, best first.
const VISIBILITIES: [&str; 4] = ["VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED"];

/// One annotated sign: how visible it is, its box area and its name.
struct Sign {
    visibility: usize,
    area: f64,
    name: String,
}

/// A box coordinate; like the reference reader, a stray trailing character is dropped.
fn coordinate(text: &str) -> Option<f64> {
    text.parse().ok().or_else(|| {
        let mut chars = text.chars();
        chars.next_back()?;
        chars.as_str().parse().ok()
    })
}

fn parse_sign(text: &str) -> Result<Option<Sign>, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts[0] == "MISC_SIGNS" {
        return Ok(None);
    }
    if parts.len() < 7 {
        return Err(format!(
            "sign `{text}` has {} fields; expected visibility, four box numbers, type, name",
            parts.len()
        ));
    }
    let visibility = VISIBILITIES
        .iter()
        .position(|v| *v == parts[0])
        .ok_or_else(|| format!("visibility `{}` is not one of {VISIBILITIES:?}", parts[0]))?;
    let mut bbox = [0f64; 4];
    for (value, text) in bbox.iter_mut().zip(&parts[1..5]) {
        *value = coordinate(text).ok_or_else(|| format!("box number `{text}` is not a number"))?;
    }
    // The box is written x_max, y_max, x_min, y_min.
    let area = (bbox[0] - bbox[2]) * (bbox[1] - bbox[3]);
    Ok(Some(Sign {
        visibility,
        area,
        name: parts[6].to_string(),
    }))
}

/// The label of one annotation line's signs, or `None` when the image is left out: no sign is
/// EMPTY; otherwise the speed-limit signs are ranked by visibility, then by area, and the
/// image keeps the class of the first if it is VISIBLE; images with no speed limit among their
/// signs, or whose best one is not VISIBLE, are dropped.
fn label_of(signs: &[Sign]) -> Option<usize> {
    if signs.is_empty() {
        return Some(0);
    }
    let best = signs
        .iter()
        .filter(|s| SIGN_CLASSES[1..].contains(&s.name.as_str()))
        .min_by(|a, b| {
            a.visibility
                .cmp(&b.visibility)
                .then(b.area.total_cmp(&a.area))
        })?;
    (best.visibility == 0)
        .then(|| SIGN_CLASSES.iter().position(|c| *c == best.name))
        .flatten()
}

/// `(file, label)` of every kept image of an annotations file.
fn read_annotations(path: &Path) -> Result<Vec<(String, usize)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut kept = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |problem: String| {
            DataError::Folder {
            path: path.to_path_buf(),
            problem: format!("line {}: {problem}", number + 1),
            fix: "each line is `FILE:sign;sign;…`, a sign `VISIBILITY, x1, y1, x2, y2, TYPE, NAME`; fix or remove the line".into(),
        }
        };
        let (file, signs) = line
            .split_once(':')
            .ok_or_else(|| bad("no `:` after the file name".into()))?;
        let mut parsed = Vec::new();
        for sign in signs.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            parsed.extend(parse_sign(sign).map_err(bad)?);
        }
        if let Some(label) = label_of(&parsed) {
            kept.push((file.trim().to_string(), label));
        }
    }
    Ok(kept)
}

/// Opens a split of the speed-limit task: `Set1` (minus a seeded validation share) for
/// training, that share for validation, `Set2` for testing. `config.root` holds `Set1/` and
/// `Set2/`; size, augmentation and seed mean what they mean for image folders.
/// `prepared(done, total)` follows the header reads, for a progress bar.
pub fn open_traffic_signs(
    config: &ImageFolderConfig,
    split: Split,
    prepared: impl FnMut(usize, usize),
) -> Result<ImageFolder, DataError> {
    let set = config
        .root
        .join(if split == Split::Test { "Set2" } else { "Set1" });
    let annotations = set.join("annotations.txt");
    if !annotations.is_file() {
        return Err(DataError::Missing {
            what: "traffic-sign annotations",
            path: annotations,
            fix: "point `dataset.traffic_signs.root` at the folder holding Set1/ and Set2/, each with its images and annotations.txt",
        });
    }
    let mut by_class: Vec<(usize, Vec<PathBuf>)> =
        (0..SIGN_CLASSES.len()).map(|c| (c, Vec::new())).collect();
    for (file, label) in read_annotations(&annotations)? {
        by_class[label].1.push(set.join(file));
    }
    let by_class = match split {
        Split::Test => by_class,
        Split::Train | Split::Valid => {
            carve_validation(by_class, config.val_fraction, config.seed, split)
        }
    };
    let files = by_class
        .into_iter()
        .flat_map(|(label, files)| files.into_iter().map(move |f| (f, label)))
        .collect();
    let classes = SIGN_CLASSES.iter().map(|c| c.to_string()).collect();
    ImageFolder::from_files(config, classes, files, split, prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Result<Vec<(String, usize)>, DataError> {
        let dir = std::env::temp_dir().join(format!("dbps-sts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("annotations-{}.txt", text.len()));
        std::fs::write(&path, text).unwrap();
        read_annotations(&path)
    }

    /// The filtering rule, one line per case.
    #[test]
    fn speed_limit_labels_follow_the_filtering_rule() {
        let text = "\
empty.jpg:
misc.jpg:MISC_SIGNS;
seventy.jpg:VISIBLE, 900.5, 500, 880, 480, SPEED_LIMIT, 70_SIGN;
blurred.jpg:BLURRED, 900, 500, 880, 480, SPEED_LIMIT, 50_SIGN;
occluded-then-visible.jpg:OCCLUDED, 900, 500, 800, 400, SPEED_LIMIT, 80_SIGN;VISIBLE, 10, 10, 5, 5, SPEED_LIMIT, 50_SIGN;
larger-wins.jpg:VISIBLE, 20, 20, 10, 10, SPEED_LIMIT, 50_SIGN;VISIBLE, 50, 50, 10, 10, SPEED_LIMIT, 80_SIGN;
other-sign.jpg:VISIBLE, 20, 20, 10, 10, PROHIBITORY, NO_PARKING;
stray-char.jpg:VISIBLE, 20.5l, 20, 10, 10, SPEED_LIMIT, 50_SIGN
";
        let got = labels(text).unwrap();
        let want = [
            ("empty.jpg", 0),
            ("misc.jpg", 0),
            ("seventy.jpg", 2),
            ("occluded-then-visible.jpg", 1),
            ("larger-wins.jpg", 3),
            ("stray-char.jpg", 1),
        ];
        let got: Vec<(&str, usize)> = got.iter().map(|(f, l)| (f.as_str(), *l)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_that_does_not_parse_is_named() {
        for (text, problem) in [
            (
                "a.jpg:VISIBLE, 1, 2, 3, 4, SPEED_LIMIT, 50_SIGN\nb.jpg VISIBLE",
                "line 2: no `:`",
            ),
            ("a.jpg:VISIBLE, 1, 2, SPEED_LIMIT, 50_SIGN", "line 1: sign"),
            (
                "a.jpg:VISIBLE, 1, x, 3, 4, SPEED_LIMIT, 50_SIGN",
                "box number `x`",
            ),
            (
                "a.jpg:GLOWING, 1, 2, 3, 4, SPEED_LIMIT, 50_SIGN",
                "visibility `GLOWING`",
            ),
        ] {
            let err = labels(text).unwrap_err().to_string();
            assert!(
                err.contains("annotations") && err.contains(problem),
                "{err}"
            );
        }
    }
}
