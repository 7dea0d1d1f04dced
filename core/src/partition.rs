//! One partition's log as the leader sees it: segments, offsets, the high watermark and the
//! group-commit fsync that moves it. State is shaped for replication (leader epoch, log start,
//! log end, high watermark) although a single node is its own only replica today.

use std::collections::{BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::batch::{self, Batch, Batches};
use crate::buggify::Site;
use crate::config::{Durability, TimestampType, TopicConfig};
use crate::index::SegmentIndex;
use crate::leader_epochs::LeaderEpochs;
use crate::ops::Ops;
use crate::producer_state::{BatchFacts, BatchMeta, ProducerStates, SequenceCheck};
use crate::recovery::RecoveredSegment;
use crate::storage::{FileKind, OpId, SegmentFile, TopicPartition};

#[derive(Clone, Debug)]
pub struct Segment {
    pub base_offset: i64,
    /// Bytes written (issued to the driver), durable or not.
    pub size: u64,
    pub next_offset: i64,
    pub index: SegmentIndex,
    /// When the segment was opened, for segment.ms.
    pub created_ms: i64,
}

impl Segment {
    fn empty(base_offset: i64, now_ms: i64) -> Self {
        Segment { base_offset, size: 0, next_offset: base_offset, index: SegmentIndex::new(), created_ms: now_ms }
    }
    /// Largest timestamp for retention; a segment without timestamps ages from its creation.
    fn retention_timestamp(&self) -> i64 {
        if self.index.max_timestamp >= 0 {
            self.index.max_timestamp
        } else {
            self.created_ms
        }
    }
}

/// A place in the log between two batches, as an offset and a byte position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogPoint {
    offset: i64,
    segment_base: i64,
    position: u64,
}

/// A batch above the high watermark.
#[derive(Clone, Copy, Debug)]
struct Unacked {
    end: LogPoint,
    facts: BatchFacts,
}

/// Why an append was refused, as a Kafka error.
#[derive(Debug, PartialEq, Eq)]
pub enum AppendError {
    Corrupt(String),
    TooLarge {
        size: usize,
        max: i64,
    },
    OutOfOrder(String),
    FencedEpoch(String),
    Offline(String),
    /// This replica follows: only its leader appends.
    NotLeader,
}

/// Outcome of an accepted append (or a recognised retry).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Set for LogAppendTime topics.
    pub log_append_time: i64,
}

/// An offset outside the log (below its start or past its end).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct OffsetOutOfRange;

/// How far a read may go: consumers stop at the high watermark (read_committed ones then cut at
/// the last stable offset, which need not be a known byte position); followers read to the log
/// end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBound {
    HighWatermark,
    LogEnd,
}

/// A contiguous byte range of one segment to read for a fetch.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct ReadPlan {
    pub file: SegmentFile,
    pub position: u64,
    pub len: usize,
}

/// Invariants (checked by `check_invariants`): segments are in offset order and contiguous;
/// log start <= high watermark <= durable end <= log end; the high watermark only moves forward;
/// at most one fsync is in flight, and it covers no more than the log end.
#[derive(Clone, Debug)]
pub struct PartitionLog {
    pub tp: TopicPartition,
    pub config: TopicConfig,
    pub segments: Vec<Segment>,
    pub log_start_offset: i64,
    /// The epoch this replica leads or follows in.
    pub leader_epoch: i32,
    /// Whether this replica leads: it stamps client batches with `leader_epoch`, and its epoch
    /// cache's latest epoch is `leader_epoch`. A follower's cache holds the epochs of the batches
    /// it copied.
    leading: bool,
    /// Where each leader epoch starts.
    epochs: LeaderEpochs,
    pub producers: ProducerStates,
    /// Everything below is on disk (fsynced; in relaxed durability, written).
    durable: LogPoint,
    /// Consumers read below it. It never passes the durable end of the replicas that count
    /// (today this node alone) and only moves forward, through `advance_high_watermark`.
    high_watermark: LogPoint,
    /// Set by recovery, which takes the high watermark to the durable end: on a replica that
    /// may be a tail no leader committed, so its leader must confirm it (or the log is copied
    /// afresh) before the replica counts as holding it.
    high_watermark_unconfirmed: bool,
    /// Every batch appended above the high watermark, oldest first: where it ends (the places
    /// the high watermark can move to, or the log be cut back to) and what producer state takes
    /// from it. Holds only what is appended and not yet acknowledged.
    above_hw: VecDeque<Unacked>,
    /// Producer state as of the high watermark: where a cut log's state is replayed from.
    producers_at_hw: ProducerStates,
    /// Segments below this base are sealed and fsynced with their index files (in relaxed
    /// durability too, where `durable` runs ahead of the disk).
    synced_segment_base: i64,
    unsynced: BTreeSet<SegmentFile>,
    sync_in_flight: Option<(OpId, LogPoint)>,
    /// Set when a write or fsync failed: the partition serves no more until a restart recovers it.
    pub failed: Option<String>,
}

impl PartitionLog {
    pub fn create(tp: TopicPartition, config: TopicConfig, now_ms: i64) -> Self {
        let mut log = PartitionLog {
            tp,
            config,
            segments: vec![Segment::empty(0, now_ms)],
            log_start_offset: 0,
            leader_epoch: 0,
            leading: false,
            epochs: LeaderEpochs::default(),
            producers: ProducerStates::default(),
            durable: LogPoint { offset: 0, segment_base: 0, position: 0 },
            high_watermark: LogPoint { offset: 0, segment_base: 0, position: 0 },
            high_watermark_unconfirmed: false,
            above_hw: VecDeque::new(),
            producers_at_hw: ProducerStates::default(),
            synced_segment_base: 0,
            unsynced: BTreeSet::new(),
            sync_in_flight: None,
            failed: None,
        };
        log.become_leader(0);
        log
    }

    /// A log rebuilt by recovery; everything recovered is durable (it was read back from disk).
    pub fn recovered(
        tp: TopicPartition,
        config: TopicConfig,
        segments: Vec<RecoveredSegment>,
        log_start_offset: i64,
        (producers, epochs): (ProducerStates, LeaderEpochs),
        now_ms: i64,
    ) -> Self {
        let mut segments: Vec<Segment> = segments
            .into_iter()
            .map(|s| Segment {
                base_offset: s.base_offset,
                size: s.size,
                next_offset: s.next_offset,
                index: s.index,
                created_ms: now_ms,
            })
            .collect();
        if segments.is_empty() {
            segments.push(Segment::empty(log_start_offset.max(0), now_ms));
        }
        let last = segments.last().expect("at least one segment");
        let durable = LogPoint { offset: last.next_offset, segment_base: last.base_offset, position: last.size };
        let log_start_offset = log_start_offset.clamp(segments[0].base_offset, durable.offset);
        let mut log = PartitionLog {
            tp,
            config,
            segments,
            log_start_offset,
            leader_epoch: 0,
            leading: false,
            epochs,
            producers_at_hw: producers.clone(),
            producers,
            synced_segment_base: durable.segment_base,
            durable,
            high_watermark: durable,
            high_watermark_unconfirmed: false,
            above_hw: VecDeque::new(),
            unsynced: BTreeSet::new(),
            sync_in_flight: None,
            failed: None,
        };
        // One node leads every partition, in the latest epoch its log knows (none yet: 0).
        let epoch = log.epochs.latest().map_or(0, |l| l.epoch);
        log.become_leader(epoch);
        // In a cluster the image decides who leads; until a leader confirms it, the recovered
        // high watermark is only this node's durable end.
        log.high_watermark_unconfirmed = log.high_watermark.offset > 0;
        log
    }

    /// Leads the partition in `epoch`, from the log end: records appended from now on carry it.
    /// The cache holds the epoch before anything is written in it (as Kafka's `makeLeader`).
    pub fn become_leader(&mut self, epoch: i32) {
        self.take_role(epoch, true);
        // A leader's log is its partition's truth: what it holds below its high watermark is
        // committed from now on.
        self.high_watermark_unconfirmed = false;
        self.epochs.assign(epoch, self.log_end_offset());
    }

    /// Follows the leader of `epoch`: from now on only the leader's batches are appended
    /// (`append_replicated`), as they are.
    pub fn become_follower(&mut self, epoch: i32) {
        self.take_role(epoch, false);
    }

    /// Leader epochs only move forward, whatever the role.
    fn take_role(&mut self, epoch: i32, leading: bool) {
        assert!(
            epoch >= self.leader_epoch,
            "{}: leader epoch moved back from {} to {epoch}",
            self.tp,
            self.leader_epoch
        );
        self.leader_epoch = epoch;
        self.leading = leading;
    }

    /// Whether the high watermark is recovery's (the durable end), not yet known committed.
    pub fn high_watermark_unconfirmed(&self) -> bool {
        self.high_watermark_unconfirmed
    }

    /// The leader's high watermark reached this replica's: everything below it is committed.
    pub fn confirm_high_watermark(&mut self) {
        self.high_watermark_unconfirmed = false;
    }

    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// The epoch of the last batch in the log as the epoch cache knows it (-1: none): what a
    /// follower names as LastFetchedEpoch.
    pub fn last_epoch(&self) -> i32 {
        self.epochs.latest().map_or(-1, |l| l.epoch)
    }

    /// The largest batch end at or below `offset` that the high watermark may move to (the high
    /// watermark itself when none above it is).
    pub fn batch_end_at_or_below(&self, offset: i64) -> i64 {
        let durable = self.durable.offset;
        if offset >= durable {
            return durable;
        }
        self.above_hw
            .iter()
            .rev()
            .map(|u| u.end.offset)
            .find(|&end| end <= offset)
            .unwrap_or(self.high_watermark.offset)
    }

    pub fn leader_epochs(&self) -> &LeaderEpochs {
        &self.epochs
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }
    /// Records below this are durable on every replica that counts, and visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.offset
    }
    /// Records below this are durable on this node.
    pub fn durable_end(&self) -> i64 {
        self.durable.offset
    }

    /// Moves the high watermark forward to `offset`, the end of an appended batch that every
    /// replica that counts holds durably. Returns whether it moved. Moving it backwards, past the
    /// durable end, or into the middle of a batch is a programmer error.
    pub fn advance_high_watermark(&mut self, offset: i64) -> bool {
        assert!(
            offset >= self.high_watermark.offset,
            "{}: high watermark moved backwards from {} to {offset}",
            self.tp,
            self.high_watermark.offset
        );
        assert!(
            offset <= self.durable.offset,
            "{}: high watermark {offset} past the durable end {}",
            self.tp,
            self.durable.offset
        );
        if offset == self.high_watermark.offset {
            return false;
        }
        let point = if offset == self.durable.offset {
            self.durable
        } else {
            self.batch_end(offset)
                .unwrap_or_else(|| panic!("{}: high watermark {offset} is not the end of a batch", self.tp))
        };
        while let Some(passed) = self.above_hw.pop_front_if(|u| u.end.offset <= offset) {
            self.producers_at_hw.record_facts(&passed.facts);
        }
        self.high_watermark = point;
        true
    }
    /// The end of the batch above the high watermark that ends at `offset`.
    fn batch_end(&self, offset: i64) -> Option<LogPoint> {
        self.above_hw.iter().find(|u| u.end.offset == offset).map(|u| u.end)
    }

    fn forget_aborted_below_log_start(&mut self) {
        self.producers.forget_aborted_before(self.log_start_offset);
        self.producers_at_hw.forget_aborted_before(self.log_start_offset);
    }

    /// Cuts the log back to `offset`, the high watermark or the end of a batch above it: what a
    /// replica does with a tail its leader does not hold (KIP-101, KIP-279). Later segments go,
    /// the one holding `offset` is shortened and becomes the active one again (its index files
    /// are dropped: they are caches, rebuilt from the log), and producer state and the epoch
    /// cache are taken back with it. The cut reaches the disk with the next sync. Cutting below
    /// the high watermark, or into a batch, is a programmer error.
    pub fn truncate_to(&mut self, offset: i64, ops: &mut Ops) {
        let tp = &self.tp;
        assert!(
            offset >= self.high_watermark.offset,
            "{tp}: truncation to {offset} below the high watermark {}",
            self.high_watermark.offset
        );
        assert!(offset <= self.log_end_offset(), "{tp}: truncation to {offset} past the log end");
        if offset == self.log_end_offset() {
            // No record goes, but an epoch this log led without writing in it (starting at
            // its end) does: a follower names the last epoch it holds records of.
            if !self.leading {
                self.epochs.truncate_from_end(offset);
            }
            return;
        }
        let point = if offset == self.high_watermark.offset {
            self.high_watermark
        } else {
            self.batch_end(offset).unwrap_or_else(|| panic!("{tp}: truncation to {offset} is not the end of a batch"))
        };
        self.cut_files_at(point, ops);
        self.above_hw.retain(|u| u.end.offset <= offset);
        self.producers = self.producers_at_hw.clone();
        for u in &self.above_hw {
            self.producers.record_facts(&u.facts);
        }
        self.epochs.truncate_from_end(offset);
        if self.leading && self.epochs.latest().is_none_or(|l| l.epoch != self.leader_epoch) {
            self.epochs.assign(self.leader_epoch, offset);
        }
    }

    /// Empties a follower's log, to copy it again from its leader from the log start: what a
    /// replica does when its leader's log diverges below its high watermark, which only a
    /// recovered high watermark (set to the durable end by recovery, not known committed) can
    /// be. Returns false, changing nothing, while a sync is in flight (its completion must find
    /// the log it started on) or when the log starts inside its first segment.
    pub fn empty_for_copy(&mut self, ops: &mut Ops) -> bool {
        assert!(!self.leading, "{}: a leader's log is its partition's truth; only a follower empties it", self.tp);
        let base = self.segments[0].base_offset;
        if self.sync_in_flight.is_some() || self.log_start_offset != base {
            return false;
        }
        let point = LogPoint { offset: base, segment_base: base, position: 0 };
        self.cut_files_at(point, ops);
        // The producer state before the log is the old log's; the copy brings the leader's.
        let snapshot = self.file(base, FileKind::ProducerSnapshot);
        self.unsynced.remove(&snapshot);
        ops.delete(snapshot);
        self.high_watermark = point;
        self.high_watermark_unconfirmed = false;
        self.above_hw.clear();
        self.producers = ProducerStates::default();
        self.producers_at_hw = ProducerStates::default();
        self.epochs.truncate_from_end(base);
        true
    }

    /// Drops the files and segments past `point` and shortens the one holding it; the durable
    /// end and any sync in flight come back to it. The cut reaches the disk with the next sync.
    fn cut_files_at(&mut self, point: LogPoint, ops: &mut Ops) {
        let offset = point.offset;
        while self.active().base_offset > point.segment_base {
            let gone = self.segments.pop().expect("a later segment");
            for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex, FileKind::ProducerSnapshot] {
                self.unsynced.remove(&self.file(gone.base_offset, kind));
            }
            self.delete_segment_files(gone.base_offset, ops);
        }
        let base = self.active().base_offset;
        assert_eq!(base, point.segment_base, "{}: the cut lies in a segment the log holds", self.tp);
        for kind in [FileKind::OffsetIndex, FileKind::TimeIndex] {
            let file = self.file(base, kind);
            self.unsynced.remove(&file);
            ops.delete(file);
        }
        let active = self.segments.last_mut().expect("active segment");
        active.index.truncate_to(base, offset, point.position);
        active.size = point.position;
        active.next_offset = offset;
        let log_file = self.file(base, FileKind::Log);
        ops.truncate(log_file.clone(), point.position);
        self.unsynced.insert(log_file);
        self.synced_segment_base = self.synced_segment_base.min(base);
        // At the cut itself too: a point there may name the start of a segment just deleted.
        if self.durable.offset >= offset {
            self.durable = point;
        }
        if let Some((_, target)) = &mut self.sync_in_flight {
            if target.offset >= offset {
                *target = point;
            }
        }
        ops.syncs_due.insert(self.tp.clone());
    }

    /// The end of what read_committed consumers may see: the high watermark, or the start of
    /// the earliest open transaction if that is lower.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.producers.first_unstable_offset().map_or(hw, |first| first.min(hw))
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }
    fn file(&self, base_offset: i64, kind: FileKind) -> SegmentFile {
        SegmentFile::new(&self.tp, base_offset, kind)
    }

    /// Validates, deduplicates, assigns offsets to and writes the batches of one produce.
    /// Returns where they landed; with `Durability::Fsync` the caller answers once
    /// `high_watermark() > last_offset`.
    pub fn append(
        &mut self,
        records: &Bytes,
        now_ms: i64,
        durability: Durability,
        ops: &mut Ops,
    ) -> Result<Appended, AppendError> {
        if let Some(why) = &self.failed {
            return Err(AppendError::Offline(why.clone()));
        }
        if !self.leading {
            return Err(AppendError::NotLeader);
        }
        let batches = batch::split_produce_records(records).map_err(|e| AppendError::Corrupt(e.to_string()))?;
        for b in &batches {
            if b.len() as i64 > self.config.max_message_bytes {
                return Err(AppendError::TooLarge { size: b.len(), max: self.config.max_message_bytes });
            }
        }
        // Retries of an appended batch are answered with its original offsets (clients send one
        // batch per partition, so a duplicate is the whole request).
        if batches.len() == 1 {
            let first = Batch::parse(&batches[0]).expect("validated");
            match self.producers.check(&first) {
                SequenceCheck::Duplicate(BatchMeta { base_offset, last_offset, .. }) => {
                    return Ok(Appended { base_offset, last_offset, log_append_time: -1 });
                }
                SequenceCheck::FencedEpoch { current } => {
                    return Err(AppendError::FencedEpoch(format!(
                        "producer {} epoch {} is older than the current epoch {current}",
                        first.producer_id(),
                        first.producer_epoch()
                    )))
                }
                SequenceCheck::OutOfOrder { expected, got } => {
                    return Err(AppendError::OutOfOrder(format!(
                        "producer {} sent sequence {got} where {expected} was expected",
                        first.producer_id()
                    )))
                }
                SequenceCheck::Append => {}
            }
        }
        let log_append_time = if self.config.timestamp_type == TimestampType::LogAppendTime { now_ms } else { -1 };
        let total_len: usize = batches.iter().map(|b| b.len()).sum();
        let record_count: i64 =
            batches.iter().map(|b| Batch::parse(b).expect("validated").last_offset_delta() as i64 + 1).sum();
        let first_offset = self.log_end_offset();
        let last_offset = first_offset + record_count - 1;
        if batches.len() > 1 {
            // Several batches from one producer must be in sequence; check them all before
            // changing any state.
            let mut trial = self.producers.clone();
            for b in &batches {
                let b = Batch::parse(b).expect("validated");
                if b.base_sequence() >= 0 && trial.check(&b) != SequenceCheck::Append {
                    return Err(AppendError::OutOfOrder("batches within one produce are out of sequence".to_string()));
                }
                trial.record(&b);
            }
        }
        // Roll first, so a snapshot taken at the new base holds only earlier batches.
        self.maybe_roll(total_len as u64, last_offset, now_ms, ops);
        let mut written = BytesMut::with_capacity(total_len);
        let mut next = first_offset;
        let position = self.active().size;
        let segment_base = self.active().base_offset;
        for mut b in batches {
            let delta = Batch::parse(&b).expect("validated").last_offset_delta() as i64;
            batch::stamp(&mut b, next, self.leader_epoch);
            if log_append_time >= 0 {
                batch::set_log_append_time(&mut b, now_ms);
            }
            let facts = BatchFacts::of(&Batch::parse(&b).expect("stamped batch parses"));
            self.producers.record_facts(&facts);
            next += delta + 1;
            written.extend_from_slice(&b);
            let end = LogPoint { offset: next, segment_base, position: position + written.len() as u64 };
            self.above_hw.push_back(Unacked { end, facts });
        }
        assert_eq!(next - 1, last_offset);
        self.write_at_end(written.freeze(), first_offset, durability, ops);
        Ok(Appended { base_offset: first_offset, last_offset, log_append_time })
    }

    /// Writes whole batches, whose offsets run on from the log end and whose producer state
    /// and batch ends are recorded already, as one append of the active segment.
    fn write_at_end(&mut self, written: Bytes, first_offset: i64, durability: Durability, ops: &mut Ops) {
        let (mut max_ts, mut next) = (-1, first_offset);
        for (_, b) in Batches::new(&written, false) {
            assert_eq!(b.base_offset(), next, "{}: batches written out of order", self.tp);
            max_ts = max_ts.max(b.max_timestamp());
            next = b.last_offset() + 1;
        }
        let interval = self.config.index_interval_bytes as u64;
        let seg = self.segments.last_mut().expect("active segment");
        assert_eq!(seg.next_offset, first_offset, "{}: a write that does not continue the log", self.tp);
        let position = seg.size;
        seg.index.on_append(seg.base_offset, first_offset, next - 1, position, written.len() as u64, max_ts, interval);
        seg.size += written.len() as u64;
        seg.next_offset = next;
        let base = seg.base_offset;
        let file = self.file(base, FileKind::Log);
        self.unsynced.insert(file.clone());
        ops.write(file, position, written);
        if durability == Durability::Relaxed {
            self.durable = self.end_point();
        }
        ops.syncs_due.insert(self.tp.clone());
    }

    /// Appends batches copied from the leader as they are (offsets, epochs and timestamps
    /// kept): the whole batches at the front of `records` that pass their CRC and continue the
    /// log; a partial batch at the end (a fetch cuts one off) is left for the next fetch. A batch
    /// of a newer epoch starts that epoch in the cache. Returns how many records were appended;
    /// an error when the first batch does not continue the log or goes back in epoch.
    pub fn append_replicated(
        &mut self,
        records: &Bytes,
        now_ms: i64,
        durability: Durability,
        ops: &mut Ops,
    ) -> Result<i64, AppendError> {
        assert!(!self.leading, "{}: a leader appends only its clients' batches", self.tp);
        if let Some(why) = &self.failed {
            return Err(AppendError::Offline(why.clone()));
        }
        let first_offset = self.log_end_offset();
        let (mut next, mut end, mut last_epoch) = (first_offset, 0, self.last_epoch());
        let mut facts = Vec::new();
        for (position, b) in Batches::new(records, true) {
            // The leader epoch field lies outside the batch's CRC: a bit flipped there on the
            // leader's read shows only as an epoch no leader has had yet.
            let epoch = b.partition_leader_epoch();
            if b.base_offset() != next
                || epoch < last_epoch
                || epoch > self.leader_epoch
                || b.last_offset() < b.base_offset()
            {
                if facts.is_empty() {
                    return Err(AppendError::Corrupt(format!(
                        "a copied batch at {} (epoch {}) does not continue the log at {next} (epoch {last_epoch})",
                        b.base_offset(),
                        b.partition_leader_epoch()
                    )));
                }
                break;
            }
            if b.partition_leader_epoch() > last_epoch {
                last_epoch = b.partition_leader_epoch();
                facts.push((Some(last_epoch), BatchFacts::of(&b)));
            } else {
                facts.push((None, BatchFacts::of(&b)));
            }
            next = b.last_offset() + 1;
            end = position + b.len();
        }
        if facts.is_empty() {
            return Ok(0);
        }
        let written = records.slice(..end);
        self.maybe_roll(written.len() as u64, next - 1, now_ms, ops);
        let (segment_base, start) = (self.active().base_offset, self.active().size);
        let mut position = start;
        for (new_epoch, f) in &facts {
            if let Some(epoch) = new_epoch {
                self.epochs.assign(*epoch, f.base_offset);
            }
            self.producers.record_facts(f);
            let len = Batch::total_len(&written[(position - start) as usize..])
                .expect("a batch that parsed has a length") as u64;
            position += len;
            let end = LogPoint { offset: f.last_offset + 1, segment_base, position };
            self.above_hw.push_back(Unacked { end, facts: *f });
        }
        self.write_at_end(written, first_offset, durability, ops);
        Ok(next - first_offset)
    }

    /// Starts a new segment when the active one is full, too old, or the offsets would not fit
    /// its 32-bit relative index. The sealed segment's indexes and the producer snapshot at the
    /// new base are written so a restart need not rescan it.
    fn maybe_roll(&mut self, incoming: u64, last_offset: i64, now_ms: i64, ops: &mut Ops) {
        let active = self.active();
        let full = active.size + incoming > self.config.segment_bytes as u64;
        let old = now_ms - active.created_ms >= self.config.segment_ms;
        let overflow = last_offset - active.base_offset > u32::MAX as i64 / 2;
        let early = active.size > 0 && ops.buggify.fires(Site::RollSegmentEarly);
        if active.size > 0 && (full || old || overflow || early) {
            self.roll(now_ms, ops);
        }
    }

    fn roll(&mut self, now_ms: i64, ops: &mut Ops) {
        let sealed = self.active().clone();
        let new_base = sealed.next_offset;
        for (kind, data) in
            [(FileKind::OffsetIndex, sealed.index.encode_offsets()), (FileKind::TimeIndex, sealed.index.encode_times())]
        {
            let file = self.file(sealed.base_offset, kind);
            self.unsynced.insert(file.clone());
            ops.write(file, 0, Bytes::from(data));
        }
        let snapshot = self.file(new_base, FileKind::ProducerSnapshot);
        self.unsynced.insert(snapshot.clone());
        self.forget_aborted_below_log_start();
        ops.write(snapshot, 0, Bytes::from(self.producers.encode_snapshot()));
        self.segments.push(Segment::empty(new_base, now_ms));
        if self.durable.offset == new_base && self.durable.segment_base == sealed.base_offset {
            self.durable = LogPoint { offset: new_base, segment_base: new_base, position: 0 };
        }
    }

    /// Group commit: at most one fsync in flight; writes that arrive meanwhile ride the next one.
    pub fn maybe_sync(&mut self, ops: &mut Ops) {
        if self.sync_in_flight.is_some() || self.unsynced.is_empty() || self.failed.is_some() {
            return;
        }
        let files: Vec<SegmentFile> = std::mem::take(&mut self.unsynced).into_iter().collect();
        let target = LogPoint {
            offset: self.log_end_offset(),
            segment_base: self.active().base_offset,
            position: self.active().size,
        };
        let id = ops.sync(&self.tp, files);
        self.sync_in_flight = Some((id, target));
    }

    /// A sync finished. Returns true when the high watermark moved.
    pub fn on_synced(&mut self, id: OpId, result: Result<(), String>, ops: &mut Ops) -> bool {
        // A sync of a deleted partition can complete into one re-created under its name.
        let Some((expected, target)) = self.sync_in_flight else {
            return false;
        };
        if expected != id {
            return false;
        }
        self.sync_in_flight = None;
        if let Err(why) = result {
            self.fail(format!("fsync failed: {why}"));
            return false;
        }
        // Offline after a failed write: the bytes this sync was to cover may never have reached
        // the file, so nothing it covered counts as durable or fsynced.
        if self.failed.is_some() {
            return false;
        }
        self.synced_segment_base = self.synced_segment_base.max(target.segment_base);
        let moved = target.offset > self.durable.offset;
        if moved {
            self.durable = target;
        }
        self.maybe_sync(ops);
        moved
    }

    pub fn fail(&mut self, why: String) {
        tracing::error!(partition = %self.tp, "partition taken offline: {why}");
        if self.failed.is_none() {
            self.failed = Some(why);
        }
    }

    /// Where recovery after a crash must start reading: every segment below is sealed and its
    /// log and index files are fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.synced_segment_base
    }

    /// The fsync in flight, if any.
    pub fn sync_in_flight(&self) -> Option<OpId> {
        self.sync_in_flight.map(|(id, _)| id)
    }

    /// Whether every written byte is durable (nothing unsynced, no sync in flight).
    pub fn is_quiescent(&self) -> bool {
        self.unsynced.is_empty() && self.sync_in_flight.is_none()
    }

    /// Writes the active segment's indexes and a producer snapshot at the log end, then syncs:
    /// what a clean shutdown leaves so the next start skips the scan.
    pub fn flush_for_shutdown(&mut self, ops: &mut Ops) {
        if self.failed.is_some() {
            return;
        }
        let active = self.active().clone();
        for (kind, data) in
            [(FileKind::OffsetIndex, active.index.encode_offsets()), (FileKind::TimeIndex, active.index.encode_times())]
        {
            let file = self.file(active.base_offset, kind);
            self.unsynced.insert(file.clone());
            ops.write(file, 0, Bytes::from(data));
        }
        let snapshot = self.file(active.next_offset, FileKind::ProducerSnapshot);
        self.unsynced.insert(snapshot.clone());
        self.forget_aborted_below_log_start();
        ops.write(snapshot, 0, Bytes::from(self.producers.encode_snapshot()));
        self.maybe_sync(ops);
    }

    fn end_point(&self) -> LogPoint {
        LogPoint {
            offset: self.log_end_offset(),
            segment_base: self.active().base_offset,
            position: self.active().size,
        }
    }

    /// Plans the read for a fetch at `offset`, up to `bound`. Ok(None): nothing to return yet
    /// (at or past the bound). Err: the offset is outside the log.
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Option<ReadPlan>, OffsetOutOfRange> {
        if offset < self.log_start_offset || offset > self.log_end_offset() {
            return Err(OffsetOutOfRange);
        }
        let bound = match bound {
            ReadBound::HighWatermark => self.high_watermark,
            ReadBound::LogEnd => self.end_point(),
        };
        if offset >= bound.offset {
            return Ok(None);
        }
        let mut at = self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        while at + 1 < self.segments.len() && self.segments[at].next_offset <= offset {
            at += 1;
        }
        let seg = &self.segments[at];
        let end = if seg.base_offset == bound.segment_base {
            bound.position
        } else if seg.base_offset > bound.segment_base {
            return Ok(None);
        } else {
            seg.size
        };
        let (position, next_entry, holds) = seg.index.lookup_read(seg.base_offset, offset);
        if position >= end {
            return Ok(None);
        }
        // With `holds`, `reach` covers the append holding `offset`; otherwise all of it may be
        // bytes to skip before that append, so the byte limit comes on top.
        let reach = (next_entry.unwrap_or(end).min(end) - position) as usize;
        let len = if holds { reach.max(max_bytes) } else { reach.saturating_add(max_bytes) };
        let len = len.min((end - position) as usize);
        Ok(Some(ReadPlan { file: self.file(seg.base_offset, FileKind::Log), position, len }))
    }

    /// Bytes a fetch could read after `offset` up to `bound`, for its min_bytes check
    /// (approximate).
    pub fn bytes_available(&self, offset: i64, bound: ReadBound) -> u64 {
        match self.plan_read(offset, usize::MAX / 2, bound) {
            Ok(Some(plan)) => plan.len as u64,
            _ => 0,
        }
    }

    /// Raises the log start offset (DeleteRecords) and drops segments wholly below it.
    /// Returns the new log start offset.
    pub fn advance_log_start(&mut self, offset: i64, ops: &mut Ops) -> Result<i64, OffsetOutOfRange> {
        if offset > self.high_watermark() || offset < 0 {
            return Err(OffsetOutOfRange);
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.epochs.truncate_from_start(offset);
        }
        while self.segments.len() > 1 && self.segments[0].next_offset <= self.log_start_offset {
            let gone = self.segments.remove(0);
            self.delete_segment_files(gone.base_offset, ops);
        }
        Ok(self.log_start_offset)
    }

    fn delete_segment_files(&self, base_offset: i64, ops: &mut Ops) {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex, FileKind::ProducerSnapshot] {
            ops.delete(self.file(base_offset, kind));
        }
    }

    /// Applies retention.ms and retention.bytes by deleting whole durable segments, oldest first.
    /// Returns true when the log start offset moved.
    pub fn apply_retention(&mut self, now_ms: i64, ops: &mut Ops) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let before = self.log_start_offset;
        // A fully expired active segment is rolled so it can go too, as Kafka does.
        let active = self.active();
        if self.config.retention_ms >= 0
            && active.size > 0
            && active.next_offset <= self.high_watermark()
            && now_ms - active.retention_timestamp() > self.config.retention_ms
        {
            self.roll(now_ms, ops);
            self.maybe_sync(ops);
        }
        let mut total = self.size_bytes() as i64;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let durable = oldest.next_offset <= self.high_watermark();
            let by_time =
                self.config.retention_ms >= 0 && now_ms - oldest.retention_timestamp() > self.config.retention_ms;
            let by_size = self.config.retention_bytes >= 0 && total - oldest.size as i64 >= self.config.retention_bytes;
            if !durable || !(by_time || by_size) {
                break;
            }
            total -= oldest.size as i64;
            let gone = self.segments.remove(0);
            self.log_start_offset = self.log_start_offset.max(gone.next_offset);
            self.epochs.truncate_from_start(self.log_start_offset);
            self.delete_segment_files(gone.base_offset, ops);
        }
        self.log_start_offset != before
    }

    /// Asserts the invariants written on the type. Cheap enough to run after every input in
    /// simulation and tests.
    pub fn check_invariants(&self) {
        let tp = &self.tp;
        assert!(!self.segments.is_empty(), "{tp}: a log always has an active segment");
        for s in &self.segments {
            assert!(s.base_offset <= s.next_offset, "{tp}: segment {} ends before it starts", s.base_offset);
        }
        for pair in self.segments.windows(2) {
            assert!(
                pair[0].next_offset <= pair[1].base_offset,
                "{tp}: segments {} and {} overlap",
                pair[0].base_offset,
                pair[1].base_offset
            );
        }
        let (start, hw, durable, end) =
            (self.log_start_offset, self.high_watermark.offset, self.durable.offset, self.log_end_offset());
        assert!(
            self.segments[0].base_offset <= start && start <= hw && hw <= durable && durable <= end,
            "{tp}: expected first segment {} <= log start {start} <= high watermark {hw} <= durable end {durable} \
             <= log end {end}",
            self.segments[0].base_offset
        );
        let mut previous = hw;
        for u in &self.above_hw {
            let at = u.end.offset;
            assert!(previous < at && at <= end, "{tp}: batch end {at} out of order");
            assert!(u.facts.last_offset + 1 == at, "{tp}: batch facts end at {} not {at}", u.facts.last_offset + 1);
            previous = at;
        }
        self.epochs.check_invariants();
        if self.leading {
            let latest = self.epochs.latest().expect("a leader's cache holds its epoch");
            assert!(
                latest.epoch == self.leader_epoch && latest.start_offset <= end,
                "{tp}: latest cached epoch {latest:?}, leader epoch {}, log end {end}",
                self.leader_epoch
            );
        } else if let Some(latest) = self.epochs.latest() {
            assert!(
                latest.epoch <= self.leader_epoch && latest.start_offset <= end,
                "{tp}: a follower's latest cached epoch {latest:?}, leader epoch {}, log end {end}",
                self.leader_epoch
            );
        }
        if let Some((_, target)) = self.sync_in_flight {
            assert!(target.offset <= end, "{tp}: a sync covers {} past the log end {end}", target.offset);
        }
        assert!(self.synced_segment_base <= self.active().base_offset, "{tp}: recovery point past the active segment");
    }

    /// First segment that may hold a record with timestamp >= `ts`, and where to start reading.
    pub fn plan_time_search(&self, ts: i64) -> Option<ReadPlan> {
        let seg =
            self.segments.iter().find(|s| s.index.max_timestamp >= ts && s.base_offset < self.high_watermark())?;
        let from = seg.index.lookup_time(seg.base_offset, ts);
        let (position, _) = seg.index.lookup(seg.base_offset, from);
        let hw = self.high_watermark;
        let end = if seg.base_offset == hw.segment_base {
            hw.position
        } else if seg.base_offset > hw.segment_base {
            return None;
        } else {
            seg.size
        };
        if position >= end {
            return None;
        }
        Some(ReadPlan { file: self.file(seg.base_offset, FileKind::Log), position, len: (end - position) as usize })
    }

    /// Offset and timestamp of the record with the largest timestamp (ListOffsets -3), at batch
    /// granularity: the last offset of the batch holding the largest maxTimestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.segments
            .iter()
            .filter(|s| s.index.max_timestamp >= 0 && s.index.offset_of_max_timestamp < self.high_watermark())
            .max_by_key(|s| s.index.max_timestamp)
            .map(|s| (s.index.offset_of_max_timestamp, s.index.max_timestamp))
    }
}

/// The whole batches at the front of `records` that fit in `limit` bytes; with `keep_first`, the
/// first batch is kept even when it alone exceeds the limit (KIP-74).
pub fn fit_batches(records: &Bytes, limit: usize, keep_first: bool) -> Bytes {
    let mut end = 0;
    while let Some(total) = Batch::total_len(&records[end..]) {
        let fits = end + total <= limit || (keep_first && end == 0);
        if end + total > records.len() || !fits {
            break;
        }
        end += total;
    }
    records.slice(..end)
}

/// Trims bytes read for a fetch to whole batches: drops those wholly below `fetch_offset`, keeps
/// the first wanted batch whole even past `max_bytes` (KIP-74), and then as many whole batches as
/// fit. Err(len) asks for a re-read of `len` bytes from `skip` because the first wanted batch was
/// cut short.
pub fn trim_fetched(bytes: &Bytes, fetch_offset: i64, max_bytes: usize) -> Result<Bytes, (usize, usize)> {
    let mut start = None;
    let mut end = 0;
    let mut position = 0;
    while position + batch::LOG_OVERHEAD <= bytes.len() {
        let rest = &bytes[position..];
        let Some(total) = Batch::total_len(rest) else {
            break;
        };
        if total < batch::HEADER_LEN {
            break;
        }
        if rest.len() < batch::HEADER_LEN {
            if start.is_none() {
                return Err((position, total));
            }
            break;
        }
        let last_offset = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"))
            + i32::from_be_bytes(
                rest[batch::LAST_OFFSET_DELTA..batch::LAST_OFFSET_DELTA + 4].try_into().expect("4 bytes"),
            ) as i64;
        if last_offset < fetch_offset {
            position += total;
            continue;
        }
        match start {
            None => {
                if total > rest.len() {
                    return Err((position, total));
                }
                start = Some(position);
                end = position + total;
            }
            Some(s) => {
                if total > rest.len() || end + total - s > max_bytes {
                    break;
                }
                end += total;
            }
        }
        position += total;
    }
    match start {
        Some(s) => Ok(bytes.slice(s..end)),
        // The read ended before the wanted batch's header: read on from where it stopped.
        None => Err((position, batch::HEADER_LEN)),
    }
}
