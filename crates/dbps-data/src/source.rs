use std::path::Path;

use crate::{DataError, Sample, TaskSpec};

/// One split of a dataset of large images, as the training loop reads it.
///
/// A new dataset is one impl of this trait plus one arm in the run config's `dataset` enum;
/// the loader, the batcher and the checks before a run only see the trait.
pub trait ImageSource: Send + Sync + std::fmt::Debug {
    /// The tasks every sample carries a target for, in target order.
    fn tasks(&self) -> Vec<TaskSpec>;

    /// `[C, H, W]` of every sample (with [`ImageSource::variable_size`], H and W of the
    /// largest).
    fn image_size(&self) -> [usize; 3];

    /// True when samples differ in size: bags of patch features differ in width, one column
    /// per patch ([`crate::FeatureBags`]); slides in both sides ([`crate::SlideSet`]). Batches
    /// then keep each sample apart, on a patch grid of its own.
    fn variable_size(&self) -> bool {
        false
    }

    /// Samples in this split.
    fn len(&self) -> usize;

    /// True when the split holds no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` (`< len`), ready for the model; a failure names the file and the fix.
    fn sample(&self, index: usize) -> Result<Sample, DataError>;

    /// For sources read from files, the file with the smallest side and its `[width, height]`
    /// before resizing (so that images smaller than a patch are rejected up front).
    fn smallest_file(&self) -> Option<(&Path, [usize; 2])> {
        None
    }
}
