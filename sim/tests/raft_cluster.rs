//! The metadata quorum under faults, in process: several `RaftNode`s, an in-memory network that
//! drops, delays, duplicates and partitions, disks that lose what was not synced on a crash, and
//! the invariants of Kafka's `RaftEventSimulationTest` checked after every event. Each seed draws
//! its own faults (swarm style); `RAFT_SEEDS=N` runs more seeds, `RAFT_SEED=S` one.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spool_core::codec;
use spool_core::raft::{
    wire, ElectionState, Entry, Message, NodeId, RaftAction, RaftConfig, RaftNode, Response, Restored, RoleKind,
    SnapshotId,
};

#[derive(Clone, Debug)]
enum Event {
    Deliver { from: NodeId, to: NodeId, incarnation: u64, message: Message },
    Persisted { node: NodeId, incarnation: u64 },
    Synced { node: NodeId, incarnation: u64, through: u64 },
    SnapshotWritten { node: NodeId, incarnation: u64, id: SnapshotId },
    Tick { node: NodeId, incarnation: u64 },
    Fault,
    Propose,
}

/// A node's disk: what survives a crash is the synced prefix, some of the unsynced tail, and the
/// election state if its write finished (or, by luck, if it was under way).
#[derive(Default)]
struct Disk {
    election: Option<ElectionState>,
    /// Election writes under way, in order.
    pending_elections: VecDeque<ElectionState>,
    /// The latest snapshot written; the entries follow it.
    snapshot: Option<(SnapshotId, Bytes)>,
    /// A snapshot write under way (it lands whole or not at all, as a rename).
    pending_snapshot: Option<(SnapshotId, Bytes, bool)>,
    /// The entries from the snapshot's end on.
    written: Vec<Entry>,
    /// Everything below this offset is synced.
    synced: u64,
}

impl Disk {
    fn start(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |(id, _)| id.end_offset)
    }

    fn end(&self) -> u64 {
        self.start() + self.written.len() as u64
    }

    fn entry(&self, offset: u64) -> Option<&Entry> {
        self.written.get(usize::try_from(offset.checked_sub(self.start())?).ok()?)
    }

    fn truncate(&mut self, end: u64) {
        self.written.truncate(end.saturating_sub(self.start()) as usize);
        self.synced = self.synced.min(self.end());
    }

    /// A snapshot landed: the log below its end goes (all of it if the snapshot replaces it).
    fn land_snapshot(&mut self, id: SnapshotId, data: Bytes, replaces_log: bool) {
        if replaces_log {
            self.written.clear();
        } else {
            let drop = id.end_offset.saturating_sub(self.start()).min(self.written.len() as u64) as usize;
            self.written.drain(..drop);
        }
        self.snapshot = Some((id, data));
        self.synced = self.synced.max(id.end_offset);
    }
}

/// The state machine's state through an offset, as the harness encodes it: every entry.
fn encode_state<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(format!("{}:{}:{:?}\n", e.offset, e.epoch, e.payload).as_bytes());
    }
    out
}

/// What a seed draws.
#[derive(Debug)]
struct Faults {
    voters: usize,
    observers: usize,
    drop_percent: u64,
    duplicate_percent: u64,
    max_delay_ms: u64,
    max_disk_ms: u64,
    max_fetch_entries: usize,
    /// Nodes snapshot their state machine once this many entries are committed past the last
    /// snapshot (0: never), sent in chunks of this many bytes.
    snapshot_every: u64,
    snapshot_chunk_bytes: usize,
    /// Now and then an fsync stalls for seconds (a slow or failing disk).
    disk_stalls: bool,
    crashes: bool,
    partitions: bool,
    fault_interval_ms: u64,
}

struct Cluster {
    rng: ChaCha8Rng,
    now: u64,
    faults: Faults,
    voters: Vec<NodeId>,
    all: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Option<RaftNode>>,
    disks: BTreeMap<NodeId, Disk>,
    incarnations: BTreeMap<NodeId, u64>,
    scheduled_tick: BTreeMap<NodeId, u64>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    queue: BinaryHeap<std::cmp::Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    next_seq: u64,
    seed: u64,
    next_payload: u64,
    faulting: bool,
    checks: Checks,
    /// `RAFT_TRACE=1` prints every event and action (to read a failing seed).
    trace: bool,
    /// The voter left down after healing, if any.
    kept_down: Option<NodeId>,
}

/// The oracle: what was observed so far, to hold every later observation against.
#[derive(Default)]
struct Checks {
    leader_of_epoch: BTreeMap<i32, NodeId>,
    persisted_epoch: BTreeMap<NodeId, i32>,
    running_epoch: BTreeMap<NodeId, i32>,
    running_high_watermark: BTreeMap<NodeId, u64>,
    committed: BTreeMap<u64, Entry>,
    checked_below: BTreeMap<NodeId, u64>,
    events: u64,
}

impl Cluster {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pick = |options: &[u64]| options[(rng.next_u64() % options.len() as u64) as usize];
        let faults = Faults {
            voters: pick(&[1, 3, 3, 5]) as usize,
            observers: pick(&[0, 0, 1, 2]) as usize,
            drop_percent: pick(&[0, 1, 5, 20]),
            duplicate_percent: pick(&[0, 0, 5]),
            max_delay_ms: pick(&[1, 5, 30, 200]),
            max_disk_ms: pick(&[1, 5, 20, 150]),
            max_fetch_entries: pick(&[4, 16, 512]) as usize,
            snapshot_every: pick(&[0, 10, 50]),
            snapshot_chunk_bytes: pick(&[64, 1 << 20]) as usize,
            disk_stalls: pick(&[0, 1]) == 1,
            crashes: pick(&[0, 1, 1]) == 1,
            partitions: pick(&[0, 1, 1]) == 1,
            fault_interval_ms: pick(&[100, 300, 1_000, 3_000]),
        };
        let voters: Vec<NodeId> = (1..=faults.voters as NodeId).collect();
        let all: Vec<NodeId> = (1..=(faults.voters + faults.observers) as NodeId).collect();
        let mut cluster = Cluster {
            rng,
            now: 0,
            faults,
            voters,
            all: all.clone(),
            nodes: BTreeMap::new(),
            disks: all.iter().map(|&n| (n, Disk::default())).collect(),
            incarnations: all.iter().map(|&n| (n, 0)).collect(),
            scheduled_tick: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            seed,
            next_payload: 0,
            faulting: true,
            checks: Checks::default(),
            trace: env("RAFT_TRACE").is_some(),
            kept_down: None,
        };
        for node in all {
            cluster.start(node);
        }
        let interval = cluster.faults.fault_interval_ms;
        cluster.schedule(interval, Event::Fault);
        cluster.schedule(50, Event::Propose);
        cluster
    }

    fn random(&mut self, below: u64) -> u64 {
        self.rng.next_u64() % below.max(1)
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.next_seq += 1;
        self.queue.push(std::cmp::Reverse((self.now + after_ms, self.next_seq)));
        self.events.insert(self.next_seq, event);
    }

    fn config(&self, node: NodeId) -> RaftConfig {
        // Each process gets its own seed, as the runtime draws one at start.
        let process_seed = self.seed.wrapping_mul(1_000_003).wrapping_add(self.incarnations[&node]);
        let mut config = RaftConfig::new(node, self.voters.clone(), process_seed);
        config.max_fetch_entries = self.faults.max_fetch_entries;
        config.max_snapshot_chunk_bytes = self.faults.snapshot_chunk_bytes;
        config
    }

    fn start(&mut self, node: NodeId) {
        let disk = &self.disks[&node];
        let restored =
            Restored { election: disk.election, snapshot: disk.snapshot.clone(), entries: disk.written.clone() };
        let raft = RaftNode::new(self.config(node), restored, self.now);
        *self.incarnations.get_mut(&node).unwrap() += 1;
        self.nodes.insert(node, Some(raft));
        self.checks.running_high_watermark.remove(&node);
        self.checks.running_epoch.remove(&node);
        self.checks.checked_below.remove(&node);
        self.scheduled_tick.remove(&node);
        self.after_step(node);
    }

    fn crash(&mut self, node: NodeId) {
        self.nodes.insert(node, None);
        *self.incarnations.get_mut(&node).unwrap() += 1;
        let keep_unsynced = self.random(2) == 0;
        let disk = self.disks.get_mut(&node).unwrap();
        let survivors = if keep_unsynced {
            disk.synced + self.rng.next_u64() % (disk.end() - disk.synced + 1)
        } else {
            disk.synced
        };
        disk.truncate(survivors);
        disk.synced = disk.end();
        if let Some((id, data, replaces_log)) = disk.pending_snapshot.take() {
            if self.rng.next_u64().is_multiple_of(2) {
                disk.land_snapshot(id, data, replaces_log);
            }
        }
        // Some of the election writes under way landed, in order.
        let landed = (self.rng.next_u64() % (disk.pending_elections.len() as u64 + 1)) as usize;
        if let Some(&last) = disk.pending_elections.get(landed.wrapping_sub(1)) {
            disk.election = Some(last);
        }
        disk.pending_elections.clear();
    }

    fn running(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.is_some())
    }

    fn step(&mut self) -> bool {
        let Some(std::cmp::Reverse((at, seq))) = self.queue.pop() else { return false };
        let event = self.events.remove(&seq).unwrap();
        if self.trace {
            eprintln!("{at} {event:?}");
        }
        assert!(at >= self.now);
        self.now = at;
        let now = self.now;
        let current = |cluster: &Cluster, node: NodeId, incarnation: u64| {
            cluster.incarnations[&node] == incarnation && cluster.running(node)
        };
        match event {
            Event::Deliver { from, to, incarnation, message } => {
                if current(self, to, incarnation) {
                    self.node(to).handle_message(now, from, message);
                    self.after_step(to);
                }
            }
            Event::Persisted { node, incarnation } => {
                if current(self, node, incarnation) {
                    let disk = self.disks.get_mut(&node).unwrap();
                    disk.election = Some(disk.pending_elections.pop_front().expect("a persist was pending"));
                    self.node(node).handle_election_persisted(now);
                    self.after_step(node);
                }
            }
            Event::Synced { node, incarnation, through } => {
                if current(self, node, incarnation) {
                    let disk = self.disks.get_mut(&node).unwrap();
                    assert!(through <= disk.end());
                    disk.synced = disk.synced.max(through);
                    self.node(node).handle_synced(now, through);
                    self.after_step(node);
                }
            }
            Event::SnapshotWritten { node, incarnation, id } => {
                if current(self, node, incarnation) {
                    let disk = self.disks.get_mut(&node).unwrap();
                    let (written, data, replaces_log) =
                        disk.pending_snapshot.take().expect("a snapshot write was pending");
                    assert_eq!(written, id);
                    disk.land_snapshot(id, data, replaces_log);
                    self.node(node).handle_snapshot_written(now, id);
                    self.after_step(node);
                }
            }
            Event::Tick { node, incarnation } => {
                if current(self, node, incarnation) && self.scheduled_tick.get(&node) == Some(&now) {
                    self.scheduled_tick.remove(&node);
                    self.node(node).handle_tick(now);
                    self.after_step(node);
                }
            }
            Event::Fault => {
                if self.faulting {
                    self.inject_fault();
                    let interval = self.faults.fault_interval_ms;
                    let next = interval / 2 + self.random(interval);
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Propose => {
                if !self.faulting {
                    return true;
                }
                self.propose();
                self.take_snapshots();
                let next = 1 + self.random(100);
                self.schedule(next, Event::Propose);
            }
        }
        self.checks.events += 1;
        self.check();
        true
    }

    fn node(&mut self, node: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&node).unwrap().as_mut().unwrap()
    }

    fn inject_fault(&mut self) {
        let index = self.random(self.all.len() as u64) as usize;
        let node = self.all[index];
        // The worst moment to crash: a candidate, or a node with entries not yet synced.
        let exposed = self.all.iter().copied().find(|&n| {
            self.nodes[&n]
                .as_ref()
                .is_some_and(|r| r.role() == RoleKind::Candidate || r.log().durable_end() < r.log().end())
        });
        match self.random(5) {
            4 if self.faults.crashes && exposed.is_some() => self.crash(exposed.unwrap()),
            0 | 1 if self.faults.crashes => {
                if self.running(node) {
                    self.crash(node);
                } else {
                    self.start(node);
                }
            }
            2 if self.faults.partitions => {
                // Isolate one node, one way or both.
                let both = self.random(2) == 0;
                for &other in &self.all.clone() {
                    if other != node {
                        self.cut.insert((node, other));
                        if both {
                            self.cut.insert((other, node));
                        }
                    }
                }
            }
            3 if self.faults.partitions => self.cut.clear(),
            _ => {
                if let Some(&down) = self.all.iter().find(|&&n| !self.running(n)) {
                    self.start(down);
                }
            }
        }
    }

    fn propose(&mut self) {
        let now = self.now;
        let leader = self
            .all
            .iter()
            .copied()
            .filter(|&n| self.running(n))
            .find(|&n| self.nodes[&n].as_ref().unwrap().role() == RoleKind::Leader);
        if let Some(leader) = leader {
            self.next_payload += 1;
            let payload = Bytes::from(format!("record {}", self.next_payload));
            let _ = self.node(leader).propose(now, payload);
            self.after_step(leader);
        }
    }

    /// Each running node whose committed log has grown enough past its snapshot takes one: its
    /// state machine's state is its last snapshot plus the committed entries after it.
    fn take_snapshots(&mut self) {
        let every = self.faults.snapshot_every;
        if every == 0 {
            return;
        }
        for id in self.all.clone() {
            let Some(node) = self.nodes[&id].as_ref() else { continue };
            let (start, end) = (node.log().start(), node.high_watermark());
            if end < start + every {
                continue;
            }
            let mut data = node.latest_snapshot().map_or(Vec::new(), |(_, d)| d.to_vec());
            data.extend(encode_state(
                (start..end).map(|o| node.log().entry(o).expect("a committed entry is in the log")),
            ));
            if self.node(id).snapshot(end, Bytes::from(data)).is_ok() {
                self.after_step(id);
            }
        }
    }

    /// Carries out a node's actions and schedules its next tick.
    fn after_step(&mut self, node: NodeId) {
        let incarnation = self.incarnations[&node];
        while let Some(action) = self.node(node).poll_action() {
            if self.trace {
                eprintln!("    {node} -> {action:?}");
            }
            match action {
                RaftAction::Send { to, message } => {
                    if self.cut.contains(&(node, to)) || self.random(100) < self.faults.drop_percent {
                        continue;
                    }
                    let message = through_the_wire(node, to, message);
                    let copies = if self.random(100) < self.faults.duplicate_percent { 2 } else { 1 };
                    for _ in 0..copies {
                        let delay = 1 + self.random(self.faults.max_delay_ms);
                        let to_incarnation = self.incarnations[&to];
                        self.schedule(
                            delay,
                            Event::Deliver { from: node, to, incarnation: to_incarnation, message: message.clone() },
                        );
                    }
                }
                RaftAction::PersistElection(state) => {
                    self.disks.get_mut(&node).unwrap().pending_elections.push_back(state);
                    let delay = 1 + self.random(self.faults.max_disk_ms);
                    self.schedule(delay, Event::Persisted { node, incarnation });
                }
                RaftAction::Append(entries) => {
                    let disk = self.disks.get_mut(&node).unwrap();
                    assert_eq!(entries[0].offset, disk.end(), "append out of place on disk");
                    disk.written.extend(entries);
                }
                RaftAction::Truncate { end } => {
                    let disk = self.disks.get_mut(&node).unwrap();
                    disk.truncate(end);
                }
                RaftAction::WriteSnapshot { id, data, replaces_log } => {
                    // A snapshot holds exactly the committed entries below its end.
                    let committed = (0..id.end_offset)
                        .map(|o| self.checks.committed.get(&o).expect("a snapshot of uncommitted entries"));
                    assert!(
                        encode_state(committed) == data.as_ref(),
                        "seed {}: node {node}'s snapshot {id:?} is not the committed state",
                        self.seed
                    );
                    let disk = self.disks.get_mut(&node).unwrap();
                    assert!(disk.pending_snapshot.is_none(), "two snapshot writes at once");
                    disk.pending_snapshot = Some((id, data, replaces_log));
                    let delay = 1 + self.random(self.faults.max_disk_ms);
                    self.schedule(delay, Event::SnapshotWritten { node, incarnation, id });
                }
                RaftAction::Sync { through } => {
                    let stall = self.faults.disk_stalls && self.random(100) < 3;
                    let delay =
                        if stall { 2_000 + self.random(3_000) } else { 1 + self.random(self.faults.max_disk_ms) };
                    self.schedule(delay, Event::Synced { node, incarnation, through });
                }
            }
        }
        if let Some(deadline) = self.node(node).next_deadline() {
            let at = deadline.max(self.now);
            if self.scheduled_tick.get(&node).is_none_or(|&t| at < t || t < self.now) {
                self.scheduled_tick.insert(node, at);
                let after = at - self.now;
                self.schedule(after, Event::Tick { node, incarnation });
            }
        }
    }

    /// Kafka's `RaftEventSimulationTest` invariants, after every event.
    fn check(&mut self) {
        let seed = self.seed;
        for (&id, node) in &self.nodes {
            let Some(node) = node else { continue };
            node.check_invariants();
            // One leader per epoch, in every node's view (a leader's view names itself).
            if let Some(leader) = node.leader() {
                let first = *self.checks.leader_of_epoch.entry(node.epoch()).or_insert(leader);
                assert_eq!(
                    first,
                    leader,
                    "seed {seed}: node {id} follows {leader} in epoch {}, led by {first}",
                    node.epoch()
                );
            }
            assert!(node.role() != RoleKind::Leader || node.leader() == Some(id));
            // Epochs never go back on a running node.
            let epoch = self.checks.running_epoch.entry(id).or_insert(node.epoch());
            assert!(node.epoch() >= *epoch, "seed {seed}: node {id}'s epoch went back");
            *epoch = node.epoch();
            // The high watermark never goes back on a running node.
            let high_watermark = self.checks.running_high_watermark.entry(id).or_insert(node.high_watermark());
            assert!(node.high_watermark() >= *high_watermark, "seed {seed}: node {id}'s high watermark went back");
            *high_watermark = node.high_watermark();
            // Committed entries never change, on any node.
            let from = self.checks.checked_below.get(&id).copied().unwrap_or(0).max(node.log().start());
            for offset in from..node.high_watermark() {
                let entry = node.log().entry(offset).expect("a committed entry is in the log");
                let first = self.checks.committed.entry(offset).or_insert_with(|| entry.clone());
                assert_eq!(first, entry, "seed {seed}: node {id} holds another entry at committed offset {offset}");
            }
            self.checks.checked_below.insert(id, node.high_watermark());
            // A leader's high watermark is held durably by a majority of voters.
            if node.role() == RoleKind::Leader && node.high_watermark() > 0 {
                let last = node.high_watermark() - 1;
                let holding = self
                    .voters
                    .iter()
                    .filter(|v| {
                        let disk = &self.disks[v];
                        disk.synced > last
                            && (last < disk.start() || disk.entry(last) == Some(&self.checks.committed[&last]))
                    })
                    .count();
                assert!(
                    holding > self.voters.len() / 2,
                    "seed {seed}: high watermark {} held by {holding} voters",
                    node.high_watermark()
                );
            }
        }
        // Persisted epochs never go back, across restarts too.
        for (&id, disk) in &self.disks {
            let epoch = disk.election.map_or(0, |e| e.epoch);
            let seen = self.checks.persisted_epoch.entry(id).or_insert(epoch);
            assert!(epoch >= *seen, "seed {seed}: node {id}'s persisted epoch went back");
            *seen = epoch;
        }
    }

    fn run_until(&mut self, until_ms: u64) {
        while self.queue.peek().is_some_and(|std::cmp::Reverse((at, _))| *at <= until_ms) {
            self.step();
            assert!(self.checks.events < 5_000_000, "seed {}: runaway event count", self.seed);
        }
        self.now = until_ms;
    }

    /// Ends the faults: the network whole and lossless, and every node up, except, in some
    /// seeds, one voter (often the leader) that stays down: a majority must do.
    fn heal(&mut self) {
        self.faulting = false;
        self.cut.clear();
        self.faults.drop_percent = 0;
        self.faults.duplicate_percent = 0;
        self.faults.disk_stalls = false;
        if self.voters.len() >= 3 && self.random(2) == 0 {
            let leader = self.leader().filter(|_| self.random(2) == 0);
            let index = self.random(self.voters.len() as u64) as usize;
            let down = leader.unwrap_or(self.voters[index]);
            self.kept_down = Some(down);
            if self.running(down) {
                self.crash(down);
            }
        }
        for node in self.all.clone() {
            if !self.running(node) && Some(node) != self.kept_down {
                self.start(node);
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.all.iter().copied().find(|&n| self.nodes[&n].as_ref().is_some_and(|r| r.role() == RoleKind::Leader))
    }
}

/// The harness's own knobs.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Sends a message through Kafka's encoding and back, as between two real nodes, and checks
/// that nothing was lost on the way.
fn through_the_wire(from: NodeId, to: NodeId, message: Message) -> Message {
    match message {
        Message::Request { correlation, request } => {
            let (key, version) = wire::api_key(&request);
            let header = RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_correlation_id(correlation as i32);
            let frame = codec::encode_request(&header, &wire::encode_request(&request, to, "spool-test")).unwrap();
            let mut body = frame.slice(4..);
            let header = RequestHeader::decode(&mut body, key.request_header_version(version)).unwrap();
            let kind = RequestKind::decode(key, &mut body, version).unwrap();
            let (sender, decoded) = wire::decode_request(kind).unwrap();
            assert_eq!((sender, &decoded), (from, &request), "a request changed on the wire");
            Message::Request { correlation: header.correlation_id as u64, request: decoded }
        }
        Message::Response { correlation, response } => {
            let (key, version) = match &response {
                Response::Vote { .. } => (ApiKey::Vote, wire::VOTE_VERSION),
                Response::BeginQuorumEpoch { .. } => (ApiKey::BeginQuorumEpoch, wire::BEGIN_QUORUM_EPOCH_VERSION),
                Response::EndQuorumEpoch { .. } => (ApiKey::EndQuorumEpoch, wire::END_QUORUM_EPOCH_VERSION),
                Response::Fetch(_) => (ApiKey::Fetch, wire::FETCH_VERSION),
                Response::FetchSnapshot(_) => (ApiKey::FetchSnapshot, wire::FETCH_SNAPSHOT_VERSION),
            };
            let frame = codec::encode_response(correlation as i32, version, &wire::encode_response(&response)).unwrap();
            let (correlation, kind) = codec::decode_response(key, version, frame.slice(4..)).unwrap();
            let decoded = wire::decode_response(key, kind).unwrap();
            assert_eq!(decoded, response, "a response changed on the wire");
            Message::Response { correlation: correlation as u64, response: decoded }
        }
    }
}

/// Runs a seed; a failure names it.
fn run_seed(seed: u64) -> String {
    match std::panic::catch_unwind(|| run_seed_unchecked(seed)) {
        Ok(summary) => summary,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed}: FAILED: {why} (replay: RAFT_SEED={seed} RAFT_TRACE=1)");
        }
    }
}

fn run_seed_unchecked(seed: u64) -> String {
    let mut cluster = Cluster::new(seed);
    cluster.run_until(20_000);
    cluster.heal();
    // Liveness: once healed (and no more proposals), one leader, and every node holds and has
    // committed everything the leader holds.
    // 30 s, plus the round trips a node far behind needs to catch up at this seed's speed.
    let longest_log =
        cluster.all.iter().filter_map(|n| cluster.nodes[n].as_ref()).map(|r| r.log().end()).max().unwrap_or(0);
    let round_trip_ms = 2 * cluster.faults.max_delay_ms + cluster.faults.max_disk_ms + 10;
    let mut catch_up_ms = (longest_log / cluster.faults.max_fetch_entries as u64 + 1) * round_trip_ms;
    if cluster.faults.snapshot_every > 0 {
        // A snapshot read chunk by chunk: about 40 bytes an entry in the harness's encoding.
        catch_up_ms += (longest_log * 40 / cluster.faults.snapshot_chunk_bytes as u64 + 1) * round_trip_ms;
    }
    let healed_at = cluster.now;
    let deadline = healed_at + 30_000 + catch_up_ms;
    loop {
        let t = cluster.now + 500;
        cluster.run_until(t);
        if let Some(leader) = cluster.leader() {
            let end = cluster.nodes[&leader].as_ref().unwrap().log().end();
            let settled = cluster.all.iter().filter(|&&n| cluster.running(n)).all(|n| {
                let node = cluster.nodes[n].as_ref().unwrap();
                node.leader() == Some(leader) && node.high_watermark() == end && node.log().end() == end
            });
            if settled {
                break;
            }
        }
        assert!(
            cluster.now < deadline,
            "seed {seed}: no settled leader {} s after healing ({:?})",
            (deadline - healed_at) / 1_000,
            cluster.faults
        );
    }
    let leader = cluster.leader().unwrap();
    let leader_node = cluster.nodes[&leader].as_ref().unwrap();
    format!(
        "seed {seed}: {} voters, {} observers, epoch {}, {} committed, {} events",
        cluster.faults.voters,
        cluster.faults.observers,
        leader_node.epoch(),
        leader_node.high_watermark(),
        cluster.checks.events
    )
}

#[test]
fn quorum_keeps_its_promises_under_faults() {
    let seeds: u64 = env("RAFT_SEEDS").and_then(|s| s.parse().ok()).unwrap_or(500);
    if let Some(seed) = env("RAFT_SEED").and_then(|s| s.parse().ok()) {
        println!("{}", run_seed(seed));
        return;
    }
    for seed in 0..seeds {
        let summary = run_seed(seed);
        if seed % 50 == 0 {
            println!("{summary}");
        }
    }
}

#[test]
fn a_seed_replays_exactly() {
    assert_eq!(run_seed(7), run_seed(7));
}
