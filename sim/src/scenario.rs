//! The single-node durability scenario: an idempotent producer writes with acks=all through the
//! real request path while the node is killed at random points, losing unsynced writes (with
//! torn tails). Afterwards every acknowledged record must be in the log, at its acknowledged
//! offset, exactly once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, Runtime};
use spool_core::config::BrokerConfig;
use spool_core::mem_disk::MemDisk;
use spool_runtime::server::{serve, ServerOptions};

use crate::disk::{SharedDisk, SimStorage};
use spool_runtime::client::Client;

const BROKER_IP: &str = "10.0.0.1";
const TOPIC: &str = "events";

/// What one seed draws.
#[derive(Debug, Clone)]
struct Params {
    batches: usize,
    records_per_batch: usize,
    crashes: usize,
    fsync_latency_ms: u64,
    max_torn_sectors: usize,
    segment_bytes: u32,
}

impl Params {
    fn draw() -> Params {
        let mut rng = thread_rng();
        Params {
            batches: rng.gen_range(20..200),
            records_per_batch: rng.gen_range(1..6),
            crashes: rng.gen_range(0..5),
            fsync_latency_ms: rng.gen_range(1..20),
            max_torn_sectors: rng.gen_range(0..4),
            segment_bytes: if rng.gen_bool(0.5) { rng.gen_range(200..4000) } else { 1 << 30 },
        }
    }
}

pub fn run_seed(seed: u64, canary: bool) -> Result<String, String> {
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs(3600));
    spool_runtime::trace::enable();
    let (result, simulated) = runtime.block_on(async {
        let start = tokio::time::Instant::now();
        let result = scenario(canary).await;
        (result, start.elapsed())
    });
    crate::SIMULATED_MS.fetch_add(simulated.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    crate::fold_trace(spool_runtime::trace::finish());
    result
}

/// Starts (and on restart, restarts) a broker node over the shared disk.
pub fn start_broker(handle: &Handle, disk: SharedDisk, fsync_latency: Duration) -> madsim::runtime::NodeHandle {
    handle
        .create_node()
        .name("spool-1")
        .ip(BROKER_IP.parse().expect("ip"))
        .init(move || {
            let disk = disk.clone();
            async move {
                let (_keep_running, stop) = tokio::sync::oneshot::channel();
                let config = BrokerConfig::single_node(BROKER_IP, 9092);
                let storage = SimStorage { disk, fsync_latency };
                if let Err(e) =
                    serve(ServerOptions { listen: broker_addr(), broker: config }, storage, stop, None).await
                {
                    panic!("broker failed: {e:#}");
                }
            }
        })
        .build()
}

pub fn broker_addr() -> SocketAddr {
    format!("{BROKER_IP}:9092").parse().expect("address")
}

async fn scenario(canary: bool) -> Result<String, String> {
    let params = Params::draw();
    let handle = Handle::current();
    let mut mem = MemDisk::new();
    mem.fsync_lies = canary;
    let disk: SharedDisk = Arc::new(Mutex::new(mem));
    let fsync_latency = Duration::from_millis(params.fsync_latency_ms);
    let broker = start_broker(&handle, disk.clone(), fsync_latency);
    let client = handle.create_node().name("client").ip("10.0.0.2".parse().expect("ip")).build();
    let workload = client.spawn(produce_all(params.clone()));

    // The nemesis: kill the broker at random points; unsynced writes are lost or torn.
    let mut crashes = 0;
    for _ in 0..params.crashes {
        let wait = thread_rng().gen_range(10..3000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        handle.kill(broker.id());
        let max_torn = params.max_torn_sectors;
        disk.lock().expect("disk").crash(&mut |_| thread_rng().gen_range(0..=max_torn));
        crashes += 1;
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(1..500))).await;
        handle.restart(broker.id());
    }
    let acked = workload.await.map_err(|e| format!("workload task failed: {e}"))??;
    let log = client.spawn(read_all()).await.map_err(|e| format!("reader task failed: {e}"))??;
    check(&acked, &log)?;
    Ok(format!("{params:?}, {crashes} crashes, {} records acknowledged, log end {}", acked.len(), log.len()))
}

async fn connect() -> Client {
    loop {
        if let Ok(c) = Client::connect(broker_addr(), Duration::from_secs(2)).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn batch(producer_id: i64, sequence: i32, values: &[String]) -> bytes::Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(bytes::Bytes::from(v.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

/// Produces every batch until acknowledged, retrying the same batch (same sequence) after
/// errors and reconnects, as an idempotent producer does. Returns acknowledged (offset, value).
async fn produce_all(params: Params) -> Result<BTreeMap<i64, String>, String> {
    let mut client = connect().await;
    let create = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_value(Some(StrBytes::from_string(params.segment_bytes.to_string())))]),
    ]);
    loop {
        match client.call(7, create.clone()).await {
            Ok(ResponseKind::CreateTopics(r))
                if r.topics[0].error_code == 0
                    || r.topics[0].error_code == ResponseError::TopicAlreadyExists.code() =>
            {
                break
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => client = connect().await,
        }
    }
    let producer_id = loop {
        match client
            .call(4, InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000))
            .await
        {
            Ok(ResponseKind::InitProducerId(r)) if r.error_code == 0 => break r.producer_id.0,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => client = connect().await,
        }
    };
    let mut acked = BTreeMap::new();
    let mut sequence = 0i32;
    for b in 0..params.batches {
        let values: Vec<String> = (0..params.records_per_batch).map(|r| format!("b{b}-r{r}")).collect();
        let records = batch(producer_id, sequence, &values);
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))]),
        ]);
        loop {
            match client.call(9, request.clone()).await {
                Ok(ResponseKind::Produce(r)) => {
                    let p = &r.responses[0].partition_responses[0];
                    if p.error_code == 0 {
                        for (i, v) in values.iter().enumerate() {
                            acked.insert(p.base_offset + i as i64, v.clone());
                        }
                        break;
                    }
                    if p.error_code == ResponseError::OutOfOrderSequenceNumber.code()
                        || p.error_code == ResponseError::CorruptMessage.code()
                    {
                        return Err(format!("batch {b} refused with error {}: {:?}", p.error_code, p.error_message));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(other) => return Err(format!("unexpected response {other:?}")),
                Err(_) => client = connect().await,
            }
        }
        sequence += values.len() as i32;
    }
    Ok(acked)
}

/// Reads the whole partition from offset 0 up to the high watermark.
/// How long the healed broker may serve no new record below its high watermark before the
/// reader calls it a liveness failure.
const READ_STALL_LIMIT: Duration = Duration::from_secs(60);

async fn read_all() -> Result<Vec<String>, String> {
    let mut client = connect().await;
    let mut log = Vec::new();
    let mut last_progress = (0usize, tokio::time::Instant::now());
    loop {
        if log.len() > last_progress.0 {
            last_progress = (log.len(), tokio::time::Instant::now());
        } else if last_progress.1.elapsed() > READ_STALL_LIMIT {
            return Err(format!(
                "liveness: no record served at offset {} for {}s after faults stopped",
                log.len(),
                READ_STALL_LIMIT.as_secs()
            ));
        }
        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_fetch_offset(log.len() as i64)
                    .with_partition_max_bytes(1 << 20)])]);
        let p = match client.call(12, fetch).await {
            Ok(ResponseKind::Fetch(r)) => r.responses[0].partitions[0].clone(),
            Ok(other) => return Err(format!("unexpected response {other:?}")),
            Err(_) => {
                client = connect().await;
                continue;
            }
        };
        if p.error_code != 0 {
            return Err(format!("fetch at {} failed with error {}", log.len(), p.error_code));
        }
        if log.len() as i64 >= p.high_watermark {
            return Ok(log);
        }
        let mut records = p.records.unwrap_or_default();
        while !records.is_empty() {
            let set =
                RecordBatchDecoder::decode(&mut records).map_err(|e| format!("fetched bytes do not decode: {e}"))?;
            for r in set.records {
                if r.offset < log.len() as i64 {
                    continue;
                }
                if r.offset != log.len() as i64 {
                    return Err(format!("offset gap: expected {}, got {}", log.len(), r.offset));
                }
                log.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned());
            }
        }
    }
}

/// No acknowledged record lost or moved; no record written twice.
fn check(acked: &BTreeMap<i64, String>, log: &[String]) -> Result<(), String> {
    for (offset, value) in acked {
        match log.get(*offset as usize) {
            Some(v) if v == value => {}
            Some(v) => return Err(format!("acknowledged {value:?} at offset {offset}, but the log has {v:?} there")),
            None => {
                return Err(format!("acknowledged {value:?} at offset {offset}, but the log ends at {}", log.len()))
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (offset, value) in log.iter().enumerate() {
        if !seen.insert(value) {
            return Err(format!(
                "{value:?} appears twice (again at offset {offset}) although the producer is idempotent"
            ));
        }
    }
    Ok(())
}
