//! The metadata quorum: Raft as KIP-595 specifies it for Kafka's `__cluster_metadata` log.
//! Voters elect a leader and replicate the log by pulling it (Fetch); observers follow it. The
//! node is sans-IO like the broker: messages, ticks and storage completions in, actions out.

mod leader;
pub mod log;
pub mod message;
pub mod node;
mod resend;
pub mod wire;

/// A node's id, as Kafka's `node.id` (a broker id and a voter id are the same number).
pub type NodeId = i32;

pub use log::{Entry, Payload, RaftLog, SnapshotId};
pub use message::{Diverging, FetchResponse, Message, RaftError, Request, Response, SnapshotChunk};
pub use node::{
    ElectionState, ProposeError, RaftAction, RaftConfig, RaftNode, ReplicaState, ReplicaStates, Restored, RoleKind,
};
