//! The active controller's view of which brokers are alive (KIP-631). A broker heartbeats; an
//! unfenced broker silent for the session timeout is fenced by a record in the metadata log, and
//! one that heartbeats again and has caught up with the log is unfenced the same way. Only the
//! leader holds sessions: a new leader gives every broker a full session from when it first looks.

use std::collections::BTreeMap;

use crate::raft::NodeId;

/// Kafka's `broker.session.timeout.ms`.
pub const SESSION_TIMEOUT_MS: u64 = 9_000;

/// Brokers tracked at once: registration refuses more (`member::MAX_BROKERS`).
pub const MAX_SESSIONS: usize = 4_096;

#[derive(Debug, Default)]
pub struct BrokerSessions {
    /// When each broker's session ends unless it heartbeats.
    expires_ms: BTreeMap<NodeId, u64>,
    /// Fencing or unfencing records proposed and not yet applied, by broker: the offset of the
    /// record. While one is pending no other is proposed for that broker.
    pending: BTreeMap<NodeId, u64>,
}

impl BrokerSessions {
    pub fn heartbeat(&mut self, broker: NodeId, now_ms: u64) {
        if self.expires_ms.len() < MAX_SESSIONS || self.expires_ms.contains_key(&broker) {
            self.expires_ms.insert(broker, now_ms + SESSION_TIMEOUT_MS);
        }
    }

    /// A broker seen unfenced for the first time gets a full session from now.
    pub fn watch(&mut self, broker: NodeId, now_ms: u64) {
        if !self.expires_ms.contains_key(&broker) {
            self.heartbeat(broker, now_ms);
        }
    }

    /// Brokers whose session ended, with no change of theirs pending.
    pub fn expired(&self, now_ms: u64) -> Vec<NodeId> {
        self.expires_ms
            .iter()
            .filter(|&(b, &expires)| now_ms >= expires && !self.pending.contains_key(b))
            .map(|(&b, _)| b)
            .collect()
    }

    /// Looks at an ended session again at `at_ms` rather than now.
    pub fn postpone(&mut self, broker: NodeId, at_ms: u64) {
        if let Some(expires) = self.expires_ms.get_mut(&broker) {
            *expires = (*expires).max(at_ms);
        }
    }

    pub fn forget(&mut self, broker: NodeId) {
        self.expires_ms.remove(&broker);
    }

    pub fn is_pending(&self, broker: NodeId) -> bool {
        self.pending.contains_key(&broker)
    }

    pub fn proposed(&mut self, broker: NodeId, offset: u64) {
        self.pending.insert(broker, offset);
    }

    /// Changes the image has applied (or that another leader's log replaced) are no longer pending.
    pub fn applied_through(&mut self, applied_end: u64) {
        self.pending.retain(|_, &mut offset| offset >= applied_end);
    }

    pub fn next_expiry(&self) -> Option<u64> {
        self.expires_ms.iter().filter(|(b, _)| !self.pending.contains_key(b)).map(|(_, &e)| e).min()
    }

    /// This node is not the leader (any more): a later leader starts afresh.
    pub fn clear(&mut self) {
        self.expires_ms.clear();
        self.pending.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.expires_ms.is_empty() && self.pending.is_empty()
    }
}
