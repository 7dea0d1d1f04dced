//! A log cut back above its high watermark (what a replica does with a tail its leader lacks):
//! random appends of idempotent and transactional producers, markers, segment rolls, syncs, high
//! watermark moves and cuts. After every step the log's invariants hold; after every cut the
//! files hold exactly the batches below it, reads find every kept offset, and producer state and
//! the epoch cache equal what replaying the kept batches from scratch gives.

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use spool_core::batch::{self, Batch, Batches};
use spool_core::config::{Durability, TopicConfig};
use spool_core::mem_disk::MemDisk;
use spool_core::ops::{Action, Ops};
use spool_core::partition::{PartitionLog, ReadBound};
use spool_core::producer_state::ProducerStates;
use spool_core::storage::{Completion, FileKind, SegmentFile, StorageOp, TopicPartition};
use support::{records, txn_records};

#[derive(Clone, Debug)]
enum Step {
    /// A batch of `count` records from producer `producer` (0, 1: idempotent; 2: transactional;
    /// 3: none), with a new epoch first when `bump`.
    Append { producer: usize, count: usize, bump: bool },
    /// The transactional producer's open transaction ends.
    Marker { commit: bool },
    /// Everything queued reaches the disk, syncs included.
    Settle,
    /// The high watermark moves to the n-th batch end at or below the durable end.
    Acknowledge(usize),
    /// The log is cut to the n-th place at or above the high watermark.
    Cut(usize),
    /// The leader epoch moves on.
    NewEpoch,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, 1..4usize, prop::bool::weighted(0.1))
            .prop_map(|(producer, count, bump)| Step::Append { producer, count, bump }),
        1 => any::<bool>().prop_map(|commit| Step::Marker { commit }),
        3 => Just(Step::Settle),
        2 => (0..8usize).prop_map(Step::Acknowledge),
        2 => (0..8usize).prop_map(Step::Cut),
        1 => Just(Step::NewEpoch),
    ]
}

struct Harness {
    log: PartitionLog,
    ops: Ops,
    disk: MemDisk,
    /// (epoch, next sequence) per producer.
    producers: [(i16, i32); 4],
    txn_open: bool,
    now_ms: i64,
    /// Where each batch appended ends, in order (the test's own record, settled or not).
    ends: Vec<i64>,
    /// Each batch's bytes as last seen on disk, by base offset.
    seen: std::collections::BTreeMap<i64, Bytes>,
}

impl Harness {
    fn new() -> Self {
        let config = TopicConfig { segment_bytes: 400, index_interval_bytes: 100, ..TopicConfig::default() };
        Harness {
            log: PartitionLog::create(TopicPartition::new("t", 0), config, 0),
            ops: Ops::default(),
            disk: MemDisk::new(),
            producers: [(0, 0); 4],
            txn_open: false,
            now_ms: 1_000,
            ends: Vec::new(),
            seen: std::collections::BTreeMap::new(),
        }
    }

    fn settle(&mut self) {
        loop {
            for tp in std::mem::take(&mut self.ops.syncs_due) {
                assert_eq!(tp, self.log.tp);
                self.log.maybe_sync(&mut self.ops);
            }
            let Some(action) = self.ops.pop() else { break };
            let Action::Storage(op) = action else { panic!("a log asks only for storage: {action:?}") };
            match self.disk.execute(op) {
                Some(Completion::Synced { id, result }) => {
                    self.ops.complete(id);
                    self.log.on_synced(id, result.map_err(|e| e.0), &mut self.ops);
                }
                Some(done) => {
                    self.ops.complete(done.id());
                }
                None => {}
            }
        }
    }

    /// Batch ends a cut or an acknowledgement may name: the high watermark, each batch end above
    /// it, the log end.
    fn places_above_hw(&self) -> Vec<i64> {
        let hw = self.log.high_watermark();
        let mut places: Vec<i64> = self.ends.iter().copied().filter(|&p| p > hw).collect();
        places.insert(0, hw);
        places
    }

    /// Every batch in the log files, in order: (base offset, last offset, bytes).
    fn stored(&self) -> Vec<(i64, i64, Bytes)> {
        let mut out = Vec::new();
        for segment in &self.log.segments {
            let file = SegmentFile::new(&self.log.tp, segment.base_offset, FileKind::Log);
            let mut disk = self.disk.clone();
            let len = disk.file_len(&file);
            let read = StorageOp::Read { id: spool_core::storage::OpId(u64::MAX), file, position: 0, len };
            let Some(Completion::Read { result: Ok(bytes), .. }) = disk.execute(read) else {
                if segment.size == 0 {
                    continue;
                }
                panic!("segment {} unreadable", segment.base_offset);
            };
            assert_eq!(bytes.len() as u64, segment.size, "segment {} file length", segment.base_offset);
            for (_, b) in Batches::new(&bytes, true) {
                out.push((b.base_offset(), b.last_offset(), Bytes::copy_from_slice(b.bytes())));
            }
        }
        out
    }

    fn apply(&mut self, step: Step) {
        self.now_ms += 1;
        match step {
            Step::Append { producer, count, bump } => {
                if bump && producer < 2 {
                    self.producers[producer] = (self.producers[producer].0 + 1, 0);
                }
                let values: Vec<String> = (0..count).map(|i| format!("r{}-{i}", self.now_ms)).collect();
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                let (epoch, seq) = self.producers[producer];
                let id = producer as i64 + 10;
                let bytes = match producer {
                    0 | 1 => records(&values, Some((id, epoch, seq)), self.now_ms),
                    2 => {
                        self.txn_open = true;
                        txn_records(&values, (id, epoch, seq), self.now_ms)
                    }
                    _ => records(&values, None, self.now_ms),
                };
                let appended = self.log.append(&bytes, self.now_ms, Durability::Fsync, &mut self.ops);
                match appended {
                    Ok(a) => {
                        assert_eq!(a.base_offset, self.log.log_end_offset() - count as i64, "a new batch, not a retry");
                        self.ends.push(a.last_offset + 1);
                        self.producers[producer].1 += count as i32;
                    }
                    // A cut can take sequences back: the producer's next batch is then out of
                    // order, as a client's retry would be refused.
                    Err(e) => assert!(producer < 3, "{e:?}"),
                }
            }
            Step::Marker { commit } => {
                if self.txn_open {
                    let marker = batch::transaction_marker(12, self.producers[2].0, commit, self.now_ms);
                    let a = self.log.append(&marker, self.now_ms, Durability::Fsync, &mut self.ops).expect("marker");
                    self.ends.push(a.last_offset + 1);
                    self.txn_open = false;
                }
            }
            Step::Settle => {
                self.settle();
                for (base, _, bytes) in self.stored() {
                    self.seen.insert(base, bytes);
                }
            }
            Step::Acknowledge(n) => {
                let durable = self.log.durable_end();
                let places: Vec<i64> = self.places_above_hw().into_iter().filter(|&p| p <= durable).collect();
                let to = places[n % places.len()];
                self.log.advance_high_watermark(to);
            }
            Step::Cut(n) => {
                let places = self.places_above_hw();
                let to = places[n % places.len()];
                self.log.truncate_to(to, &mut self.ops);
                self.log.check_invariants();
                assert_eq!(self.log.log_end_offset(), to);
                self.ends.retain(|&e| e <= to);
                self.seen.retain(|&base, _| base < to);
                self.settle();
                self.check_after_cut(to);
                // The test's producers resume from what the log holds.
                for (i, p) in self.producers.iter_mut().enumerate() {
                    if let Some(entry) = self.log.producers.get(i as i64 + 10) {
                        let last = entry.batches.back().map_or(-1, |b| b.last_seq);
                        *p = (entry.epoch, last + 1);
                    }
                }
                self.txn_open = self.log.producers.has_open_transaction(12);
            }
            Step::NewEpoch => {
                let next = self.log.leader_epoch + 1;
                self.log.become_leader(next);
            }
        }
        self.log.check_invariants();
    }

    fn check_after_cut(&self, to: i64) {
        let kept = self.stored();
        let stored_ends: Vec<i64> = kept.iter().map(|b| b.1 + 1).collect();
        assert_eq!(stored_ends, self.ends, "the files hold exactly the batches below {to}");
        assert_eq!(self.log.durable_end(), to, "a settled cut log is durable to its end");
        for (base, _, bytes) in &kept {
            if let Some(seen) = self.seen.get(base) {
                assert_eq!(seen, bytes, "batch at {base} changed");
            }
        }
        let mut replayed = ProducerStates::default();
        for (_, _, bytes) in &kept {
            replayed.record(&Batch::parse(bytes).expect("stored batch"));
        }
        assert_eq!(self.log.producers, replayed, "producer state after a cut to {to}");
        let epochs = spool_core::leader_epochs::LeaderEpochs::rebuild(
            kept.iter().map(|(base, _, bytes)| (Batch::parse(bytes).unwrap().partition_leader_epoch(), *base)),
        );
        let cached = self.log.leader_epochs().entries();
        for e in epochs.entries() {
            assert!(cached.contains(e), "epoch {e:?} of the kept batches missing from the cache {cached:?}");
        }
        for (base, last, bytes) in &kept {
            for offset in [*base, *last] {
                let plan = self.log.plan_read(offset, 1, ReadBound::LogEnd).expect("in range").expect("readable");
                let mut disk = self.disk.clone();
                let read = StorageOp::Read {
                    id: spool_core::storage::OpId(u64::MAX),
                    file: plan.file,
                    position: plan.position,
                    len: plan.len,
                };
                let Some(Completion::Read { result: Ok(read), .. }) = disk.execute(read) else { panic!("read") };
                let found = Batches::new(&read, false).any(|(_, b)| b.bytes() == &bytes[..]);
                assert!(found, "a read at {offset} does not reach its batch");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_cut_log_is_the_log_of_the_kept_batches(steps in prop::collection::vec(step(), 1..80)) {
        let mut h = Harness::new();
        for s in steps {
            h.apply(s);
        }
        h.apply(Step::Cut(0));
    }
}

#[test]
fn a_cut_below_the_high_watermark_is_refused() {
    let mut h = Harness::new();
    h.apply(Step::Append { producer: 3, count: 2, bump: false });
    h.apply(Step::Settle);
    h.apply(Step::Acknowledge(1));
    assert_eq!(h.log.high_watermark(), 2);
    let mut log = h.log.clone();
    let caught = std::panic::catch_unwind(move || log.truncate_to(1, &mut Ops::default()));
    assert!(caught.is_err(), "the high watermark bounds every cut");
}

#[test]
fn a_cut_is_undone_by_a_power_loss_until_it_is_synced() {
    let mut h = Harness::new();
    for _ in 0..3 {
        h.apply(Step::Append { producer: 3, count: 1, bump: false });
    }
    h.apply(Step::Settle);
    let file = SegmentFile::new(&h.log.tp, 0, FileKind::Log);
    let full = h.disk.file_len(&file);
    h.log.truncate_to(1, &mut h.ops);
    // The cut is written but not yet synced: a power loss brings the tail back.
    while let Some(Action::Storage(op)) = h.ops.pop() {
        if matches!(op, StorageOp::Truncate { .. }) {
            h.disk.execute(op);
        }
    }
    assert!(h.disk.file_len(&file) < full);
    let mut lost = h.disk.clone();
    lost.crash(&mut |_| 0);
    assert_eq!(lost.file_len(&file), full, "an unsynced cut is not durable");
    // Synced, it holds.
    h.log.maybe_sync(&mut h.ops);
    h.settle();
    let mut after = h.disk.clone();
    after.crash(&mut |_| 0);
    assert!(after.file_len(&file) < full, "a synced cut survives a power loss");
}

/// A batch as a leader of `epoch` would send it: the leader epoch field lies outside the CRC.
fn copied_batch(values: &[&str], epoch: i32) -> Bytes {
    let mut bytes = records(values, None, 1_000).to_vec();
    bytes[12..16].copy_from_slice(&epoch.to_be_bytes());
    Bytes::from(bytes)
}

#[test]
fn a_follower_cut_at_its_end_forgets_an_epoch_it_led_without_writing_in_it() {
    let mut h = Harness::new();
    h.apply(Step::Append { producer: 3, count: 2, bump: false });
    h.apply(Step::Settle);
    // Led epoch 3 from the log end, wrote nothing, and follows again.
    h.log.become_leader(3);
    h.log.become_follower(4);
    assert_eq!(h.log.last_epoch(), 3);
    h.log.truncate_to(2, &mut h.ops);
    assert_eq!(h.log.last_epoch(), 0, "a follower names the epoch of its last batch as LastFetchedEpoch");
    h.log.check_invariants();
}

#[test]
fn a_copied_batch_of_an_epoch_past_the_followed_one_is_refused() {
    let mut h = Harness::new();
    h.log.become_follower(2);
    let refused = h.log.append_replicated(&copied_batch(&["a"], 67_108_866), 1_000, Durability::Fsync, &mut h.ops);
    assert!(refused.is_err(), "an epoch no leader has had yet is a damaged batch");
    assert_eq!(h.log.log_end_offset(), 0);
    let copied = h.log.append_replicated(&copied_batch(&["a"], 2), 1_000, Durability::Fsync, &mut h.ops);
    assert_eq!(copied.ok(), Some(1));
    assert_eq!(h.log.last_epoch(), 2);
}

#[test]
fn a_follower_log_emptied_for_a_fresh_copy_holds_nothing_on_disk_and_takes_the_leaders_batches() {
    let mut h = Harness::new();
    for _ in 0..6 {
        h.apply(Step::Append { producer: 0, count: 2, bump: false });
    }
    h.apply(Step::Settle);
    h.log.advance_high_watermark(h.log.durable_end());
    assert!(h.log.segments.len() > 1, "the test wants several segments");
    h.log.become_follower(1);
    assert!(h.log.empty_for_copy(&mut h.ops));
    h.log.check_invariants();
    assert_eq!((h.log.log_end_offset(), h.log.high_watermark(), h.log.durable_end()), (0, 0, 0));
    assert!(h.log.producers.get(10).is_none(), "producer state goes with the records");
    assert!(!h.log.high_watermark_unconfirmed());
    h.settle();
    assert!(h.stored().is_empty(), "no batch is left in the files");
    let copied = h.log.append_replicated(&copied_batch(&["x", "y"], 1), 1_000, Durability::Fsync, &mut h.ops);
    assert_eq!(copied.ok(), Some(2));
    h.settle();
    assert_eq!(h.stored().len(), 1);
}

/// Found by the property test: a cut exactly at the durable end, which named the start of a
/// segment the cut deleted, left the durable end (and then the high watermark) pointing there.
#[test]
fn a_cut_at_the_durable_end_leaves_no_point_in_a_deleted_segment() {
    let mut h = Harness::new();
    let append = |n| Step::Append { producer: 0, count: n, bump: false };
    let steps = [append(1), Step::Settle, Step::Acknowledge(1), append(3), append(3), append(1), Step::Settle];
    for s in steps.into_iter().chain([Step::Acknowledge(1), Step::Cut(7), append(3), append(1), Step::Cut(5)]) {
        h.apply(s);
    }
    for s in [append(1), append(1), append(1), Step::Acknowledge(5), append(1), Step::Cut(0)] {
        h.apply(s);
    }
    h.log.check_invariants();
}
