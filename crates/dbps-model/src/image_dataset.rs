//! One split of a dataset as burn's data loader reads it.

use std::sync::{Arc, Mutex, PoisonError};

use burn::data::dataset::Dataset;
use burn_train::Interrupter;
use dbps_data::{DataError, ImageSource, Pixels, Sample, Target, TaskKind};

/// The first sample that failed to load, and who to tell.
#[derive(Default)]
struct FirstFailure {
    error: Option<DataError>,
    interrupter: Option<Interrupter>,
}

impl std::fmt::Debug for FirstFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstFailure")
            .field("error", &self.error)
            .field("watched", &self.interrupter.is_some())
            .finish()
    }
}

/// One split of whichever dataset a config names, as burn's data loader reads it.
///
/// burn's `Dataset::get` cannot fail, so a sample that cannot be loaded (a truncated image)
/// is recorded, training is asked to stop, and a blank sample of the right shape stands in for
/// the one batch left; the run then fails naming the file ([`SampleFailures::take`]).
#[derive(Debug, Clone)]
pub struct ImageDataset {
    source: Arc<dyn ImageSource>,
    failures: SampleFailures,
    /// The source's samples this split reads (`train.max_images`), or all of them.
    picks: Option<Arc<[usize]>>,
    /// `[H, W]` of the blank that stands in for a sample that failed to load: the source's
    /// size, or one patch for sources whose largest sample could be gigapixel.
    blank_size: [usize; 2],
}

impl ImageDataset {
    /// The split's source.
    pub fn source(&self) -> &dyn ImageSource {
        self.source.as_ref()
    }

    /// One split over `source`, recording failures in `failures`; a sample that cannot be read
    /// is replaced by a blank `[C, blank_size]` image.
    pub fn new(
        source: Arc<dyn ImageSource>,
        failures: SampleFailures,
        blank_size: [usize; 2],
    ) -> Self {
        Self {
            source,
            failures,
            picks: None,
            blank_size,
        }
    }

    /// The same split reading at most `limit` samples, spread evenly over the source so that
    /// class-sorted sources (image folders) keep every class.
    pub fn limited(self, limit: Option<usize>) -> Self {
        let len = self.source.len();
        match limit {
            Some(limit) if limit < len => Self {
                picks: Some((0..limit).map(|i| i * len / limit).collect()),
                ..self
            },
            _ => self,
        }
    }

    fn blank(&self) -> Sample {
        let c = self.source.image_size()[0];
        let [h, w] = self.blank_size;
        Sample {
            image: Pixels::F32(vec![0.0; c * h * w]),
            channels: c,
            height: h,
            width: w,
            targets: self
                .source
                .tasks()
                .iter()
                .map(|t| match t.kind {
                    TaskKind::Softmax => Target::Class(0),
                    TaskKind::MultiLabel => Target::MultiHot(vec![false; t.classes]),
                })
                .collect(),
        }
    }
}

impl Dataset<Sample> for ImageDataset {
    fn get(&self, index: usize) -> Option<Sample> {
        let index = match &self.picks {
            Some(picks) => *picks.get(index)?,
            None if index < self.source.len() => index,
            None => return None,
        };
        let [c, h, w] = self.source.image_size();
        let variable = self.source.variable_size();
        let fits = |s: &Sample| {
            s.channels == c
                && ([s.height, s.width] == [h, w] || variable && s.height <= h && s.width <= w)
                && s.image.len() == c * s.height * s.width
        };
        let sample = self.source.sample(index).and_then(|s| {
            if fits(&s) {
                Ok(s)
            } else {
                Err(DataError::Config {
                    field: "dataset",
                    reason: format!(
                        "sample {index} is {}×{}×{} with {} values, but the dataset promised {c}×{h}×{w}; a dataset must emit one size",
                        s.channels,
                        s.height,
                        s.width,
                        s.image.len()
                    ),
                })
            }
        });
        match sample {
            Ok(sample) => Some(sample),
            Err(error) => {
                tracing::error!(%error, "sample {index} could not be loaded; stopping");
                self.failures.record(error);
                Some(self.blank())
            }
        }
    }

    fn len(&self) -> usize {
        self.picks
            .as_ref()
            .map_or_else(|| self.source.len(), |p| p.len())
    }
}

/// The first sample of any split that failed to load, shared by the splits of one dataset,
/// and the training it stops.
#[derive(Debug, Clone, Default)]
pub struct SampleFailures(Arc<Mutex<FirstFailure>>);

impl SampleFailures {
    fn record(&self, error: DataError) {
        let mut failure = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(interrupter) = &failure.interrupter {
            interrupter.stop(Some("a sample could not be loaded"));
        }
        failure.error.get_or_insert(error);
    }

    /// Training is stopped through `interrupter` when a sample cannot be loaded.
    pub fn watch(&self, interrupter: &Interrupter) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interrupter = Some(interrupter.clone());
    }

    /// The first sample that failed to load since the splits were opened, if any.
    pub fn take(&self) -> Option<DataError> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error
            .take()
    }
}
