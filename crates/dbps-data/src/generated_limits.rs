//! Ranges of the settings that size generated datasets: how many canvases a split holds and
//! how loud their noise is. A split's sample order is a list of its indices, so a split size
//! read from a config is bounded before any list is made.

use crate::DataError;

/// The most samples one split of a generated dataset may hold (an epoch's order of them takes
/// 80 MB); the papers' largest split holds 5,000.
pub const MAX_SPLIT_SIZE: usize = 10_000_000;

/// Checks `[train, valid, test]` split sizes against [`MAX_SPLIT_SIZE`].
pub(crate) fn check_split_sizes(field: &'static str, sizes: [usize; 3]) -> Result<(), DataError> {
    if let Some(size) = sizes.iter().find(|&&s| s > MAX_SPLIT_SIZE) {
        return Err(DataError::Config {
            field,
            reason: format!(
                "{size} samples in one split is more than the {MAX_SPLIT_SIZE} a generated split may hold"
            ),
        });
    }
    Ok(())
}

/// Checks a noise amplitude: pixel values live in [0, 1], so must the noise.
pub(crate) fn check_noise(field: &'static str, noise: f32) -> Result<(), DataError> {
    if !(0.0..=1.0).contains(&noise) {
        return Err(DataError::Config {
            field,
            reason: format!(
                "{noise} must lie in [0, 1]: pixels span [0, 1], so a larger amplitude drowns the digits (the default is 0.1)"
            ),
        });
    }
    Ok(())
}

/// Checks a count of generated items (noise stamps, patterns) against `max`.
pub(crate) fn check_count(field: &'static str, value: usize, max: usize) -> Result<(), DataError> {
    if value > max {
        return Err(DataError::Config {
            field,
            reason: format!("{value} is more than {max}"),
        });
    }
    Ok(())
}
