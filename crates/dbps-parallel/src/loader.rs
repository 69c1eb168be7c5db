//! The data loader of training and validation: one replica's parts of every global batch, in
//! step order, read ahead by worker threads without ever reordering.
//!
//! burn's own loaders cannot serve data parallelism as dbps needs it: their multi-threaded
//! loader hands batches over in whichever order its threads finish, and `split_dataloader`
//! gives each device a contiguous half of the epoch rather than a part of every global batch.
//! Here an item is one replica's part of one global step ([`ShardPlan::part`]), items are laid
//! out replica by replica, so burn's contiguous split hands each device exactly its parts, and
//! every batch carries its [`BatchKey`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use dbps_data::Sample;

use super::ShardPlan;
use dbps_model::batch::{BatchKey, ImageBatch, ImageBatcher};
use dbps_model::epoch_order::EpochOrder;
use dbps_model::image_dataset::ImageDataset;

/// How many batches each worker may hold ready ahead of the step that needs them.
const READ_AHEAD: usize = 2;

/// One or more replicas' parts of every global batch of a split, in step order.
///
/// Items are numbered replica-major: item `r · steps + s` is step `s` of local replica `r`
/// (global part `first_part + r`). [`DataLoader::slice`] narrows the items, which is how
/// burn's multi-device strategies give each device its replica; a replica's empty parts (an
/// epoch's last batch holding fewer images than there are replicas) are skipped.
pub struct ShardLoader<B: Backend> {
    order: EpochOrder<ImageDataset>,
    batcher: ImageBatcher,
    plan: ShardPlan,
    first_part: usize,
    steps: usize,
    items: Range<usize>,
    device: B::Device,
    workers: usize,
}

impl<B: Backend> Clone for ShardLoader<B> {
    fn clone(&self) -> Self {
        Self {
            order: self.order.clone(),
            batcher: self.batcher.clone(),
            plan: self.plan,
            first_part: self.first_part,
            steps: self.steps,
            items: self.items.clone(),
            device: self.device.clone(),
            workers: self.workers,
        }
    }
}

impl<B: Backend> ShardLoader<B> {
    /// Parts `parts` (global part indices) of every global batch of `order`, read by `workers`
    /// threads ahead of time (0: in the training thread), batched onto `device`.
    pub fn new(
        order: EpochOrder<ImageDataset>,
        batcher: ImageBatcher,
        plan: ShardPlan,
        parts: Range<usize>,
        workers: usize,
        device: B::Device,
    ) -> Self {
        let steps = plan.steps(order.len());
        Self {
            items: 0..parts.len() * steps,
            order,
            batcher,
            plan,
            first_part: parts.start,
            steps,
            device,
            workers,
        }
    }

    /// Global steps per epoch.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The work of an epoch: for each non-empty item in range, the dataset indices it reads
    /// and its key.
    fn epoch_work(&self) -> Vec<(Vec<usize>, BatchKey)> {
        let (epoch, order) = self.order.current();
        let len = order.len();
        self.items
            .clone()
            .filter_map(|item| {
                let part = self.first_part + item / self.steps.max(1);
                let step = item % self.steps.max(1);
                let (range, key) = self.plan.part(len, epoch, step, part);
                (!range.is_empty()).then(|| (order[range].to_vec(), key))
            })
            .collect()
    }
}

/// Reads the samples of one part and batches them.
fn load<B: Backend>(
    dataset: &ImageDataset,
    batcher: &ImageBatcher,
    device: &B::Device,
    (indices, key): (Vec<usize>, BatchKey),
) -> ImageBatch<B> {
    // `ImageDataset::get` stands a blank in for a sample it cannot read (and reports it), so
    // every index of the split yields a sample.
    let samples: Vec<Sample> = indices.iter().filter_map(|&i| dataset.get(i)).collect();
    let mut batch = Batcher::<B, Sample, ImageBatch<B>>::batch(batcher, samples, device);
    batch.key = key;
    batch
}

/// Hands an epoch's batches over in order: from the calling thread, or from workers that each
/// read every `workers`-th batch ahead and are read round-robin.
struct ShardIter<B: Backend> {
    loader: ShardLoader<B>,
    work: Vec<(Vec<usize>, BatchKey)>,
    next: usize,
    from_workers: Vec<Receiver<ImageBatch<B>>>,
}

impl<B: Backend> Iterator for ShardIter<B> {
    type Item = ImageBatch<B>;

    fn next(&mut self) -> Option<ImageBatch<B>> {
        if self.next >= self.work.len() {
            return None;
        }
        let index = self.next;
        self.next += 1;
        if self.from_workers.is_empty() {
            let work = self.work[index].clone();
            let loader = &self.loader;
            return Some(load(
                loader.order.inner(),
                &loader.batcher,
                &loader.device,
                work,
            ));
        }
        self.from_workers[index % self.from_workers.len()]
            .recv()
            .ok()
    }
}

impl<B: Backend> DataLoaderIterator<ImageBatch<B>> for ShardIter<B> {
    fn progress(&self) -> Progress {
        Progress::new(self.next, self.work.len())
    }
}

impl<B: Backend> DataLoader<B, ImageBatch<B>> for ShardLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch<B>> + 'a> {
        let work = self.epoch_work();
        let workers = self.workers.min(work.len());
        let mut from_workers = Vec::with_capacity(workers);
        for w in 0..workers {
            let (send, receive) = sync_channel(READ_AHEAD);
            let mine: Vec<_> = work.iter().skip(w).step_by(workers).cloned().collect();
            let (dataset, batcher, device) = (
                self.order.inner().clone(),
                self.batcher.clone(),
                self.device.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("dbps-loader-{w}"))
                .spawn(move || {
                    for part in mine {
                        // The iterator was dropped (training stopped): nothing more to read.
                        if send.send(load(&dataset, &batcher, &device, part)).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(_) => from_workers.push(receive),
                Err(error) => {
                    // Reading in the training thread is slower, never wrong.
                    tracing::warn!(%error, "cannot start a data-loading thread; reading in the training thread");
                    from_workers.clear();
                    break;
                }
            }
        }
        Box::new(ShardIter {
            loader: self.clone(),
            work,
            next: 0,
            from_workers,
        })
    }

    fn num_items(&self) -> usize {
        self.items.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        Arc::new(Self {
            device: device.clone(),
            ..self.clone()
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        let begin = (self.items.start + start).min(self.items.end);
        let end = (self.items.start + end).clamp(begin, self.items.end);
        Arc::new(Self {
            items: begin..end,
            ..self.clone()
        })
    }
}
