//! Runs this node's seat in the metadata quorum: one task owns the `QuorumMember`, feeds it frames
//! from the controller listener and the links to the other voters, ticks it at its deadlines,
//! and writes its files inline (as Kafka's Raft thread does: the metadata log is small).

mod net;
pub mod registration;
pub mod store;

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use spool_core::quorum::{Now, QuorumAction, QuorumConfig, QuorumMember, Voter};
use spool_core::raft::{ElectionState, Entry, NodeId, RaftAction, RaftConfig, RaftNode, SnapshotId};
use spool_core::ConnId;
use std::collections::BTreeMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use net::NetEvent;
use store::{DiskOpKind, QuorumDisk};

/// The quorum's directory inside the data directory, named as Kafka names it.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

pub struct QuorumOptions {
    pub node_id: NodeId,
    pub voters: Vec<Voter>,
    /// Where the controller listener binds; None for a node that only observes.
    pub listen: Option<SocketAddr>,
    /// Seeds the node's election timeouts and request ids.
    pub seed: u64,
    /// Records to append to the metadata log; refused (dropped) off the leader or when too many
    /// wait to be committed, so the proposer retries.
    pub proposals: Option<mpsc::Receiver<Bytes>>,
    /// Shown the member after every turn of the loop (the simulator's checkers).
    pub observer: Option<Observer>,
    /// Snapshot the metadata image after this many entries (0: never).
    pub snapshot_every: u64,
    /// This node's broker, registered with the active controller at start.
    pub register: Option<registration::Registration>,
    /// What the controller gives a topic whose request leaves a setting out.
    pub topic_defaults: spool_core::quorum::TopicDefaults,
    /// Where the registered brokers go as the image changes (the broker's Metadata answers).
    pub cluster_view: Option<tokio::sync::watch::Sender<spool_core::ClusterView>>,
}

pub type Observer = std::sync::Arc<dyn Fn(&QuorumMember) + Send + Sync>;

/// Entries between snapshots of the metadata image, by default: a restarting or lagging node
/// reads one snapshot and a short log instead of the whole history.
pub const SNAPSHOT_EVERY: u64 = 10_000;

/// How long a stopping node waits for the active controller to fence its broker.
const CONTROLLED_SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Kafka's `controller.quorum.voters`: `ID@HOST:PORT,...`.
pub fn parse_voters(text: &str) -> Result<Vec<Voter>> {
    let mut voters: Vec<Voter> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, address) =
            item.split_once('@').with_context(|| format!("controller.quorum.voters: {item:?} is not ID@HOST:PORT"))?;
        let id: NodeId = id.parse().with_context(|| format!("controller.quorum.voters: bad node id in {item:?}"))?;
        let (host, port) =
            address.rsplit_once(':').with_context(|| format!("controller.quorum.voters: {item:?} has no port"))?;
        let port: u16 = port.parse().with_context(|| format!("controller.quorum.voters: bad port in {item:?}"))?;
        if id < 0 || voters.iter().any(|v| v.id == id) {
            bail!("controller.quorum.voters: node id {id} is negative or named twice");
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        voters.push(Voter { id, host, port });
    }
    if voters.is_empty() {
        bail!("controller.quorum.voters names no voter");
    }
    Ok(voters)
}

/// The quorum's cluster id, the same on every node because it is drawn from the voter set (Kafka
/// has `kafka-storage format` write one everywhere; Spool has no format step). Printed as Kafka
/// prints them: a UUID in URL-safe base64 without padding.
pub fn cluster_id_of(voters: &[Voter]) -> String {
    use base64::Engine as _;
    let named: Vec<String> = voters.iter().map(|v| format!("{}@{}:{}", v.id, v.host, v.port)).collect();
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, named.join(",").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid.as_bytes())
}

/// Runs until `stop` fires (then the leader resigns, so the others elect at once) or the
/// quorum's disk fails.
pub async fn run<D: QuorumDisk>(
    mut options: QuorumOptions,
    mut store: D,
    ready: Option<oneshot::Sender<SocketAddr>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let restored = store.restore()?;
    let ids: Vec<NodeId> = options.voters.iter().map(|v| v.id).collect();
    let started = tokio::time::Instant::now();
    let now = move || Now { monotonic_ms: started.elapsed().as_millis() as u64, wall_ms: crate::server::now_ms() };
    tracing::info!(
        node = options.node_id,
        epoch = restored.election.map_or(0, |e| e.epoch),
        entries = restored.entries.len(),
        "metadata quorum: starting"
    );
    let node = RaftNode::new(RaftConfig::new(options.node_id, ids, options.seed), restored, now().monotonic_ms);
    let config = QuorumConfig {
        node_id: options.node_id,
        voters: options.voters.clone(),
        cluster_id: cluster_id_of(&options.voters),
        snapshot_every: options.snapshot_every,
        topic_defaults: options.topic_defaults.clone(),
    };
    let cluster_id = config.cluster_id.clone();
    let mut member = QuorumMember::new(config, node);
    let (applied_tx, applied_rx) = tokio::sync::watch::channel(0u64);
    let (shut_down_tx, shut_down_rx) = tokio::sync::watch::channel(false);
    let registered_as = options.register.as_ref().map(|r| (r.node_id, r.incarnation));
    let mut published_at = None;
    let mut registering = options.register.take().map(|me| {
        let voters = options.voters.clone();
        tokio::spawn(registration::keep_registered(me, voters, cluster_id, applied_rx, shut_down_rx))
    });
    // Set once `stop` fired: the broker is being fenced (controlled shutdown) until then.
    let mut stopping_by: Option<tokio::time::Instant> = None;

    let (events_tx, mut events) = mpsc::channel::<NetEvent>(4096);
    let accept = match options.listen {
        Some(listen) => {
            let listener =
                TcpListener::bind(listen).await.with_context(|| format!("binding the controller listener {listen}"))?;
            let local = listener.local_addr()?;
            tracing::info!(address = %local, "controller listener up");
            if let Some(ready) = ready {
                let _ = ready.send(local);
            }
            Some(tokio::spawn(net::accept_loop(listener, events_tx.clone())))
        }
        None => None,
    };
    let mut peers: BTreeMap<NodeId, mpsc::Sender<Bytes>> = BTreeMap::new();
    for voter in options.voters.iter().filter(|v| v.id != options.node_id) {
        let (tx, rx) = mpsc::channel(net::QUEUED_FRAMES);
        let address = format!("{}:{}", voter.host, voter.port);
        tokio::spawn(net::peer_link(voter.id, address, rx, events_tx.clone()));
        peers.insert(voter.id, tx);
    }
    let mut conns: BTreeMap<ConnId, mpsc::Sender<Bytes>> = BTreeMap::new();
    let mut last_role = None;
    let mut proposals = options.proposals.take();
    let (disk_ops, ops) = mpsc::unbounded_channel();
    let (done_tx, mut disk_done) = mpsc::unbounded_channel();
    let disk = tokio::spawn(disk_worker(store, ops, done_tx));
    let result = loop {
        drain(&mut member, now(), &disk_ops, &mut conns, &peers);
        member.check_invariants();
        if let Some(observer) = &options.observer {
            observer(&member);
        }
        if let Some(view) = &options.cluster_view {
            publish_view(&member, registered_as, &mut published_at, view);
        }
        applied_tx.send_if_modified(|applied| {
            let now_applied = member.image().applied_end();
            std::mem::replace(applied, now_applied) != now_applied
        });
        let role = (member.node().role(), member.node().epoch(), member.node().leader());
        if last_role != Some(role) {
            tracing::info!(role = ?role.0, epoch = role.1, leader = ?role.2, "metadata quorum: role");
            let node = options.node_id;
            crate::trace::record("quorum", now().wall_ms, &(node, format!("{:?}", role.0), role.1, role.2));
            crate::trace::describe(
                "quorum",
                now().wall_ms,
                || format!("node {node} {:?}", role.0),
                || format!("epoch {} leader {:?}", role.1, role.2),
            );
            last_role = Some(role);
        }
        let deadline = member.next_deadline().map(|d| started + std::time::Duration::from_millis(d));
        let mut finished = false;
        tokio::select! {
            // Fixed order: the simulator replays a seed only if no choice is random.
            biased;
            done = disk_done.recv() => match done {
                Some(Ok(DiskDone::Election)) => member.handle_election_persisted(now()),
                Some(Ok(DiskDone::Synced(through))) => member.handle_synced(now(), through),
                Some(Ok(DiskDone::Snapshot(id))) => member.handle_snapshot_written(now(), id),
                Some(Err(e)) => break Err(e),
                None => break Err(anyhow::anyhow!("the quorum's disk task ended")),
            },
            event = events.recv() => match event.expect("the loop holds a sender") {
                NetEvent::Connected(conn, tx) => { conns.insert(conn, tx); }
                NetEvent::Request(conn, frame) => member.handle_request(now(), conn, frame),
                NetEvent::Closed(conn) => {
                    conns.remove(&conn);
                    member.handle_closed(conn);
                }
                NetEvent::PeerResponse(peer, frame) => {
                    if let Err(e) = member.handle_peer_response(now(), peer, frame) {
                        tracing::debug!(peer, "metadata quorum: dropped an answer: {e}");
                    }
                }
                NetEvent::PeerLost(peer) => member.handle_peer_lost(now(), peer),
            },
            _ = sleep_until(deadline) => member.handle_tick(now()),
            proposal = next_proposal(&mut proposals) => match proposal {
                Some(data) => { let _ = member.propose(now(), data); }
                None => proposals = None,
            },
            _ = wait_for(&mut registering), if stopping_by.is_some() => {
                registering = None;
                finished = true;
            }
            _ = sleep_until(stopping_by), if stopping_by.is_some() => finished = true,
            _ = &mut stop, if stopping_by.is_none() => {
                if registering.as_ref().is_some_and(|r| !r.is_finished()) {
                    // Controlled shutdown: the broker asks the active controller to fence it, so
                    // clients stop being sent here at once rather than when its session ends.
                    // The loop runs on meanwhile, since this node may be that controller.
                    let _ = shut_down_tx.send(true);
                    stopping_by = Some(tokio::time::Instant::now() + CONTROLLED_SHUTDOWN_LIMIT);
                } else {
                    finished = true;
                }
            }
        }
        if finished {
            member.resign(now());
            // Long enough for EndQuorumEpoch to reach the others, short enough not to hold a stop up.
            drain(&mut member, now(), &disk_ops, &mut conns, &peers);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            break Ok(());
        }
    };
    if let Some(accept) = accept {
        accept.abort();
    }
    disk.abort();
    if let Some(registering) = registering {
        registering.abort();
    }
    result
}

/// Sends the broker what the image shows when it changed: the unfenced brokers, the topics
/// (once the image holds this broker's own registration, so it has caught up that far), and
/// where the active controller listens.
fn publish_view(
    member: &QuorumMember,
    registered_as: Option<(NodeId, uuid::Uuid)>,
    published_at: &mut Option<(u64, Option<NodeId>)>,
    view: &tokio::sync::watch::Sender<spool_core::ClusterView>,
) {
    let image = member.image();
    let leader = member.node().leader();
    if *published_at == Some((image.applied_end(), leader)) {
        return;
    }
    *published_at = Some((image.applied_end(), leader));
    let brokers: Vec<(i32, String, i32)> = image
        .brokers()
        .filter(|b| !b.fenced)
        .filter_map(|b| b.endpoints.first().map(|e| (b.id, e.host.clone(), e.port as i32)))
        .collect();
    let caught_up =
        registered_as.is_some_and(|(id, incarnation)| image.broker(id).is_some_and(|b| b.incarnation == incarnation));
    let topics = caught_up.then(|| std::sync::Arc::new(topic_views(image)));
    let broker_epoch = registered_as.and_then(|(id, _)| image.broker(id)).filter(|_| caught_up).map(|b| b.epoch);
    let controller =
        leader.and_then(|id| member.config().voters.iter().find(|v| v.id == id)).map(|v| (v.host.clone(), v.port));
    let cluster_id = Some(member.config().cluster_id.clone());
    let registered: Vec<i32> = image.brokers().map(|b| b.id).collect();
    view.send_if_modified(|current| {
        let same_topics = match (&current.topics, &topics) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            // Once known, topics stay known (a re-registration does not hide them).
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if current.brokers == brokers
            && current.registered == registered
            && current.cluster_id == cluster_id
            && current.controller == controller
            && current.broker_epoch == broker_epoch
            && same_topics
        {
            return false;
        }
        current.brokers = brokers;
        current.registered = registered;
        current.cluster_id = cluster_id;
        current.controller = controller;
        current.broker_epoch = broker_epoch;
        if topics.is_some() {
            current.topics = topics;
        }
        true
    });
}

/// The image's topics as the broker reads them.
fn topic_views(
    image: &spool_core::metadata::MetadataImage,
) -> std::collections::BTreeMap<String, spool_core::TopicView> {
    use spool_core::metadata::ConfigResource;
    image
        .topics()
        .map(|t| {
            let partitions = t
                .partitions
                .values()
                .map(|p| spool_core::PartitionView {
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                })
                .collect();
            let configs = image.configs(&ConfigResource::Topic(t.name.clone())).cloned().unwrap_or_default();
            (t.name.clone(), spool_core::TopicView { id: t.id, partitions, configs })
        })
        .collect()
}

/// The task's end, or never when there is none.
async fn wait_for(task: &mut Option<tokio::task::JoinHandle<()>>) {
    match task {
        Some(task) => {
            let _ = task.await;
        }
        None => std::future::pending().await,
    }
}

/// A disk operation the node asked for, and what its completion tells the node.
enum DiskOp {
    Election(ElectionState),
    Append(Vec<Entry>),
    Truncate(u64),
    Sync(u64),
    Snapshot(SnapshotId, Bytes, bool),
}

enum DiskDone {
    Election,
    Synced(u64),
    Snapshot(SnapshotId),
}

/// Carries out disk operations one at a time, in order, reporting those the node waits for. A
/// failure ends it: the loop stops the quorum.
async fn disk_worker<D: QuorumDisk>(
    mut disk: D,
    mut ops: mpsc::UnboundedReceiver<DiskOp>,
    done: mpsc::UnboundedSender<Result<DiskDone>>,
) {
    while let Some(op) = ops.recv().await {
        let kind = match &op {
            DiskOp::Election(_) => DiskOpKind::Election,
            DiskOp::Append(_) => DiskOpKind::Append,
            DiskOp::Truncate(_) => DiskOpKind::Truncate,
            DiskOp::Sync(_) => DiskOpKind::Sync,
            DiskOp::Snapshot(..) => DiskOpKind::Snapshot,
        };
        let latency = disk.latency(kind);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let result = match op {
            DiskOp::Election(state) => disk
                .persist_election(&state)
                .context("persisting the quorum's election state")
                .map(|()| Some(DiskDone::Election)),
            DiskOp::Append(entries) => disk.append(&entries).context("appending to the metadata log").map(|()| None),
            DiskOp::Truncate(end) => disk.truncate(end).context("truncating the metadata log").map(|()| None),
            DiskOp::Sync(through) => {
                disk.sync().context("syncing the metadata log").map(|()| Some(DiskDone::Synced(through)))
            }
            DiskOp::Snapshot(id, data, replaces_log) => disk
                .write_snapshot(id, &data, replaces_log)
                .context("writing a metadata snapshot")
                .map(|()| Some(DiskDone::Snapshot(id))),
        };
        match result {
            Ok(None) => {}
            Ok(Some(completion)) => {
                let _ = done.send(Ok(completion));
            }
            Err(e) => {
                let _ = done.send(Err(e));
                return;
            }
        }
    }
}

async fn next_proposal(proposals: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match proposals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Carries out the member's actions in order; storage goes to the disk task, in order.
fn drain(
    member: &mut QuorumMember,
    now: Now,
    disk: &mpsc::UnboundedSender<DiskOp>,
    conns: &mut BTreeMap<ConnId, mpsc::Sender<Bytes>>,
    peers: &BTreeMap<NodeId, mpsc::Sender<Bytes>>,
) {
    while let Some(action) = member.poll_action() {
        let op = match action {
            QuorumAction::Respond { conn, frame } => {
                if let Some(tx) = conns.get(&conn) {
                    if tx.try_send(frame).is_err() {
                        // A reader this slow is dropped, as the broker drops one.
                        conns.remove(&conn);
                        member.handle_closed(conn);
                    }
                }
                continue;
            }
            QuorumAction::Close { conn, reason } => {
                tracing::info!(conn, "controller listener: closing a connection: {reason}");
                conns.remove(&conn);
                member.handle_closed(conn);
                continue;
            }
            QuorumAction::SendToPeer { peer, frame } => {
                let sent = peers.get(&peer).is_some_and(|tx| tx.try_send(frame).is_ok());
                if !sent {
                    member.handle_peer_lost(now, peer);
                }
                continue;
            }
            QuorumAction::Storage(RaftAction::PersistElection(state)) => DiskOp::Election(state),
            QuorumAction::Storage(RaftAction::Append(entries)) => DiskOp::Append(entries),
            QuorumAction::Storage(RaftAction::Truncate { end }) => DiskOp::Truncate(end),
            QuorumAction::Storage(RaftAction::Sync { through }) => DiskOp::Sync(through),
            QuorumAction::Storage(RaftAction::WriteSnapshot { id, data, replaces_log }) => {
                DiskOp::Snapshot(id, data, replaces_log)
            }
            QuorumAction::Storage(RaftAction::Send { .. }) => unreachable!("the member frames every message"),
        };
        // The disk task outlives the loop's use of it; a send fails only after it failed, and
        // the loop hears that from its completions.
        let _ = disk.send(op);
    }
}
