//! A partition's leader-epoch cache: where each leader epoch's records start (KIP-101). It answers
//! OffsetForLeaderEpoch, and lets a follower find where its log diverges from its leader's.
//!
//! Invariants (checked by `check_invariants`): epochs strictly increase, and so do the start
//! offsets of the epochs that hold records; an epoch that holds none shares its start with the
//! next one.

use serde::{Deserialize, Serialize};

/// The epoch Kafka calls UNDEFINED_EPOCH, and the offset it calls UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaderEpochs {
    entries: Vec<EpochStart>,
}

impl LeaderEpochs {
    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochStart> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. The same epoch again keeps its first start.
    /// An entry that conflicts (an epoch at or above this one, or a start past this one) is left
    /// over from a log since truncated, and goes.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) {
        assert!(epoch >= 0 && start_offset >= 0, "epoch {epoch} at {start_offset}");
        if self.latest().is_some_and(|l| l.epoch == epoch && l.start_offset <= start_offset) {
            return;
        }
        self.entries.retain(|e| e.epoch < epoch && e.start_offset <= start_offset);
        self.entries.push(EpochStart { epoch, start_offset });
    }

    /// (largest epoch <= `requested`, where the epoch after it starts), or (`requested`, log end)
    /// for the latest epoch; undefined for an epoch above every known one. As Kafka's
    /// `LeaderEpochFileCache.endOffsetFor`.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest().is_some_and(|l| l.epoch == requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            // Below every known epoch: the records of earlier epochs are gone from the log.
            None => (requested, higher.start_offset),
        }
    }

    /// Forgets the epochs that start at or after `end_offset` (the log's tail was cut there).
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|e| e.start_offset < end_offset);
    }

    /// Forgets the epochs wholly below `start_offset`; the first one kept starts there at the
    /// earliest (the log's head was deleted).
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let keep_from = self.entries.iter().rposition(|e| e.start_offset <= start_offset).unwrap_or(0);
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = first.start_offset.max(start_offset);
        }
    }

    /// Whether the invariants hold (for a cache read from disk, which may not be trusted).
    pub fn is_valid(&self) -> bool {
        self.entries.windows(2).all(|p| p[0].epoch < p[1].epoch && p[0].start_offset <= p[1].start_offset)
            && self.entries.iter().all(|e| e.epoch >= 0 && e.start_offset >= 0)
    }

    pub fn check_invariants(&self) {
        for pair in self.entries.windows(2) {
            assert!(
                pair[0].epoch < pair[1].epoch && pair[0].start_offset <= pair[1].start_offset,
                "leader epochs out of order: {pair:?}"
            );
        }
        for e in &self.entries {
            assert!(e.epoch >= 0 && e.start_offset >= 0, "leader epoch entry {e:?}");
        }
    }

    /// The epochs found in record batch headers, as (epoch, base offset) in log order. Batches
    /// without an epoch (-1, written before leader epochs existed) are skipped.
    pub fn rebuild<I: IntoIterator<Item = (i32, i64)>>(batches: I) -> Self {
        let mut epochs = LeaderEpochs::default();
        epochs.extend_from_batches(batches);
        epochs
    }

    /// Adds the epochs newer than the latest it knows, from batches in log order (recovery's
    /// scan, which may begin below the latest epoch's start: older epochs there are known).
    pub fn extend_from_batches<I: IntoIterator<Item = (i32, i64)>>(&mut self, batches: I) {
        for (epoch, base_offset) in batches {
            if epoch >= 0 && self.latest().is_none_or(|l| epoch > l.epoch) {
                self.assign(epoch, base_offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochs {
        let mut c = LeaderEpochs::default();
        for &(e, s) in entries {
            c.assign(e, s);
        }
        c.check_invariants();
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(c.end_offset_for(6, 40), (6, 40), "the latest epoch ends at the log end");
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(c.end_offset_for(4, 40), (3, 25), "an unknown epoch answers the largest below it");
        assert_eq!(c.end_offset_for(0, 40), (0, 0), "below every epoch: where the first starts");
        assert_eq!(c.end_offset_for(7, 40), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 40), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert_eq!(LeaderEpochs::default().end_offset_for(0, 5), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
    }

    #[test]
    fn assigning_a_lower_start_drops_the_entries_it_conflicts_with() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        c.assign(7, 12);
        assert_eq!(
            c.entries().iter().map(|e| (e.epoch, e.start_offset)).collect::<Vec<_>>(),
            [(1, 0), (3, 10), (7, 12)]
        );
        c.assign(7, 30);
        assert_eq!(c.latest(), Some(EpochStart { epoch: 7, start_offset: 12 }), "an epoch keeps its first start");
    }

    #[test]
    fn truncation_at_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        c.truncate_from_end(25);
        assert_eq!(c.latest(), Some(EpochStart { epoch: 3, start_offset: 10 }));
        c.truncate_from_start(12);
        assert_eq!(c.entries(), [EpochStart { epoch: 3, start_offset: 12 }]);
        c.truncate_from_start(5);
        assert_eq!(c.entries(), [EpochStart { epoch: 3, start_offset: 12 }], "never moves back");
    }

    #[test]
    fn rebuilt_from_batch_headers() {
        let c = LeaderEpochs::rebuild([(-1, 0), (0, 3), (0, 5), (2, 9), (2, 12), (5, 20)]);
        assert_eq!(
            c.entries().iter().map(|e| (e.epoch, e.start_offset)).collect::<Vec<_>>(),
            [(0, 3), (2, 9), (5, 20)]
        );
    }

    #[test]
    fn batches_read_from_below_the_latest_epoch_add_only_newer_epochs() {
        let mut c = cache(&[(0, 0), (3, 100)]);
        c.extend_from_batches([(0, 40), (3, 100), (3, 110), (5, 130)]);
        assert_eq!(
            c.entries().iter().map(|e| (e.epoch, e.start_offset)).collect::<Vec<_>>(),
            [(0, 0), (3, 100), (5, 130)],
            "epoch 0 still starts at 0"
        );
    }

    #[test]
    fn it_round_trips_as_json() {
        let c = cache(&[(0, 0), (4, 17)]);
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"[{"epoch":0,"start_offset":0},{"epoch":4,"start_offset":17}]"#);
        assert_eq!(serde_json::from_str::<LeaderEpochs>(&text).unwrap(), c);
    }
}
