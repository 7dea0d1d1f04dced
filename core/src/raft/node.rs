//! One member of the metadata quorum (KIP-595): a voter that elects and replicates, or an
//! observer that only follows.
//!
//! ## The contract (quinn-style)
//! - Inputs: [`RaftNode::handle_message`] (a peer's request or response), [`RaftNode::handle_tick`]
//!   (at or after [`RaftNode::next_deadline`]), [`RaftNode::handle_election_persisted`],
//!   [`RaftNode::handle_synced`], [`RaftNode::propose`], [`RaftNode::handle_peer_lost`] (the
//!   connection to that node broke). Every input takes `now_ms`, a monotonic
//!   clock in milliseconds that never goes back.
//! - Outputs: drain [`RaftNode::poll_action`] after every input and carry each action out in order.
//!   - `PersistElection`: write the election state durably, then call `handle_election_persisted`.
//!     Until then `poll_action` returns nothing: no vote, no message and no log write may rest on
//!     an election state the disk does not yet hold.
//!   - `Append` / `Truncate`: change the log file in order. `Sync { through }`: fsync it, then call
//!     `handle_synced(through)`; at most one sync is in flight.
//!   - `Send`: deliver the message to that node; it may be lost, delayed or duplicated. A Vote or
//!     BeginQuorumEpoch is sent again after the request timeout, or after the back-off once
//!     `handle_peer_lost` says its connection broke (a stream loses nothing short of that).
//!   - `WriteSnapshot`: write the snapshot durably, then drop the log's entries below its end
//!     (all of them if `replaces_log`), then call `handle_snapshot_written`.
//! - The state machine above hands the node snapshots of itself with [`RaftNode::snapshot`],
//!   and reloads from one when the node installs a snapshot fetched from the leader.
//! - On restart, build the node from what the disk holds (its election state, snapshot and log), as
//!   [`Restored`], after fsyncing both: the node takes all of it as durable, and a crash can
//!   leave unsynced writes readable in the page cache that a power cut would then take away.
//!
//! ## What it promises
//! - At most one leader per epoch; a node's epoch never decreases (its persisted one included).
//! - The high watermark is held durably by a majority of voters, counting each (the leader too)
//!   only up to its fsynced end, and is above the leader's own LeaderChange entry; it never moves
//!   back while the node runs, and the entries below it never change on any node.
//! - A follower fetches only from its durable end, so a leader never counts data a power cut can
//!   take away.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::leader::{LeaderState, ParkedFetch};
use super::log::{Entry, Payload, RaftLog, SnapshotId};
use super::message::{Diverging, FetchResponse, Message, RaftError, Request, Response, SnapshotChunk};
use super::resend::Resend;
use super::NodeId;

const CORRELATION_MASK: u64 = 0x7fff_ffff;
/// While a replica reads the latest snapshot no newer one is taken, up to this many entries in
/// the log: a replica that stays on the snapshot cannot make the log grow without bound.
const MAX_ENTRIES_HELD_FOR_READERS: u64 = 100_000;

#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// The voters, this node among them or not (then it is an observer).
    pub voters: Vec<NodeId>,
    /// A follower that has not heard from an elected leader this long stands for election, after
    /// a random extra of up to the same again (Kafka's `quorum.election.timeout.ms`, 1 000).
    pub election_timeout_ms: u64,
    /// A follower that fetched nothing from its leader this long stands (`quorum.fetch.timeout.ms`).
    /// A leader that a majority has not fetched from in 1.5 times this resigns (check-quorum).
    pub fetch_timeout_ms: u64,
    /// How long a leader may hold a fetch that has nothing new to return.
    pub fetch_max_wait_ms: u64,
    /// A failed request is sent again after this.
    pub retry_backoff_ms: u64,
    /// A Vote or BeginQuorumEpoch unanswered this long is sent again, and a fetch given up on;
    /// one whose connection broke is sent again after the back-off (Kafka's
    /// `quorum.request.timeout.ms`, 2 000).
    pub request_timeout_ms: u64,
    pub max_fetch_entries: usize,
    /// Limit on the entries a leader holds that are not yet committed; proposals beyond it fail.
    pub max_uncommitted: u64,
    /// Limit on the observers a leader tracks.
    pub max_observers: usize,
    /// The largest piece of a snapshot sent in one FetchSnapshot answer.
    pub max_snapshot_chunk_bytes: usize,
    /// Seeds the election jitter and request ids: the driver gives each process a fresh one.
    pub seed: u64,
}

impl RaftConfig {
    pub fn new(node_id: NodeId, mut voters: Vec<NodeId>, seed: u64) -> Self {
        voters.sort_unstable();
        voters.dedup();
        assert!(!voters.is_empty(), "a quorum needs voters");
        RaftConfig {
            node_id,
            voters,
            election_timeout_ms: 1_000,
            fetch_timeout_ms: 2_000,
            fetch_max_wait_ms: 500,
            retry_backoff_ms: 100,
            request_timeout_ms: 2_000,
            max_fetch_entries: 512,
            max_uncommitted: 4_096,
            max_observers: 64,
            max_snapshot_chunk_bytes: 1 << 20,
            seed,
        }
    }

    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.binary_search(&node).is_ok()
    }
}

/// The election state written to disk (Kafka's `quorum-state`) before anything rests on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionState {
    pub epoch: i32,
    pub voted_for: Option<NodeId>,
    pub leader: Option<NodeId>,
}

/// What a restarting node finds on its disk.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub election: Option<ElectionState>,
    pub snapshot: Option<(SnapshotId, Bytes)>,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftAction {
    Send {
        to: NodeId,
        message: Message,
    },
    PersistElection(ElectionState),
    Append(Vec<Entry>),
    /// Drop the log's entries at and above `end`.
    Truncate {
        end: u64,
    },
    Sync {
        through: u64,
    },
    WriteSnapshot {
        id: SnapshotId,
        data: Bytes,
        replaces_log: bool,
    },
}

/// One replica as the leader sees it; times are the node's monotonic milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub id: NodeId,
    pub durable_end: u64,
    pub last_fetch_ms: Option<u64>,
    pub last_caught_up_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStates {
    pub voters: Vec<ReplicaState>,
    pub observers: Vec<ReplicaState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Unattached,
    Voted,
    Candidate,
    Leader,
    Follower,
    Resigned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader {
        leader: Option<NodeId>,
    },
    /// Too many entries wait to be committed.
    Busy,
}

#[derive(Debug)]
enum Role {
    /// Knows no leader and has not voted in this epoch. A voter stands for election at the
    /// deadline; an observer looks for the leader from then on.
    Unattached {
        deadline_ms: u64,
    },
    Voted {
        candidate: NodeId,
        deadline_ms: u64,
    },
    Candidate {
        granted: BTreeSet<NodeId>,
        answered: BTreeSet<NodeId>,
        deadline_ms: u64,
        resend: Resend,
    },
    Leader(Box<LeaderState>),
    Follower {
        leader: NodeId,
        deadline_ms: u64,
    },
    /// Was leader of this epoch and gave it up; stands again at the deadline.
    Resigned {
        deadline_ms: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct FetchInFlight {
    correlation: u64,
    to: NodeId,
    sent_ms: u64,
}

pub struct RaftNode {
    config: RaftConfig,
    log: RaftLog,
    election: ElectionState,
    role: Role,
    high_watermark: u64,
    /// The high watermark the leader last reported: a follower takes it up to its durable end.
    leader_high_watermark: u64,
    rng: ChaCha8Rng,
    outbox: VecDeque<RaftAction>,
    /// A PersistElection was handed out and not yet confirmed: nothing else leaves meanwhile.
    persisting: bool,
    sync_in_flight: Option<u64>,
    fetch_in_flight: Option<FetchInFlight>,
    /// A follower or observer waits until then before fetching again (after an error).
    fetch_retry_ms: u64,
    next_correlation: u64,
    /// Round-robin index over voters for an observer looking for the leader.
    search_index: usize,
    /// The latest durable snapshot: the log starts at its end.
    snapshot: Option<(SnapshotId, Bytes)>,
    /// A replica was sent to the latest snapshot or read from it lately: until then no newer
    /// one replaces it (and compacts the log past it), or the replica would never catch up.
    snapshot_readers_until_ms: u64,
    /// The latest `now_ms` any input brought.
    clock_ms: u64,
    /// A snapshot being written (taken here, or fetched and to replace the log).
    snapshot_write: Option<(SnapshotId, Bytes, bool)>,
    /// The leader's snapshot being read, chunk by chunk.
    snapshot_fetch: Option<(SnapshotId, Vec<u8>)>,
}

impl RaftNode {
    pub fn new(config: RaftConfig, restored: Restored, now_ms: u64) -> Self {
        let log = RaftLog::restored(restored.snapshot.as_ref().map(|(id, _)| *id), restored.entries);
        let mut election = restored.election.unwrap_or_default();
        if log.last_epoch() > election.epoch {
            tracing::warn!(
                log_epoch = log.last_epoch(),
                election_epoch = election.epoch,
                "raft log ahead of its election state"
            );
            election = ElectionState { epoch: log.last_epoch(), voted_for: None, leader: None };
        }
        // The seed and the node id in separate bytes: no two nodes of one cluster share jitter.
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&config.seed.to_le_bytes());
        key[8..12].copy_from_slice(&config.node_id.to_le_bytes());
        let rng = ChaCha8Rng::from_seed(key);
        let mut node = RaftNode {
            config,
            log,
            election,
            role: Role::Unattached { deadline_ms: now_ms },
            high_watermark: 0,
            leader_high_watermark: 0,
            rng,
            outbox: VecDeque::new(),
            persisting: false,
            sync_in_flight: None,
            fetch_in_flight: None,
            fetch_retry_ms: now_ms,
            next_correlation: 0,
            search_index: 0,
            snapshot: restored.snapshot,
            snapshot_write: None,
            snapshot_fetch: None,
            snapshot_readers_until_ms: 0,
            clock_ms: now_ms,
        };
        node.high_watermark = node.log.start();
        // A restarted process must not take answers meant for the one before it: its request
        // ids start at random (the driver seeds each process afresh), within Kafka's i32 range.
        node.next_correlation = node.rng.next_u64() & CORRELATION_MASK;
        node.resume(now_ms);
        node.debug_check_invariants();
        node
    }

    /// Takes up the role the persisted election state describes.
    fn resume(&mut self, now_ms: u64) {
        let me = self.config.node_id;
        let ElectionState { voted_for, leader, .. } = self.election;
        let (voted_for, leader) =
            if self.is_voter() { (voted_for, leader) } else { (None, leader.filter(|&l| l != me)) };
        self.role = match (leader, voted_for) {
            (Some(l), _) if l == me => {
                // A leader that restarted cannot lead again in the same epoch: it lost its followers'
                // progress. It resigns and stands in a new epoch.
                self.send_end_quorum_epoch(Vec::new());
                Role::Resigned { deadline_ms: now_ms + self.random_election_timeout() }
            }
            (Some(l), _) => Role::Follower { leader: l, deadline_ms: now_ms + self.config.fetch_timeout_ms },
            (None, Some(c)) if c == me => {
                let granted = BTreeSet::from([me]);
                Role::Candidate {
                    granted,
                    answered: BTreeSet::new(),
                    deadline_ms: now_ms + self.random_election_timeout(),
                    resend: Resend::default(),
                }
            }
            (None, Some(c)) => Role::Voted { candidate: c, deadline_ms: now_ms + self.random_election_timeout() },
            (None, None) => Role::Unattached { deadline_ms: now_ms + self.first_election_delay() },
        };
        self.handle_tick(now_ms);
    }

    fn me(&self) -> NodeId {
        self.config.node_id
    }

    fn is_voter(&self) -> bool {
        self.config.is_voter(self.me())
    }

    fn other_voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.me();
        self.config.voters.iter().copied().filter(move |&v| v != me)
    }

    fn majority(&self) -> usize {
        self.config.voters.len() / 2 + 1
    }

    fn random_election_timeout(&mut self) -> u64 {
        let timeout = self.config.election_timeout_ms;
        timeout + self.rng.next_u64() % timeout.max(1)
    }

    /// A lone voter elects itself at once; otherwise a fresh node waits an election timeout.
    fn first_election_delay(&mut self) -> u64 {
        if self.config.voters == [self.me()] {
            0
        } else {
            self.random_election_timeout()
        }
    }

    // ---- readers ----

    /// What the leader knows of every replica, itself first (DescribeQuorum); None off the leader.
    pub fn replica_states(&self, now_ms: u64) -> Option<ReplicaStates> {
        let Role::Leader(leader) = &self.role else { return None };
        let state = |id: NodeId, p: &super::leader::Progress| ReplicaState {
            id,
            durable_end: p.durable_end,
            last_fetch_ms: p.last_fetch_ms,
            last_caught_up_ms: p.last_caught_up_ms,
        };
        let me = ReplicaState {
            id: self.config.node_id,
            durable_end: self.log.durable_end(),
            last_fetch_ms: Some(now_ms),
            last_caught_up_ms: Some(now_ms),
        };
        Some(ReplicaStates {
            voters: std::iter::once(me).chain(leader.voters.iter().map(|(&id, p)| state(id, p))).collect(),
            observers: leader.observers.iter().map(|(&id, p)| state(id, p)).collect(),
        })
    }

    pub fn config(&self) -> &RaftConfig {
        &self.config
    }

    /// The offset of this leader's LeaderChange entry; None off the leader.
    pub fn epoch_start(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(leader) => Some(leader.epoch_start),
            _ => None,
        }
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Unattached { .. } => RoleKind::Unattached,
            Role::Voted { .. } => RoleKind::Voted,
            Role::Candidate { .. } => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
            Role::Follower { .. } => RoleKind::Follower,
            Role::Resigned { .. } => RoleKind::Resigned,
        }
    }

    pub fn epoch(&self) -> i32 {
        self.election.epoch
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.election.leader
    }

    /// Entries below this offset are committed.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// The latest durable snapshot, from which the state machine loads.
    pub fn latest_snapshot(&self) -> Option<&(SnapshotId, Bytes)> {
        self.snapshot.as_ref()
    }

    /// The earliest time at which `handle_tick` has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let mut deadlines = Vec::new();
        match &self.role {
            Role::Unattached { deadline_ms } if self.is_voter() => deadlines.push(*deadline_ms),
            Role::Unattached { .. } => {}
            Role::Voted { deadline_ms, .. } | Role::Resigned { deadline_ms } => deadlines.push(*deadline_ms),
            Role::Candidate { deadline_ms, answered, resend, .. } => {
                deadlines.push(*deadline_ms);
                deadlines.extend(resend.next_due(self.other_voters().filter(|v| !answered.contains(v))));
            }
            Role::Follower { deadline_ms, .. } => deadlines.push(*deadline_ms),
            Role::Leader(leader) => {
                deadlines.extend(
                    leader
                        .begin_resend
                        .next_due(leader.voters.keys().copied().filter(|v| !leader.acknowledged.contains(v))),
                );
                deadlines.extend(leader.parked.iter().map(|p| p.deadline_ms));
                if self.config.voters.len() > 1 {
                    deadlines.push(self.next_check_quorum_ms(leader));
                }
            }
        }
        if let Some(fetch) = self.fetch_in_flight {
            deadlines.push(fetch.sent_ms + self.fetch_request_timeout_ms());
        } else if self.wants_to_fetch() && self.log_settled() {
            // Only the back-off holds the next fetch (a sync or a persist wakes it otherwise).
            deadlines.push(self.fetch_retry_ms);
        }
        deadlines.into_iter().min()
    }

    fn check_quorum_timeout_ms(&self) -> u64 {
        self.config.fetch_timeout_ms * 3 / 2
    }

    /// When the majority that has fetched lately may stop being one: the fetch that keeps it a
    /// majority ages out then.
    fn next_check_quorum_ms(&self, leader: &LeaderState) -> u64 {
        let timeout = self.check_quorum_timeout_ms();
        let needed = self.majority() - 1;
        let mut times: Vec<u64> = leader.voters.values().map(|p| p.last_fetch_ms.unwrap_or(0)).collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        let oldest_needed = times.get(needed.saturating_sub(1)).copied().unwrap_or(0);
        (oldest_needed + timeout + 1).max(leader.became_leader_ms + timeout)
    }

    /// A fetch is given up on after the request timeout, as Kafka does: a leader holds it up to
    /// the max wait, and on a slow link the answer comes a round trip later; given up on sooner,
    /// answers that were on their way are thrown away and followers stand for election needlessly.
    fn fetch_request_timeout_ms(&self) -> u64 {
        self.config.request_timeout_ms.max(self.config.fetch_max_wait_ms)
    }

    // ---- outputs ----

    pub fn poll_action(&mut self) -> Option<RaftAction> {
        if self.persisting {
            return None;
        }
        let action = self.outbox.pop_front()?;
        if matches!(action, RaftAction::PersistElection(_)) {
            self.persisting = true;
        }
        Some(action)
    }

    fn send(&mut self, to: NodeId, message: Message) {
        debug_assert_ne!(to, self.me(), "a node sends to itself");
        tracing::trace!(node = self.me(), to, ?message, "raft send");
        self.outbox.push_back(RaftAction::Send { to, message });
    }

    fn request(&mut self, to: NodeId, request: Request) -> u64 {
        self.next_correlation = (self.next_correlation + 1) & CORRELATION_MASK;
        let correlation = self.next_correlation;
        self.send(to, Message::Request { correlation, request });
        correlation
    }

    fn respond(&mut self, to: NodeId, correlation: u64, response: Response) {
        self.send(to, Message::Response { correlation, response });
    }

    fn set_election(&mut self, election: ElectionState) {
        assert!(election.epoch >= self.election.epoch, "election epoch went back");
        if election != self.election {
            self.election = election;
            // A write not yet handed out, with nothing after it, is replaced: one fsync, not two.
            if let Some(RaftAction::PersistElection(pending)) = self.outbox.back_mut() {
                *pending = election;
            } else {
                self.outbox.push_back(RaftAction::PersistElection(election));
            }
        }
    }

    fn maybe_sync(&mut self) {
        if self.sync_in_flight.is_none() && self.log.durable_end() < self.log.end() {
            let through = self.log.end();
            self.sync_in_flight = Some(through);
            self.outbox.push_back(RaftAction::Sync { through });
        }
    }

    // ---- inputs ----

    pub fn handle_election_persisted(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        assert!(self.persisting, "an election state persisted that was not asked for");
        self.persisting = false;
        self.handle_tick(now_ms);
    }

    /// The connection to `peer` broke: nothing sent on it will be answered, so what waits on an
    /// answer from it is asked again after the back-off rather than the request timeout.
    pub fn handle_peer_lost(&mut self, now_ms: u64, peer: NodeId) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let backoff = self.config.retry_backoff_ms;
        match &mut self.role {
            Role::Candidate { resend, .. } => resend.lost(peer, now_ms, backoff),
            Role::Leader(leader) => leader.begin_resend.lost(peer, now_ms, backoff),
            _ => {}
        }
        if self.fetch_in_flight.is_some_and(|f| f.to == peer) {
            self.abandon_fetch();
            self.fetch_retry_ms = now_ms + backoff;
        }
        self.handle_tick(now_ms);
    }

    pub fn handle_synced(&mut self, now_ms: u64, through: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        assert_eq!(self.sync_in_flight, Some(through), "a sync completed that was not in flight");
        self.sync_in_flight = None;
        self.log.mark_durable(through);
        self.maybe_advance_high_watermark(now_ms);
        self.follow_high_watermark();
        self.maybe_sync();
        self.maybe_fetch(now_ms);
        self.debug_check_invariants();
    }

    /// Appends a record as leader; it is committed once the high watermark passes the offset
    /// returned.
    pub fn propose(&mut self, now_ms: u64, data: Bytes) -> Result<u64, ProposeError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        let Role::Leader(_) = self.role else {
            return Err(ProposeError::NotLeader { leader: self.election.leader.filter(|&l| l != self.me()) });
        };
        if self.log.end() - self.high_watermark >= self.config.max_uncommitted {
            return Err(ProposeError::Busy);
        }
        let offset = self.append_as_leader(Payload::Data(data));
        self.answer_parked_fetches(now_ms, false);
        self.debug_check_invariants();
        Ok(offset)
    }

    /// Whether `snapshot` would take one now: callers check before building the state machine's
    /// bytes, which may be large.
    pub fn may_snapshot(&self) -> Result<(), String> {
        if self.snapshot_write.is_some() || self.snapshot_fetch.is_some() {
            // One snapshot write at a time; and one about to be replaced by the leader's is moot.
            return Err("a snapshot is being written or fetched".to_string());
        }
        let held_entries = self.log.end() - self.log.start();
        if self.snapshot_readers_until_ms > self.clock_ms && held_entries < MAX_ENTRIES_HELD_FOR_READERS {
            return Err("a replica is reading the latest snapshot".to_string());
        }
        Ok(())
    }

    /// Takes a snapshot of the state machine through `end_offset` (committed, and past the
    /// current snapshot); once durable, the log below it is dropped. One at a time.
    pub fn snapshot(&mut self, end_offset: u64, data: Bytes) -> Result<(), String> {
        self.may_snapshot()?;
        if end_offset <= self.log.start() || end_offset > self.high_watermark {
            return Err(format!("a snapshot must end within {}..={}", self.log.start() + 1, self.high_watermark));
        }
        let epoch = self.log.entry(end_offset - 1).expect("a committed entry is in the log").epoch;
        let id = SnapshotId { end_offset, epoch };
        self.snapshot_write = Some((id, data.clone(), false));
        self.outbox.push_back(RaftAction::WriteSnapshot { id, data, replaces_log: false });
        Ok(())
    }

    pub fn handle_snapshot_written(&mut self, now_ms: u64, id: SnapshotId) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let Some((written, data, replaces_log)) = self.snapshot_write.take() else {
            panic!("a snapshot written that was not asked for")
        };
        assert_eq!(written, id, "a snapshot written that was not asked for");
        if replaces_log {
            assert!(self.sync_in_flight.is_none(), "installing a snapshot under a sync");
            self.log.reset(id);
            // A leader's snapshot holds only committed entries.
            self.high_watermark = self.high_watermark.max(id.end_offset);
            self.leader_high_watermark = self.leader_high_watermark.max(id.end_offset);
        } else if id.end_offset > self.log.start() {
            self.log.compact(id);
        }
        self.snapshot = Some((id, data));
        self.maybe_fetch(now_ms);
        self.debug_check_invariants();
    }

    fn append_as_leader(&mut self, payload: Payload) -> u64 {
        let entry = Entry { offset: self.log.end(), epoch: self.election.epoch, payload };
        let offset = entry.offset;
        self.log.append(entry.clone());
        self.outbox.push_back(RaftAction::Append(vec![entry]));
        self.maybe_sync();
        offset
    }

    pub fn handle_tick(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        match &mut self.role {
            Role::Unattached { deadline_ms } if now_ms >= *deadline_ms && self.config.is_voter(self.config.node_id) => {
                self.become_candidate(now_ms)
            }
            Role::Voted { deadline_ms, .. } | Role::Resigned { deadline_ms } if now_ms >= *deadline_ms => {
                self.become_candidate(now_ms)
            }
            Role::Candidate { deadline_ms, .. } if now_ms >= *deadline_ms => self.become_candidate(now_ms),
            Role::Candidate { .. } => {
                let due = self.vote_requests_due(now_ms);
                if !due.is_empty() {
                    self.send_vote_requests(now_ms, &due);
                }
            }
            Role::Follower { deadline_ms, .. } if now_ms >= *deadline_ms => {
                if self.is_voter() {
                    self.become_candidate(now_ms);
                } else {
                    // An observer lost its leader: it looks for one again in the same epoch.
                    let election = ElectionState { leader: None, ..self.election };
                    self.set_election(election);
                    self.role = Role::Unattached { deadline_ms: now_ms };
                    self.fetch_in_flight = None;
                    self.search_index += 1;
                }
            }
            Role::Leader(_) => self.tick_leader(now_ms),
            _ => {}
        }
        if let Some(fetch) = self.fetch_in_flight {
            if now_ms >= fetch.sent_ms + self.fetch_request_timeout_ms() {
                self.abandon_fetch();
            }
        }
        self.maybe_fetch(now_ms);
        self.debug_check_invariants();
    }

    /// Gives up on the fetch in flight. The voter it went to may be gone: an observer looks
    /// elsewhere next time.
    fn abandon_fetch(&mut self) {
        self.fetch_in_flight = None;
        self.search_index = self.search_index.wrapping_add(1);
    }

    fn tick_leader(&mut self, now_ms: u64) {
        let timeout = self.check_quorum_timeout_ms();
        let request_timeout = self.config.request_timeout_ms;
        let Role::Leader(leader) = &mut self.role else { unreachable!() };
        if self.config.voters.len() > 1
            && now_ms >= leader.became_leader_ms + timeout
            && !leader.majority_fetched_since(now_ms.saturating_sub(timeout))
        {
            tracing::info!(
                node = self.config.node_id,
                epoch = self.election.epoch,
                "raft leader lost its majority; resigning"
            );
            self.resign(now_ms);
            return;
        }
        let unaware: Vec<NodeId> = leader
            .voters
            .keys()
            .copied()
            .filter(|&v| !leader.acknowledged.contains(&v) && leader.begin_resend.is_due(v, now_ms))
            .collect();
        for &voter in &unaware {
            leader.begin_resend.sent(voter, now_ms, request_timeout);
        }
        let begin = Request::BeginQuorumEpoch { epoch: self.election.epoch, leader: self.config.node_id };
        for voter in unaware {
            self.request(voter, begin.clone());
        }
        self.answer_parked_fetches(now_ms, true);
    }

    pub fn handle_message(&mut self, now_ms: u64, from: NodeId, message: Message) {
        self.clock_ms = self.clock_ms.max(now_ms);
        if from == self.me() {
            tracing::warn!("raft message from this node's own id; dropped");
            return;
        }
        tracing::trace!(node = self.me(), from, ?message, "raft received");
        match message {
            Message::Request { correlation, request } => self.handle_request(now_ms, from, correlation, request),
            Message::Response { correlation, response } => self.handle_response(now_ms, from, correlation, response),
        }
        self.maybe_fetch(now_ms);
        self.debug_check_invariants();
    }

    fn handle_request(&mut self, now_ms: u64, from: NodeId, correlation: u64, request: Request) {
        match request {
            Request::Vote { epoch, candidate, last_epoch, log_end } => {
                let granted = self.consider_vote(now_ms, from, epoch, candidate, last_epoch, log_end);
                let error = (!self.is_voter()).then_some(RaftError::InconsistentVoter);
                let response =
                    Response::Vote { epoch: self.election.epoch, leader: self.election.leader, granted, error };
                self.respond(from, correlation, response);
            }
            Request::BeginQuorumEpoch { epoch, leader } => {
                let error = if epoch < self.election.epoch {
                    Some(RaftError::FencedLeaderEpoch)
                } else if leader != from || !self.config.is_voter(leader) {
                    Some(RaftError::InconsistentVoter)
                } else {
                    self.observe_leader(now_ms, epoch, Some(leader));
                    None
                };
                let response =
                    Response::BeginQuorumEpoch { epoch: self.election.epoch, leader: self.election.leader, error };
                self.respond(from, correlation, response);
            }
            Request::EndQuorumEpoch { epoch, leader, preferred_successors } => {
                let error = if epoch < self.election.epoch {
                    Some(RaftError::FencedLeaderEpoch)
                } else if leader != from {
                    Some(RaftError::InconsistentVoter)
                } else {
                    self.on_end_quorum_epoch(now_ms, epoch, leader, &preferred_successors);
                    None
                };
                let response =
                    Response::EndQuorumEpoch { epoch: self.election.epoch, leader: self.election.leader, error };
                self.respond(from, correlation, response);
            }
            Request::Fetch { epoch, replica, fetch_offset, last_fetched_epoch, max_wait_ms } => {
                if replica != from {
                    return;
                }
                self.on_fetch_request(now_ms, from, correlation, epoch, fetch_offset, last_fetched_epoch, max_wait_ms);
            }
            Request::FetchSnapshot { epoch, replica, snapshot, position } => {
                if replica == from {
                    self.on_fetch_snapshot_request(now_ms, from, correlation, epoch, snapshot, position);
                }
            }
        }
    }

    fn on_fetch_snapshot_request(
        &mut self,
        now_ms: u64,
        from: NodeId,
        correlation: u64,
        epoch: i32,
        id: SnapshotId,
        position: u64,
    ) {
        let mut chunk = SnapshotChunk {
            epoch: self.election.epoch,
            leader: self.election.leader,
            error: None,
            snapshot: id,
            size: 0,
            position,
            bytes: Bytes::new(),
        };
        let held = self.snapshot.as_ref().filter(|(held, _)| *held == id).map(|(_, data)| data.clone());
        chunk.error = if epoch < self.election.epoch {
            Some(RaftError::FencedLeaderEpoch)
        } else if epoch > self.election.epoch || !matches!(self.role, Role::Leader(_)) {
            Some(RaftError::NotLeader)
        } else if held.as_ref().is_none_or(|data| position > data.len() as u64) {
            Some(RaftError::SnapshotNotFound)
        } else {
            None
        };
        if let (None, Some(data)) = (chunk.error, held) {
            self.snapshot_readers_until_ms = now_ms + self.config.fetch_timeout_ms;
            let start = position as usize;
            let end = (start + self.config.max_snapshot_chunk_bytes).min(data.len());
            chunk.size = data.len() as u64;
            chunk.bytes = data.slice(start..end);
            // Reading a snapshot counts as fetching, for check-quorum.
            let Role::Leader(leader) = &mut self.role else { unreachable!() };
            if let Some(progress) = leader.voters.get_mut(&from) {
                progress.last_fetch_ms = Some(now_ms);
            }
        }
        self.respond(from, correlation, Response::FetchSnapshot(chunk));
    }

    /// Whether to grant `candidate` a vote in `epoch`; moves to that epoch first if it is newer.
    fn consider_vote(
        &mut self,
        now_ms: u64,
        from: NodeId,
        epoch: i32,
        candidate: NodeId,
        last_epoch: i32,
        log_end: u64,
    ) -> bool {
        if candidate != from || !self.config.is_voter(candidate) || !self.is_voter() || epoch < self.election.epoch {
            return false;
        }
        if last_epoch >= epoch {
            return false; // a candidate's log cannot hold its own new epoch (Kafka: INVALID_REQUEST)
        }
        if epoch > self.election.epoch {
            self.become_unattached(now_ms, epoch);
        }
        match self.role {
            Role::Voted { candidate: voted, .. } => voted == candidate,
            Role::Unattached { .. } => {
                let up_to_date = (last_epoch, log_end) >= (self.log.last_epoch(), self.log.end());
                if up_to_date {
                    self.set_election(ElectionState { epoch, voted_for: Some(candidate), leader: None });
                    let deadline_ms = now_ms + self.random_election_timeout();
                    self.role = Role::Voted { candidate, deadline_ms };
                }
                up_to_date
            }
            // Candidates and leaders voted for themselves; followers know their leader.
            _ => false,
        }
    }

    fn on_end_quorum_epoch(&mut self, now_ms: u64, epoch: i32, leader: NodeId, successors: &[NodeId]) {
        if epoch > self.election.epoch {
            self.become_unattached(now_ms, epoch);
            return;
        }
        let position = successors.iter().position(|&s| s == self.me());
        let backoff = match position {
            Some(p) => self.config.retry_backoff_ms * p as u64,
            None => self.random_election_timeout(),
        };
        if let Role::Follower { leader: current, deadline_ms } = &mut self.role {
            if *current == leader && self.config.is_voter(self.config.node_id) {
                *deadline_ms = (*deadline_ms).min(now_ms + backoff);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_fetch_request(
        &mut self,
        now_ms: u64,
        from: NodeId,
        correlation: u64,
        epoch: i32,
        fetch_offset: u64,
        last_fetched_epoch: i32,
        max_wait_ms: u64,
    ) {
        // A fetcher ahead of this node saw a newer epoch: this node moves to it. Kafka answers
        // UNKNOWN_LEADER_EPOCH and stays; but an observer that learnt an epoch from a voter now
        // gone would then never find a leader (found by the quorum harness, seed 138).
        if epoch > self.election.epoch {
            self.become_unattached(now_ms, epoch);
        }
        let error = if epoch < self.election.epoch {
            Some(RaftError::FencedLeaderEpoch)
        } else if !matches!(self.role, Role::Leader(_)) {
            Some(RaftError::NotLeader)
        } else {
            None
        };
        if let Some(error) = error {
            let response = self.fetch_error(error);
            self.respond(from, correlation, response);
            return;
        }
        let (end_epoch, end_offset) = self.log.end_offset_for(last_fetched_epoch);
        let diverges =
            fetch_offset > self.log.start() && (end_epoch != last_fetched_epoch || end_offset < fetch_offset);
        let below_start = fetch_offset < self.log.start()
            || (fetch_offset == self.log.start()
                && self.log.start() > 0
                && last_fetched_epoch != self.log.start_epoch())
            || (diverges && end_offset < self.log.start());
        if below_start {
            // The log no longer holds where this replica stands: it reads the snapshot.
            let id = self.snapshot.as_ref().expect("a log that starts above 0 has a snapshot").0;
            self.snapshot_readers_until_ms = now_ms + self.config.fetch_timeout_ms;
            let Response::Fetch(mut response) = self.fetch_response(None, Vec::new()) else { unreachable!() };
            response.snapshot = Some(id);
            self.respond(from, correlation, Response::Fetch(response));
            return;
        }
        if diverges || fetch_offset > self.log.end() {
            let diverging = Diverging { epoch: end_epoch, end_offset: end_offset.min(fetch_offset) };
            let response = self.fetch_response(Some(diverging), Vec::new());
            self.respond(from, correlation, response);
            return;
        }
        let max_observers = self.config.max_observers;
        let high_watermark = self.high_watermark;
        let Role::Leader(leader) = &mut self.role else { unreachable!() };
        let mut park = false;
        let stale_before_ms = now_ms.saturating_sub(self.config.fetch_timeout_ms * 3 / 2);
        if let Some(progress) = leader.progress_mut(from, max_observers, stale_before_ms) {
            progress.durable_end = fetch_offset;
            progress.last_fetch_ms = Some(now_ms);
            if fetch_offset >= self.log.end() {
                progress.last_caught_up_ms = Some(now_ms);
            }
            park = fetch_offset == self.log.end() && progress.last_sent_high_watermark == Some(high_watermark);
        }
        if leader.voters.contains_key(&from) {
            leader.acknowledged.insert(from);
        }
        if park && max_wait_ms > 0 {
            let deadline_ms = now_ms + max_wait_ms.min(self.config.fetch_max_wait_ms);
            let replaced = leader.park(ParkedFetch { from, correlation, fetch_offset, deadline_ms });
            if let Some(old) = replaced {
                // The replica gave up on that fetch; an empty answer costs nothing.
                let response = self.fetch_response(None, Vec::new());
                self.respond(old.from, old.correlation, response);
            }
            self.maybe_advance_high_watermark(now_ms);
            return;
        }
        self.maybe_advance_high_watermark(now_ms);
        self.answer_fetch(from, correlation, fetch_offset);
    }

    fn answer_fetch(&mut self, to: NodeId, correlation: u64, fetch_offset: u64) {
        let entries = self.log.entries_from(fetch_offset, self.config.max_fetch_entries);
        let response = self.fetch_response(None, entries);
        let high_watermark = self.high_watermark;
        let max_observers = self.config.max_observers;
        if let Role::Leader(leader) = &mut self.role {
            if let Some(progress) = leader.progress_mut(to, max_observers, 0) {
                progress.last_sent_high_watermark = Some(high_watermark);
            }
        }
        self.respond(to, correlation, response);
    }

    /// Answers parked fetches: all of them (new entries or a new high watermark), or with
    /// `expired_only` those past their deadline.
    fn answer_parked_fetches(&mut self, now_ms: u64, expired_only: bool) {
        let Role::Leader(leader) = &mut self.role else { return };
        let (due, keep): (Vec<ParkedFetch>, Vec<ParkedFetch>) =
            leader.parked.drain(..).partition(|p| !expired_only || now_ms >= p.deadline_ms);
        leader.parked = keep;
        for parked in due {
            self.answer_fetch(parked.from, parked.correlation, parked.fetch_offset);
        }
    }

    fn fetch_error(&self, error: RaftError) -> Response {
        Response::Fetch(FetchResponse {
            epoch: self.election.epoch,
            leader: self.election.leader,
            error: Some(error),
            high_watermark: None,
            diverging: None,
            snapshot: None,
            entries: Vec::new(),
        })
    }

    fn fetch_response(&self, diverging: Option<Diverging>, entries: Vec<Entry>) -> Response {
        let Role::Leader(leader) = &self.role else { unreachable!("only a leader serves fetches") };
        let known = self.high_watermark > leader.epoch_start;
        Response::Fetch(FetchResponse {
            epoch: self.election.epoch,
            leader: Some(self.me()),
            error: None,
            high_watermark: known.then_some(self.high_watermark),
            diverging,
            snapshot: None,
            entries,
        })
    }

    fn maybe_advance_high_watermark(&mut self, now_ms: u64) {
        let Role::Leader(leader) = &self.role else { return };
        // Also capped by the leader's own durable end: no node exposes what its disk lacks.
        let candidate = leader.majority_durable_end(self.log.durable_end()).min(self.log.durable_end());
        if candidate > leader.epoch_start && candidate > self.high_watermark {
            self.high_watermark = candidate;
            self.answer_parked_fetches(now_ms, false);
        }
    }

    fn handle_response(&mut self, now_ms: u64, from: NodeId, correlation: u64, response: Response) {
        if let Response::Fetch(fetch) = response {
            self.on_fetch_response(now_ms, from, correlation, fetch);
            return;
        }
        if let Response::FetchSnapshot(chunk) = response {
            self.on_snapshot_chunk(now_ms, from, correlation, chunk);
            return;
        }
        if self.observe_leader(now_ms, response.epoch(), response.leader()) || response.epoch() != self.election.epoch {
            return;
        }
        match response {
            Response::Vote { granted, .. } => {
                let majority = self.majority();
                let Role::Candidate { granted: votes, answered, .. } = &mut self.role else { return };
                if !self.config.voters.contains(&from) {
                    return;
                }
                answered.insert(from);
                if granted {
                    votes.insert(from);
                }
                if votes.len() >= majority {
                    self.become_leader(now_ms);
                }
            }
            Response::BeginQuorumEpoch { error: None, .. } => {
                if let Role::Leader(leader) = &mut self.role {
                    if leader.voters.contains_key(&from) {
                        leader.acknowledged.insert(from);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_fetch_response(&mut self, now_ms: u64, from: NodeId, correlation: u64, fetch: FetchResponse) {
        match self.fetch_in_flight {
            Some(f) if f.correlation == correlation && f.to == from => self.fetch_in_flight = None,
            _ => return, // an answer to a fetch given up on, or a duplicate
        }
        if self.observe_leader(now_ms, fetch.epoch, fetch.leader) {
            return;
        }
        let Role::Follower { leader, deadline_ms } = &mut self.role else {
            // Looking for the leader: this voter did not know it.
            self.search_index += 1;
            self.fetch_retry_ms = now_ms + self.config.retry_backoff_ms;
            return;
        };
        if *leader != from || fetch.epoch != self.election.epoch || fetch.error.is_some() {
            self.fetch_retry_ms = now_ms + self.config.retry_backoff_ms;
            return;
        }
        *deadline_ms = now_ms + self.config.fetch_timeout_ms;
        if let Some(id) = fetch.snapshot {
            if self.snapshot_write.is_none() && id.end_offset > self.log.start() {
                self.snapshot_fetch = Some((id, Vec::new()));
            }
            return;
        }
        if let Some(diverging) = fetch.diverging {
            // Cut where the leader's epoch ends, or where that epoch ends here if sooner.
            let (_, own_end) = self.log.end_offset_for(diverging.epoch);
            let end = diverging.end_offset.min(own_end).min(self.log.end());
            assert!(
                end >= self.high_watermark,
                "raft divergence at {end} below the high watermark {}",
                self.high_watermark
            );
            assert!(self.sync_in_flight.is_none(), "truncating under a sync");
            self.log.truncate(end);
            self.outbox.push_back(RaftAction::Truncate { end });
            return;
        }
        let mut appended = Vec::new();
        for entry in fetch.entries {
            if entry.offset != self.log.end() {
                break;
            }
            if entry.epoch < self.log.last_epoch() || entry.epoch > self.election.epoch {
                tracing::warn!(
                    offset = entry.offset,
                    epoch = entry.epoch,
                    "raft fetch returned an entry out of epoch order; dropped"
                );
                break;
            }
            self.log.append(entry.clone());
            appended.push(entry);
        }
        if !appended.is_empty() {
            self.outbox.push_back(RaftAction::Append(appended));
        }
        if let Some(high_watermark) = fetch.high_watermark {
            self.leader_high_watermark = self.leader_high_watermark.max(high_watermark);
        }
        self.follow_high_watermark();
        self.maybe_sync();
    }

    /// A follower commits what its leader committed, as far as its own disk holds it.
    fn follow_high_watermark(&mut self) {
        if matches!(self.role, Role::Leader(_)) {
            return;
        }
        let high_watermark = self.leader_high_watermark.min(self.log.durable_end());
        if high_watermark > self.high_watermark {
            self.high_watermark = high_watermark;
        }
    }

    fn on_snapshot_chunk(&mut self, now_ms: u64, from: NodeId, correlation: u64, chunk: SnapshotChunk) {
        match self.fetch_in_flight {
            Some(f) if f.correlation == correlation && f.to == from => self.fetch_in_flight = None,
            _ => return,
        }
        if self.observe_leader(now_ms, chunk.epoch, chunk.leader) {
            return;
        }
        let Role::Follower { leader, deadline_ms } = &mut self.role else { return };
        let expected = self.snapshot_fetch.as_ref().map(|(id, received)| (*id, received.len() as u64));
        if *leader != from || chunk.error.is_some() || expected != Some((chunk.snapshot, chunk.position)) {
            // The leader moved on (a newer snapshot) or something went astray: fetch afresh.
            self.snapshot_fetch = None;
            self.fetch_retry_ms = now_ms + self.config.retry_backoff_ms;
            return;
        }
        *deadline_ms = now_ms + self.config.fetch_timeout_ms;
        let (id, received) = self.snapshot_fetch.as_mut().expect("checked above");
        let id = *id;
        received.extend_from_slice(&chunk.bytes);
        if received.len() as u64 > chunk.size || (chunk.bytes.is_empty() && (received.len() as u64) < chunk.size) {
            self.snapshot_fetch = None;
            return;
        }
        if received.len() as u64 == chunk.size {
            assert!(self.snapshot_write.is_none(), "a snapshot fetched while another is written");
            let (_, received) = self.snapshot_fetch.take().expect("checked above");
            let data = Bytes::from(received);
            self.snapshot_write = Some((id, data.clone(), true));
            self.outbox.push_back(RaftAction::WriteSnapshot { id, data, replaces_log: true });
        }
    }

    /// Follows what a message says of a newer epoch or of this epoch's leader. Returns whether
    /// the role changed (the message has then been dealt with).
    fn observe_leader(&mut self, now_ms: u64, epoch: i32, leader: Option<NodeId>) -> bool {
        let me = self.me();
        if epoch > self.election.epoch {
            match leader {
                Some(l) if l != me => self.become_follower(now_ms, epoch, l),
                _ => self.become_unattached(now_ms, epoch),
            }
            return true;
        }
        let Some(l) = leader else { return false };
        if epoch < self.election.epoch || l == me {
            return false;
        }
        match self.role {
            Role::Unattached { .. } | Role::Voted { .. } | Role::Candidate { .. } => {
                self.become_follower(now_ms, epoch, l);
                true
            }
            Role::Follower { leader: current, .. } if current != l => {
                tracing::warn!(epoch, current, claimed = l, "two leaders claimed for one raft epoch; ignored");
                false
            }
            _ => false,
        }
    }

    fn wants_to_fetch(&self) -> bool {
        match self.role {
            Role::Follower { .. } => true,
            Role::Unattached { .. } => !self.is_voter(),
            _ => false,
        }
    }

    /// Nothing under way that the next fetch must wait for (its completion fetches).
    fn log_settled(&self) -> bool {
        let installing = self.snapshot_write.as_ref().is_some_and(|(_, _, replaces_log)| *replaces_log);
        !self.persisting && !installing && self.sync_in_flight.is_none() && self.log.durable_end() == self.log.end()
    }

    /// Sends the next fetch when there is none in flight and the log is durable to its end: a
    /// follower's fetch offset is what it holds durably.
    fn maybe_fetch(&mut self, now_ms: u64) {
        if self.fetch_in_flight.is_some() || now_ms < self.fetch_retry_ms || !self.log_settled() {
            return;
        }
        let to = match self.role {
            Role::Follower { leader, .. } => leader,
            Role::Unattached { .. } if !self.is_voter() => {
                let voters = &self.config.voters;
                voters[self.search_index % voters.len()]
            }
            _ => return,
        };
        let request = match &self.snapshot_fetch {
            Some((snapshot, received)) if matches!(self.role, Role::Follower { .. }) => Request::FetchSnapshot {
                epoch: self.election.epoch,
                replica: self.me(),
                snapshot: *snapshot,
                position: received.len() as u64,
            },
            _ => Request::Fetch {
                epoch: self.election.epoch,
                replica: self.me(),
                fetch_offset: self.log.end(),
                last_fetched_epoch: self.log.last_epoch(),
                max_wait_ms: self.config.fetch_max_wait_ms,
            },
        };
        let correlation = self.request(to, request);
        self.fetch_in_flight = Some(FetchInFlight { correlation, to, sent_ms: now_ms });
    }

    // ---- transitions ----

    fn leave_leadership(&mut self) {
        self.snapshot_readers_until_ms = 0;
        if let Role::Leader(leader) = &mut self.role {
            let parked = std::mem::take(&mut leader.parked);
            for p in parked {
                let response = self.fetch_error(RaftError::NotLeader);
                self.respond(p.from, p.correlation, response);
            }
        }
    }

    fn become_unattached(&mut self, now_ms: u64, epoch: i32) {
        assert!(epoch > self.election.epoch, "unattached in an epoch not newer");
        self.leave_leadership();
        self.set_election(ElectionState { epoch, voted_for: None, leader: None });
        let deadline_ms = if self.is_voter() { now_ms + self.random_election_timeout() } else { now_ms };
        self.role = Role::Unattached { deadline_ms };
        self.fetch_in_flight = None;
        self.snapshot_fetch = None;
    }

    fn become_follower(&mut self, now_ms: u64, epoch: i32, leader: NodeId) {
        assert!(epoch >= self.election.epoch && leader != self.me());
        self.leave_leadership();
        let voted_for = if epoch == self.election.epoch { self.election.voted_for } else { None };
        self.set_election(ElectionState { epoch, voted_for, leader: Some(leader) });
        self.role = Role::Follower { leader, deadline_ms: now_ms + self.config.fetch_timeout_ms };
        self.fetch_in_flight = None;
        self.snapshot_fetch = None;
        self.fetch_retry_ms = now_ms;
        self.leader_high_watermark = self.high_watermark;
        tracing::debug!(node = self.me(), epoch, leader, "raft follower");
    }

    fn become_candidate(&mut self, now_ms: u64) {
        assert!(self.is_voter(), "an observer stood for election");
        self.leave_leadership();
        let me = self.me();
        let epoch = self.election.epoch + 1;
        self.set_election(ElectionState { epoch, voted_for: Some(me), leader: None });
        self.fetch_in_flight = None;
        self.snapshot_fetch = None;
        let deadline_ms = now_ms + self.random_election_timeout();
        self.role = Role::Candidate {
            granted: BTreeSet::from([me]),
            answered: BTreeSet::new(),
            deadline_ms,
            resend: Resend::default(),
        };
        if self.majority() == 1 {
            self.become_leader(now_ms);
            return;
        }
        let others: Vec<NodeId> = self.other_voters().collect();
        self.send_vote_requests(now_ms, &others);
    }

    /// The voters a candidate has no answer from and may ask again now.
    fn vote_requests_due(&self, now_ms: u64) -> Vec<NodeId> {
        let Role::Candidate { answered, resend, .. } = &self.role else { return Vec::new() };
        self.other_voters().filter(|&v| !answered.contains(&v) && resend.is_due(v, now_ms)).collect()
    }

    fn send_vote_requests(&mut self, now_ms: u64, voters: &[NodeId]) {
        let Role::Candidate { resend, .. } = &mut self.role else { unreachable!("only a candidate asks for votes") };
        for &voter in voters {
            resend.sent(voter, now_ms, self.config.request_timeout_ms);
        }
        let (last_epoch, log_end) = self.log.durable_position();
        let vote = Request::Vote { epoch: self.election.epoch, candidate: self.me(), last_epoch, log_end };
        for &voter in voters {
            self.request(voter, vote.clone());
        }
    }

    fn become_leader(&mut self, now_ms: u64) {
        let me = self.me();
        let epoch = self.election.epoch;
        self.set_election(ElectionState { epoch, voted_for: Some(me), leader: Some(me) });
        let epoch_start = self.log.end();
        self.role = Role::Leader(Box::new(LeaderState::new(me, &self.config.voters, epoch_start, now_ms)));
        self.append_as_leader(Payload::LeaderChange { leader: me });
        tracing::info!(node = me, epoch, "raft leader");
        self.tick_leader(now_ms);
    }

    /// Gives up leadership (check-quorum, or a controlled shutdown): tells the voters, so that
    /// the most caught-up stands first.
    pub fn resign(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let Role::Leader(leader) = &self.role else { return };
        let mut successors: Vec<(u64, NodeId)> = leader.voters.iter().map(|(&v, p)| (p.durable_end, v)).collect();
        successors.sort_unstable_by(|a, b| b.cmp(a));
        self.leave_leadership();
        self.send_end_quorum_epoch(successors.into_iter().map(|(_, v)| v).collect());
        self.role = Role::Resigned { deadline_ms: now_ms + self.random_election_timeout() };
    }

    fn send_end_quorum_epoch(&mut self, preferred_successors: Vec<NodeId>) {
        let me = self.me();
        let end = Request::EndQuorumEpoch { epoch: self.election.epoch, leader: me, preferred_successors };
        let others: Vec<NodeId> = self.config.voters.iter().copied().filter(|&v| v != me).collect();
        for voter in others {
            self.request(voter, end.clone());
        }
    }

    // ---- invariants ----

    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    pub fn check_invariants(&self) {
        let me = self.me();
        self.log.check_invariants();
        assert!(
            self.high_watermark <= self.log.durable_end(),
            "node {me}: high watermark {} past the durable end {} ({:?})",
            self.high_watermark,
            self.log.durable_end(),
            self.role()
        );
        assert!(self.log.last_epoch() <= self.election.epoch, "log epoch ahead of the election epoch");
        if let Some(through) = self.sync_in_flight {
            assert!(through <= self.log.end() && through > self.log.durable_end(), "sync in flight {through}");
        }
        assert!(
            self.snapshot_write.is_none() || self.snapshot_fetch.is_none(),
            "a snapshot written and fetched at once"
        );
        match &self.snapshot {
            Some((id, _)) => {
                assert_eq!(id.end_offset, self.log.start(), "the log does not start at its snapshot");
                assert_eq!(id.epoch, self.log.start_epoch(), "the log's start epoch is not its snapshot's");
            }
            None => assert_eq!(self.log.start(), 0, "a log starting above 0 without a snapshot"),
        }
        assert!(self.high_watermark >= self.log.start(), "high watermark below the snapshot");
        if let Some((id, _, replaces_log)) = &self.snapshot_write {
            assert!(*replaces_log || id.end_offset <= self.high_watermark, "a snapshot of uncommitted entries");
        }
        let election = self.election;
        match &self.role {
            Role::Leader(leader) => {
                assert!(self.is_voter(), "an observer leads");
                assert_eq!((election.leader, election.voted_for), (Some(me), Some(me)), "leader's election state");
                // The epoch's first entry, unless a snapshot (of committed entries) holds it now.
                match self.log.entry(leader.epoch_start) {
                    Some(start) => assert_eq!(start.epoch, election.epoch, "leader's first entry of its epoch"),
                    None => {
                        assert!(leader.epoch_start < self.log.start(), "the leader's epoch start is not in its log")
                    }
                }
                leader.check_invariants(me, self.config.max_observers);
            }
            Role::Follower { leader, .. } => {
                assert_eq!(election.leader, Some(*leader), "follower's election state");
                assert_ne!(*leader, me);
            }
            Role::Voted { candidate, .. } => {
                assert!(self.is_voter());
                assert_eq!((election.voted_for, election.leader), (Some(*candidate), None), "voter's election state");
            }
            Role::Candidate { granted, .. } => {
                assert!(self.is_voter(), "an observer stands");
                assert_eq!((election.voted_for, election.leader), (Some(me), None), "candidate's election state");
                assert!(granted.contains(&me) && granted.len() < self.majority().max(2), "candidate's votes");
            }
            Role::Unattached { .. } => assert_eq!(election.leader, None, "unattached knows a leader"),
            Role::Resigned { .. } => assert_eq!(election.leader, Some(me), "resigned leader's election state"),
        }
    }
}
