use rand::{Rng, seq::index};

use crate::TilingError;

/// DBPS random patch drop (method.md §8): keep ⌈(1−r)(N−M)+M⌉ patches, training only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchDrop {
    ratio: f64,
}

impl PatchDrop {
    /// A drop of ratio `r ∈ [0, 1)`; `r = 0` keeps every patch.
    pub fn new(ratio: f64) -> Result<Self, TilingError> {
        if !(0.0..1.0).contains(&ratio) {
            return Err(TilingError::DropRatio(ratio));
        }
        Ok(Self { ratio })
    }

    /// The drop ratio r.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Patches kept out of `n` when `m` will be selected: ⌈(1−r)(n−m)+m⌉, or all when `m ≥ n`.
    pub fn kept(&self, n: usize, m: usize) -> usize {
        if m >= n {
            return n;
        }
        // The epsilon stops float noise such as (1 − 0.3)·10 = 7.000000000000001 from adding a patch.
        let kept = ((1.0 - self.ratio) * (n - m) as f64 - 1e-9).ceil() as usize + m;
        kept.clamp(m, n)
    }

    /// The iteration size during training, L̂ = ⌈L·(1−r)⌉ (at least 1).
    pub fn chunk(&self, l: usize) -> usize {
        (((1.0 - self.ratio) * l as f64 - 1e-9).ceil() as usize).max(1)
    }

    /// Draws the kept patch indices out of `0..n` uniformly, in random order.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, m: usize, rng: &mut R) -> Vec<usize> {
        index::sample(rng, n, self.kept(n, m)).into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn paper_example_keeps_80_of_108() {
        // CQU-BPDD: N = 108, M = 12, r = 0.3 → ⌈0.7·96 + 12⌉ = 80, L̂ = ⌈0.7·32⌉ = 23.
        let drop = PatchDrop::new(0.3).unwrap();
        assert_eq!(drop.kept(108, 12), 80);
        assert_eq!(drop.chunk(32), 23);
    }

    #[test]
    fn rejects_ratios_outside_unit_interval() {
        for r in [-0.1, 1.0, 1.5, f64::NAN] {
            assert!(PatchDrop::new(r).is_err(), "r = {r}");
        }
    }

    proptest! {
        #[test]
        fn keeps_exactly_the_formula_count_of_distinct_patches(
            n in 1usize..2000, m in 0usize..300, r in 0.0f64..0.999, seed in any::<u64>()
        ) {
            let drop = PatchDrop::new(r).unwrap();
            let kept = drop.sample(n, m, &mut StdRng::seed_from_u64(seed));
            let want = if m >= n { n } else { ((1.0 - r) * (n - m) as f64 + m as f64 - 1e-9).ceil() as usize };
            prop_assert_eq!(kept.len(), want);
            let mut sorted = kept.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), kept.len());
            prop_assert!(kept.iter().all(|&i| i < n));
        }
    }
}
