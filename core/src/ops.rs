//! The core's output queue: actions for the driver, and the bookkeeping that routes each storage
//! completion back to whatever asked for it.

use crate::buggify::Buggify;
use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::storage::{MetaFile, OpId, SegmentFile, StorageOp, TopicPartition};

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
    /// Everything is durable and the clean-shutdown marker may be written.
    ShutdownComplete,
}

/// What a storage completion continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A log, index or snapshot write of a partition; failure takes the partition offline.
    PartitionWrite(TopicPartition),
    /// A group-commit fsync of a partition.
    PartitionSync(TopicPartition),
    /// A read for one partition slot of a fetch.
    FetchRead { fetch: u64, slot: usize },
    /// A read while searching a partition for a timestamp (ListOffsets).
    TimeSearchRead { request: u64, slot: usize },
    /// A read of the group coordinator's log while loading it.
    GroupLoadRead,
    /// The cluster metadata file.
    Meta,
    /// The log-start-offset checkpoint.
    LogStartCheckpoint,
}

pub struct Ops {
    next_id: u64,
    queue: VecDeque<Action>,
    purposes: BTreeMap<OpId, Purpose>,
    /// Rides along with the action queue so every part of the logic that emits actions can reach it.
    pub buggify: Buggify,
}

impl Default for Ops {
    /// Without buggify, as production runs.
    fn default() -> Self {
        Ops::new(Buggify::new(None))
    }
}

impl Ops {
    pub fn new(buggify: Buggify) -> Self {
        Ops { next_id: 0, queue: VecDeque::new(), purposes: BTreeMap::new(), buggify }
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
    pub fn write(&mut self, file: SegmentFile, position: u64, data: Bytes) -> OpId {
        let id = self.id(Purpose::PartitionWrite(file.tp.clone()));
        self.queue.push_back(Action::Storage(StorageOp::Write { id, file, position, data }));
        id
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
    pub fn delete(&mut self, file: SegmentFile) {
        self.queue.push_back(Action::Storage(StorageOp::Delete { file }));
    }
    pub fn delete_partition(&mut self, tp: TopicPartition) {
        self.queue.push_back(Action::Storage(StorageOp::DeletePartition { tp }));
    }
}
