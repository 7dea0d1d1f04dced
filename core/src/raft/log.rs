//! The metadata log as the Raft node sees it: entries in memory, where they end, and how far the
//! disk has them. Writes reach the disk through the node's actions; this type only tracks them.
//!
//! Invariants (checked by `check_invariants`): offsets are contiguous from `start`; epochs never
//! decrease with offset; `start <= durable_end <= end`; the epoch cache matches the entries.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::leader_epochs::{LeaderEpochs, UNDEFINED_EPOCH};

use super::NodeId;

/// One record of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub epoch: i32,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Written by a new leader at the start of its epoch (Kafka's LeaderChangeMessage control
    /// record): committing it commits everything before it.
    LeaderChange { leader: NodeId },
    /// A record for the state machine above (a metadata record).
    Data(Bytes),
}

/// A snapshot of the state machine through `end_offset` (exclusive), whose last entry had
/// `epoch` (Kafka's OffsetAndEpoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    pub end_offset: u64,
    pub epoch: i32,
}

#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// The first offset held: the end of the snapshot below it, or 0.
    start: u64,
    /// The epoch of the entry before `start` (the snapshot's), or 0.
    start_epoch: i32,
    entries: VecDeque<Entry>,
    /// Everything below this offset is on disk (fsynced).
    durable_end: u64,
    epochs: LeaderEpochs,
}

impl RaftLog {
    /// A log read back from disk (its snapshot and the entries after it): all of it durable.
    /// Entries below the snapshot's end, left by a compaction cut short, are skipped.
    pub fn restored(snapshot: Option<SnapshotId>, entries: Vec<Entry>) -> Self {
        let mut log = RaftLog::default();
        if let Some(id) = snapshot {
            log.start = id.end_offset;
            log.start_epoch = id.epoch;
            log.durable_end = id.end_offset;
        }
        let start = log.start;
        for entry in entries.into_iter().skip_while(|e| e.offset < start) {
            log.append(entry);
        }
        log.durable_end = log.end();
        log.check_invariants();
        log
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.start + self.entries.len() as u64
    }

    pub fn durable_end(&self) -> u64 {
        self.durable_end
    }

    /// The epoch of the last entry, or of the snapshot below an empty log.
    pub fn last_epoch(&self) -> i32 {
        self.entries.back().map_or(self.start_epoch, |e| e.epoch)
    }

    pub fn start_epoch(&self) -> i32 {
        self.start_epoch
    }

    /// (epoch of the last durable entry, durable end): what a candidate may claim, since only a
    /// durable log survives a crash.
    pub fn durable_position(&self) -> (i32, u64) {
        let epoch = self.entry(self.durable_end.wrapping_sub(1)).map_or(self.start_epoch, |e| e.epoch);
        (epoch, self.durable_end)
    }

    pub fn entry(&self, offset: u64) -> Option<&Entry> {
        let index = offset.checked_sub(self.start)?;
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// Up to `max` entries from `offset`.
    pub fn entries_from(&self, offset: u64, max: usize) -> Vec<Entry> {
        let Some(skip) = offset.checked_sub(self.start) else { return Vec::new() };
        self.entries.iter().skip(skip as usize).take(max).cloned().collect()
    }

    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.offset, self.end(), "raft log append out of place");
        assert!(
            entry.epoch >= self.last_epoch(),
            "raft log epoch went back: {} after {}",
            entry.epoch,
            self.last_epoch()
        );
        self.epochs.assign(entry.epoch, entry.offset as i64);
        self.entries.push_back(entry);
    }

    /// Drops the entries at and above `end`.
    pub fn truncate(&mut self, end: u64) {
        assert!(end >= self.start && end <= self.end(), "truncate to {end} outside {}..{}", self.start, self.end());
        self.entries.truncate((end - self.start) as usize);
        self.durable_end = self.durable_end.min(end);
        self.epochs.truncate_from_end(end as i64);
    }

    /// Drops the entries a durable snapshot now holds.
    pub fn compact(&mut self, id: SnapshotId) {
        assert!(
            id.end_offset > self.start && id.end_offset <= self.durable_end,
            "compacting to {id:?} outside the durable log"
        );
        assert_eq!(
            self.entry(id.end_offset - 1).map(|e| e.epoch),
            Some(id.epoch),
            "snapshot {id:?} disagrees with the log"
        );
        self.entries.drain(..(id.end_offset - self.start) as usize);
        self.start = id.end_offset;
        self.start_epoch = id.epoch;
        if self.entries.is_empty() {
            self.epochs = LeaderEpochs::default();
        } else {
            self.epochs.truncate_from_start(id.end_offset as i64);
        }
    }

    /// Replaces the whole log with a snapshot fetched from the leader.
    pub fn reset(&mut self, id: SnapshotId) {
        self.entries.clear();
        self.start = id.end_offset;
        self.start_epoch = id.epoch;
        self.durable_end = id.end_offset;
        self.epochs = LeaderEpochs::default();
    }

    pub fn mark_durable(&mut self, through: u64) {
        assert!(through <= self.end(), "synced to {through} past the log end {}", self.end());
        self.durable_end = self.durable_end.max(through);
    }

    /// (largest epoch <= `epoch`, the offset where it ends), as Kafka's `endOffsetForEpoch`; the
    /// latest epoch (or a later one) ends at the log end. An empty log gives (0, start).
    pub fn end_offset_for(&self, epoch: i32) -> (i32, u64) {
        match self.epochs.latest() {
            None if epoch >= self.start_epoch => return (self.start_epoch, self.end()),
            None => return (epoch, self.start),
            Some(latest) if epoch >= latest.epoch => return (latest.epoch, self.end()),
            Some(_) => {}
        }
        let (found, end) = self.epochs.end_offset_for(epoch, self.end() as i64);
        if found == UNDEFINED_EPOCH || end < 0 {
            return (0, self.start);
        }
        (found, end as u64)
    }

    pub fn check_invariants(&self) {
        assert!(
            self.start <= self.durable_end && self.durable_end <= self.end(),
            "raft log bounds {} {} {}",
            self.start,
            self.durable_end,
            self.end()
        );
        let mut previous_epoch = i32::MIN;
        for (index, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.offset, self.start + index as u64, "raft log offsets not contiguous");
            assert!(entry.epoch >= previous_epoch, "raft log epochs decrease at {}", entry.offset);
            previous_epoch = entry.epoch;
        }
        self.epochs.check_invariants();
        assert!(
            self.start_epoch <= self.entries.front().map_or(self.start_epoch, |e| e.epoch),
            "entries older than the snapshot"
        );
        for start in self.epochs.entries() {
            let entry = self.entry(start.start_offset as u64).expect("an epoch starts at an entry");
            assert_eq!(entry.epoch, start.epoch, "epoch cache disagrees with the log");
        }
    }
}
