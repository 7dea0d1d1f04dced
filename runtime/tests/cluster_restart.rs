//! In a cluster, a partition that goes offline (here: every fsync fails) stops the node: `serve`
//! returns `RestartNode`, so that `spool serve` exits and the node comes back as a new
//! incarnation the controller knows restarted. Reloaded in place, as a single node is, it would
//! lead on in its old leader epochs over a log the failure may have changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{produce_request, ProduceRequest, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use spool_core::config::BrokerConfig;
use spool_core::storage::{Completion, StorageError, StorageOp};
use spool_core::{ClusterView, LoadedState, PartitionView, TopicView};
use spool_runtime::client::Client;
use spool_runtime::disk::FileStorage;
use spool_runtime::server::{serve, RestartNode, ServerOptions};
use spool_runtime::storage::Storage;
use tokio::sync::{mpsc, oneshot, watch};

/// Real files, but every fsync fails.
struct FailingSyncs(FileStorage);

impl Storage for FailingSyncs {
    fn load(&mut self, node_id: i32, index_interval: u64) -> anyhow::Result<LoadedState> {
        self.0.load(node_id, index_interval)
    }
    fn execute(&mut self, op: StorageOp, completions: &mpsc::UnboundedSender<Completion>) -> Option<Completion> {
        match op {
            StorageOp::Sync { id, .. } => {
                Some(Completion::Synced { id, result: Err(StorageError("input/output error".to_string())) })
            }
            op => self.0.execute(op, completions),
        }
    }
    fn mark_clean_shutdown(&mut self) -> anyhow::Result<()> {
        self.0.mark_clean_shutdown()
    }
}

fn one_record() -> bytes::Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .unwrap();
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_offline_in_a_cluster_stops_the_node_instead_of_restarting_the_broker_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = BrokerConfig::single_node("127.0.0.1", port as i32);
    config.node_id = 1;
    config.offline_restart_after_ms = 200;
    // The image as the quorum hands it over: this node alone, leading topic "t".
    let partition = PartitionView { leader: 1, leader_epoch: 1, partition_epoch: 1, replicas: vec![1], isr: vec![1] };
    let topic = TopicView { id: uuid::Uuid::from_u128(7), partitions: vec![partition], configs: BTreeMap::new() };
    let view = ClusterView {
        cluster_id: Some("test-cluster".to_string()),
        brokers: vec![(1, "127.0.0.1".to_string(), port as i32)],
        registered: vec![1],
        topics: Some(Arc::new(BTreeMap::from([("t".to_string(), topic)]))),
        controller: None,
        broker_epoch: Some(5),
    };
    let (_view_tx, view_rx) = watch::channel(view);
    let mut options = ServerOptions::new(format!("127.0.0.1:{port}").parse().unwrap(), config);
    options.cluster_view = Some(view_rx);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (_stop_tx, stop_rx) = oneshot::channel::<()>();
    let server =
        tokio::spawn(serve(options, FailingSyncs(FileStorage::new(dir.path().to_path_buf())), stop_rx, Some(ready_tx)));
    let broker = ready_rx.await.unwrap();

    // A write to the partition this node leads: its fsync fails and the partition goes offline.
    // Asked again while the log is being created from the image (NOT_LEADER_OR_FOLLOWER).
    let mut client = Client::connect(broker, Duration::from_secs(5)).await.unwrap();
    for _ in 0..50 {
        let produce = ProduceRequest::default().with_acks(1).with_timeout_ms(5_000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(one_record()))]),
        ]);
        match client.call(9, produce).await {
            Ok(ResponseKind::Produce(r)) if r.responses[0].partition_responses[0].error_code == 6 => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => break,
        }
    }

    let served = tokio::time::timeout(Duration::from_secs(10), server).await.expect("the node stops").unwrap();
    let error = served.expect_err("a cluster node does not go on with an offline partition");
    let restart = error.downcast::<RestartNode>().expect("the node is told to restart");
    assert!(restart.0.contains("offline"), "{}", restart.0);
}
