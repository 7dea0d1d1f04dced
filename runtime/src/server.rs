//! The event loop: one task owns the broker state machine and feeds it connection frames,
//! storage completions and time; connection tasks only frame bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use spool_core::config::BrokerConfig;
use spool_core::storage::Completion;
use spool_core::{Action, Broker, ConnId};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::storage::Storage;
use crate::trace;

/// Inputs to the event loop from connection tasks.
enum Event {
    Connected(ConnId, mpsc::UnboundedSender<Bytes>, String),
    Frame(ConnId, Bytes),
    Disconnected(ConnId),
}

pub struct ServerOptions {
    pub listen: SocketAddr,
    pub broker: BrokerConfig,
    /// Network faults to inject on connections; `None` in production, drawn by the simulator.
    pub conn_faults: Option<ConnFaults>,
    /// How long each turn of the event loop takes. `None` in production, where turns take real
    /// time; the simulator sets it so requests arrive while a turn is busy, as under load.
    pub turn_time: Option<TurnTime>,
}

/// Asked once per turn of the event loop.
pub type TurnTime = std::sync::Arc<dyn Fn() -> Duration + Send + Sync>;

impl ServerOptions {
    pub fn new(listen: SocketAddr, broker: BrokerConfig) -> Self {
        ServerOptions { listen, broker, conn_faults: None, turn_time: None }
    }
}

/// What happens to a connection when a request frame arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnFault {
    /// Deliver the frame.
    None,
    /// Drop the connection at once, losing any response not yet written; with `deliver` the
    /// frame reaches the broker first (the request is carried out, its answer is lost).
    Reset { deliver: bool },
    /// Go silent without closing: read nothing more and write nothing, as a peer behind a dead
    /// route would look (a half-open connection), until `HALF_OPEN_FOR` has passed.
    HalfOpen,
}

/// Asked once per request frame.
pub type ConnFaults = std::sync::Arc<dyn Fn() -> ConnFault + Send + Sync>;

/// How long a half-open connection lingers before the broker notices and drops it.
const HALF_OPEN_FOR: Duration = Duration::from_secs(120);

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs a broker until `shutdown` fires, then shuts down cleanly.
pub async fn serve<S: Storage>(
    options: ServerOptions,
    storage: S,
    shutdown: oneshot::Receiver<()>,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    let interval = options.broker.topic_defaults.index_interval_bytes as u64;
    let node_id = options.broker.node_id;
    let mut storage = storage;
    // Loading reads whole files: off the event loop in production, inline in simulation.
    #[cfg(not(madsim))]
    let (loaded, storage) =
        tokio::task::spawn_blocking(move || storage.load(node_id, interval).map(|l| (l, storage))).await??;
    #[cfg(madsim)]
    let loaded = storage.load(node_id, interval)?;
    // Listen only once the data is loaded: an accepted connection means a ready broker.
    let listener = TcpListener::bind(options.listen).await.with_context(|| format!("binding {}", options.listen))?;
    let local = listener.local_addr()?;
    let max_frame = options.broker.max_request_bytes;
    let mut config = options.broker;
    // Listening on port 0: advertise the port actually bound.
    if config.advertised_port == 0 {
        config.advertised_port = local.port() as i32;
    }
    let broker = Broker::new(config, loaded, now_ms());
    tracing::info!(address = %local, cluster = broker.cluster_id(), "spool broker listening");
    if let Some(ready) = ready {
        let _ = ready.send(local);
    }
    let (events_tx, events_rx) = mpsc::channel::<Event>(4096);
    let accept = tokio::spawn(accept_loop(listener, events_tx, max_frame, options.conn_faults));
    let result = event_loop(broker, storage, events_rx, shutdown, options.turn_time).await;
    accept.abort();
    result
}

async fn accept_loop(listener: TcpListener, events: mpsc::Sender<Event>, max_frame: usize, faults: Option<ConnFaults>) {
    let mut next_conn: ConnId = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                next_conn += 1;
                let conn = next_conn;
                let _ = stream.set_nodelay(true);
                tracing::debug!(conn, %peer, "connection accepted");
                tokio::spawn(connection(conn, stream, events.clone(), max_frame, faults.clone()));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads size-prefixed frames into the event loop; writes responses back in the order given.
async fn connection(
    conn: ConnId,
    stream: TcpStream,
    events: mpsc::Sender<Event>,
    max_frame: usize,
    faults: Option<ConnFaults>,
) {
    let peer = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let (mut reader, writer) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
    if events.send(Event::Connected(conn, out_tx, peer)).await.is_err() {
        return;
    }
    let write_task = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            // Coalesce whatever else is ready before flushing.
            while let Ok(more) = out_rx.try_recv() {
                if writer.write_all(&more).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    while let Ok(size) = reader.read_i32().await {
        if size < 0 || size as usize > max_frame {
            tracing::warn!(conn, size, max_frame, "closing connection: request frame size out of range");
            break;
        }
        let mut frame = BytesMut::zeroed(size as usize);
        if reader.read_exact(&mut frame).await.is_err() {
            break;
        }
        match faults.as_ref().map_or(ConnFault::None, |f| f()) {
            ConnFault::None => {}
            ConnFault::Reset { deliver } => {
                tracing::debug!(conn, deliver, "injected fault: connection reset");
                if deliver {
                    let _ = events.send(Event::Frame(conn, frame.freeze())).await;
                }
                write_task.abort();
                let _ = events.send(Event::Disconnected(conn)).await;
                return;
            }
            ConnFault::HalfOpen => {
                tracing::debug!(conn, "injected fault: connection half-open");
                write_task.abort();
                tokio::time::sleep(HALF_OPEN_FOR).await;
                let _ = events.send(Event::Disconnected(conn)).await;
                return;
            }
        }
        if events.send(Event::Frame(conn, frame.freeze())).await.is_err() {
            break;
        }
    }
    let _ = events.send(Event::Disconnected(conn)).await;
    // Let queued responses drain; the loop drops our sender when it is done with us.
    let _ = write_task.await;
}

async fn event_loop<S: Storage>(
    mut broker: Broker,
    mut storage: S,
    mut events: mpsc::Receiver<Event>,
    mut shutdown: oneshot::Receiver<()>,
    turn_time: Option<TurnTime>,
) -> Result<()> {
    let (completions_tx, mut completions) = mpsc::unbounded_channel::<Completion>();
    let mut writers: HashMap<ConnId, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    let mut shutting_down = false;
    loop {
        if drain_actions(&mut broker, &mut storage, &completions_tx, &mut writers) {
            storage.mark_clean_shutdown()?;
            tracing::info!("clean shutdown complete");
            return Ok(());
        }
        if let Some(busy) = turn_time.as_ref().map(|f| f()).filter(|d| !d.is_zero()) {
            tokio::time::sleep(busy).await;
        }
        let deadline = broker.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(c) = completions.recv() => {
                let now = now_ms();
                trace::record("completion", now, &c);
                let detail = if trace::verbose() { completion_detail(&c) } else { String::new() };
                broker.handle_completion(now, c);
                trace::describe("completion", now, || detail, || broker.summary());
            }
            Some(event) = events.recv() => {
                handle_event(&mut broker, &mut writers, event);
                // Take what else is queued so its writes share one group commit.
                for _ in 0..256 {
                    match events.try_recv() {
                        Ok(event) => handle_event(&mut broker, &mut writers, event),
                        Err(_) => break,
                    }
                }
            }
            _ = &mut shutdown, if !shutting_down => {
                tracing::info!("shutting down: finishing in-flight requests and syncing");
                shutting_down = true;
                broker.handle_shutdown();
            }
            _ = sleep => {
                let now = now_ms();
                trace::record("tick", now, &());
                broker.handle_tick(now);
                trace::describe("tick", now, String::new, || broker.summary());
            }
        }
    }
}

fn handle_event(broker: &mut Broker, writers: &mut HashMap<ConnId, mpsc::UnboundedSender<Bytes>>, event: Event) {
    match event {
        Event::Connected(conn, tx, peer) => {
            writers.insert(conn, tx);
            let now = now_ms();
            trace::record("connect", now, &(conn, &peer));
            broker.handle_connect_from(conn, &peer);
            trace::describe("connect", now, || format!("conn={conn} from {peer}"), || broker.summary());
        }
        Event::Frame(conn, frame) => {
            let now = now_ms();
            trace::record("frame", now, &(conn, &frame));
            let detail = if trace::verbose() { frame_detail(conn, &frame) } else { String::new() };
            broker.handle_frame(now, conn, frame);
            trace::describe("request", now, || detail, || broker.summary());
        }
        Event::Disconnected(conn) => {
            writers.remove(&conn);
            let now = now_ms();
            trace::record("disconnect", now, &conn);
            broker.handle_disconnect(conn);
            trace::describe("disconnect", now, || format!("conn={conn}"), || broker.summary());
        }
    }
}

/// Carries out every queued action. Returns true once the broker reports a finished shutdown.
fn drain_actions<S: Storage>(
    broker: &mut Broker,
    storage: &mut S,
    completions: &mpsc::UnboundedSender<Completion>,
    writers: &mut HashMap<ConnId, mpsc::UnboundedSender<Bytes>>,
) -> bool {
    let mut done = false;
    loop {
        let Some(action) = broker.poll_action() else {
            return done;
        };
        trace::record("action", now_ms(), &action);
        match action {
            Action::Send { conn, frame } => {
                if let Some(w) = writers.get(&conn) {
                    let _ = w.send(frame);
                }
            }
            Action::Close { conn, .. } => {
                writers.remove(&conn);
            }
            Action::Storage(op) => {
                if let Some(completion) = storage.execute(op, completions) {
                    let now = now_ms();
                    trace::record("completion", now, &completion);
                    broker.handle_completion(now, completion);
                }
            }
            Action::ShutdownComplete => done = true,
        }
    }
}

/// `conn=3 Produce v9 #17` for a verbose trace line.
fn frame_detail(conn: ConnId, frame: &[u8]) -> String {
    let field = |at: usize| frame.get(at..at + 2).map_or(-1, |b| i16::from_be_bytes([b[0], b[1]]));
    let key = field(0);
    let name =
        kafka_protocol::messages::ApiKey::try_from(key).map_or_else(|_| format!("key{key}"), |k| format!("{k:?}"));
    let correlation = frame.get(4..8).map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    format!("conn={conn} {name} v{} #{correlation}", field(2))
}

fn completion_detail(c: &Completion) -> String {
    let (what, ok) = match c {
        Completion::Written { result, .. } => ("written", result.is_ok()),
        Completion::Synced { result, .. } => ("synced", result.is_ok()),
        Completion::Read { result, .. } => ("read", result.is_ok()),
        Completion::MetaWritten { result, .. } => ("meta written", result.is_ok()),
    };
    format!("{what} op#{} {}", c.id().0, if ok { "ok" } else { "FAILED" })
}
