//! Idempotent producer state of one partition: per producer id, its epoch and the last five
//! batches' sequence ranges and offsets. Decides whether a batch is appended, is a retry of one
//! already in the log (answered with its original offset), or is refused.

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
}

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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    entries: BTreeMap<i64, ProducerEntry>,
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
        let producer_id = batch.producer_id();
        if producer_id < 0 || batch.base_sequence() < 0 {
            return;
        }
        let epoch = batch.producer_epoch();
        let meta = BatchMeta {
            first_seq: batch.base_sequence(),
            last_seq: batch.last_sequence(),
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
        };
        let entry = self.entries.entry(producer_id).or_insert(ProducerEntry { epoch, batches: VecDeque::new() });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(meta);
        while entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
    }

    /// Drops what lies at or above `offset` (a log truncated in recovery).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.entries.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.entries.retain(|_, e| !e.batches.is_empty());
    }

    /// Snapshot: version i16, crc32c u32 of the rest, count u32, then per producer: id i64,
    /// epoch i16, n u8, n × (first_seq i32, last_seq i32, base_offset i64, last_offset i64).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (id, entry) in &self.entries {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.push(entry.batches.len() as u8);
            for b in &entry.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend_from_slice(&1i16.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// None when the snapshot is torn, corrupt or of another version: the caller rebuilds from
    /// the log instead.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<ProducerStates> {
        if bytes.len() < 10 || i16::from_be_bytes([bytes[0], bytes[1]]) != 1 {
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
            states.entries.insert(id, ProducerEntry { epoch, batches });
        }
        Some(states)
    }
}

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
