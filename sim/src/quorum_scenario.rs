//! The metadata quorum as it runs in production: 1, 3 or 5 controllers, each the runtime's own
//! quorum loop (`spool_runtime::quorum::run`) over simulated TCP and a modelled disk, while a
//! nemesis kills, power-cuts, pauses and isolates them and a workload proposes records. After
//! every turn of every node's loop the checker looks at that node (Kafka's
//! RaftEventSimulationTest does the same): one leader per epoch, epochs and high watermarks that
//! never go back within a process, persisted epochs that never go back at all (the disk model
//! asserts it), and committed entries that never change on any node. After the faults stop, one
//! leader must be agreed on and a record proposed then must be committed everywhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use std::hash::{Hash, Hasher};

use spool_core::metadata::{ConfigResource, MetadataRecord};
use spool_core::quorum::{QuorumMember, Voter};
use spool_core::raft::{Entry, NodeId, RoleKind};
use spool_runtime::quorum::{self, QuorumOptions};
use tokio::sync::mpsc;

use crate::draw;
use crate::quorum_disk::{DiskSpeed, QuorumDiskState, SharedQuorumDisk, SimQuorumDisk};

const PORT: u16 = 9093;
/// How long after the faults stop the quorum has to agree on a leader and commit a new record.
const HEAL_LIMIT: Duration = Duration::from_secs(60);

fn ip(id: NodeId) -> String {
    format!("10.0.1.{id}")
}

pub fn run_seed(seed: u64) -> Result<String, String> {
    crate::seed::simulate(seed, scenario)
}

/// What every node has shown the checker, and what it concluded.
#[derive(Default)]
struct Checker {
    /// The leader of each epoch, as first claimed.
    leaders: BTreeMap<i32, NodeId>,
    /// Every committed entry, as first seen committed on any node.
    committed: BTreeMap<u64, Entry>,
    /// Per node: (incarnation, epoch, high watermark, offsets checked below) last seen.
    seen: BTreeMap<NodeId, (u64, i32, u64, u64)>,
    incarnations: BTreeMap<NodeId, u64>,
    violation: Option<String>,
    observations: u64,
}

impl Checker {
    fn observe(&mut self, id: NodeId, incarnation: u64, member: &QuorumMember) {
        self.observations += 1;
        if self.violation.is_some() {
            return;
        }
        if member.refused_records() > 0 {
            self.violation =
                Some(format!("node {id}: its image refused {} committed records", member.refused_records()));
            return;
        }
        if let Err(e) = self.check(id, incarnation, member.node()) {
            self.violation = Some(format!("node {id}: {e}"));
        }
    }

    fn check(&mut self, id: NodeId, incarnation: u64, node: &spool_core::raft::RaftNode) -> Result<(), String> {
        let (epoch, high_watermark) = (node.epoch(), node.high_watermark());
        if node.role() == RoleKind::Leader {
            let first = *self.leaders.entry(epoch).or_insert(id);
            if first != id {
                return Err(format!("leads epoch {epoch}, which node {first} led"));
            }
        }
        let mut checked_below = 0;
        if let Some(&(was_incarnation, was_epoch, was_high_watermark, was_checked)) = self.seen.get(&id) {
            if was_incarnation == incarnation {
                if epoch < was_epoch {
                    return Err(format!("epoch went back from {was_epoch} to {epoch}"));
                }
                if high_watermark < was_high_watermark {
                    return Err(format!("high watermark went back from {was_high_watermark} to {high_watermark}"));
                }
                checked_below = was_checked;
            }
        }
        // Entries newly below the high watermark must be the ones committed everywhere.
        let log = node.log();
        let from = checked_below.max(log.start());
        for offset in from..high_watermark.min(log.end()) {
            let entry = log.entry(offset).ok_or_else(|| format!("holds no entry at committed offset {offset}"))?;
            match self.committed.get(&offset) {
                Some(known) if known != entry => {
                    return Err(format!("committed offset {offset} holds {entry:?}, elsewhere {known:?}"));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(offset, entry.clone());
                }
            }
        }
        self.seen.insert(id, (incarnation, epoch, high_watermark, high_watermark.max(checked_below)));
        Ok(())
    }
}

type SharedChecker = Arc<Mutex<Checker>>;
/// Each node's current proposal inbox (a new one per incarnation), and its latest state.
type Inboxes = Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<Bytes>>>>;
type States = Arc<Mutex<BTreeMap<NodeId, NodeState>>>;

/// A node as it last showed itself to the checker.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // the fields are read through Debug, in failure messages
struct NodeState {
    role: RoleKind,
    epoch: i32,
    leader: Option<NodeId>,
    high_watermark: u64,
    /// Entries appended and not yet synced: where a power loss takes something back.
    unsynced: u64,
    /// How far the metadata image is applied, and a digest of it.
    image_end: u64,
    image_digest: u64,
    /// The unfenced brokers in the image, as a bit per node id.
    brokers: u64,
}

struct Cluster {
    voters: Vec<Voter>,
    snapshot_every: u64,
    /// Nodes that follow the quorum without a vote, as brokers do.
    observers: Vec<NodeId>,
    disk_speed: DiskSpeed,
    disks: BTreeMap<NodeId, SharedQuorumDisk>,
    nodes: BTreeMap<NodeId, NodeHandle>,
    checker: SharedChecker,
    inboxes: Inboxes,
    states: States,
}

fn start_node(handle: &Handle, cluster: &Cluster, id: NodeId) -> NodeHandle {
    let voters = cluster.voters.clone();
    let disk = cluster.disks[&id].clone();
    let speed = cluster.disk_speed;
    let snapshot_every = cluster.snapshot_every;
    let checker = cluster.checker.clone();
    let inboxes = cluster.inboxes.clone();
    let states = cluster.states.clone();
    handle
        .create_node()
        .name(format!("controller-{id}"))
        .ip(ip(id).parse().expect("ip"))
        .init(move || {
            let voters = voters.clone();
            let disk = disk.clone();
            let checker = checker.clone();
            let inboxes = inboxes.clone();
            let states = states.clone();
            async move {
                let incarnation = {
                    let mut c = checker.lock().expect("checker");
                    let n = c.incarnations.entry(id).or_insert(0);
                    *n += 1;
                    *n
                };
                let (tx, rx) = mpsc::channel(64);
                inboxes.lock().expect("inboxes").insert(id, tx);
                let last_image = Mutex::new((u64::MAX, 0u64, 0u64));
                let observer: quorum::Observer = Arc::new(move |member: &QuorumMember| {
                    let node = member.node();
                    checker.lock().expect("checker").observe(id, incarnation, member);
                    // A digest of the image, computed only when it moved.
                    let mut last = last_image.lock().expect("image digest");
                    if last.0 != member.image().applied_end() {
                        let mut h = std::hash::DefaultHasher::new();
                        member.image().to_snapshot().hash(&mut h);
                        let brokers = member.image().brokers().filter(|b| !b.fenced).fold(0u64, |m, b| m | 1 << b.id);
                        *last = (member.image().applied_end(), h.finish(), brokers);
                    }
                    let state = NodeState {
                        image_end: last.0,
                        image_digest: last.1,
                        brokers: last.2,
                        role: node.role(),
                        epoch: node.epoch(),
                        leader: node.leader(),
                        high_watermark: node.high_watermark(),
                        unsynced: node.log().end() - node.log().durable_end(),
                    };
                    states.lock().expect("states").insert(id, state);
                });
                let listen: SocketAddr = format!("{}:{PORT}", ip(id)).parse().expect("address");
                let is_voter = voters.iter().any(|v| v.id == id);
                let options = QuorumOptions {
                    node_id: id,
                    voters,
                    listen: is_voter.then_some(listen),
                    seed: thread_rng().gen(),
                    proposals: Some(rx),
                    observer: Some(observer),
                    snapshot_every,
                    topic_defaults: Default::default(),
                    register: Some(quorum::registration::Registration {
                        node_id: id,
                        host: ip(id),
                        port: 9092,
                        rack: None,
                        incarnation: uuid::Uuid::from_u128(thread_rng().gen()),
                    }),
                    cluster_view: None,
                };
                let (_keep_running, stop) = tokio::sync::oneshot::channel();
                if let Err(e) = quorum::run(options, SimQuorumDisk { shared: disk, speed }, None, stop).await {
                    panic!("controller {id} failed: {e:#}");
                }
            }
        })
        .build()
}

/// Proposes numbered records to every node until told to stop; only the leader takes them.
async fn propose(inboxes: Inboxes, next: Arc<Mutex<u64>>, every_ms: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
        let record = {
            let mut n = next.lock().expect("proposal counter");
            *n += 1;
            MetadataRecord::Config {
                resource: ConfigResource::Broker(0),
                name: format!("record.{}", *n % 64),
                value: Some(n.to_string()),
            }
            .encode()
        };
        let senders: Vec<_> = inboxes.lock().expect("inboxes").values().cloned().collect();
        for tx in senders {
            let _ = tx.try_send(record.clone());
        }
    }
}

#[derive(Default, Debug)]
struct Applied {
    kills: u64,
    power_losses: u64,
    pauses: u64,
    isolations: u64,
    one_way: u64,
    links: u64,
    aimed_power_losses: u64,
}

async fn nemesis(handle: &Handle, cluster: &Cluster, steps: u64) -> Applied {
    let mut applied = Applied::default();
    let ids: Vec<NodeId> = cluster.voters.iter().map(|v| v.id).chain(cluster.observers.iter().copied()).collect();
    let net = NetSim::current();
    let pause = |range: std::ops::Range<u64>| tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(range)));
    for _ in 0..steps {
        pause(10..2000).await;
        // Mostly the leader, which is where the interesting failures are.
        let leader =
            cluster.states.lock().expect("states").iter().find(|(_, s)| s.role == RoleKind::Leader).map(|(&i, _)| i);
        let victim = match leader {
            Some(l) if thread_rng().gen_bool(0.6) => l,
            _ => ids[thread_rng().gen_range(0..ids.len())],
        };
        let node = cluster.nodes[&victim].id();
        match thread_rng().gen_range(0..7) {
            0 => {
                handle.kill(node);
                applied.kills += 1;
                pause(1..3000).await;
                handle.restart(node);
            }
            1 => {
                handle.kill(node);
                cluster.disks[&victim].lock().expect("disk").power_loss();
                applied.power_losses += 1;
                pause(1..3000).await;
                handle.restart(node);
            }
            2 => {
                // A zombie: it wakes up after the others may have moved on without it.
                handle.pause(node);
                applied.pauses += 1;
                pause(100..6000).await;
                handle.resume(node);
            }
            3 => {
                net.clog_node(node);
                applied.isolations += 1;
                pause(100..8000).await;
                net.unclog_node(node);
            }
            5 => {
                // Aimed: wait for a node to be mid-election or to hold unsynced entries, and cut
                // its power then (the moments where a durability mistake shows).
                let waited = tokio::time::Instant::now();
                let target = loop {
                    let found = cluster
                        .states
                        .lock()
                        .expect("states")
                        .iter()
                        .find(|(_, s)| s.role == RoleKind::Candidate || s.unsynced > 0)
                        .map(|(&i, _)| i);
                    if found.is_some() || waited.elapsed() > Duration::from_secs(5) {
                        break found;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                };
                if let Some(target) = target {
                    let node = cluster.nodes[&target].id();
                    handle.kill(node);
                    cluster.disks[&target].lock().expect("disk").power_loss();
                    applied.aimed_power_losses += 1;
                    pause(1..3000).await;
                    handle.restart(node);
                }
            }
            4 => {
                // One link only, one way: a bridge or an asymmetric partition.
                let other = ids[thread_rng().gen_range(0..ids.len())];
                let other = cluster.nodes[&other].id();
                net.clog_link(node, other);
                applied.links += 1;
                pause(100..8000).await;
                net.unclog_link(node, other);
            }
            _ => {
                let inbound = thread_rng().gen_bool(0.5);
                if inbound {
                    net.clog_node_in(node);
                } else {
                    net.clog_node_out(node);
                }
                applied.one_way += 1;
                pause(100..8000).await;
                if inbound {
                    net.unclog_node_in(node);
                } else {
                    net.unclog_node_out(node);
                }
            }
        }
    }
    applied
}

async fn scenario() -> Result<String, String> {
    let voter_count = [1, 3, 3, 5][draw::int("quorum.voters", 0..4) as usize];
    let observers: Vec<NodeId> = (0..draw::int("quorum.observers", 0..3) as NodeId).map(|i| 10 + i).collect();
    let steps = draw::int("quorum.nemesis_steps", 0..25);
    let propose_every_ms = draw::int("quorum.propose_every_ms", 20..500);
    // Slow and lossy links (a lost packet is sent again after a backoff): split votes and
    // late answers, where elections go wrong.
    let latency_ms = draw::int("quorum.max_latency_ms", 2..400);
    let packet_loss = draw::rate("quorum.packet_loss", 0.01, 0.2);
    NetSim::current().update_config(|c| {
        c.send_latency = Duration::from_millis(1)..Duration::from_millis(latency_ms);
        c.packet_loss_rate = packet_loss;
    });
    let disk_speed = DiskSpeed {
        fsync_ms: draw::int("quorum.fsync_ms", 0..60),
        stall: draw::rate("quorum.fsync_stall", 0.001, 0.05),
    };
    let handle = Handle::current();
    let voters: Vec<Voter> = (1..=voter_count).map(|id| Voter { id, host: ip(id), port: PORT }).collect();
    let mut cluster = Cluster {
        disks: voters
            .iter()
            .map(|v| v.id)
            .chain(observers.iter().copied())
            .map(|id| (id, SharedQuorumDisk::new(Mutex::new(QuorumDiskState::default()))))
            .collect(),
        voters,
        snapshot_every: [0, 3, 10, 50][draw::int("quorum.snapshot_every", 0..4) as usize],
        observers: observers.clone(),
        disk_speed,
        nodes: BTreeMap::new(),
        checker: SharedChecker::default(),
        inboxes: Inboxes::default(),
        states: States::default(),
    };
    let mut alive = crate::seed::KillOnExit::new(&handle);
    let all: Vec<NodeId> = (1..=voter_count).chain(observers.iter().copied()).collect();
    let node_count = all.len();
    for id in all {
        let node = start_node(&handle, &cluster, id);
        alive.add(&node);
        cluster.nodes.insert(id, node);
    }
    let client = handle.create_node().name("proposer").ip("10.0.1.100".parse().expect("ip")).build();
    alive.add(&client);
    let counter = Arc::new(Mutex::new(0u64));
    let proposer = client.spawn(propose(cluster.inboxes.clone(), counter.clone(), propose_every_ms));
    let applied = nemesis(&handle, &cluster, steps).await;
    // In some seeds a voter (often the leader) stays down: a bare majority must carry on, and
    // observers must find the new leader without it.
    let keep_down = draw::int("quorum.keep_voter_down", 0..2) == 1 && voter_count >= 3;
    let mut kept_down = None;
    if keep_down {
        let leader =
            cluster.states.lock().expect("states").iter().find(|(_, s)| s.role == RoleKind::Leader).map(|(&i, _)| i);
        let down = match leader {
            Some(l) if thread_rng().gen_bool(0.7) => l,
            _ => thread_rng().gen_range(1..=voter_count),
        };
        handle.kill(cluster.nodes[&down].id());
        kept_down = Some(down);
        cluster.states.lock().expect("states").remove(&down);
        cluster.inboxes.lock().expect("inboxes").remove(&down);
    }
    let node_count = node_count - keep_down as usize;
    // Healed: links stay slow but lose nothing, and fsyncs stay slow but stall no more. Progress
    // is owed from here on; while faults go on, only safety is.
    NetSim::current().update_config(|c| c.packet_loss_rate = 0.0);
    for disk in cluster.disks.values() {
        disk.lock().expect("disk").healed = true;
    }
    let faults_stopped = tokio::time::Instant::now();

    // Liveness: one leader everyone follows, and a record proposed now committed everywhere.
    let outcome = loop {
        if let Some(v) = cluster.checker.lock().expect("checker").violation.clone() {
            break Err(v);
        }
        if faults_stopped.elapsed() > HEAL_LIMIT {
            let states = cluster.states.lock().expect("states").clone();
            break Err(format!(
                "liveness: no agreed leader and common high watermark {HEAL_LIMIT:?} after faults stopped: {states:?}"
            ));
        }
        let states = cluster.states.lock().expect("states").clone();
        let leaders: Vec<_> = states.values().map(|s| (s.epoch, s.leader)).collect();
        let agreed = states.len() == node_count
            && leaders.windows(2).all(|w| w[0] == w[1])
            && leaders[0].1.is_some()
            && states.values().any(|s| s.role == RoleKind::Leader);
        if agreed {
            // Everyone follows one leader; one more record must now reach every node.
            let target = states.values().map(|s| s.high_watermark).max().unwrap_or(0) + 1;
            let reached = wait_for(&cluster.states, target, node_count, faults_stopped).await;
            break reached.map(|()| states);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    proposer.abort();
    let states = outcome?;
    // Quiet now: every node's image must come to the same end and the same content.
    let settled = tokio::time::Instant::now();
    loop {
        let states = cluster.states.lock().expect("states").clone();
        let ends: Vec<(u64, u64)> = states.values().map(|s| (s.high_watermark, s.image_end)).collect();
        if ends.windows(2).all(|w| w[0] == w[1]) && ends.iter().all(|(hw, end)| hw == end) {
            let digests: BTreeMap<NodeId, u64> = states.iter().map(|(&id, s)| (id, s.image_digest)).collect();
            let registered = states.values().next().map_or(0, |s| s.brokers);
            if let Some(missing) = states.keys().find(|&&id| registered & (1 << id) == 0) {
                if settled.elapsed() <= HEAL_LIMIT {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                return Err(format!("liveness: node {missing}'s broker is not registered and unfenced in the image"));
            }
            // A node that stays down stops heartbeating: its session ends and it is fenced.
            if let Some(down) = kept_down.filter(|&d| registered & (1 << d) != 0) {
                if settled.elapsed() <= HEAL_LIMIT {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                return Err(format!("liveness: node {down} is down but its broker is still unfenced in the image"));
            }
            if digests.values().any(|d| *d != digests.values().next().copied().unwrap_or(0)) {
                return Err(format!("the nodes' metadata images differ at offset {}: {digests:?}", ends[0].1));
            }
            break;
        }
        if settled.elapsed() > HEAL_LIMIT {
            return Err(format!("liveness: the images did not settle at one offset: {states:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(v) = cluster.checker.lock().expect("checker").violation.clone() {
        return Err(v);
    }
    let checker = cluster.checker.lock().expect("checker");
    let epoch = states.values().map(|s| s.epoch).max().unwrap_or(0);
    let (taken, installed) = cluster.disks.values().fold((0, 0), |(t, i), d| {
        let d = d.lock().expect("disk");
        (t + d.snapshots_taken, i + d.snapshots_installed)
    });
    Ok(format!(
        "quorum of {voter_count} and {} observers: {applied:?}; {} committed entries, epoch {epoch}, {} leaders, \
         {taken} snapshots taken, {installed} installed from the leader, {} observations",
        observers.len(),
        checker.committed.len(),
        checker.leaders.len(),
        checker.observations
    ))
}

/// Waits until every node's high watermark reaches `target`.
async fn wait_for(states: &States, target: u64, nodes: usize, since: tokio::time::Instant) -> Result<(), String> {
    loop {
        {
            let states = states.lock().expect("states");
            if states.len() == nodes && states.values().all(|s| s.high_watermark >= target) {
                return Ok(());
            }
        }
        if since.elapsed() > HEAL_LIMIT {
            return Err(format!(
                "liveness: a record proposed after the faults was not committed on every node within {HEAL_LIMIT:?}: {:?}",
                states.lock().expect("states")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
