//! What Raft nodes say to each other: KIP-595's Vote, BeginQuorumEpoch, EndQuorumEpoch and Fetch,
//! with only the fields the protocol uses. `wire.rs` maps them to Kafka's own messages.

use bytes::Bytes;

use super::log::{Entry, SnapshotId};
use super::NodeId;

/// A request or the response to one; `correlation` pairs them, as on a Kafka connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request { correlation: u64, request: Request },
    Response { correlation: u64, response: Response },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A candidate asks for a vote, claiming its durable log's last (epoch, end offset).
    Vote { epoch: i32, candidate: NodeId, last_epoch: i32, log_end: u64 },
    /// A new leader announces itself.
    BeginQuorumEpoch { epoch: i32, leader: NodeId },
    /// A leader resigns; the preferred successors should stand first.
    EndQuorumEpoch { epoch: i32, leader: NodeId, preferred_successors: Vec<NodeId> },
    /// A follower or observer pulls the log: it holds everything below `fetch_offset` durably,
    /// and the entry before it has `last_fetched_epoch`.
    Fetch { epoch: i32, replica: NodeId, fetch_offset: u64, last_fetched_epoch: i32, max_wait_ms: u64 },
    /// A replica whose fetch offset the leader's log no longer holds reads the leader's snapshot,
    /// a chunk at a time (KIP-630).
    FetchSnapshot { epoch: i32, replica: NodeId, snapshot: SnapshotId, position: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftError {
    /// The request's epoch is older than the receiver's.
    FencedLeaderEpoch,
    /// The receiver does not lead this epoch.
    NotLeader,
    /// The request's epoch is newer than any the receiver knows.
    UnknownLeaderEpoch,
    /// The receiver is not a voter, or the sender is not one where it must be.
    InconsistentVoter,
    /// The snapshot asked for is not (or no longer) the leader's.
    SnapshotNotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Vote { epoch: i32, leader: Option<NodeId>, granted: bool, error: Option<RaftError> },
    BeginQuorumEpoch { epoch: i32, leader: Option<NodeId>, error: Option<RaftError> },
    EndQuorumEpoch { epoch: i32, leader: Option<NodeId>, error: Option<RaftError> },
    Fetch(FetchResponse),
    FetchSnapshot(SnapshotChunk),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub epoch: i32,
    pub leader: Option<NodeId>,
    pub error: Option<RaftError>,
    pub snapshot: SnapshotId,
    /// The whole snapshot's size, and where this chunk starts in it.
    pub size: u64,
    pub position: u64,
    pub bytes: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResponse {
    pub epoch: i32,
    pub leader: Option<NodeId>,
    pub error: Option<RaftError>,
    /// None until the leader has committed an entry of its own epoch.
    pub high_watermark: Option<u64>,
    /// The follower's log diverges: truncate to `end_offset`, the end of `epoch` on the leader.
    pub diverging: Option<Diverging>,
    /// The leader's log no longer holds the fetch offset: read this snapshot instead.
    pub snapshot: Option<SnapshotId>,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diverging {
    pub epoch: i32,
    pub end_offset: u64,
}

impl Response {
    pub fn epoch(&self) -> i32 {
        match self {
            Response::Vote { epoch, .. }
            | Response::BeginQuorumEpoch { epoch, .. }
            | Response::EndQuorumEpoch { epoch, .. } => *epoch,
            Response::Fetch(fetch) => fetch.epoch,
            Response::FetchSnapshot(chunk) => chunk.epoch,
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        match self {
            Response::Vote { leader, .. }
            | Response::BeginQuorumEpoch { leader, .. }
            | Response::EndQuorumEpoch { leader, .. } => *leader,
            Response::Fetch(fetch) => fetch.leader,
            Response::FetchSnapshot(chunk) => chunk.leader,
        }
    }
}
