//! One client connection: request frames in, bounded in size, memory and time; answers out in
//! the order the broker gives them; closed whole (both directions) when the broker says so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use spool_core::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use crate::limits::ConnectionLimits;
use crate::server::{ConnFault, ConnFaults, Event};

/// How long a half-open connection lingers before the broker notices and drops it.
const HALF_OPEN_FOR: Duration = Duration::from_secs(120);

/// A frame body is read in steps of at most this, so memory follows the bytes that arrived,
/// not the size a client announced.
const READ_STEP: usize = 64 << 10;

/// Frames up to this size are read without drawing on the request budget.
const SMALL_FRAME: usize = 64 << 10;

/// State the event loop, the reader and the writer of one connection share.
#[derive(Default)]
struct Shared {
    /// Requests read and not yet answered, as the broker counts them.
    in_flight: AtomicUsize,
    /// Answer bytes handed to the writer and not yet written.
    queued_bytes: AtomicUsize,
    /// Signalled when either of the above falls.
    capacity: Notify,
    closed: AtomicBool,
    close: Notify,
}

impl Shared {
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0 || self.queued_bytes.load(Ordering::Relaxed) > 0
    }
}

enum Outbound {
    Frame(Bytes),
    Close,
}

/// The event loop's side of a connection.
pub struct ConnHandle {
    out: mpsc::UnboundedSender<Outbound>,
    shared: Arc<Shared>,
}

impl ConnHandle {
    pub fn send(&self, frame: Bytes) {
        self.shared.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        let _ = self.out.send(Outbound::Frame(frame));
    }

    /// Writes what is queued, then closes both directions: nothing more is read or executed.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.close.notify_one();
        let _ = self.out.send(Outbound::Close);
    }

    /// The broker's count of this connection's unanswered requests, after a turn touched it.
    pub fn set_in_flight(&self, requests: usize) {
        let before = self.shared.in_flight.swap(requests, Ordering::Relaxed);
        if requests < before {
            self.shared.capacity.notify_one();
        }
    }
}

/// Open connections, in total and per address, against their limits.
#[derive(Default)]
pub struct ConnCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Holds one connection's place in [`ConnCounts`] until dropped.
pub struct ConnSlot {
    counts: Arc<Mutex<ConnCounts>>,
    ip: IpAddr,
}

impl ConnSlot {
    /// A place for a connection from `ip`, or why there is none.
    pub fn take(counts: &Arc<Mutex<ConnCounts>>, ip: IpAddr, limits: &ConnectionLimits) -> Result<ConnSlot, String> {
        let mut c = counts.lock().expect("connection counts");
        if c.total >= limits.max_connections {
            return Err(format!("{} connections are open (max.connections)", c.total));
        }
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.max_connections_per_ip {
            return Err(format!("{from_ip} connections are open from {ip} (max.connections.per.ip)"));
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        Ok(ConnSlot { counts: counts.clone(), ip })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("connection counts");
        c.total -= 1;
        let from_ip = c.per_ip.get_mut(&self.ip).expect("counted on take");
        *from_ip -= 1;
        if *from_ip == 0 {
            c.per_ip.remove(&self.ip);
        }
    }
}

/// What every connection task is given.
#[derive(Clone)]
pub(crate) struct ConnContext {
    pub(crate) events: mpsc::Sender<Event>,
    pub limits: Arc<ConnectionLimits>,
    /// Bytes of request frames all connections may buffer (`max_buffered_request_bytes`).
    pub request_budget: Arc<Semaphore>,
    pub faults: Option<ConnFaults>,
}

/// Runs one connection until either side closes it.
pub(crate) async fn run(conn: ConnId, stream: TcpStream, cx: ConnContext, slot: ConnSlot) {
    let peer = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let (mut reader, writer) = tokio::io::split(stream);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    let handle = ConnHandle { out: out_tx, shared: shared.clone() };
    if cx.events.send(Event::Connected(conn, handle, peer)).await.is_err() {
        return;
    }
    let write_task = tokio::spawn(write_answers(writer, out_rx, shared.clone()));
    loop {
        let frame = match read_frame(&mut reader, &shared, &cx).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(reason) => {
                tracing::warn!(conn, "closing connection: {reason}");
                break;
            }
        };
        match cx.faults.as_ref().map_or(ConnFault::None, |f| f()) {
            ConnFault::None => {}
            ConnFault::Reset { deliver } => {
                tracing::debug!(conn, deliver, "injected fault: connection reset");
                if deliver {
                    let _ = cx.events.send(Event::Frame(conn, frame.0, frame.1)).await;
                }
                write_task.abort();
                let _ = cx.events.send(Event::Disconnected(conn)).await;
                return;
            }
            ConnFault::HalfOpen => {
                tracing::debug!(conn, "injected fault: connection half-open");
                write_task.abort();
                tokio::time::sleep(HALF_OPEN_FOR).await;
                let _ = cx.events.send(Event::Disconnected(conn)).await;
                return;
            }
        }
        if cx.events.send(Event::Frame(conn, frame.0, frame.1)).await.is_err() {
            break;
        }
    }
    let _ = cx.events.send(Event::Disconnected(conn)).await;
    // Let queued answers drain; the loop drops our sender when it is done with us.
    let _ = write_task.await;
    drop(slot);
}

async fn write_answers(
    writer: tokio::io::WriteHalf<TcpStream>,
    mut out: mpsc::UnboundedReceiver<Outbound>,
    shared: Arc<Shared>,
) {
    let mut writer = BufWriter::new(writer);
    let mut closing = false;
    while let Some(item) = out.recv().await {
        let mut written = 0;
        let mut next = Some(item);
        // Coalesce whatever else is ready before flushing.
        while let Some(item) = next.take() {
            match item {
                Outbound::Frame(frame) => {
                    if writer.write_all(&frame).await.is_err() {
                        return;
                    }
                    written += frame.len();
                }
                Outbound::Close => closing = true,
            }
            if !closing {
                next = out.try_recv().ok();
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        shared.queued_bytes.fetch_sub(written, Ordering::Relaxed);
        shared.capacity.notify_one();
        if closing {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Waits until the connection may have one more request in the broker. False once it is closed.
async fn wait_for_capacity(shared: &Shared, limits: &ConnectionLimits) -> bool {
    loop {
        if shared.closed.load(Ordering::Relaxed) {
            return false;
        }
        let full = shared.in_flight.load(Ordering::Relaxed) >= limits.max_in_flight_requests
            || shared.queued_bytes.load(Ordering::Relaxed) >= limits.max_queued_response_bytes;
        if !full {
            return true;
        }
        tokio::select! {
            biased;
            _ = shared.capacity.notified() => {}
            _ = shared.close.notified() => return false,
        }
    }
}

/// Reads into `buf` once; Ok(false) when the broker closed the connection meanwhile.
async fn read_some<R: AsyncRead + Unpin, B: BufMut>(
    reader: &mut R,
    buf: &mut B,
    shared: &Shared,
) -> Result<bool, String> {
    tokio::select! {
            biased;
        read = reader.read_buf(buf) => match read {
            Ok(0) => Err("closed by the client".into()),
            Ok(_) => Ok(true),
            Err(e) => Err(format!("read failed: {e}")),
        },
        _ = shared.close.notified() => Ok(false),
    }
}

/// The next request frame with the budget it holds; None when the connection ends quietly (the
/// client or the broker closed it).
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    shared: &Shared,
    cx: &ConnContext,
) -> Result<Option<(Bytes, Option<OwnedSemaphorePermit>)>, String> {
    let limits = &cx.limits;
    if !wait_for_capacity(shared, limits).await {
        return Ok(None);
    }
    let mut prefix = BytesMut::with_capacity(4);
    while prefix.len() < 4 {
        let missing = 4 - prefix.len();
        let mut want = (&mut prefix).limit(missing);
        match tokio::time::timeout(limits.idle_timeout, read_some(reader, &mut want, shared)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(None),
            Ok(Err(_)) if prefix.is_empty() => return Ok(None),
            Ok(Err(e)) => return Err(e),
            // Idle only when nothing is waiting on the broker either.
            Err(_) if shared.busy() || !prefix.is_empty() => {}
            Err(_) => return Err(format!("idle for {:?} (connections.max.idle.ms)", limits.idle_timeout)),
        }
    }
    let size = i32::from_be_bytes(prefix[..4].try_into().expect("4 bytes"));
    let size = usize::try_from(size).map_err(|_| format!("negative request frame size {size}"))?;
    if size > limits.max_request_bytes {
        return Err(format!("request frame of {size} bytes exceeds the limit of {} bytes", limits.max_request_bytes));
    }
    // Small frames are bounded by the connection count; large ones wait for budget, so stalled
    // uploads cannot hold more than it, and small requests of others are never stuck behind them.
    let permit = if size <= SMALL_FRAME {
        None
    } else {
        let permits = u32::try_from(size).expect("a frame size is an i32");
        tokio::select! {
            biased;
            permit = cx.request_budget.clone().acquire_many_owned(permits) => Some(permit.map_err(|_| "broker stopping")?),
            _ = shared.close.notified() => return Ok(None),
        }
    };
    let mut body = BytesMut::new();
    let read_body = async {
        while body.len() < size {
            body.reserve((size - body.len()).min(READ_STEP));
            let missing = size - body.len();
            let mut want = (&mut body).limit(missing);
            if !read_some(reader, &mut want, shared).await? {
                return Ok(false);
            }
        }
        Ok::<bool, String>(true)
    };
    let outcome = tokio::time::timeout(limits.frame_timeout, read_body).await;
    match outcome {
        Ok(Ok(true)) => Ok(Some((body.freeze(), permit))),
        Ok(Ok(false)) => Ok(None),
        Ok(Err(e)) => Err(format!("{e} inside a request frame")),
        Err(_) => Err(format!(
            "a request frame of {size} bytes did not arrive within {:?} ({} bytes did)",
            limits.frame_timeout,
            body.len()
        )),
    }
}
