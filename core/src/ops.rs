//! The core's output queue: actions for the driver, and the bookkeeping that routes each storage
//! completion back to whatever asked for it.

use crate::buggify::Buggify;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::storage::{chunks_len, FileKind, MetaFile, OpId, SegmentFile, StorageOp, TopicPartition};

/// Queued actions a log append looks back over for a write to join.
const JOIN_LOOKBACK: usize = 256;
/// Chunks one joined write holds at most (well under the kernel's IOV_MAX of 1024).
pub const MAX_WRITE_CHUNKS: usize = 64;

/// A client connection, numbered by the driver.
pub type ConnId = u64;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Bytes of one response frame (size prefix included), in request order for the connection.
    Send {
        conn: ConnId,
        frame: Bytes,
    },
    /// Close the connection, logging why.
    Close {
        conn: ConnId,
        reason: String,
    },
    Storage(StorageOp),
    /// Send this request frame (size prefix included) to a peer and hand its answer to
    /// `Broker::handle_forwarded` with this id (exactly once, error or not).
    Forward {
        id: u64,
        to: Peer,
        frame: Bytes,
    },
    /// Everything is durable and the clean-shutdown marker may be written.
    ShutdownComplete,
    /// A partition has been offline too long: nothing is in flight any more, and the driver drops
    /// this broker without the clean-shutdown marker, loads the data directory again (recovery
    /// repairs what the failure left, as after a crash) and starts a new one in its place.
    Restart {
        reason: String,
    },
}

/// Where a request of this broker's goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The active controller's listener (admin requests, producer ids).
    Controller,
    /// Another broker's client listener, by node id, at the address the cluster view gives
    /// (a follower's fetches to its leader).
    Broker(i32),
}

/// Where a partition sits in a request (and its answer): the topic's index, then the
/// partition's within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestSlot {
    pub topic: usize,
    pub partition: usize,
}

/// What a storage completion continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A log, index or snapshot write of a partition; failure takes the partition offline.
    PartitionWrite(TopicPartition),
    /// A group-commit fsync of a partition.
    PartitionSync(TopicPartition),
    /// A read for one partition of a fetch: its topic's and its own place in the request.
    FetchRead { fetch: u64, slot: RequestSlot },
    /// A read while searching a partition for a timestamp (ListOffsets).
    TimeSearchRead { request: u64, slot: usize },
    /// A read of the group coordinator's log while loading it.
    GroupLoadRead,
    /// The cluster metadata file.
    Meta,
    /// The log-start-offset checkpoint.
    LogStartCheckpoint,
    /// The leader-epoch checkpoint.
    LeaderEpochCheckpoint,
    /// The recovery-point checkpoint.
    RecoveryPointCheckpoint,
}

pub struct Ops {
    next_id: u64,
    queue: VecDeque<Action>,
    purposes: BTreeMap<OpId, Purpose>,
    /// Rides along with the action queue so every part of the logic that emits actions can reach it.
    pub buggify: Buggify,
    /// Partitions that appended this turn; their group commit starts when the driver next polls,
    /// so one fsync covers every append of the turn.
    pub syncs_due: BTreeSet<TopicPartition>,
}

impl Default for Ops {
    /// Without buggify, as production runs.
    fn default() -> Self {
        Ops::new(Buggify::new(None))
    }
}

impl Ops {
    pub fn new(buggify: Buggify) -> Self {
        Ops { next_id: 0, queue: VecDeque::new(), purposes: BTreeMap::new(), buggify, syncs_due: BTreeSet::new() }
    }

    fn id(&mut self, purpose: Purpose) -> OpId {
        self.next_id += 1;
        let id = OpId(self.next_id);
        self.purposes.insert(id, purpose);
        id
    }
    pub fn push(&mut self, action: Action) {
        self.queue.push_back(action);
    }
    pub fn pop(&mut self) -> Option<Action> {
        self.queue.pop_front()
    }
    /// Looks up and forgets what an operation was for.
    pub fn complete(&mut self, id: OpId) -> Option<Purpose> {
        self.purposes.remove(&id)
    }
    pub fn in_flight(&self) -> usize {
        self.purposes.len()
    }
    /// Every operation issued and not yet completed, with what it is for.
    pub fn in_flight_operations(&self) -> impl Iterator<Item = (&OpId, &Purpose)> {
        self.purposes.iter()
    }
    pub fn purpose(&self, id: OpId) -> Option<&Purpose> {
        self.purposes.get(&id)
    }
    /// Queues a write. A log append that starts where a write still in the queue ends joins it,
    /// so the appends of many producers handled in one turn reach the disk as one write.
    pub fn write(&mut self, file: SegmentFile, position: u64, data: Bytes) -> OpId {
        if file.kind == FileKind::Log {
            if let Some(id) = self.join_queued_write(&file, position, &data) {
                return id;
            }
        }
        let id = self.id(Purpose::PartitionWrite(file.tp.clone()));
        self.queue.push_back(Action::Storage(StorageOp::Write { id, file, position, chunks: vec![data] }));
        id
    }

    /// Appends `data` to the queued write of `file` that ends at `position`, if nothing queued
    /// after that write could tell the difference: only a sync of the file may lie between (it
    /// then makes more durable than it was asked to, never less). A read, delete or other write
    /// of the file in between keeps the append apart. Returns the joined write's id.
    fn join_queued_write(&mut self, file: &SegmentFile, position: u64, data: &Bytes) -> Option<OpId> {
        for action in self.queue.iter_mut().rev().take(JOIN_LOOKBACK) {
            let Action::Storage(op) = action else {
                continue;
            };
            match op {
                StorageOp::Write { id, file: queued, position: start, chunks } if queued == file => {
                    let end = *start + chunks_len(chunks) as u64;
                    if end != position || chunks.len() >= MAX_WRITE_CHUNKS {
                        return None;
                    }
                    chunks.push(data.clone());
                    return Some(*id);
                }
                StorageOp::Write { .. } | StorageOp::Sync { .. } | StorageOp::WriteMeta { .. } => {}
                StorageOp::Read { file: queued, .. }
                | StorageOp::Delete { file: queued }
                | StorageOp::Truncate { file: queued, .. }
                    if queued == file =>
                {
                    return None
                }
                StorageOp::Read { .. } | StorageOp::Delete { .. } | StorageOp::Truncate { .. } => {}
                StorageOp::DeletePartition { tp } if *tp == file.tp => return None,
                StorageOp::DeletePartition { .. } => {}
            }
        }
        None
    }
    pub fn sync(&mut self, tp: &TopicPartition, files: Vec<SegmentFile>) -> OpId {
        let id = self.id(Purpose::PartitionSync(tp.clone()));
        self.queue.push_back(Action::Storage(StorageOp::Sync { id, files }));
        id
    }
    pub fn read(&mut self, purpose: Purpose, file: SegmentFile, position: u64, len: usize) -> OpId {
        let id = self.id(purpose);
        self.queue.push_back(Action::Storage(StorageOp::Read { id, file, position, len }));
        id
    }
    pub fn write_meta(&mut self, purpose: Purpose, file: MetaFile, data: Bytes) -> OpId {
        let id = self.id(purpose);
        self.queue.push_back(Action::Storage(StorageOp::WriteMeta { id, file, data }));
        id
    }
    pub fn truncate(&mut self, file: SegmentFile, len: u64) {
        self.queue.push_back(Action::Storage(StorageOp::Truncate { file, len }));
    }
    pub fn delete(&mut self, file: SegmentFile) {
        self.queue.push_back(Action::Storage(StorageOp::Delete { file }));
    }
    pub fn delete_partition(&mut self, tp: TopicPartition) {
        self.queue.push_back(Action::Storage(StorageOp::DeletePartition { tp }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(base: i64) -> SegmentFile {
        SegmentFile::new(&TopicPartition::new("t", 0), base, FileKind::Log)
    }

    fn bytes(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    /// (position, chunk lengths) of every queued write, in queue order.
    fn queued_writes(ops: &Ops) -> Vec<(u64, Vec<usize>)> {
        ops.queue
            .iter()
            .filter_map(|a| match a {
                Action::Storage(StorageOp::Write { position, chunks, .. }) => {
                    Some((*position, chunks.iter().map(Bytes::len).collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_log_append_joins_the_queued_write_it_continues_even_past_a_sync() {
        let mut ops = Ops::default();
        let first = ops.write(log(0), 0, bytes(10));
        ops.push(Action::Send { conn: 1, frame: bytes(3) });
        ops.sync(&log(0).tp, vec![log(0)]);
        let second = ops.write(log(0), 10, bytes(5));
        assert_eq!(first, second, "one write, one completion");
        assert_eq!(queued_writes(&ops), [(0, vec![10, 5])]);
        assert_eq!(ops.in_flight(), 2, "the joined write and the sync");
    }

    #[test]
    fn appends_stay_apart_from_writes_they_do_not_continue_or_that_a_reader_may_observe() {
        let mut ops = Ops::default();
        ops.write(log(0), 0, bytes(10));
        ops.write(log(0), 11, bytes(5));
        assert_eq!(queued_writes(&ops).len(), 2, "a gap");
        ops.read(Purpose::GroupLoadRead, log(0), 0, 100);
        ops.write(log(0), 16, bytes(5));
        assert_eq!(queued_writes(&ops).len(), 3, "a read of the file lies between");
        ops.delete(log(0));
        ops.write(log(0), 21, bytes(5));
        assert_eq!(queued_writes(&ops).len(), 4, "a delete of the file lies between");
        ops.write(log(21), 0, bytes(5));
        assert_eq!(queued_writes(&ops).len(), 5, "another segment");
        let index = SegmentFile::new(&TopicPartition::new("t", 0), 21, FileKind::OffsetIndex);
        ops.write(index.clone(), 0, bytes(8));
        ops.write(index, 8, bytes(8));
        assert_eq!(queued_writes(&ops).len(), 7, "only log appends join");
    }

    #[test]
    fn a_joined_write_holds_at_most_its_chunk_limit() {
        let mut ops = Ops::default();
        for i in 0..MAX_WRITE_CHUNKS + 1 {
            ops.write(log(0), i as u64, bytes(1));
        }
        let writes = queued_writes(&ops);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].1.len(), MAX_WRITE_CHUNKS);
        assert_eq!(writes[1], (MAX_WRITE_CHUNKS as u64, vec![1]));
    }

    #[test]
    fn once_the_driver_took_a_write_later_appends_start_a_new_one() {
        let mut ops = Ops::default();
        ops.write(log(0), 0, bytes(10));
        assert!(matches!(ops.pop(), Some(Action::Storage(StorageOp::Write { .. }))));
        ops.write(log(0), 10, bytes(5));
        assert_eq!(queued_writes(&ops), [(10, vec![5])]);
    }
}
