//! Bags of precomputed patch features (CAMELYON16 as the papers use it): one file per slide,
//! `[N_i, D]` float32 in `.safetensors` or `.npy`, N_i differing from slide to slide, and a
//! `labels.csv` naming each slide's class and split.
//!
//! A bag is handed on as a `D × 1 × N_i` sample: one column per patch, so that a 1×1 patch grid
//! over it yields the patches and the identity encoder (with its projector) embeds them.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data_path::inside_root;
use crate::folder::carve_validation;
use crate::train_classes::check_train_classes;
use crate::{DataError, ImageSource, Pixels, Sample, Split, Target, TaskSpec};

/// Settings of a feature-bag dataset (`dataset.feature_bags` in a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBagsConfig {
    /// The folder holding `labels.csv` and `features/<slide>.{safetensors,npy}`.
    pub root: PathBuf,
    /// Width D of every feature vector (2048 for ResNet-50 features).
    #[serde(default = "default_dim")]
    pub feature_dim: usize,
    /// Share of each training class held out for validation.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Seed of the validation carve-out.
    #[serde(default)]
    pub seed: u64,
}

fn default_dim() -> usize {
    2048
}

fn default_val_fraction() -> f64 {
    0.1
}

/// The two classes of `labels.csv`, in target order.
pub const BAG_CLASSES: [&str; 2] = ["normal", "tumor"];

/// The extensions a feature file may have, in the order they are looked for.
pub const FEATURE_EXTENSIONS: [&str; 2] = ["safetensors", "npy"];

fn bag_error(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> DataError {
    DataError::Folder {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Where a feature file keeps its `[rows, dim]` float32 values.
#[derive(Debug, Clone)]
pub struct FeatureFile {
    /// The file.
    pub path: PathBuf,
    /// Patches N_i.
    pub rows: usize,
    /// Feature width D.
    pub dim: usize,
    /// Byte offset of the first value (little-endian float32, row-major).
    offset: u64,
}

impl FeatureFile {
    /// Reads the header of a `.safetensors` or `.npy` file: shape, type and where the values
    /// start. The values themselves are read by [`FeatureFile::read`].
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let mut file = std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let (shape, offset) = match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => npy_header(path, &mut file, len)?,
            Some("safetensors") => safetensors_header(path, &mut file, len)?,
            _ => {
                return Err(bag_error(
                    path,
                    "is neither .safetensors nor .npy",
                    "store each slide's features as <slide>.safetensors or <slide>.npy",
                ));
            }
        };
        let [rows, dim] = match shape.as_slice() {
            &[rows, dim] => [rows, dim],
            other => {
                return Err(bag_error(
                    path,
                    format!("holds a tensor of shape {other:?}"),
                    "store one [patches, features] matrix per slide",
                ));
            }
        };
        if rows == 0 {
            return Err(bag_error(
                path,
                "holds no patch (0 rows)",
                "leave slides without tissue out of labels.csv",
            ));
        }
        // The header's numbers are checked against the file before anything is sized by them.
        let Some(need) = rows
            .checked_mul(dim)
            .and_then(|values| values.checked_mul(4))
            .and_then(|bytes| u64::try_from(bytes).ok())
            .and_then(|bytes| bytes.checked_add(offset))
        else {
            return Err(bag_error(
                path,
                format!("declares a {rows}×{dim} matrix, more bytes than any file holds"),
                "write the file again",
            ));
        };
        if len < need {
            return Err(bag_error(
                path,
                format!("is truncated: {len} bytes, the header promises {need}"),
                "write the file again",
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            rows,
            dim,
            offset,
        })
    }

    /// The values, row-major `[rows, dim]`; a NaN or infinite value is an error naming its
    /// row and column.
    pub fn read(&self) -> Result<Vec<f32>, DataError> {
        let io = |source| DataError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut bytes = vec![0u8; self.rows * self.dim * 4];
        file.read_exact(&mut bytes).map_err(io)?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(bag_error(
                &self.path,
                format!(
                    "row {} column {} is {}",
                    at / self.dim,
                    at % self.dim,
                    values[at]
                ),
                "recompute the features of this slide",
            ));
        }
        Ok(values)
    }
}

/// `.npy` (versions 1–3): little-endian float32, C order, two dimensions.
fn npy_header(
    path: &Path,
    file: &mut std::fs::File,
    len: u64,
) -> Result<(Vec<usize>, u64), DataError> {
    let bad = |problem: String| bag_error(path, problem, "save it with numpy.save as float32");
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| bad("is too short for an .npy header".into()))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("does not start with the .npy magic".into()));
    }
    let (header_len, start) = if magic[6] == 1 {
        let mut b = [0u8; 2];
        file.read_exact(&mut b)
            .map_err(|_| bad("header is cut short".into()))?;
        (u16::from_le_bytes(b) as usize, 10u64)
    } else {
        let mut b = [0u8; 4];
        file.read_exact(&mut b)
            .map_err(|_| bad("header is cut short".into()))?;
        (u32::from_le_bytes(b) as usize, 12u64)
    };
    if start + header_len as u64 > len {
        return Err(bad(format!(
            "announces a {header_len}-byte header in a {len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header)
        .map_err(|_| bad("header is cut short".into()))?;
    let header = String::from_utf8_lossy(&header);
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr").ok_or_else(|| bad("header has no 'descr'".into()))?;
    if !descr.starts_with("'<f4'") {
        return Err(bad(format!(
            "holds {} values; dbps reads little-endian float32 ('<f4')",
            descr.split(',').next().unwrap_or(descr)
        )));
    }
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("is in Fortran order".into()));
    }
    let shape = field("shape").ok_or_else(|| bad("header has no 'shape'".into()))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(format!("shape {shape} does not parse")))?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("shape ({inner}) does not parse")))?;
    Ok((dims, start + header_len as u64))
}

/// `.safetensors`: one F32 tensor (or several, one of them named `features`).
fn safetensors_header(
    path: &Path,
    file: &mut std::fs::File,
    len: u64,
) -> Result<(Vec<usize>, u64), DataError> {
    let bad = |problem: String| {
        bag_error(
            path,
            problem,
            "save it with safetensors as one float32 tensor (named `features` if there are several)",
        )
    };
    let mut b = [0u8; 8];
    file.read_exact(&mut b)
        .map_err(|_| bad("is too short for a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(b);
    if header_len > len.saturating_sub(8) || header_len > 100 << 20 {
        return Err(bad(format!(
            "announces a {header_len}-byte header in a {len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|_| bad("header is cut short".into()))?;
    #[derive(Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [u64; 2],
    }
    let map: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    let tensors: Vec<(&String, &serde_json::Value)> =
        map.iter().filter(|(k, _)| *k != "__metadata__").collect();
    let (name, value) = match tensors.as_slice() {
        [one] => *one,
        many => many
            .iter()
            .find(|(k, _)| *k == "features")
            .copied()
            .ok_or_else(|| {
                bad(format!(
                    "holds {} tensors and none is named `features`",
                    many.len()
                ))
            })?,
    };
    let entry: Entry = serde_json::from_value(value.clone())
        .map_err(|e| bad(format!("tensor `{name}` has a bad header entry ({e})")))?;
    if entry.dtype != "F32" {
        return Err(bad(format!(
            "tensor `{name}` is {}; dbps reads F32",
            entry.dtype
        )));
    }
    Ok((entry.shape, 8 + header_len + entry.data_offsets[0]))
}

/// One split of a feature-bag dataset.
#[derive(Debug)]
pub struct FeatureBags {
    bags: Vec<(FeatureFile, usize)>,
    dim: usize,
}

impl FeatureBags {
    /// Opens `split`: reads `labels.csv` (`slide,label,split` with a header line; labels
    /// `normal`/`tumor` or `0`/`1`; splits `train`/`test`, validation carved from `train`) and
    /// the header of every listed feature file, checking its width.
    pub fn open(config: &FeatureBagsConfig, split: Split) -> Result<Self, DataError> {
        if config.feature_dim == 0 {
            return Err(DataError::Config {
                field: "dataset.feature_bags.feature_dim",
                reason: "must be at least 1 (2048 for ResNet-50 features)".into(),
            });
        }
        if !(0.0..1.0).contains(&config.val_fraction) {
            return Err(DataError::Config {
                field: "dataset.feature_bags.val_fraction",
                reason: format!("{} must lie in [0, 1)", config.val_fraction),
            });
        }
        let labels = config.root.join("labels.csv");
        let text = std::fs::read_to_string(&labels).map_err(|_| DataError::Missing {
            what: "labels.csv",
            path: labels.clone(),
            fix: "put labels.csv (slide,label,split) in the dataset's root",
        })?;
        let want = if split == Split::Test {
            "test"
        } else {
            "train"
        };
        let mut by_class: Vec<(usize, Vec<PathBuf>)> = vec![(0, Vec::new()), (1, Vec::new())];
        for (number, line) in text.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |problem: String| {
                bag_error(
                    &labels,
                    format!("line {}: {problem}", number + 1),
                    "each line is slide,label,split with label normal/tumor (or 0/1) and split train/test",
                )
            };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [slide, label, which] = fields.as_slice() else {
                return Err(bad(format!("{} fields, not 3", fields.len())));
            };
            let class = match *label {
                "normal" | "0" => 0,
                "tumor" | "1" => 1,
                other => return Err(bad(format!("label `{other}` is not a class"))),
            };
            if !matches!(*which, "train" | "test") {
                return Err(bad(format!("split `{which}` is neither train nor test")));
            }
            if *which != want {
                continue;
            }
            if inside_root(slide).is_none() {
                return Err(bad(format!(
                    "slide `{slide}` is not a name inside features/ (an absolute path or `..` would read outside it)"
                )));
            }
            let file = FEATURE_EXTENSIONS
                .iter()
                .map(|e| config.root.join("features").join(format!("{slide}.{e}")))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    bag_error(
                        &config.root.join("features").join(slide),
                        format!("slide `{slide}` of labels.csv line {} has no feature file", number + 1),
                        "put features/<slide>.safetensors or features/<slide>.npy there, or drop the line",
                    )
                })?;
            by_class[class].1.push(file);
        }
        let chosen = match split {
            Split::Test => by_class,
            Split::Train | Split::Valid => {
                carve_validation(by_class, config.val_fraction, config.seed, split)
            }
        };
        if split == Split::Train {
            let classes = BAG_CLASSES.map(String::from);
            check_train_classes(
                &labels,
                &classes,
                &chosen,
                "list slides of both classes with split `train` in labels.csv",
            )?;
        }
        let mut bags = Vec::new();
        for (class, files) in chosen {
            for path in files {
                let file = FeatureFile::open(&path)?;
                if file.dim != config.feature_dim {
                    return Err(bag_error(
                        &path,
                        format!(
                            "holds features of width {}, the config says {}",
                            file.dim, config.feature_dim
                        ),
                        "set dataset.feature_bags.feature_dim (and encoder.identity.feature_dim) to the files' width",
                    ));
                }
                bags.push((file, class));
            }
        }
        bags.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        Ok(Self {
            bags,
            dim: config.feature_dim,
        })
    }

    /// The task: tumor or normal.
    pub fn tasks() -> Vec<TaskSpec> {
        vec![
            TaskSpec::softmax("tumor", 2)
                .with_class_names(BAG_CLASSES.iter().map(|c| c.to_string()).collect()),
        ]
    }

    /// Patches N_i of every bag, in sample order.
    pub fn lengths(&self) -> Vec<usize> {
        self.bags.iter().map(|(f, _)| f.rows).collect()
    }
}

impl ImageSource for FeatureBags {
    fn tasks(&self) -> Vec<TaskSpec> {
        Self::tasks()
    }

    fn image_size(&self) -> [usize; 3] {
        let widest = self.bags.iter().map(|(f, _)| f.rows).max().unwrap_or(0);
        [self.dim, 1, widest]
    }

    fn variable_size(&self) -> bool {
        true
    }

    fn len(&self) -> usize {
        self.bags.len()
    }

    fn sample(&self, index: usize) -> Result<Sample, DataError> {
        let (file, class) = self.bags.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.bags.len(),
        })?;
        let rows = file.read()?;
        // [N, D] row-major → [D, 1, N] channel-major: one column per patch.
        let (n, d) = (file.rows, file.dim);
        let mut image = vec![0f32; n * d];
        for (i, row) in rows.chunks_exact(d).enumerate() {
            for (c, v) in row.iter().enumerate() {
                image[c * n + i] = *v;
            }
        }
        Ok(Sample {
            image: Pixels::F32(image),
            channels: d,
            height: 1,
            width: n,
            targets: vec![Target::Class(*class)],
        })
    }
}

/// Writes `[rows, dim]` float32 values as `.npy` version 1.0 (for tests and tools).
pub fn write_npy(path: &Path, rows: usize, dim: usize, values: &[f32]) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes)
}

/// Writes `[rows, dim]` float32 values as a one-tensor `.safetensors` file named `features`.
pub fn write_safetensors(
    path: &Path,
    rows: usize,
    dim: usize,
    values: &[f32],
) -> std::io::Result<()> {
    let header = format!(
        "{{\"features\":{{\"dtype\":\"F32\",\"shape\":[{rows},{dim}],\"data_offsets\":[0,{}]}}}}",
        values.len() * 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("dbps-bags-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("features")).unwrap();
        root
    }

    fn config(root: PathBuf, dim: usize) -> FeatureBagsConfig {
        FeatureBagsConfig {
            root,
            feature_dim: dim,
            val_fraction: 0.0,
            seed: 0,
        }
    }

    #[test]
    fn both_formats_read_back_as_one_column_per_patch() {
        let root = dataset("formats");
        let values: Vec<f32> = (0..6).map(|v| v as f32).collect();
        write_npy(&root.join("features/a.npy"), 3, 2, &values).unwrap();
        write_safetensors(&root.join("features/b.safetensors"), 2, 2, &values[..4]).unwrap();
        std::fs::write(
            root.join("labels.csv"),
            "slide,label,split\na,tumor,train\nb,0,train\n",
        )
        .unwrap();
        let bags = FeatureBags::open(&config(root, 2), Split::Train).unwrap();
        assert_eq!(bags.lengths(), vec![3, 2]);
        assert!(bags.variable_size());
        assert_eq!(bags.image_size(), [2, 1, 3]);
        let a = bags.sample(0).unwrap();
        assert_eq!((a.channels, a.height, a.width), (2, 1, 3));
        // Rows (0,1), (2,3), (4,5) become columns: channel 0 = 0, 2, 4.
        assert_eq!(a.image, Pixels::F32(vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]));
        assert_eq!(a.targets, vec![Target::Class(1)]);
        let b = bags.sample(1).unwrap();
        assert_eq!(b.image, Pixels::F32(vec![0.0, 2.0, 1.0, 3.0]));
        assert_eq!(b.targets, vec![Target::Class(0)]);
    }

    #[test]
    fn bad_feature_files_are_named() {
        let root = dataset("bad");
        write_npy(&root.join("features/wide.npy"), 2, 3, &[0.0; 6]).unwrap();
        write_npy(
            &root.join("features/nan.npy"),
            2,
            2,
            &[0.0, 1.0, f32::NAN, 0.0],
        )
        .unwrap();
        std::fs::write(root.join("features/junk.npy"), b"not numpy").unwrap();
        // A whole file of the other class, so that each case gets past the two-class check.
        write_npy(&root.join("features/ok.npy"), 2, 2, &[0.0; 4]).unwrap();
        let labels = |lines: &str| {
            std::fs::write(
                root.join("labels.csv"),
                format!("slide,label,split\n{lines}"),
            )
            .unwrap();
            FeatureBags::open(&config(root.clone(), 2), Split::Train)
        };
        let err = labels("wide,tumor,train\nok,normal,train\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wide.npy") && err.contains("width 3"), "{err}");
        let err = labels("junk,tumor,train\nok,normal,train\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("junk.npy") && err.contains("magic"), "{err}");
        let err = labels("gone,tumor,train\n").unwrap_err().to_string();
        assert!(err.contains("gone") && err.contains("line 2"), "{err}");
        let err = labels("../nan,tumor,train\n").unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("not a name inside"),
            "{err}"
        );
        // A header whose rows × dim × 4 overflows is refused before anything is sized by it.
        let mut huge = b"\x93NUMPY\x01\x00".to_vec();
        let mut dict =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"
                .to_string();
        while !(10 + dict.len() + 1).is_multiple_of(64) {
            dict.push(' ');
        }
        dict.push('\n');
        huge.extend((dict.len() as u16).to_le_bytes());
        huge.extend(dict.as_bytes());
        std::fs::write(root.join("features/huge.npy"), &huge).unwrap();
        let err = labels("huge,tumor,train\nok,normal,train\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("huge.npy") && err.contains("more bytes"),
            "{err}"
        );
        // A version-2 header announcing 2 GiB of header in a 16-byte file (fuzzing: allocated).
        let mut long = b"\x93NUMPY\x02\x00".to_vec();
        long.extend((1u32 << 31).to_le_bytes());
        long.extend(b"{'d");
        std::fs::write(root.join("features/long.npy"), &long).unwrap();
        let err = labels("long,tumor,train\nok,normal,train\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("long.npy") && err.contains("announces"),
            "{err}"
        );
        let err = labels("nan,cancer,train\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("cancer"), "{err}");
        let bags = labels("nan,tumor,train\nok,normal,train\n").unwrap();
        let err = (0..2)
            .find_map(|i| bags.sample(i).err())
            .unwrap()
            .to_string();
        assert!(
            err.contains("nan.npy") && err.contains("row 1 column 0"),
            "{err}"
        );
        // Tumor slides only in test: training would see one class (before: trained on it).
        let err = labels("ok,normal,train\nnan,tumor,test\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("labels.csv")
                && err.contains("one class only (`normal`)")
                && err.contains("`tumor`"),
            "{err}"
        );
    }
}
