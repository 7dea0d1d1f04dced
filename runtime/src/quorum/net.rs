//! The quorum's connections: the controller listener (requests in, answers out, in order) and one
//! link to each other voter (requests out, answers in). Tasks here only frame bytes; the loop in
//! `mod.rs` owns the member.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spool_core::raft::NodeId;
use spool_core::ConnId;
use tokio::io::ReadHalf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The largest frame taken from a peer or a tool: quorum requests are small, and a snapshot
/// chunk or a fetch answer is bounded by the node's own limits well below this.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Frames queued for one connection; past it the connection is dropped (requests to a peer are
/// dropped instead, and the node retries them).
pub const QUEUED_FRAMES: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Inbound connections open at once on the controller listener: the other voters, the brokers
/// and a few tools need far fewer; past it new ones are closed at once.
pub const MAX_CONTROLLER_CONNECTIONS: usize = 256;
/// An inbound connection that sends no request for this long is closed, so idle or stalled
/// connections cannot hold the listener's slots (voters fetch at least every half second).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub enum NetEvent {
    Connected(ConnId, mpsc::Sender<Bytes>),
    Request(ConnId, Bytes),
    Closed(ConnId),
    PeerResponse(NodeId, Bytes),
    PeerLost(NodeId),
}

async fn read_frame(reader: &mut ReadHalf<TcpStream>) -> std::io::Result<Bytes> {
    let size = reader.read_i32().await?;
    if size < 0 || size as usize > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {size} bytes")));
    }
    let mut frame = BytesMut::zeroed(size as usize);
    reader.read_exact(&mut frame).await?;
    Ok(frame.freeze())
}

pub async fn accept_loop(listener: TcpListener, events: mpsc::Sender<NetEvent>) {
    let mut next_conn: ConnId = 0;
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONTROLLER_CONNECTIONS));
    let mut refused = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("controller listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "controller listener: {MAX_CONTROLLER_CONNECTIONS} connections open; refusing");
            }
            drop(stream);
            continue;
        };
        next_conn += 1;
        let conn = next_conn;
        let _ = stream.set_nodelay(true);
        tracing::debug!(conn, %peer, "controller connection accepted");
        let events = events.clone();
        tokio::spawn(async move {
            serve_connection(conn, stream, events).await;
            drop(slot);
        });
    }
}

async fn serve_connection(conn: ConnId, stream: TcpStream, events: mpsc::Sender<NetEvent>) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (answers_tx, mut answers) = mpsc::channel::<Bytes>(QUEUED_FRAMES);
    if events.send(NetEvent::Connected(conn, answers_tx)).await.is_err() {
        return;
    }
    let write = async move {
        while let Some(frame) = answers.recv().await {
            // Flushed each time: a buffered stream (madsim's) sends nothing until then.
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    };
    let events_in = events.clone();
    let read = async move {
        while let Ok(Ok(frame)) = tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut reader)).await {
            if events_in.send(NetEvent::Request(conn, frame)).await.is_err() {
                break;
            }
        }
    };
    // Either side ending ends the connection (the loop closes it by dropping its sender).
    tokio::select! {
        // Fixed order: the simulator replays a seed only if no choice is random.
        biased;
        _ = write => {}
        _ = read => {}
    }
    let _ = events.send(NetEvent::Closed(conn)).await;
}

/// Sends what the loop queues for `peer`, connecting when there is something to send; answers
/// go back as `PeerResponse`, a broken connection as `PeerLost` (and the queue is dropped).
pub async fn peer_link(
    peer: NodeId,
    address: String,
    mut frames: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<NetEvent>,
) {
    let mut failures = 0u32;
    while let Some(first) = frames.recv().await {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address.as_str())).await;
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::info!(peer, %address, failures, "cannot reach a voter: {e}");
                }
                lost(peer, &mut frames, &events).await;
                continue;
            }
            Err(_) => {
                lost(peer, &mut frames, &events).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(peer, %address, "reached the voter again");
        }
        failures = 0;
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let events_in = events.clone();
        let mut read = tokio::spawn(async move {
            while let Ok(frame) = read_frame(&mut reader).await {
                if events_in.send(NetEvent::PeerResponse(peer, frame)).await.is_err() {
                    break;
                }
            }
        });
        let mut next = Some(first);
        loop {
            if let Some(frame) = next.take() {
                if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            tokio::select! {
                // Fixed order: the simulator replays a seed only if no choice is random.
                biased;
                frame = frames.recv() => match frame {
                    Some(frame) => next = Some(frame),
                    None => { read.abort(); return; }
                },
                _ = &mut read => break,
            }
        }
        read.abort();
        lost(peer, &mut frames, &events).await;
    }
}

/// Drops what was queued for a peer we cannot reach, after a pause so that a node whose peer is
/// down does not spin, and then tells the loop: whatever it sends after hearing is sent.
async fn lost(peer: NodeId, frames: &mut mpsc::Receiver<Bytes>, events: &mpsc::Sender<NetEvent>) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    while frames.try_recv().is_ok() {}
    let _ = events.send(NetEvent::PeerLost(peer)).await;
}
