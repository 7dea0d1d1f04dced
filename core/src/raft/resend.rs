//! When a voter may be asked again (Vote, BeginQuorumEpoch). Requests travel over TCP, which
//! loses nothing short of the connection: a request is sent again only after the request timeout
//! or, sooner, after its connection broke. Re-sending on a short timer instead floods a slow link,
//! and each copy queues behind the last: answers then come later than any election can wait.

use std::collections::BTreeMap;

use super::NodeId;

#[derive(Clone, Debug, Default)]
pub(super) struct Resend {
    /// When each voter asked may be asked again; one never asked is due at once.
    due_ms: BTreeMap<NodeId, u64>,
}

impl Resend {
    pub fn is_due(&self, voter: NodeId, now_ms: u64) -> bool {
        self.due_ms.get(&voter).is_none_or(|&due| now_ms >= due)
    }

    pub fn sent(&mut self, voter: NodeId, now_ms: u64, request_timeout_ms: u64) {
        self.due_ms.insert(voter, now_ms + request_timeout_ms);
    }

    /// The connection to `voter` broke: what was sent on it will not be answered.
    pub fn lost(&mut self, voter: NodeId, now_ms: u64, backoff_ms: u64) {
        if let Some(due) = self.due_ms.get_mut(&voter) {
            *due = (*due).min(now_ms + backoff_ms);
        }
    }

    /// The earliest time one of `waiting_on` is due.
    pub fn next_due(&self, waiting_on: impl Iterator<Item = NodeId>) -> Option<u64> {
        waiting_on.map(|v| self.due_ms.get(&v).copied().unwrap_or(0)).min()
    }
}
