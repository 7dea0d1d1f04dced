//! One node's seat in the metadata quorum, as the network sees it: Kafka frames on the controller
//! listener and on connections to the other voters, around a [`RaftNode`].
//!
//! ## The contract (quinn-style, as `RaftNode`'s)
//! - Inputs: [`QuorumMember::handle_request`] (a frame from an inbound connection),
//!   [`QuorumMember::handle_closed`] (that connection is gone),
//!   [`QuorumMember::handle_peer_response`] (a frame back from a voter we sent to),
//!   [`QuorumMember::handle_peer_lost`] (the connection to that voter broke: what was in flight on it
//!   is lost), [`QuorumMember::handle_tick`] at [`QuorumMember::next_deadline`], and the storage
//!   completions `handle_election_persisted`, `handle_synced`, `handle_snapshot_written`.
//! - Outputs: drain [`QuorumMember::poll_action`] after every input and carry each action out in
//!   order: `Respond` and `Close` on inbound connections, `SendToPeer` on the connection to that
//!   voter (opened on demand, requests answered in order), `Storage` as `RaftNode` specifies.
//! - `Now` carries a monotonic clock for the protocol and the wall clock only for what Kafka's
//!   tools print (DescribeQuorum's timestamps).

mod answers;
mod member;
pub mod sessions;
pub mod topics;

pub use member::{QuorumAction, QuorumConfig, QuorumMember, Voter};
pub use topics::TopicDefaults;

/// The controller listener's name, as Kafka's tools show it.
pub const CONTROLLER_LISTENER: &str = "CONTROLLER";

/// The clocks an input is stamped with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Never goes back; every deadline is on this clock.
    pub monotonic_ms: u64,
    /// Milliseconds since the Unix epoch, for display only.
    pub wall_ms: i64,
}
