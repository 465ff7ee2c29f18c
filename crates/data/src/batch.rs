//! Seeded, resumable mini-batch order.
//!
//! Every epoch visits the items in its own random order, a permutation drawn from a
//! [`ZooRng`] seeded by `(seed, epoch)` alone. The batcher's whole state is therefore its
//! [`BatchPosition`] (epoch and offset within the epoch): saving it with a checkpoint and
//! restoring it with [`Batcher::set_position`] continues with exactly the batches an
//! uninterrupted run would have seen.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use zoo_core::ZooRng;

/// Where a [`Batcher`] stands: the epoch of the next batch and how many items of that epoch's
/// order have already been handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BatchPosition {
    /// The epoch the next batch comes from (0-based).
    pub epoch: u64,
    /// Items of this epoch's order already handed out (a multiple of the batch size except at
    /// the end of an epoch, which is never stored: the position moves to the next epoch).
    pub offset: usize,
}

/// The order of epoch `epoch`: a permutation of `0..n_items` determined by `(seed, epoch)`.
fn order_of(seed: u64, n_items: usize, epoch: u64) -> Vec<usize> {
    ZooRng::derive(seed, &format!("batcher-epoch-{epoch}")).permutation(n_items)
}

/// Hands out mini-batches of item indices in a seeded random order, epoch after epoch.
#[derive(Debug, Clone)]
pub struct Batcher {
    n_items: usize,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
    position: BatchPosition,
    /// The order of `position.epoch`, computed on first use.
    order: Option<Vec<usize>>,
}

impl Batcher {
    /// A batcher over items `0..n_items` in batches of `batch_size`, starting at epoch 0.
    ///
    /// With `drop_last`, the final batch of an epoch is skipped when it would be smaller than
    /// `batch_size`; otherwise it is handed out short.
    pub fn new(n_items: usize, batch_size: usize, seed: u64, drop_last: bool) -> Result<Self> {
        if n_items == 0 {
            bail!("cannot batch an empty data set (0 items)");
        }
        if batch_size == 0 {
            bail!("batch size must be at least 1, got 0");
        }
        if drop_last && batch_size > n_items {
            bail!(
                "batch size {batch_size} is larger than the {n_items} items and drop_last is set: an epoch would have no batch"
            );
        }
        Ok(Self { n_items, batch_size, seed, drop_last, position: BatchPosition::default(), order: None })
    }

    /// The order in which epoch `epoch` visits the items (independent of the batcher's position).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        order_of(self.seed, self.n_items, epoch)
    }

    /// Number of items this batcher draws from.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The (full) batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches per epoch: `n_items / batch_size`, rounded down with `drop_last`, up without.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.n_items / self.batch_size
        } else {
            self.n_items.div_ceil(self.batch_size)
        }
    }

    /// Items handed out per epoch (fewer than `n_items` when `drop_last` drops a short batch).
    fn items_per_epoch(&self) -> usize {
        if self.drop_last {
            self.batches_per_epoch() * self.batch_size
        } else {
            self.n_items
        }
    }

    /// The epoch the next batch comes from.
    pub fn epoch(&self) -> u64 {
        self.position.epoch
    }

    /// The index within its epoch of the next batch (0 at the start of an epoch).
    pub fn batch_in_epoch(&self) -> usize {
        self.position.offset.div_ceil(self.batch_size)
    }

    /// The current position, to store with a checkpoint.
    pub fn position(&self) -> BatchPosition {
        self.position
    }

    /// Moves to a stored position, so that the next batches are those that followed it.
    pub fn set_position(&mut self, position: BatchPosition) -> Result<()> {
        let per_epoch = self.items_per_epoch();
        if position.offset > per_epoch {
            bail!(
                "batch position offset {} is past the end of an epoch of {per_epoch} items ({} items, batch size {}, drop_last {})",
                position.offset,
                self.n_items,
                self.batch_size,
                self.drop_last
            );
        }
        if position.epoch != self.position.epoch {
            self.order = None;
        }
        self.position = position;
        if self.position.offset == per_epoch {
            self.advance_epoch();
        }
        Ok(())
    }

    fn advance_epoch(&mut self) {
        self.position = BatchPosition { epoch: self.position.epoch + 1, offset: 0 };
        self.order = None;
    }

    /// The indices of the next batch, moving into the next epoch after the last batch of one.
    pub fn next_indices(&mut self) -> Vec<usize> {
        let per_epoch = self.items_per_epoch();
        let epoch = self.position.epoch;
        let (seed, n_items) = (self.seed, self.n_items);
        let order = self.order.get_or_insert_with(|| order_of(seed, n_items, epoch));
        let start = self.position.offset;
        let end = (start + self.batch_size).min(per_epoch);
        let batch = order[start..end].to_vec();
        self.position.offset = end;
        if end >= per_epoch {
            self.advance_epoch();
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(b: &mut Batcher, n: usize) -> Vec<Vec<usize>> {
        (0..n).map(|_| b.next_indices()).collect()
    }

    #[test]
    fn same_seed_same_order_other_seed_other_order() {
        let mut a = Batcher::new(100, 16, 5, false).unwrap();
        let mut b = Batcher::new(100, 16, 5, false).unwrap();
        let mut c = Batcher::new(100, 16, 6, false).unwrap();
        let (ta, tb, tc) = (take(&mut a, 20), take(&mut b, 20), take(&mut c, 20));
        assert_eq!(ta, tb);
        assert_ne!(ta, tc);
    }

    #[test]
    fn every_index_once_per_epoch_and_epochs_differ() {
        let mut b = Batcher::new(103, 10, 1, false).unwrap();
        assert_eq!(b.batches_per_epoch(), 11);
        let mut epochs = Vec::new();
        for e in 0..3u64 {
            assert_eq!(b.epoch(), e);
            let batches = take(&mut b, 11);
            assert_eq!(batches.last().unwrap().len(), 3);
            assert!(batches[..10].iter().all(|x| x.len() == 10));
            let flat: Vec<usize> = batches.concat();
            assert_eq!(flat, b.epoch_order(e));
            let mut sorted = flat.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..103).collect::<Vec<_>>());
            epochs.push(flat);
        }
        assert_eq!(b.epoch(), 3);
        assert_ne!(epochs[0], epochs[1]);
        assert_ne!(epochs[1], epochs[2]);
    }

    #[test]
    fn drop_last_skips_the_short_batch() {
        let mut b = Batcher::new(25, 10, 2, true).unwrap();
        assert_eq!(b.batches_per_epoch(), 2);
        let first = take(&mut b, 2);
        assert!(first.iter().all(|x| x.len() == 10));
        assert_eq!(b.epoch(), 1);
        let flat = first.concat();
        let mut dedup = flat.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), 20);
        assert_eq!(b.next_indices().len(), 10);
    }

    #[test]
    fn save_and_restore_position_continues_identically() {
        let mut a = Batcher::new(50, 8, 9, false).unwrap();
        take(&mut a, 10); // into the second epoch
        let saved = serde_json::to_string(&a.position()).unwrap();
        let expected = take(&mut a, 15);

        let mut b = Batcher::new(50, 8, 9, false).unwrap();
        b.set_position(serde_json::from_str(&saved).unwrap()).unwrap();
        assert_eq!(b.epoch(), 1);
        assert_eq!(b.batch_in_epoch(), 3);
        assert_eq!(take(&mut b, 15), expected);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(Batcher::new(0, 4, 0, false).is_err());
        assert!(Batcher::new(10, 0, 0, false).is_err());
        assert!(Batcher::new(3, 4, 0, true).is_err());
        assert_eq!(Batcher::new(3, 4, 0, false).unwrap().next_indices().len(), 3);
        let mut b = Batcher::new(10, 4, 0, false).unwrap();
        let err = b.set_position(BatchPosition { epoch: 0, offset: 11 }).unwrap_err();
        assert!(err.to_string().contains("offset 11"), "{err}");
        // An offset at the very end of an epoch means the start of the next one.
        b.set_position(BatchPosition { epoch: 4, offset: 10 }).unwrap();
        assert_eq!(b.position(), BatchPosition { epoch: 5, offset: 0 });
    }
}
