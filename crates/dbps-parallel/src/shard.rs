//! How each global batch is split among replicas: one contiguous part per replica, over every
//! device of every rank, so that the union of the parts is the batch a single process reads.

use std::ops::Range;

use dbps_model::batch::BatchKey;

/// The split of every global batch of `batch_size` images into `parts` contiguous parts (one
/// per replica over all ranks), as even as can be: part `p` of a batch of `b` images holds
/// `⌊b/P⌋` images, plus one when `p < b mod P`. Only an epoch's last batch can be short, so only
/// its last parts can be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlan {
    batch_size: usize,
    parts: usize,
}

impl ShardPlan {
    /// Global batches of `batch_size` images in `parts` parts; both at least 1.
    pub fn new(batch_size: usize, parts: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            parts: parts.max(1),
        }
    }

    /// Images per global step.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Replicas over all ranks.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Global steps of an epoch over `len` images (the last may be short).
    pub fn steps(&self, len: usize) -> usize {
        len.div_ceil(self.batch_size)
    }

    /// The positions in the epoch's order that part `part` of step `step` holds, and the key
    /// of that part (what keys its random draws and weighs its loss).
    pub fn part(
        &self,
        len: usize,
        epoch: usize,
        step: usize,
        part: usize,
    ) -> (Range<usize>, BatchKey) {
        let start = (step * self.batch_size).min(len);
        let images = (len - start).min(self.batch_size);
        let (base, extra) = (images / self.parts, images % self.parts);
        let first = part * base + part.min(extra);
        let size = base + usize::from(part < extra);
        let key = BatchKey {
            epoch,
            step,
            first,
            global: images,
            batch_size: self.batch_size,
        };
        (start + first..start + first + size, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every step's parts are contiguous, disjoint, differ in size by at most one, carry
        /// their offset in the global batch, and together are exactly the batch one process
        /// reads at that step; over the epoch every image is read once.
        #[test]
        fn parts_tile_each_global_batch(len in 0usize..300, batch in 1usize..40, parts in 1usize..9) {
            let plan = ShardPlan::new(batch, parts);
            let mut seen = Vec::new();
            for step in 0..plan.steps(len) {
                let whole = step * batch..((step + 1) * batch).min(len);
                let mut next = whole.start;
                let mut sizes = Vec::new();
                for part in 0..parts {
                    let (range, key) = plan.part(len, 4, step, part);
                    prop_assert_eq!(range.start, next);
                    prop_assert_eq!(key.first, range.start - whole.start);
                    prop_assert_eq!(key.global, whole.len());
                    prop_assert_eq!((key.epoch, key.step, key.batch_size), (4, step, batch));
                    next = range.end;
                    sizes.push(range.len());
                    seen.extend(range);
                }
                prop_assert_eq!(next, whole.end);
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "{:?}", sizes);
            }
            prop_assert_eq!(seen, (0..len).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_short_last_batch_leaves_the_last_parts_empty() {
        let plan = ShardPlan::new(4, 3);
        // 9 images: steps of 4, 4, 1; the last step's single image goes to part 0.
        assert_eq!(plan.steps(9), 3);
        assert_eq!(plan.part(9, 1, 2, 0).0, 8..9);
        assert!(plan.part(9, 1, 2, 1).0.is_empty());
        assert!(plan.part(9, 1, 2, 2).0.is_empty());
        assert_eq!(plan.part(9, 1, 0, 1).0, 2..3);
    }
}
