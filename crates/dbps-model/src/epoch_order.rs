//! Randomness that depends on the epoch alone, so that a resumed run draws what an
//! uninterrupted one did: the training order of each epoch, and the seed each epoch starts
//! the backend's generator (dropout) and the selection's draws from.
//!
//! burn's own data-loader shuffle draws each epoch's order from the state the previous epoch
//! left, and the backend's generator carries its state from step to step: neither can be
//! saved in a checkpoint, so both are re-derived from `(seed, epoch)` at the start of every
//! epoch instead.

use std::sync::{Arc, RwLock};

use burn::data::dataset::Dataset;
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

/// The seed of epoch `epoch` of a run seeded with `seed` (SplitMix64 of the pair): distinct
/// epochs and seeds give unrelated streams.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A split read in an order drawn from `(seed, epoch)`; [`EpochOrder::start_epoch`] sets the
/// epoch before the data loader begins it. Clones share the order.
#[derive(Clone)]
pub struct EpochOrder<D> {
    inner: D,
    len: usize,
    seed: u64,
    order: Arc<RwLock<(usize, Arc<[usize]>)>>,
}

impl<D> EpochOrder<D> {
    /// `inner` in its own order until the first epoch starts.
    pub fn new<I>(inner: D, seed: u64) -> Self
    where
        D: Dataset<I>,
    {
        let len = inner.len();
        Self {
            inner,
            len,
            seed,
            order: Arc::new(RwLock::new((0, (0..len).collect()))),
        }
    }

    /// Draws the order of `epoch` (1-based).
    pub fn start_epoch(&self, epoch: usize) {
        let mut order: Vec<usize> = (0..self.len).collect();
        order.shuffle(&mut StdRng::seed_from_u64(epoch_seed(self.seed, epoch)));
        *self.order.write().unwrap_or_else(|e| e.into_inner()) = (epoch, order.into());
    }

    /// The epoch started last (0 before the first) and its order: the split's indices in the
    /// order the epoch reads them.
    pub fn current(&self) -> (usize, Arc<[usize]>) {
        self.order.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The split itself, in its own order.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<I, D: Dataset<I>> Dataset<I> for EpochOrder<D> {
    fn get(&self, index: usize) -> Option<I> {
        let source = *self.current().1.get(index)?;
        self.inner.get(source)
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use burn::data::dataset::InMemDataset;

    use super::*;

    fn read<D: Dataset<usize>>(d: &D) -> Vec<usize> {
        (0..d.len()).filter_map(|i| d.get(i)).collect()
    }

    /// Each epoch is a permutation fixed by (seed, epoch) alone: starting epoch 3 directly
    /// gives what starting 1, 2, 3 in turn gives.
    #[test]
    fn an_epochs_order_depends_on_the_epoch_alone() {
        let data = || InMemDataset::new((0..50).collect::<Vec<usize>>());
        let run = EpochOrder::new(data(), 9);
        let orders: Vec<Vec<usize>> = (1..=3)
            .map(|e| {
                run.start_epoch(e);
                read(&run)
            })
            .collect();
        let resumed = EpochOrder::new(data(), 9);
        resumed.start_epoch(3);
        assert_eq!(read(&resumed), orders[2]);
        assert_ne!(orders[0], orders[1]);
        let mut sorted = orders[1].clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(epoch_seed(9, 1), epoch_seed(10, 1));
    }
}
