//! Runs this node's seat in the metadata quorum: one task owns the `QuorumMember`, feeds it frames
//! from the controller listener and the links to the other voters, ticks it at its deadlines,
//! and writes its files inline (as Kafka's Raft thread does: the metadata log is small).

mod net;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use spool_core::quorum::{Now, QuorumAction, QuorumConfig, QuorumMember, Voter};
use spool_core::raft::{NodeId, RaftAction, RaftConfig, RaftNode};
use spool_core::ConnId;
use std::collections::BTreeMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use net::NetEvent;
use store::QuorumStore;

/// The quorum's directory inside the data directory, named as Kafka names it.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

pub struct QuorumOptions {
    pub node_id: NodeId,
    pub voters: Vec<Voter>,
    /// Where the controller listener binds; None for a node that only observes.
    pub listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

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
pub async fn run(
    options: QuorumOptions,
    ready: Option<oneshot::Sender<SocketAddr>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let dir = options.data_dir.join(METADATA_DIR);
    let (mut store, restored) = QuorumStore::open(&dir)?;
    let ids: Vec<NodeId> = options.voters.iter().map(|v| v.id).collect();
    let started = tokio::time::Instant::now();
    let now = move || Now { monotonic_ms: started.elapsed().as_millis() as u64, wall_ms: crate::server::now_ms() };
    tracing::info!(
        node = options.node_id,
        epoch = restored.election.map_or(0, |e| e.epoch),
        entries = restored.entries.len(),
        "metadata quorum: starting"
    );
    let node = RaftNode::new(RaftConfig::new(options.node_id, ids, rand::random()), restored, now().monotonic_ms);
    let config = QuorumConfig {
        node_id: options.node_id,
        voters: options.voters.clone(),
        cluster_id: cluster_id_of(&options.voters),
    };
    let mut member = QuorumMember::new(config, node);

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
    let result = loop {
        if let Err(e) = drain(&mut member, &mut store, &mut conns, &peers, &now) {
            break Err(e);
        }
        member.check_invariants();
        let role = (member.node().role(), member.node().epoch(), member.node().leader());
        if last_role != Some(role) {
            tracing::info!(role = ?role.0, epoch = role.1, leader = ?role.2, "metadata quorum: role");
            last_role = Some(role);
        }
        let deadline = member.next_deadline().map(|d| started + std::time::Duration::from_millis(d));
        tokio::select! {
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
                NetEvent::PeerLost(peer) => member.handle_peer_lost(peer),
            },
            _ = sleep_until(deadline) => member.handle_tick(now()),
            _ = &mut stop => {
                member.resign(now());
                // Long enough for EndQuorumEpoch to reach the others, short enough not to hold a stop up.
                let _ = drain(&mut member, &mut store, &mut conns, &peers, &now);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                break Ok(());
            }
        }
    };
    if let Some(accept) = accept {
        accept.abort();
    }
    result
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Carries out the member's actions in order; storage completes inline.
fn drain(
    member: &mut QuorumMember,
    store: &mut QuorumStore,
    conns: &mut BTreeMap<ConnId, mpsc::Sender<Bytes>>,
    peers: &BTreeMap<NodeId, mpsc::Sender<Bytes>>,
    now: &impl Fn() -> Now,
) -> Result<()> {
    while let Some(action) = member.poll_action() {
        match action {
            QuorumAction::Respond { conn, frame } => {
                if let Some(tx) = conns.get(&conn) {
                    if tx.try_send(frame).is_err() {
                        // A reader this slow is dropped, as the broker drops one.
                        conns.remove(&conn);
                        member.handle_closed(conn);
                    }
                }
            }
            QuorumAction::Close { conn, reason } => {
                tracing::info!(conn, "controller listener: closing a connection: {reason}");
                conns.remove(&conn);
                member.handle_closed(conn);
            }
            QuorumAction::SendToPeer { peer, frame } => {
                let sent = peers.get(&peer).is_some_and(|tx| tx.try_send(frame).is_ok());
                if !sent {
                    member.handle_peer_lost(peer);
                }
            }
            QuorumAction::Storage(RaftAction::PersistElection(state)) => {
                store.persist_election(&state).context("persisting the quorum's election state")?;
                member.handle_election_persisted(now());
            }
            QuorumAction::Storage(RaftAction::Append(entries)) => {
                store.append(&entries).context("appending to the metadata log")?
            }
            QuorumAction::Storage(RaftAction::Truncate { end }) => {
                store.truncate(end).context("truncating the metadata log")?
            }
            QuorumAction::Storage(RaftAction::Sync { through }) => {
                store.sync().context("syncing the metadata log")?;
                member.handle_synced(now(), through);
            }
            QuorumAction::Storage(RaftAction::WriteSnapshot { id, data, replaces_log }) => {
                store.write_snapshot(id, &data, replaces_log).context("writing a metadata snapshot")?;
                member.handle_snapshot_written(now(), id);
            }
            QuorumAction::Storage(RaftAction::Send { .. }) => unreachable!("the member frames every message"),
        }
    }
    Ok(())
}
