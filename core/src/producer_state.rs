//! Producer state of one partition: per producer id, its epoch and the last five batches'
//! sequence ranges and offsets, which decide whether a batch is appended, is a retry of one
//! already in the log (answered with its original offset), or is refused. Also the partition's
//! transactions: where each open one started (which holds back the last stable offset) and
//! the aborted ones a read_committed consumer must drop.

use std::collections::{BTreeMap, VecDeque};

use crate::batch::Batch;

/// Kafka keeps this many batches per producer for duplicate detection; clients keep at most
/// five requests in flight for the same reason.
pub const BATCHES_REMEMBERED: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// The first offset of this producer's open transaction in this partition.
    pub txn_first_offset: Option<i64>,
}

/// A transaction aborted in this partition: its data lies in first_offset..last_offset, and
/// last_offset holds its ABORT marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// Control record types of transaction markers (Kafka's ControlRecordType).
pub const CONTROL_ABORT: i16 = 0;
pub const CONTROL_COMMIT: i16 = 1;

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next batch in sequence.
    Append,
    /// A retry of a batch already appended: answer with its offsets, append nothing.
    Duplicate(BatchMeta),
    /// An older epoch than the producer's current one.
    FencedEpoch { current: i16 },
    /// A gap or a reordering.
    OutOfOrder { expected: i32, got: i32 },
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// What producer state takes from a batch: enough to replay it without its bytes (a log keeps
/// these for the batches it may have to cut off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFacts {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub transactional: bool,
    /// A control batch's marker type (-1 when it has none that parses); None for data.
    pub control: Option<i16>,
}

impl BatchFacts {
    pub fn of(batch: &Batch<'_>) -> Self {
        BatchFacts {
            producer_id: batch.producer_id(),
            epoch: batch.producer_epoch(),
            first_seq: batch.base_sequence(),
            last_seq: batch.last_sequence(),
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            transactional: batch.is_transactional(),
            control: batch.is_control().then(|| batch.control_type().unwrap_or(-1)),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    entries: BTreeMap<i64, ProducerEntry>,
    /// Ordered by marker offset.
    aborted: Vec<AbortedTxn>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    pub fn check(&self, batch: &Batch<'_>) -> SequenceCheck {
        let producer_id = batch.producer_id();
        if producer_id < 0 || batch.base_sequence() < 0 {
            return SequenceCheck::Append;
        }
        let epoch = batch.producer_epoch();
        let first = batch.base_sequence();
        let last = batch.last_sequence();
        let Some(entry) = self.entries.get(&producer_id) else {
            // Unknown producer (new, or its batches were removed by retention): any sequence starts it.
            return SequenceCheck::Append;
        };
        if epoch < entry.epoch {
            return SequenceCheck::FencedEpoch { current: entry.epoch };
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts the sequence at 0.
            return if first == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder { expected: 0, got: first }
            };
        }
        if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return SequenceCheck::Duplicate(*dup);
        }
        match entry.batches.back() {
            None => SequenceCheck::Append,
            Some(previous) if first == next_seq(previous.last_seq) => SequenceCheck::Append,
            Some(previous) => SequenceCheck::OutOfOrder { expected: next_seq(previous.last_seq), got: first },
        }
    }

    /// Records a batch that was appended at its final offsets.
    pub fn record(&mut self, batch: &Batch<'_>) {
        self.record_facts(&BatchFacts::of(batch));
    }

    /// Records a batch by the facts producer state needs from it (`record` without the bytes).
    pub fn record_facts(&mut self, batch: &BatchFacts) {
        if let Some(kind) = batch.control {
            self.record_marker(batch, kind);
            return;
        }
        if batch.producer_id < 0 || batch.first_seq < 0 {
            return;
        }
        let meta = BatchMeta {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            base_offset: batch.base_offset,
            last_offset: batch.last_offset,
        };
        let entry = self.entries.entry(batch.producer_id).or_insert(ProducerEntry {
            epoch: batch.epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
        });
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(meta);
        while entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        if batch.transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(batch.base_offset);
        }
    }

    /// A COMMIT or ABORT marker closes the producer's open transaction in this partition; a
    /// marker's epoch also fences older epochs of the producer.
    fn record_marker(&mut self, batch: &BatchFacts, kind: i16) {
        if kind != CONTROL_ABORT && kind != CONTROL_COMMIT {
            return;
        }
        let entry = self.entries.entry(batch.producer_id).or_insert(ProducerEntry {
            epoch: batch.epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
        });
        if batch.epoch > entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        let first = entry.txn_first_offset.take();
        if let (CONTROL_ABORT, Some(first_offset)) = (kind, first) {
            self.aborted.push(AbortedTxn {
                producer_id: batch.producer_id,
                first_offset,
                last_offset: batch.base_offset,
            });
        }
    }

    /// Where the earliest open transaction starts: no offset at or above it is stable.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.entries.values().filter_map(|e| e.txn_first_offset).min()
    }

    /// Producers with a transaction open in this partition, with their epochs.
    pub fn open_transactions(&self) -> Vec<(i64, i16)> {
        self.entries.iter().filter(|(_, e)| e.txn_first_offset.is_some()).map(|(id, e)| (*id, e.epoch)).collect()
    }

    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.entries.get(&producer_id).is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// Aborted transactions that overlap offsets `from..to`.
    pub fn aborted_between(&self, from: i64, to: i64) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.iter().filter(move |a| a.last_offset >= from && a.first_offset < to)
    }

    /// Forgets what a snapshot says about `from..to`, data a crash took (the log's first files
    /// never reached the disk though a later snapshot did): a producer whose batches all lay
    /// there is forgotten, so its retry is written again rather than taken for a duplicate of
    /// data that is gone; an open transaction that began there now begins at `to`.
    pub fn forget_lost(&mut self, from: i64, to: i64) {
        let lost = from..to;
        for entry in self.entries.values_mut() {
            entry.batches.retain(|b| !lost.contains(&b.last_offset));
            if entry.txn_first_offset.is_some_and(|first| lost.contains(&first)) {
                entry.txn_first_offset = Some(to);
            }
        }
        self.entries.retain(|_, e| !e.batches.is_empty() || e.txn_first_offset.is_some());
        self.aborted.retain(|a| !lost.contains(&a.last_offset));
    }

    /// Forgets aborted transactions that lie wholly below the log start.
    pub fn forget_aborted_before(&mut self, log_start_offset: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start_offset);
    }

    /// Drops what lies at or above `offset` (a log truncated in recovery).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.entries.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
            if entry.txn_first_offset.is_some_and(|first| first >= offset) {
                entry.txn_first_offset = None;
            }
        }
        self.entries.retain(|_, e| !e.batches.is_empty() || e.txn_first_offset.is_some());
        self.aborted.retain(|a| a.last_offset < offset);
    }

    /// Snapshot: version i16, crc32c u32 of the rest, count u32, then per producer: id i64,
    /// epoch i16, open transaction's first offset i64 (-1: none), n u8, n × (first_seq i32,
    /// last_seq i32, base_offset i64, last_offset i64); then aborted count u32 and per aborted
    /// transaction: producer id i64, first offset i64, last offset i64.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (id, entry) in &self.entries {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.push(entry.batches.len() as u8);
            for b in &entry.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            body.extend_from_slice(&a.producer_id.to_be_bytes());
            body.extend_from_slice(&a.first_offset.to_be_bytes());
            body.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// None when the snapshot is torn, corrupt or of another version: the caller rebuilds from
    /// the log instead.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<ProducerStates> {
        if bytes.len() < 10 || i16::from_be_bytes([bytes[0], bytes[1]]) != SNAPSHOT_VERSION {
            return None;
        }
        let crc = u32::from_be_bytes(bytes[2..6].try_into().ok()?);
        let body = &bytes[6..];
        if crc32c::crc32c(body) != crc {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = body.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let id = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let txn_first_offset = Some(i64::from_be_bytes(take(8)?.try_into().ok()?)).filter(|o| *o >= 0);
            let n = take(1)?[0] as usize;
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    last_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    base_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                });
            }
            states.entries.insert(id, ProducerEntry { epoch, batches, txn_first_offset });
        }
        let aborted = u32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..aborted {
            states.aborted.push(AbortedTxn {
                producer_id: i64::from_be_bytes(take(8)?.try_into().ok()?),
                first_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
            });
        }
        Some(states)
    }
}

/// Version 1 had no transactions; a version-1 snapshot is ignored and the log replayed.
const SNAPSHOT_VERSION: i16 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{stamp, test_batches::batch_with};
    use kafka_protocol::records::Compression;

    fn idempotent(count: usize, pid: i64, epoch: i16, seq: i32, offset: i64) -> Vec<u8> {
        let mut b = batch_with(count, Some((pid, epoch, seq)), Compression::None, 1).to_vec();
        stamp(&mut b, offset, 0);
        b
    }

    #[test]
    fn in_sequence_batches_append_and_retries_are_duplicates() {
        let mut states = ProducerStates::default();
        let first = idempotent(3, 7, 0, 0, 0);
        let first = Batch::validate(&first).unwrap();
        assert_eq!(states.check(&first), SequenceCheck::Append);
        states.record(&first);
        let second = idempotent(2, 7, 0, 3, 3);
        let second = Batch::validate(&second).unwrap();
        assert_eq!(states.check(&second), SequenceCheck::Append);
        states.record(&second);
        let retry = idempotent(3, 7, 0, 0, 0);
        match states.check(&Batch::validate(&retry).unwrap()) {
            SequenceCheck::Duplicate(meta) => {
                assert_eq!((meta.base_offset, meta.last_offset), (0, 2))
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn gaps_and_old_epochs_are_refused() {
        let mut states = ProducerStates::default();
        let b = idempotent(1, 7, 1, 0, 0);
        states.record(&Batch::validate(&b).unwrap());
        let gap = idempotent(1, 7, 1, 5, 0);
        assert_eq!(states.check(&Batch::validate(&gap).unwrap()), SequenceCheck::OutOfOrder { expected: 1, got: 5 });
        let old = idempotent(1, 7, 0, 1, 0);
        assert_eq!(states.check(&Batch::validate(&old).unwrap()), SequenceCheck::FencedEpoch { current: 1 });
        let bumped = idempotent(1, 7, 2, 0, 0);
        assert_eq!(states.check(&Batch::validate(&bumped).unwrap()), SequenceCheck::Append);
    }

    #[test]
    fn snapshots_round_trip_and_corruption_is_detected() {
        let mut states = ProducerStates::default();
        for (i, pid) in [3i64, 9, 11].iter().enumerate() {
            let b = idempotent(2, *pid, 0, 0, i as i64 * 2);
            states.record(&Batch::validate(&b).unwrap());
        }
        let snapshot = states.encode_snapshot();
        assert_eq!(ProducerStates::decode_snapshot(&snapshot), Some(states));
        let mut bad = snapshot.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(ProducerStates::decode_snapshot(&bad), None);
        assert_eq!(ProducerStates::decode_snapshot(&snapshot[..snapshot.len() - 3]), None);
    }
}
