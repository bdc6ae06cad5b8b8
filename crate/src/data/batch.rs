//! Mini-batches: which samples go together, in which order.
//!
//! Shuffling uses the kernels' small generator (SplitMix64 + Fisher–Yates), so that the same seed gives
//! the same order on every machine and with every version of the `rand` crates.

use fashion_kernels::rng::shuffle;

use crate::error::{Error, Result};

/// In which order samples are visited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOrder {
    /// 0, 1, 2, … (evaluation, prediction).
    Sequential,
    /// A permutation drawn from `seed` (training). Same seed → same order.
    Shuffled { seed: u64 },
}

/// What happens to the last batch when the sample count is not a multiple of the batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastBatch {
    /// Yield it, smaller (Keras' behaviour: 60,000 / 32 → 1875 batches, the last full here).
    Keep,
    /// Drop it, so every batch has exactly `batch_size` samples.
    Drop,
}

/// Iterator over mini-batches of sample indices.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
    end: usize,
}

impl Batches {
    /// Batches over `n` samples. Errors when `batch_size` is 0.
    pub fn new(n: usize, batch_size: usize, order: BatchOrder, last: LastBatch) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument("batch size must be at least 1".into()));
        }
        let mut idx: Vec<usize> = (0..n).collect();
        if let BatchOrder::Shuffled { seed } = order {
            shuffle(&mut idx, seed);
        }
        let end = match last {
            LastBatch::Keep => n,
            LastBatch::Drop => n - n % batch_size,
        };
        Ok(Batches { order: idx, batch_size, pos: 0, end })
    }

    /// Number of batches in total (Keras prints it as `1875/1875`).
    pub fn num_batches(&self) -> usize {
        self.end.div_ceil(self.batch_size)
    }
}

impl Iterator for Batches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.pos >= self.end {
            return None;
        }
        let stop = (self.pos + self.batch_size).min(self.end);
        let batch = self.order[self.pos..stop].to_vec();
        self.pos = stop;
        Some(batch)
    }
}

/// `k` distinct indices in `0..n`, drawn with `seed` (for random figure samples).
pub fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    shuffle(&mut idx, seed);
    idx.truncate(k.min(n));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_order_other_seed_other_order() {
        let a: Vec<_> = Batches::new(100, 8, BatchOrder::Shuffled { seed: 7 }, LastBatch::Keep).unwrap().collect();
        let b: Vec<_> = Batches::new(100, 8, BatchOrder::Shuffled { seed: 7 }, LastBatch::Keep).unwrap().collect();
        let c: Vec<_> = Batches::new(100, 8, BatchOrder::Shuffled { seed: 8 }, LastBatch::Keep).unwrap().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut all: Vec<usize> = a.concat();
        assert_ne!(all, (0..100).collect::<Vec<_>>(), "shuffled");
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "a permutation");
    }

    #[test]
    fn last_partial_batch_is_kept_or_dropped() {
        let keep: Vec<_> = Batches::new(10, 4, BatchOrder::Sequential, LastBatch::Keep).unwrap().collect();
        assert_eq!(keep, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        let b = Batches::new(10, 4, BatchOrder::Sequential, LastBatch::Drop).unwrap();
        assert_eq!(b.num_batches(), 2);
        assert_eq!(b.map(|v| v.len()).collect::<Vec<_>>(), vec![4, 4]);
        assert_eq!(Batches::new(60000, 32, BatchOrder::Sequential, LastBatch::Keep).unwrap().num_batches(), 1875);
        assert!(Batches::new(10, 0, BatchOrder::Sequential, LastBatch::Keep).is_err());
        assert_eq!(Batches::new(0, 4, BatchOrder::Sequential, LastBatch::Keep).unwrap().count(), 0);
    }

    #[test]
    fn sample_indices_are_distinct_and_seeded() {
        let a = sample_indices(1000, 100, 4);
        assert_eq!(a, sample_indices(1000, 100, 4));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 100);
        assert_eq!(sample_indices(5, 10, 0).len(), 5);
    }
}
