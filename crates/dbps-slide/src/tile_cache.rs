//! The decoded-tile cache of the built-in reader: a byte budget, least recently used out first.

use std::collections::HashMap;
use std::sync::Arc;

/// A decoded tile and the clock tick it was last used at.
type CachedTile = (u64, Arc<Vec<u8>>);

/// Decoded tiles, least recently used evicted first once the byte budget is spent.
#[derive(Debug)]
pub struct TileCache {
    budget: usize,
    bytes: usize,
    clock: u64,
    tiles: HashMap<(usize, usize), CachedTile>,
    decoded: u64,
}

impl TileCache {
    /// A cache holding at most `budget` bytes of decoded tiles (always at least one tile).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            clock: 0,
            tiles: HashMap::new(),
            decoded: 0,
        }
    }

    pub(crate) fn get(&mut self, key: (usize, usize)) -> Option<Arc<Vec<u8>>> {
        self.clock += 1;
        let clock = self.clock;
        self.tiles.get_mut(&key).map(|(used, tile)| {
            *used = clock;
            Arc::clone(tile)
        })
    }

    pub(crate) fn insert(&mut self, key: (usize, usize), tile: Arc<Vec<u8>>) {
        self.decoded += 1;
        self.bytes += tile.len();
        while self.bytes > self.budget && !self.tiles.is_empty() {
            let oldest = self
                .tiles
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k);
            if let Some((_, (_, evicted))) = oldest.and_then(|k| self.tiles.remove_entry(&k)) {
                self.bytes -= evicted.len();
            }
        }
        self.clock += 1;
        self.tiles.insert(key, (self.clock, tile));
    }
}

impl TileCache {
    /// Tiles decoded so far (cache misses).
    pub fn decoded(&self) -> u64 {
        self.decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_its_budget_and_evicts_the_oldest() {
        let mut cache = TileCache::new(250);
        for i in 0..3 {
            cache.insert((0, i), Arc::new(vec![0; 100]));
        }
        assert!(cache.bytes <= 250);
        assert!(cache.get((0, 0)).is_none(), "the oldest went first");
        assert!(cache.get((0, 2)).is_some());
        assert_eq!(cache.decoded, 3);
    }
}
