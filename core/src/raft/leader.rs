//! What a leader knows about the replicas that fetch from it: how far each holds the log durably,
//! when each last fetched, and the fetches parked until there is something to answer.
//! Observers are tracked too (bounded), but never counted toward the high watermark.

use std::collections::{BTreeMap, BTreeSet};

use super::resend::Resend;
use super::NodeId;

#[derive(Clone, Debug, Default)]
pub(super) struct Progress {
    /// The follower holds everything below this durably (its last valid fetch offset).
    pub durable_end: u64,
    pub last_fetch_ms: Option<u64>,
    /// The last fetch that asked from the leader's log end (DescribeQuorum's lastCaughtUpTimestamp).
    pub last_caught_up_ms: Option<u64>,
    /// The high watermark in the last response sent to it: a fetch parks only if it is current.
    pub last_sent_high_watermark: Option<u64>,
}

#[derive(Clone, Debug)]
pub(super) struct ParkedFetch {
    pub from: NodeId,
    pub correlation: u64,
    pub fetch_offset: u64,
    pub deadline_ms: u64,
}

#[derive(Clone, Debug)]
pub(super) struct LeaderState {
    /// The offset of this epoch's LeaderChange entry: nothing is committed until it is.
    pub epoch_start: u64,
    pub became_leader_ms: u64,
    /// Every other voter; their durable ends decide the high watermark.
    pub voters: BTreeMap<NodeId, Progress>,
    pub observers: BTreeMap<NodeId, Progress>,
    /// Voters known to have learned of this leader (answered BeginQuorumEpoch, or fetched).
    pub acknowledged: BTreeSet<NodeId>,
    /// When each voter not yet acknowledged is sent BeginQuorumEpoch again.
    pub begin_resend: Resend,
    pub parked: Vec<ParkedFetch>,
}

impl LeaderState {
    pub fn new(me: NodeId, voters: &[NodeId], epoch_start: u64, now_ms: u64) -> Self {
        let voters = voters.iter().filter(|&&v| v != me).map(|&v| (v, Progress::default())).collect();
        LeaderState {
            epoch_start,
            became_leader_ms: now_ms,
            voters,
            observers: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            begin_resend: Resend::default(),
            parked: Vec::new(),
        }
    }

    /// The replica's progress; a new observer is tracked if there is room, after forgetting
    /// those that have not fetched since `stale_before_ms`. Past the limit it is served untracked.
    pub fn progress_mut(
        &mut self,
        replica: NodeId,
        max_observers: usize,
        stale_before_ms: u64,
    ) -> Option<&mut Progress> {
        if self.voters.contains_key(&replica) {
            return self.voters.get_mut(&replica);
        }
        if !self.observers.contains_key(&replica) && self.observers.len() >= max_observers {
            let stale: Vec<NodeId> = self
                .observers
                .iter()
                .filter(|(_, p)| p.last_fetch_ms.is_none_or(|t| t < stale_before_ms))
                .map(|(&o, _)| o)
                .collect();
            for observer in stale {
                self.observers.remove(&observer);
                self.parked.retain(|p| p.from != observer);
            }
            if self.observers.len() >= max_observers {
                return None;
            }
        }
        Some(self.observers.entry(replica).or_default())
    }

    /// The largest offset that a majority of voters (this leader, with `own_durable_end`,
    /// included) hold durably.
    pub fn majority_durable_end(&self, own_durable_end: u64) -> u64 {
        let mut ends: Vec<u64> = self.voters.values().map(|p| p.durable_end).collect();
        ends.push(own_durable_end);
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends[ends.len() / 2]
    }

    /// Whether a majority of voters (this leader included) fetched at or after `since_ms`.
    pub fn majority_fetched_since(&self, since_ms: u64) -> bool {
        let recent = self.voters.values().filter(|p| p.last_fetch_ms.is_some_and(|t| t >= since_ms)).count();
        let total = self.voters.len() + 1;
        recent + 1 > total / 2
    }

    /// Parks a fetch, replacing an older one from the same replica (at most one per replica).
    pub fn park(&mut self, fetch: ParkedFetch) -> Option<ParkedFetch> {
        let replaced = self.parked.iter().position(|p| p.from == fetch.from).map(|i| self.parked.swap_remove(i));
        self.parked.push(fetch);
        replaced
    }

    pub fn check_invariants(&self, me: NodeId, max_observers: usize) {
        assert!(!self.voters.contains_key(&me), "a leader tracks itself as a follower");
        assert!(self.observers.len() <= max_observers, "observer table over its limit");
        assert!(self.observers.keys().all(|o| !self.voters.contains_key(o)), "a voter tracked as an observer");
        assert!(self.parked.len() <= self.voters.len() + self.observers.len(), "more parked fetches than replicas");
        let mut seen = BTreeSet::new();
        for parked in &self.parked {
            assert!(seen.insert(parked.from), "two parked fetches from {}", parked.from);
        }
        assert!(self.acknowledged.iter().all(|v| self.voters.contains_key(v)), "a non-voter acknowledged");
    }
}
