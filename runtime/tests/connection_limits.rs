//! A real server on a loopback port against clients that misbehave at the socket: each limit
//! holds and the broker goes on serving a well-behaved client.

use std::time::{Duration, Instant};

use spool_core::config::BrokerConfig;
use spool_runtime::disk::FileStorage;
use spool_runtime::limits::ConnectionLimits;
use spool_runtime::server::{serve, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

async fn start(dir: &std::path::Path, limits: ConnectionLimits) -> String {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::mem::forget(stop_tx);
    let mut options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), BrokerConfig::single_node("127.0.0.1", 0));
    options.limits = limits;
    tokio::spawn(serve(options, FileStorage::new(dir.to_path_buf()), stop_rx, Some(ready_tx)));
    ready_rx.await.unwrap().to_string()
}

/// ApiVersions v0 with a size prefix.
fn api_versions(correlation: i32) -> Vec<u8> {
    let mut frame = vec![0, 0, 0, 0, 0, 18, 0, 0];
    frame.extend_from_slice(&correlation.to_be_bytes());
    frame.extend_from_slice(&[0xff, 0xff]);
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame
}

/// Sends ApiVersions on a fresh connection and reads its answer: the broker still serves.
async fn serves(broker: &str) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(broker).await.ok()?;
        s.write_all(&api_versions(7)).await.ok()?;
        let size = s.read_i32().await.ok()?;
        let mut body = vec![0; size as usize];
        s.read_exact(&mut body).await.ok()?;
        Some(i32::from_be_bytes(body[..4].try_into().unwrap()) == 7)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten().unwrap_or(false)
}

/// True once the broker has closed `s` (a read sees end of file or a reset).
async fn closed_by_broker(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_hold_no_more_than_the_request_budget_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnectionLimits {
        max_request_bytes: 16 << 20,
        max_buffered_request_bytes: 32 << 20,
        frame_timeout: Duration::from_millis(500),
        ..ConnectionLimits::default()
    };
    let broker = start(dir.path(), limits).await;
    let before = rss_bytes();
    // 20 clients announce 16 MiB and send 4 MiB of it (80 MiB in all), then stall.
    let part = vec![7u8; 4 << 20];
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&broker).await.unwrap();
        s.write_all(&(16i32 << 20).to_be_bytes()).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(100), s.write_all(&part)).await;
        stalled.push(s);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 40 << 20, "stalled partial frames grew the process by {grown} bytes");
    assert!(serves(&broker).await);
    for s in &mut stalled {
        assert!(closed_by_broker(s, Duration::from_secs(10)).await, "a stalled frame is dropped at its time limit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_allowed_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnectionLimits { max_request_bytes: 1 << 20, ..ConnectionLimits::default() };
    let broker = start(dir.path(), limits).await;
    for size in [-1i32, (1 << 20) + 1, i32::MAX] {
        let mut s = TcpStream::connect(&broker).await.unwrap();
        s.write_all(&size.to_be_bytes()).await.unwrap();
        assert!(closed_by_broker(&mut s, Duration::from_secs(5)).await, "size {size}");
    }
    assert!(serves(&broker).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_stops_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnectionLimits {
        max_in_flight_requests: 4,
        max_queued_response_bytes: 64 << 10,
        ..ConnectionLimits::default()
    };
    let broker = start(dir.path(), limits).await;
    let before = rss_bytes();
    let mut s = TcpStream::connect(&broker).await.unwrap();
    // 400,000 pipelined requests (5.6 MB) whose answers (about 160 MB) are never read: without
    // a bound every answer would queue in the broker.
    let burst: Vec<u8> = (0..400_000).flat_map(api_versions).collect();
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(3), s.write_all(&burst)).await;
        s
    });
    let s = writer.await.unwrap();
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 48 << 20, "unread answers grew the process by {grown} bytes");
    assert!(serves(&broker).await, "other clients are still served");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_ip_limit_are_closed_on_accept() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnectionLimits { max_connections_per_ip: 3, ..ConnectionLimits::default() };
    let broker = start(dir.path(), limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&broker).await.unwrap();
        s.write_all(&api_versions(1)).await.unwrap();
        let size = s.read_i32().await.unwrap();
        let mut body = vec![0; size as usize];
        s.read_exact(&mut body).await.unwrap();
        held.push(s);
    }
    let mut extra = TcpStream::connect(&broker).await.unwrap();
    assert!(closed_by_broker(&mut extra, Duration::from_secs(5)).await);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(serves(&broker).await, "a freed place is given again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConnectionLimits { idle_timeout: Duration::from_millis(300), ..ConnectionLimits::default() };
    let broker = start(dir.path(), limits).await;
    let mut idle = TcpStream::connect(&broker).await.unwrap();
    let started = Instant::now();
    assert!(closed_by_broker(&mut idle, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_after_a_refused_one_on_the_same_socket_is_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), ConnectionLimits::default()).await;
    let mut s = TcpStream::connect(&broker).await.unwrap();
    // Unknown API key 0x7f7f, then CreateTopics v2 for "sneaky" (1 partition, replication 1).
    let mut bytes = vec![0, 0, 0, 8, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1];
    let mut create = vec![0, 19, 0, 2, 0, 0, 0, 2, 0xff, 0xff, 0, 0, 0, 1, 0, 6];
    create.extend_from_slice(b"sneaky");
    create.extend_from_slice(&[0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x75, 0x30, 0]);
    bytes.extend_from_slice(&(create.len() as i32).to_be_bytes());
    bytes.extend_from_slice(&create);
    s.write_all(&bytes).await.unwrap();
    assert!(closed_by_broker(&mut s, Duration::from_secs(5)).await);
    let listed = spool_runtime::cli::topic::list(&broker, spool_runtime::cli::Output::Table).await.unwrap();
    assert!(!listed.contains("sneaky"), "{listed}");
}
