//! One image file read the way a dataset reads its own images: what `dbps predict` feeds a
//! trained model, and what [`crate::ImageFolder`] decodes.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;

use crate::folder::IMAGE_EXTENSIONS;
use crate::{DataError, Pixels, Sample};
use dbps_slide::jpeg_end::check_jpeg_complete;

/// How a model's training data turned files into pixels, so that a new file is fed the same
/// way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileInput {
    /// Grayscale canvases (the generated datasets, megapixel MNIST): one channel, value / 255,
    /// read at the file's own size (any size the patch grid allows).
    Gray,
    /// Photographs (image folders, traffic signs): RGB resized to `height × width` as in
    /// training, kept 8-bit and ImageNet-normalised as patches are cut.
    Photo {
        /// Height the training images were resized to.
        height: usize,
        /// Width the training images were resized to.
        width: usize,
    },
    /// Whole-slide images (a `slides` dataset): RGB at the file's own size, kept 8-bit and
    /// ImageNet-normalised as patches are cut.
    Rgb,
}

impl FileInput {
    /// Channels C of the model input.
    pub fn channels(&self) -> usize {
        match self {
            Self::Gray => 1,
            Self::Photo { .. } | Self::Rgb => 3,
        }
    }

    /// True when values are ImageNet-normalised (else value / 255).
    pub fn imagenet(&self) -> bool {
        !matches!(self, Self::Gray)
    }
}

impl FileInput {
    /// The file as a sample without targets; an image larger than `max_pixels` (see
    /// [`DEFAULT_MAX_PIXELS`]) is refused from its header.
    pub fn read(&self, path: &Path, max_pixels: u64) -> Result<Sample, DataError> {
        let image = decode(path, max_pixels)?;
        Ok(match *self {
            Self::Gray => {
                let gray = image.to_luma8();
                let (width, height) = (gray.width() as usize, gray.height() as usize);
                Sample {
                    image: Pixels::F32(
                        gray.into_raw()
                            .iter()
                            .map(|&v| f32::from(v) / 255.0)
                            .collect(),
                    ),
                    channels: 1,
                    height,
                    width,
                    targets: Vec::new(),
                }
            }
            Self::Photo { height, width } => Sample {
                image: Pixels::ImageNet8(planar_resized(&image.to_rgb8(), [height, width])),
                channels: 3,
                height,
                width,
                targets: Vec::new(),
            },
            Self::Rgb => {
                let rgb = image.to_rgb8();
                let (width, height) = (rgb.width() as usize, rgb.height() as usize);
                Sample {
                    image: Pixels::ImageNet8(planar_resized(&rgb, [height, width])),
                    channels: 3,
                    height,
                    width,
                    targets: Vec::new(),
                }
            }
        })
    }
}

/// The largest image dbps decodes whole unless told otherwise, in pixels: PIL's
/// decompression-bomb limit (2 × 89,478,485), about 13,400² px. A 250 KB PNG can declare
/// 16,000² px; such a file is refused from its header before anything is decoded. Larger
/// images are read by raising the budget (`--max-pixels`, `dataset.<kind>.max_pixels`) or,
/// better, saved as a tiled pyramid that dbps streams.
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

/// Decodes an image file (format from its content), naming the file and the fix on failure.
/// The size its header declares must fit `max_pixels`; a JPEG must reach its end-of-image
/// marker (decoders fill a truncated JPEG with grey and report success).
pub(crate) fn decode(path: &Path, max_pixels: u64) -> Result<DynamicImage, DataError> {
    let unreadable = |e: &dyn std::fmt::Display| DataError::Folder {
        path: path.to_path_buf(),
        problem: format!("cannot decode the image: {e}"),
        fix: "replace or remove the file (truncated or corrupt)".into(),
    };
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = || {
        ImageReader::new(Cursor::new(bytes.as_slice()))
            .with_guessed_format()
            .map_err(|e| unreadable(&e))
    };
    let (width, height) = reader()?.into_dimensions().map_err(|e| unreadable(&e))?;
    check_pixel_budget(path, [width, height], max_pixels)?;
    let mut reader = reader()?;
    if reader.format() == Some(ImageFormat::Jpeg) {
        check_jpeg_complete(&bytes).map_err(|e| unreadable(&e))?;
    }
    let mut limits = Limits::default();
    // Room for the declared pixels at up to 16-bit RGBA; the header check above is the limit.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    reader.decode().map_err(|e| unreadable(&e))
}

/// An error naming the file when `[width, height]` exceeds `max_pixels`.
pub(crate) fn check_pixel_budget(
    path: &Path,
    [width, height]: [u32; 2],
    max_pixels: u64,
) -> Result<(), DataError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(DataError::Folder {
            path: path.to_path_buf(),
            problem: format!(
                "its header declares {width}×{height} px ({pixels} pixels), more than the {max_pixels} dbps decodes whole"
            ),
            fix: "if the image is genuine, raise the pixel budget (`--max-pixels` for predict and explain, `max_pixels` in the dataset config) or save it as a tiled pyramidal TIFF, which dbps streams tile by tile".into(),
        });
    }
    Ok(())
}

/// `rgb` resized to `height × width` (bilinear) as channel-major bytes `[3, H, W]`.
/// An image already of that size is copied as it is.
pub(crate) fn planar_resized(rgb: &RgbImage, [h, w]: [usize; 2]) -> Vec<u8> {
    let same = [rgb.height() as usize, rgb.width() as usize] == [h, w];
    let resized =
        (!same).then(|| image::imageops::resize(rgb, w as u32, h as u32, FilterType::Triangle));
    let mut pixels = vec![0u8; 3 * h * w];
    for (i, p) in resized.as_ref().unwrap_or(rgb).pixels().enumerate() {
        for c in 0..3 {
            pixels[c * h * w + i] = p[c];
        }
    }
    pixels
}

/// The image files named by `inputs`: files as given, folders as their image files in name
/// order. A missing path or a folder without images is an error naming it.
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|source| DataError::Io {
                path: input.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().is_some_and(|x| {
                            IMAGE_EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str())
                        })
                })
                .collect();
            if found.is_empty() {
                return Err(DataError::Folder {
                    path: input.clone(),
                    problem: "holds no image".into(),
                    fix: format!(
                        "put .{} files in it or name the files",
                        IMAGE_EXTENSIONS.join("/.")
                    ),
                });
            }
            found.sort();
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            return Err(DataError::Missing {
                what: "image",
                path: input.clone(),
                fix: "name an image file or a folder of images",
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_files_keep_their_size_and_photos_take_the_training_size() {
        let dir = std::env::temp_dir().join(format!("dbps-file-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        image::GrayImage::from_fn(6, 4, |x, _| image::Luma([if x == 0 { 255 } else { 0 }]))
            .save(&path)
            .unwrap();
        let gray = FileInput::Gray.read(&path, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!([gray.channels, gray.height, gray.width], [1, 4, 6]);
        let Pixels::F32(values) = &gray.image else {
            panic!("gray files are f32")
        };
        assert_eq!(&values[..2], &[1.0, 0.0]);
        let photo = FileInput::Photo {
            height: 8,
            width: 8,
        }
        .read(&path, DEFAULT_MAX_PIXELS)
        .unwrap();
        assert_eq!([photo.channels, photo.height, photo.width], [3, 8, 8]);
        assert_eq!(photo.image.len(), 3 * 64);

        std::fs::write(dir.join("b.png"), b"not a png").unwrap();
        let err = FileInput::Gray
            .read(&dir.join("b.png"), DEFAULT_MAX_PIXELS)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.png") && err.contains("cannot decode"),
            "{err}"
        );
        assert_eq!(image_files(std::slice::from_ref(&dir)).unwrap().len(), 2);
        let err = image_files(&[dir.join("absent")]).unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn a_truncated_jpeg_and_an_image_over_the_pixel_budget_are_refused() {
        let dir = std::env::temp_dir().join(format!("dbps-file-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let whole = dir.join("whole.jpg");
        image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]))
            .save(&whole)
            .unwrap();
        let bytes = std::fs::read(&whole).unwrap();
        let cut = dir.join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        assert!(FileInput::Rgb.read(&whole, DEFAULT_MAX_PIXELS).is_ok());
        let err = FileInput::Rgb
            .read(&cut, DEFAULT_MAX_PIXELS)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cut.jpg") && err.contains("truncated"),
            "{err}"
        );

        // 64 × 48 = 3,072 pixels: refused under a budget of 3,071, read at 3,072.
        let err = FileInput::Rgb.read(&whole, 3_071).unwrap_err().to_string();
        assert!(
            err.contains("whole.jpg") && err.contains("64×48") && err.contains("--max-pixels"),
            "{err}"
        );
        assert!(FileInput::Rgb.read(&whole, 3_072).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
