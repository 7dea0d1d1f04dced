//! A disk that stops answering (fsyncs that never return): a stopping broker still stops within
//! its bound, without claiming a clean shutdown.

use std::time::{Duration, Instant};

use spool_core::config::BrokerConfig;
use spool_core::storage::{Completion, StorageOp};
use spool_core::LoadedState;
use spool_runtime::disk::FileStorage;
use spool_runtime::server::{serve, ServerOptions};
use spool_runtime::storage::Storage;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Real files, but fsyncs are swallowed: they never complete.
struct StuckSyncs(FileStorage);

impl Storage for StuckSyncs {
    fn load(&mut self, node_id: i32, index_interval: u64) -> anyhow::Result<LoadedState> {
        self.0.load(node_id, index_interval)
    }
    fn execute(&mut self, op: StorageOp, completions: &mpsc::UnboundedSender<Completion>) -> Option<Completion> {
        match op {
            StorageOp::Sync { .. } => None,
            op => self.0.execute(op, completions),
        }
    }
    fn mark_clean_shutdown(&mut self) -> anyhow::Result<()> {
        self.0.mark_clean_shutdown()
    }
}

/// CreateTopics v2 for "stuck" (1 partition, replication factor 1), with its size prefix.
fn create_topic_frame() -> Vec<u8> {
    let mut body = vec![0, 19, 0, 2, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 1, 0, 5];
    body.extend_from_slice(b"stuck");
    body.extend_from_slice(&[0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x75, 0x30, 0]);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_on_a_stuck_disk_ends_within_its_bound_without_the_clean_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut options = ServerOptions::new("127.0.0.1:0".parse().unwrap(), BrokerConfig::single_node("127.0.0.1", 0));
    options.shutdown_limit = Duration::from_millis(500);
    let storage = StuckSyncs(FileStorage::new(dir.path().to_path_buf()));
    let server = tokio::spawn(serve(options, storage, stop_rx, Some(ready_tx)));
    let broker = ready_rx.await.unwrap();
    // A topic whose log needs an fsync that will never come.
    let mut client = TcpStream::connect(broker).await.unwrap();
    client.write_all(&create_topic_frame()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server).await.expect("the stop is bounded");
    result.unwrap().unwrap();
    let took = stopping.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "stopped after {took:?}");
    assert!(!dir.path().join(spool_runtime::load::CLEAN_SHUTDOWN_MARKER).exists(), "not a clean shutdown");
}
