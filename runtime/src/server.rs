//! The event loop: one task owns the broker state machine and feeds it connection frames,
//! storage completions and time; connection tasks only frame bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use spool_core::config::BrokerConfig;
use spool_core::storage::Completion;
use spool_core::{Action, Broker, ClusterView, ConnId, Peer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::connection::{self, ConnContext, ConnCounts, ConnHandle, ConnSlot};
use crate::limits::ConnectionLimits;
use crate::storage::Storage;
use crate::trace;

/// Inputs to the event loop from connection tasks.
pub(crate) enum Event {
    Connected(ConnId, ConnHandle, String),
    /// A request frame and the share of the request budget it holds until handled.
    Frame(ConnId, Bytes, Option<OwnedSemaphorePermit>),
    Disconnected(ConnId),
}

pub struct ServerOptions {
    pub listen: SocketAddr,
    pub broker: BrokerConfig,
    pub limits: ConnectionLimits,
    /// Network faults to inject on connections; `None` in production, drawn by the simulator.
    pub conn_faults: Option<ConnFaults>,
    /// How long each turn of the event loop takes. `None` in production, where turns take real
    /// time; the simulator sets it so requests arrive while a turn is busy, as under load.
    pub turn_time: Option<TurnTime>,
    /// How long a stopping broker may take to finish in-flight work and sync; past it, it stops
    /// without the clean-shutdown marker (a stuck disk must not keep it alive).
    pub shutdown_limit: Duration,
    /// The brokers the metadata quorum registered, for a node in one.
    pub cluster_view: Option<tokio::sync::watch::Receiver<ClusterView>>,
    /// Shown the broker after every turn of the event loop, with how many times it was replaced
    /// in place; `None` in production, the simulator's checkers look through it.
    pub observer: Option<BrokerObserver>,
}

/// Looks at a broker between turns (the simulator's per-event checks).
pub type BrokerObserver = Arc<dyn Fn(&Broker, u64) + Send + Sync>;

/// How long a stopping broker may take to finish in-flight work and sync, by default.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// Asked once per turn of the event loop.
pub type TurnTime = std::sync::Arc<dyn Fn() -> Duration + Send + Sync>;

impl ServerOptions {
    pub fn new(listen: SocketAddr, broker: BrokerConfig) -> Self {
        let limits = ConnectionLimits { max_request_bytes: broker.max_request_bytes, ..ConnectionLimits::default() };
        ServerOptions {
            listen,
            broker,
            limits,
            conn_faults: None,
            turn_time: None,
            shutdown_limit: SHUTDOWN_LIMIT,
            cluster_view: None,
            observer: None,
        }
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

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Why a broker in a cluster stopped: its node must restart (a partition went offline), as a
/// new incarnation. `spool serve` exits for its supervisor to start it again.
#[derive(Debug)]
pub struct RestartNode(pub String);

impl std::fmt::Display for RestartNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the node must restart: {}", self.0)
    }
}

impl std::error::Error for RestartNode {}

/// Runs a broker until `shutdown` fires, then shuts down cleanly.
pub async fn serve<S: Storage>(
    options: ServerOptions,
    storage: S,
    shutdown: oneshot::Receiver<()>,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    let (loaded, storage) = load(storage, &options.broker).await?;
    // Listen only once the data is loaded: an accepted connection means a ready broker.
    let listener = TcpListener::bind(options.listen).await.with_context(|| format!("binding {}", options.listen))?;
    let local = listener.local_addr()?;
    let mut limits = options.limits;
    limits.max_request_bytes = limits.max_request_bytes.min(limits.max_buffered_request_bytes);
    let mut config = options.broker;
    // Listening on port 0: advertise the port actually bound.
    if config.advertised_port == 0 {
        config.advertised_port = local.port() as i32;
    }
    let mut broker = Broker::new(config.clone(), loaded, now_ms());
    // A node in a quorum takes its topics from the controller from the first request on.
    if let Some(view) = &options.cluster_view {
        broker.handle_cluster_view(now_ms(), view.borrow().clone());
    }
    tracing::info!(address = %local, cluster = broker.cluster_id(), "spool broker listening");
    if let Some(ready) = ready {
        let _ = ready.send(local);
    }
    let (events_tx, events_rx) = mpsc::channel::<Event>(4096);
    let cx = ConnContext {
        events: events_tx,
        request_budget: Arc::new(Semaphore::new(limits.max_buffered_request_bytes)),
        limits: Arc::new(limits),
        faults: options.conn_faults,
    };
    let accept = tokio::spawn(accept_loop(listener, cx));
    let timing = Timing {
        turn_time: options.turn_time,
        shutdown_limit: options.shutdown_limit,
        cluster_view: options.cluster_view,
        observer: options.observer,
    };
    let result = event_loop(Running { broker, storage, config }, events_rx, shutdown, timing).await;
    accept.abort();
    // Gone before returning, with its listener: a node restarted in process binds it again.
    let _ = accept.await;
    result
}

/// Reads the data directory and runs recovery: off the event loop in production, inline in
/// simulation.
async fn load<S: Storage>(mut storage: S, config: &BrokerConfig) -> Result<(spool_core::LoadedState, S)> {
    let interval = config.topic_defaults.index_interval_bytes as u64;
    let node_id = config.node_id;
    #[cfg(not(madsim))]
    let loaded = tokio::task::spawn_blocking(move || storage.load(node_id, interval).map(|l| (l, storage))).await??;
    #[cfg(madsim)]
    let loaded = (storage.load(node_id, interval)?, storage);
    Ok(loaded)
}

/// The broker, its disk, and what it was built from, so it can be built again in place.
struct Running<S> {
    broker: Broker,
    storage: S,
    config: BrokerConfig,
}

/// How the loop paces itself (simulated turn costs, the bound on a stop), and what else it
/// listens to.
struct Timing {
    turn_time: Option<TurnTime>,
    shutdown_limit: Duration,
    cluster_view: Option<tokio::sync::watch::Receiver<ClusterView>>,
    observer: Option<BrokerObserver>,
}

/// Where forwarded admin requests go, and where their answers come back.
struct Forwarder {
    answers: mpsc::UnboundedSender<Forwarded>,
    /// The active controller's listener, as the latest view names it.
    controller: Option<(String, u16)>,
    /// Each unfenced broker's client listener, as the latest view names it.
    brokers: HashMap<i32, (String, u16)>,
    links: crate::peers::PeerLinks,
    /// Bumped when the broker is replaced in place: its forwards' answers are dropped.
    generation: u64,
}

/// A forwarded request's answer, for the broker of that generation.
struct Forwarded {
    generation: u64,
    id: u64,
    answer: Result<Bytes, String>,
}

/// (host, port) of each broker's client listener in the view.
fn broker_addresses(view: &ClusterView) -> HashMap<i32, (String, u16)> {
    view.brokers.iter().filter_map(|(id, host, port)| Some((*id, (host.clone(), u16::try_from(*port).ok()?)))).collect()
}

/// What draining the broker's actions ended with.
enum Drained {
    More,
    ShutdownComplete,
    Restart(String),
}

async fn accept_loop(listener: TcpListener, cx: ConnContext) {
    let mut next_conn: ConnId = 0;
    let counts = Arc::new(Mutex::new(ConnCounts::default()));
    let mut refused: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let slot = match ConnSlot::take(&counts, peer.ip(), &cx.limits) {
                    Ok(slot) => slot,
                    Err(why) => {
                        // One line per power of two refusals: a flood does not flood the log.
                        refused += 1;
                        if refused.is_power_of_two() {
                            tracing::warn!(%peer, refused, "refusing a connection: {why}");
                        }
                        drop(stream);
                        continue;
                    }
                };
                next_conn += 1;
                let conn = next_conn;
                let _ = stream.set_nodelay(true);
                tracing::debug!(conn, %peer, "connection accepted");
                tokio::spawn(connection::run(conn, stream, cx.clone(), slot));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn event_loop<S: Storage>(
    running: Running<S>,
    mut events: mpsc::Receiver<Event>,
    mut shutdown: oneshot::Receiver<()>,
    timing: Timing,
) -> Result<()> {
    let Running { mut broker, mut storage, mut config } = running;
    let Timing { turn_time, shutdown_limit, mut cluster_view, observer } = timing;
    let mut replaced = 0u64;
    let (completions_tx, mut completions) = mpsc::unbounded_channel::<Completion>();
    let (forwarded_tx, mut forwarded) = mpsc::unbounded_channel::<Forwarded>();
    let mut forwarder = Forwarder {
        answers: forwarded_tx,
        controller: cluster_view.as_ref().and_then(|v| v.borrow().controller.clone()),
        brokers: cluster_view.as_ref().map(|v| broker_addresses(&v.borrow())).unwrap_or_default(),
        links: crate::peers::PeerLinks::default(),
        generation: 0,
    };
    let mut writers: BTreeMap<ConnId, ConnHandle> = BTreeMap::new();
    // Connections of a broker replaced in place: what they still send is dropped.
    let mut retired: BTreeSet<ConnId> = BTreeSet::new();
    let mut shutting_down = false;
    // Set at SIGTERM: past it the broker stops without its clean-shutdown marker (a stuck disk
    // must not keep a stopping broker alive; the next start recovers as after a crash).
    let mut give_up_at: Option<tokio::time::Instant> = None;
    loop {
        match drain_actions(&mut broker, &mut storage, &completions_tx, &mut writers, &mut forwarder) {
            Drained::More => {}
            Drained::ShutdownComplete => {
                storage.mark_clean_shutdown()?;
                tracing::info!("clean shutdown complete");
                return Ok(());
            }
            Drained::Restart(_) if shutting_down => {
                tracing::warn!("stopping without the clean-shutdown marker: a partition was offline");
                return Ok(());
            }
            Drained::Restart(reason) if cluster_view.is_some() => {
                // In a cluster the node restarts whole (as Kafka halts on a failed log
                // directory): it comes back as a new incarnation, so the controller moves its
                // leaderships on to a new epoch; reloaded in place, it would lead on in its old
                // epoch over a log the crash may have changed.
                for handle in writers.values() {
                    handle.close();
                }
                return Err(anyhow::Error::new(RestartNode(reason)));
            }
            Drained::Restart(reason) => {
                tracing::warn!("restarting the broker in place: {reason}");
                for (conn, handle) in std::mem::take(&mut writers) {
                    handle.close();
                    retired.insert(conn);
                }
                let (loaded, reloaded) = load(storage, &config).await?;
                storage = reloaded;
                // Each restart in a row waits twice as long before the next, up to a bound.
                config.offline_restart_after_ms =
                    (config.offline_restart_after_ms * 2).min(config.offline_restart_max_ms);
                broker = Broker::new(config.clone(), loaded, now_ms());
                replaced += 1;
                // Answers to the old broker's forwards are dropped.
                forwarder.generation += 1;
                if let Some(view) = &cluster_view {
                    broker.handle_cluster_view(now_ms(), view.borrow().clone());
                }
                continue;
            }
        }
        if let Some(observe) = &observer {
            observe(&broker, replaced);
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
                handle_event(&mut broker, &mut writers, &mut retired, event);
                // Take what else is queued so its writes share one group commit.
                for _ in 0..256 {
                    match events.try_recv() {
                        Ok(event) => handle_event(&mut broker, &mut writers, &mut retired, event),
                        Err(_) => break,
                    }
                }
            }
            Some(view) = next_view(&mut cluster_view) => {
                trace::record("cluster", now_ms(), &view.brokers);
                forwarder.controller = view.controller.clone();
                forwarder.brokers = broker_addresses(&view);
                broker.handle_cluster_view(now_ms(), view);
            }
            Some(Forwarded { generation, id, answer }) = forwarded.recv() => {
                if generation == forwarder.generation {
                    trace::record("forwarded", now_ms(), &id);
                    broker.handle_forwarded(now_ms(), id, answer);
                }
            }
            _ = &mut shutdown, if !shutting_down => {
                tracing::info!("shutting down: finishing in-flight requests and syncing");
                shutting_down = true;
                give_up_at = Some(tokio::time::Instant::now() + shutdown_limit);
                broker.handle_shutdown();
            }
            _ = async { tokio::time::sleep_until(give_up_at.expect("set")).await }, if give_up_at.is_some() => {
                tracing::error!(
                    "shutdown did not finish within {shutdown_limit:?} (is the disk full or stuck?); stopping without \
                     the clean-shutdown marker: the next start recovers as after a crash"
                );
                return Ok(());
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

/// The quorum's next view of the cluster; never, without a quorum (or once it is gone).
async fn next_view(view: &mut Option<tokio::sync::watch::Receiver<ClusterView>>) -> Option<ClusterView> {
    match view {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => {
                *view = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn handle_event(
    broker: &mut Broker,
    writers: &mut BTreeMap<ConnId, ConnHandle>,
    retired: &mut BTreeSet<ConnId>,
    event: Event,
) {
    match event {
        Event::Frame(conn, ..) if retired.contains(&conn) => {}
        Event::Disconnected(conn) if retired.remove(&conn) => {}
        Event::Connected(conn, handle, peer) => {
            writers.insert(conn, handle);
            let now = now_ms();
            trace::record("connect", now, &(conn, &peer));
            broker.handle_connect_from(conn, &peer);
            trace::describe("connect", now, || format!("conn={conn} from {peer}"), || broker.summary());
        }
        Event::Frame(conn, frame, budget) => {
            let now = now_ms();
            trace::record("frame", now, &(conn, &frame));
            let detail = if trace::verbose() { frame_detail(conn, &frame) } else { String::new() };
            broker.handle_frame(now, conn, frame);
            drop(budget);
            if let Some(handle) = writers.get(&conn) {
                handle.set_in_flight(broker.unanswered_requests(conn));
            }
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

/// Carries out every queued action, up to a finished shutdown or a restart.
fn drain_actions<S: Storage>(
    broker: &mut Broker,
    storage: &mut S,
    completions: &mpsc::UnboundedSender<Completion>,
    writers: &mut BTreeMap<ConnId, ConnHandle>,
    forwarder: &mut Forwarder,
) -> Drained {
    let mut done = Drained::More;
    let mut answered = BTreeSet::new();
    loop {
        let Some(action) = broker.poll_action() else {
            for conn in answered {
                if let Some(handle) = writers.get(&conn) {
                    handle.set_in_flight(broker.unanswered_requests(conn));
                }
            }
            return done;
        };
        trace::record("action", now_ms(), &action);
        match action {
            Action::Send { conn, frame } => {
                if let Some(handle) = writers.get(&conn) {
                    handle.send(frame);
                    answered.insert(conn);
                }
            }
            Action::Close { conn, .. } => {
                if let Some(handle) = writers.remove(&conn) {
                    handle.close();
                }
            }
            Action::Storage(op) => {
                if let Some(completion) = storage.execute(op, completions) {
                    let now = now_ms();
                    trace::record("completion", now, &completion);
                    broker.handle_completion(now, completion);
                }
            }
            Action::Forward { id, to: Peer::Controller, frame } => {
                let (answers, controller, generation) =
                    (forwarder.answers.clone(), forwarder.controller.clone(), forwarder.generation);
                tokio::spawn(async move {
                    let answer = crate::forward::forward(frame, controller).await;
                    let _ = answers.send(Forwarded { generation, id, answer });
                });
            }
            Action::Forward { id, to: Peer::Broker(peer), frame } => {
                let (answers, generation) = (forwarder.answers.clone(), forwarder.generation);
                let reply = move |answer| {
                    let _ = answers.send(Forwarded { generation, id, answer });
                };
                match forwarder.brokers.get(&peer).cloned() {
                    Some(address) => forwarder.links.send(peer, address, frame, reply),
                    None => reply(Err(format!("broker {peer} is not in the cluster view"))),
                }
            }
            Action::ShutdownComplete => done = Drained::ShutdownComplete,
            Action::Restart { reason } => done = Drained::Restart(reason),
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
