use std::fs::File;
use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::DataError;

/// MNIST-style digits read from a pair of IDX files: 28×28 grey images and their labels.
#[derive(Debug, Clone)]
pub struct IdxDigits {
    /// Pixels of all digits, `len × rows × cols`, 0–255.
    pub pixels: Vec<u8>,
    /// Labels 0–9.
    pub labels: Vec<u8>,
    /// Rows per digit.
    pub rows: usize,
    /// Columns per digit.
    pub cols: usize,
}

impl IdxDigits {
    /// Number of digits.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when no digit was read.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Digit `i` as values in [0, 1].
    pub fn digit(&self, i: usize) -> Vec<f32> {
        let n = self.rows * self.cols;
        self.pixels[i * n..(i + 1) * n]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect()
    }
}

/// The most bytes an IDX file may inflate to: 20× the full MNIST training images (47 MB), so
/// that a gzip bomb (a few KB inflating to gigabytes) is refused instead of filling memory.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    read_all_capped(path, MAX_IDX_BYTES)
}

/// [`read_all`] with the inflated size capped at `cap` bytes.
fn read_all_capped(path: &Path, cap: u64) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut raw = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(io)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let corrupt = |reason: String| DataError::Corrupt {
            path: path.to_path_buf(),
            kind: if path.to_string_lossy().contains("label") {
                "labels"
            } else {
                "images"
            },
            reason,
        };
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| corrupt(format!("gzip stream is damaged ({e})")))?;
        if out.len() as u64 > cap {
            return Err(corrupt(format!(
                "it inflates to more than {cap} bytes, the most an IDX file may hold here (a gzip bomb, or not an IDX file)"
            )));
        }
        raw = out;
    }
    Ok(raw)
}

fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// Reads a pair of IDX files (optionally gzipped): the digits and their labels, which must
/// hold the same number of items.
pub fn read_idx_digits(images_path: &Path, labels_path: &Path) -> Result<IdxDigits, DataError> {
    for (path, what) in [
        (images_path, "IDX images file"),
        (labels_path, "IDX labels file"),
    ] {
        if !path.is_file() {
            return Err(DataError::Missing {
                what,
                path: path.to_path_buf(),
                fix: "name the files in `images`/`labels` (and `test_images`/`test_labels`), relative to `digits_dir` or DBPS_MNIST_DIR",
            });
        }
    }
    let labels_path = labels_path.to_path_buf();
    let corrupt = |path: &Path, kind, reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        kind,
        reason,
    };
    let images = read_all(images_path)?;
    if images.len() < 16 || be_u32(&images, 0) != 2051 {
        return Err(corrupt(
            images_path,
            "images",
            "magic number is not 2051".into(),
        ));
    }
    let (n, rows, cols) = (be_u32(&images, 4), be_u32(&images, 8), be_u32(&images, 12));
    let promised = n
        .checked_mul(rows)
        .and_then(|pixels| pixels.checked_mul(cols))
        .and_then(|pixels| pixels.checked_add(16));
    if promised != Some(images.len()) {
        return Err(corrupt(
            images_path,
            "images",
            format!(
                "header promises {n} images of {rows}×{cols} but the file holds {} bytes",
                images.len()
            ),
        ));
    }
    let labels = read_all(&labels_path)?;
    if labels.len() < 8 || be_u32(&labels, 0) != 2049 {
        return Err(corrupt(
            &labels_path,
            "labels",
            "magic number is not 2049".into(),
        ));
    }
    if be_u32(&labels, 4) != n || labels.len() != 8 + n {
        return Err(corrupt(
            &labels_path,
            "labels",
            format!("expected {n} labels to match the images file"),
        ));
    }
    let labels = labels[8..].to_vec();
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(DataError::LabelOutOfRange {
            path: labels_path,
            index,
            label,
            classes: 10,
        });
    }
    Ok(IdxDigits {
        pixels: images[16..].to_vec(),
        labels,
        rows,
        cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, labels: &[u8]) {
        let n = labels.len() as u32;
        let mut img = vec![];
        for v in [2051u32, n, 2, 2] {
            img.extend(v.to_be_bytes());
        }
        img.extend(vec![255u8; 4 * labels.len()]);
        std::fs::write(dir.join("t-images-idx3-ubyte"), img).unwrap();
        let mut lab = vec![];
        for v in [2049u32, n] {
            lab.extend(v.to_be_bytes());
        }
        lab.extend(labels);
        std::fs::write(dir.join("t-labels-idx1-ubyte"), lab).unwrap();
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dbps-idx-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(dir: &Path) -> Result<IdxDigits, DataError> {
        read_idx_digits(
            &dir.join("t-images-idx3-ubyte"),
            &dir.join("t-labels-idx1-ubyte"),
        )
    }

    #[test]
    fn reads_a_valid_pair() {
        let dir = temp_dir("ok");
        write_pair(&dir, &[3, 9]);
        let d = read(&dir).unwrap();
        assert_eq!((d.len(), d.rows, d.labels[1]), (2, 2, 9));
        assert_eq!(d.digit(0), vec![1.0; 4]);
    }

    #[test]
    fn label_out_of_range_names_the_file() {
        let dir = temp_dir("label");
        write_pair(&dir, &[3, 12]);
        let err = read(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    label: 12,
                    index: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_file_says_how_to_fix() {
        let err = read(Path::new("/nonexistent/digits"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/digits/t-images-idx3-ubyte")
                && err.contains("DBPS_MNIST_DIR"),
            "{err}"
        );
    }

    /// Header counts whose product overflows are reported, not multiplied into a panic.
    #[test]
    fn overflowing_header_is_reported() {
        let dir = temp_dir("overflow");
        write_pair(&dir, &[1]);
        let mut img = vec![];
        for v in [2051u32, u32::MAX, u32::MAX, u32::MAX] {
            img.extend(v.to_be_bytes());
        }
        std::fs::write(dir.join("t-images-idx3-ubyte"), img).unwrap();
        let err = read(&dir).unwrap_err();
        assert!(
            matches!(&err, DataError::Corrupt { kind: "images", reason, .. } if reason.contains("header promises")),
            "{err}"
        );
    }

    /// A gzip stream inflating past its cap is refused once the cap is passed (before:
    /// inflated whole, whatever its size); one just under it is read. (The cap is lowered to
    /// 1 MiB here so that the test does not inflate [`MAX_IDX_BYTES`].)
    #[test]
    fn a_gzip_bomb_is_refused() {
        use std::io::Write;
        let dir = temp_dir("bomb");
        let path = dir.join("t-images-idx3-ubyte.gz");
        let gzip = |bytes: usize| {
            let file = File::create(&path).unwrap();
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
            gz.write_all(&vec![0u8; bytes]).unwrap();
            gz.finish().unwrap();
        };
        gzip(1 << 20);
        assert_eq!(read_all_capped(&path, 1 << 20).unwrap().len(), 1 << 20);
        gzip((1 << 20) + 1);
        assert!(std::fs::metadata(&path).unwrap().len() < 10_000);
        let err = read_all_capped(&path, 1 << 20).unwrap_err();
        assert!(
            matches!(&err, DataError::Corrupt { kind: "images", reason, .. } if reason.contains("gzip bomb")),
            "{err}"
        );
    }

    #[test]
    fn corrupt_images_file_is_reported() {
        let dir = temp_dir("corrupt");
        write_pair(&dir, &[1]);
        std::fs::write(dir.join("t-images-idx3-ubyte"), b"garbage!").unwrap();
        let err = read(&dir).unwrap_err();
        assert!(
            matches!(err, DataError::Corrupt { kind: "images", .. }),
            "{err}"
        );
    }
}
