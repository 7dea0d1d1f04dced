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
use madsim::runtime::Handle;
use spool_core::buggify::BuggifyConfig;
use spool_core::config::BrokerConfig;
use spool_core::mem_disk::MemDisk;
use spool_runtime::server::{serve, ServerOptions, TurnTime};

use crate::disk::{DiskFaults, SharedDisk, SimDisk, SimStorage};
use crate::draw;
use crate::faults::{self, Nemesis, NetFaults};
use crate::hostile::{self, Hostile};
use spool_runtime::client::Client;

const BROKER_IP: &str = "10.0.0.1";
const TOPIC: &str = "events";
const NOISE_TOPIC: &str = "noise";
/// Stands in the read log for offsets below the log start.
const GONE: &str = "<gone>";

/// What one seed draws (besides its faults).
#[derive(Debug, Clone)]
struct Params {
    batches: u64,
    records_per_batch: u64,
    segment_bytes: u64,
    acks: i16,
    /// Probability that a produce request is also sent on a second connection, as a client
    /// retrying after an ambiguous timeout would.
    duplicate_sends: f64,
    /// Padding of each value, so batches span segments and sectors.
    value_bytes: u64,
    /// Batches of a plain (not idempotent) acks=0 producer on another topic, alongside.
    noise_batches: u64,
    /// Idempotent producers writing the checked partition at once, each `batches` batches.
    producers: u64,
}

impl Params {
    fn draw() -> Params {
        let small_segments = draw::int("single.small_segments", 0..2) == 1;
        let segment_bytes = draw::int("single.segment_bytes", 200..4000);
        Params {
            batches: draw::int("single.batches", 20..200),
            records_per_batch: draw::int("single.records_per_batch", 1..6),
            segment_bytes: if small_segments { segment_bytes } else { 1 << 30 },
            acks: if draw::int("single.acks_all", 0..2) == 1 { -1 } else { 1 },
            duplicate_sends: draw::rate("single.duplicate_sends", 0.01, 0.2),
            value_bytes: draw::int("single.value_bytes", 0..1500),
            noise_batches: draw::int("single.noise_batches", 0..100),
            producers: draw::int("single.producers", 1..5),
        }
    }
}

pub fn run_seed(seed: u64, canary: bool) -> Result<String, String> {
    crate::seed::simulate(seed, || scenario(canary))
}

/// What a seed draws about the broker itself (besides faults).
#[derive(Clone)]
pub struct BrokerKnobs {
    /// Whether the broker takes rare paths at its buggify sites, and how often.
    buggify: Option<BuggifyConfig>,
    /// How long a turn of the event loop takes: up to a drawn bound, so that under some seeds
    /// requests from several clients pile up and are handled in one turn.
    turn_time: TurnTime,
    /// How often recovery points are written, so crashes land at every distance from the last.
    recovery_point_interval_ms: i64,
    /// How long a partition stays offline after a disk error before the broker restarts itself
    /// in place (seeds without an operator rely on it to heal).
    offline_restart_after_ms: i64,
}

impl BrokerKnobs {
    pub fn draw(scenario: &str) -> BrokerKnobs {
        let fire_probability = draw::rate(&format!("{scenario}.buggify_fire"), 0.01, 0.3);
        let sites_seed = draw::int(&format!("{scenario}.buggify_sites"), 0..1 << 32);
        let max_us = draw::int(&format!("{scenario}.turn_us"), 0..2000);
        BrokerKnobs {
            buggify: (fire_probability > 0.0).then_some(BuggifyConfig { sites_seed, fire_seed: 0, fire_probability }),
            turn_time: Arc::new(move || Duration::from_micros(thread_rng().gen_range(0..=max_us))),
            recovery_point_interval_ms: draw::int(&format!("{scenario}.recovery_point_ms"), 100..20_000) as i64,
            offline_restart_after_ms: draw::int(&format!("{scenario}.offline_restart_ms"), 200..5_000) as i64,
        }
    }

    /// Sets what the seed drew in a broker's configuration, for one incarnation.
    pub fn apply(&self, config: &mut BrokerConfig) {
        // Each incarnation fires differently; the enabled sites stay those of the seed.
        config.buggify = self.buggify.map(|b| BuggifyConfig { fire_seed: thread_rng().gen(), ..b });
        config.recovery_point_interval_ms = self.recovery_point_interval_ms;
        config.offline_restart_after_ms = self.offline_restart_after_ms;
        // Restarts in a row back off, but within the time the checks give to heal.
        config.offline_restart_max_ms = 15_000;
    }

    pub fn turn_time(&self) -> TurnTime {
        self.turn_time.clone()
    }
}

/// Starts (and on restart, restarts) a broker node over the shared disk.
pub fn start_broker(
    handle: &Handle,
    disk: SharedDisk,
    net: &NetFaults,
    knobs: BrokerKnobs,
) -> madsim::runtime::NodeHandle {
    let conn_faults = net.hook();
    handle
        .create_node()
        .name("spool-1")
        .ip(BROKER_IP.parse().expect("ip"))
        .init(move || {
            let disk = disk.clone();
            let conn_faults = conn_faults.clone();
            let knobs = knobs.clone();
            async move {
                let (_keep_running, stop) = tokio::sync::oneshot::channel();
                let mut config = BrokerConfig::single_node(BROKER_IP, 9092);
                knobs.apply(&mut config);
                let mut options = ServerOptions::new(broker_addr(), config);
                options.conn_faults = Some(conn_faults);
                options.turn_time = Some(knobs.turn_time);
                if let Err(e) = serve(options, SimStorage { disk }, stop, None).await {
                    panic!("broker failed: {e:#}");
                }
            }
        })
        .build()
}

/// How long after faults stop the system has to converge before it is a liveness failure.
pub const HEAL_LIMIT: Duration = Duration::from_secs(120);

pub fn broker_addr() -> SocketAddr {
    format!("{BROKER_IP}:9092").parse().expect("address")
}

async fn scenario(canary: bool) -> Result<String, String> {
    let params = Params::draw();
    let disk_faults = DiskFaults::draw("single", true);
    let net = NetFaults::draw("single");
    let nemesis = Nemesis::draw("single");
    let handle = Handle::current();
    let mut mem = MemDisk::new();
    mem.fsync_lies = canary;
    let disk = SimDisk::new(mem, disk_faults);
    let broker = start_broker(&handle, disk.clone(), &net, BrokerKnobs::draw("single"));
    let hostile = Hostile::draw("single");
    let client = handle.create_node().name("client").ip("10.0.0.2".parse().expect("ip")).build();
    let mut nodes = crate::seed::KillOnExit::new(&handle);
    nodes.add(&broker);
    nodes.add(&client);
    let progress = Progress::default();
    let workload = client.spawn(produce_all(params.clone(), progress.clone(), disk.clone()));
    let noise = client.spawn(produce_noise(params.noise_batches));
    let attacker = handle.create_node().name("hostile").ip("10.0.0.9".parse().expect("ip")).build();
    nodes.add(&attacker);
    let attacks = hostile.attacks;
    let attacking = attacker.spawn(hostile::attack(hostile));
    let applied = faults::run(&nemesis, &broker, &disk, &net).await;
    let acked = tokio::time::timeout(HEAL_LIMIT, workload)
        .await
        .map_err(|_| {
            format!(
                "liveness: the producer did not finish within {}s after faults stopped; last: {}",
                HEAL_LIMIT.as_secs(),
                progress.lock().expect("progress")
            )
        })?
        .map_err(|e| format!("workload task failed: {e}"))??;
    let log = client.spawn(read_all(TOPIC, disk.clone())).await.map_err(|e| format!("reader task failed: {e}"))??;
    // Nothing is promised about acks=0 records, except that what is there reads back whole.
    let _ = noise.await;
    let _ = attacking.await;
    let noise_log = client
        .spawn(read_all(NOISE_TOPIC, disk.clone()))
        .await
        .map_err(|e| format!("noise reader task failed: {e}"))??;
    let loss_from =
        disk.lock().expect("disk").corrupted.iter().filter(|(tp, _)| &*tp.topic == TOPIC).map(|(_, o)| *o).min();
    let acked = by_offset(acked, loss_from)?;
    check(&acked, &log, loss_from)?;
    let (injected, joined) = {
        let d = disk.lock().expect("disk");
        (d.injected, d.joined_writes)
    };
    Ok(format!(
        "{applied}, {injected} disk faults, {} records acknowledged from {} producers, log end {}, \
         {joined} joined writes, {} acks=0 records kept, {attacks} hostile connections",
        acked.len(),
        params.producers,
        log.len(),
        noise_log.iter().filter(|v| *v != GONE).count()
    ))
}

pub async fn connect() -> Client {
    loop {
        if let Ok(c) = Client::connect(broker_addr(), Duration::from_secs(2)).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn batch(producer_id: i64, sequence: i32, values: &[String]) -> bytes::Bytes {
    producer_batch((producer_id, 0), sequence, false, values)
}

/// One record batch of an idempotent (or, with `transactional`, transactional) producer.
pub fn producer_batch(
    (producer_id, producer_epoch): (i64, i16),
    sequence: i32,
    transactional: bool,
    values: &[String],
) -> bytes::Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
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

/// A plain producer with acks=0: no producer id, no answers, batches sent once. Exercises the
/// unacknowledged path next to the checked stream.
async fn produce_noise(batches: u64) {
    let mut client = connect().await;
    create_topic(&mut client, NOISE_TOPIC, 1, None).await;
    for b in 0..batches {
        let records = producer_batch((-1, -1), -1, false, &[format!("n{b}")]);
        let request = ProduceRequest::default().with_acks(0).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(NOISE_TOPIC)))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))]),
        ]);
        if client.send_only(9, request).await.is_err() {
            client = connect().await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Creates a topic, asking again through faults until it exists (or already did).
pub async fn create_topic(client: &mut Client, name: &'static str, partitions: i32, segment_bytes: Option<u64>) {
    let configs = segment_bytes.map_or_else(Vec::new, |bytes| {
        vec![create_topics_request::CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("segment.bytes"))
            .with_value(Some(StrBytes::from_string(bytes.to_string())))]
    });
    let create = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(configs),
    ]);
    loop {
        match client.call(7, create.clone()).await {
            Ok(ResponseKind::CreateTopics(r))
                if r.topics[0].error_code == 0
                    || r.topics[0].error_code == ResponseError::TopicAlreadyExists.code() =>
            {
                return
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => *client = connect().await,
        }
    }
}

/// A fetch of one partition from `offset`, up to 1 MiB, answered at once.
pub fn fetch_request_for(topic: &'static str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(
        vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(topic)))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])],
    )
}

/// One fetch of one partition from `offset` (isolation 1: read_committed). None after a
/// connection failure, with `client` connected again.
pub async fn fetch_at(
    client: &mut Client,
    topic: &'static str,
    partition: i32,
    offset: i64,
    isolation_level: i8,
) -> Result<Option<fetch_response::PartitionData>, String> {
    let fetch = fetch_request_for(topic, partition, offset).with_isolation_level(isolation_level);
    match client.call(12, fetch).await {
        Ok(ResponseKind::Fetch(r)) => Ok(Some(r.responses[0].partitions[0].clone())),
        Ok(other) => Err(format!("unexpected response {other:?}")),
        Err(_) => {
            *client = connect().await;
            Ok(None)
        }
    }
}

/// An idempotent producer id, asked for until the broker gives one.
async fn init_producer_id(client: &mut Client) -> i64 {
    loop {
        let request = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        match client.call(4, request).await {
            Ok(ResponseKind::InitProducerId(r)) if r.error_code == 0 => return r.producer_id.0,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => *client = connect().await,
        }
    }
}

/// Where the producer is, for a liveness failure's message.
type Progress = Arc<Mutex<String>>;

fn note(progress: &Progress, what: String) {
    *progress.lock().expect("progress") = what;
}

/// Runs every producer at once over the checked partition; returns every acknowledged
/// (offset, value) of each.
async fn produce_all(params: Params, progress: Progress, disk: SharedDisk) -> Result<Vec<(i64, String)>, String> {
    let mut client = connect().await;
    note(&progress, "creating the topic".to_string());
    create_topic(&mut client, TOPIC, 1, Some(params.segment_bytes)).await;
    let producers: Vec<_> = (0..params.producers)
        .map(|p| tokio::spawn(produce_batches(p, params.clone(), progress.clone(), disk.clone())))
        .collect();
    let mut acked = Vec::new();
    for producer in producers {
        acked.extend(producer.await.map_err(|e| format!("producer task failed: {e}"))??);
    }
    Ok(acked)
}

/// One value per acknowledged offset. Two producers acknowledged at one offset is lost data,
/// unless a write corruption at or before it let recovery cut the log there.
pub(crate) fn by_offset(acked: Vec<(i64, String)>, loss_from: Option<i64>) -> Result<BTreeMap<i64, String>, String> {
    let mut by_offset: BTreeMap<i64, String> = BTreeMap::new();
    for (offset, value) in acked {
        if let Some(other) = by_offset.get(&offset) {
            if loss_from.is_none_or(|l| offset < l) {
                return Err(format!("offset {offset} acknowledged for both {} and {}", short(other), short(&value)));
            }
            continue;
        }
        by_offset.insert(offset, value);
    }
    Ok(by_offset)
}

/// One idempotent producer: every batch until acknowledged, retrying the same batch (same
/// sequence) after errors and reconnects. Values are `p<producer>-b<batch>-r<record>-<padding>`.
/// Returns acknowledged (offset, value).
async fn produce_batches(
    producer: u64,
    params: Params,
    progress: Progress,
    disk: SharedDisk,
) -> Result<BTreeMap<i64, String>, String> {
    let mut client = connect().await;
    note(&progress, format!("producer {producer}: taking a producer id"));
    let mut producer_id = init_producer_id(&mut client).await;
    let mut acked = BTreeMap::new();
    let mut sequence = 0i32;
    for b in 0..params.batches {
        let pad = "x".repeat(params.value_bytes as usize);
        let values: Vec<String> =
            (0..params.records_per_batch).map(|r| format!("p{producer}-b{b}-r{r}-{pad}")).collect();
        let produce = |producer_id: i64, sequence: i32, values: &[String]| {
            ProduceRequest::default().with_acks(params.acks).with_timeout_ms(5000).with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_data(vec![produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(producer_id, sequence, values)))]),
            ])
        };
        let mut request = produce(producer_id, sequence, &values);
        loop {
            if draw::happens(params.duplicate_sends) {
                // The same request again on its own connection, racing the original.
                let duplicate = request.clone();
                tokio::spawn(async move {
                    let _ = connect().await.call(9, duplicate).await;
                });
            }
            match client.call(9, request.clone()).await {
                Ok(ResponseKind::Produce(r)) => {
                    let p = &r.responses[0].partition_responses[0];
                    if p.error_code == 0 {
                        for (i, v) in values.iter().enumerate() {
                            acked.insert(p.base_offset + i as i64, v.clone());
                        }
                        break;
                    }
                    let lost_state = p.error_code == ResponseError::OutOfOrderSequenceNumber.code()
                        || p.error_code == ResponseError::UnknownProducerId.code();
                    let corrupted = disk.lock().expect("disk").corrupted.iter().any(|(tp, _)| &*tp.topic == TOPIC);
                    if lost_state && corrupted {
                        // Recovery cut the log at a corrupted batch and took acknowledged
                        // batches with it: start over as a new producer, as a Kafka client does.
                        producer_id = init_producer_id(&mut client).await;
                        sequence = 0;
                        request = produce(producer_id, sequence, &values);
                        continue;
                    }
                    if lost_state || p.error_code == ResponseError::CorruptMessage.code() {
                        return Err(format!(
                            "producer {producer} batch {b} refused with error {}: {:?}",
                            p.error_code, p.error_message
                        ));
                    }
                    note(
                        &progress,
                        format!("producer {producer} batch {b}: error {} {:?}", p.error_code, p.error_message),
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(other) => return Err(format!("unexpected response {other:?}")),
                Err(e) => {
                    note(&progress, format!("producer {producer} batch {b}: {e}"));
                    client = connect().await;
                }
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

async fn read_all(topic: &'static str, disk: SharedDisk) -> Result<Vec<String>, String> {
    let mut client = connect().await;
    let mut log = Vec::new();
    let mut last_progress = (0usize, tokio::time::Instant::now());
    let mut max_high_watermark = 0i64;
    let mut storage_errors = 0;
    loop {
        if log.len() > last_progress.0 {
            last_progress = (log.len(), tokio::time::Instant::now());
        } else if last_progress.1.elapsed() > READ_STALL_LIMIT {
            return Err(format!(
                "liveness: no record of {topic} served at offset {} for {}s after faults stopped",
                log.len(),
                READ_STALL_LIMIT.as_secs()
            ));
        }
        let Some(p) = fetch_at(&mut client, topic, 0, log.len() as i64, 0).await? else {
            continue;
        };
        if p.error_code == ResponseError::KafkaStorageError.code() {
            // Retriable (a read that kept failing its CRC); the stall limit bounds the retries,
            // unless a write corruption hit this batch: then the log is readable up to here.
            let corrupt_here = disk
                .lock()
                .expect("disk")
                .corrupted
                .iter()
                .any(|(tp, first)| &*tp.topic == topic && *first <= log.len() as i64);
            storage_errors += 1;
            if corrupt_here && storage_errors >= 20 {
                return Ok(log);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        storage_errors = 0;
        if p.error_code == ResponseError::OffsetOutOfRange.code() && p.log_start_offset > log.len() as i64 {
            // The log now starts later (what was before is gone): go on from its start, as a
            // consumer resetting to the earliest offset does. The checker sees the gap.
            log.resize(p.log_start_offset as usize, GONE.to_string());
            continue;
        }
        if p.error_code != 0 {
            return Err(format!("fetch at {} failed with error {}", log.len(), p.error_code));
        }
        if p.high_watermark < max_high_watermark {
            return Err(format!(
                "the high watermark went from {max_high_watermark} down to {} while reading at {}",
                p.high_watermark,
                log.len()
            ));
        }
        max_high_watermark = p.high_watermark;
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

/// No acknowledged record lost or moved; no record written twice; acknowledged records in the
/// order they were sent.
/// With `loss_from`, a write corruption hit the batch at that offset: on one node what was
/// acknowledged from there on may be gone (recovery cuts the log there, or reads stop there).
pub(crate) fn check(acked: &BTreeMap<i64, String>, log: &[String], loss_from: Option<i64>) -> Result<(), String> {
    // Whatever was lost, an acknowledged value that is served is served at its own offset.
    let acked_at: BTreeMap<&String, i64> = acked.iter().map(|(o, v)| (v, *o)).collect();
    for (offset, value) in log.iter().enumerate() {
        if let Some(&at) = acked_at.get(value) {
            if at != offset as i64 {
                return Err(format!("{} was acknowledged at offset {at} but is served at {offset}", short(value)));
            }
        }
    }
    let acked: BTreeMap<i64, String> =
        acked.iter().filter(|(o, _)| loss_from.is_none_or(|l| **o < l)).map(|(o, v)| (*o, v.clone())).collect();
    let acked = &acked;
    // Each producer's records sit in the order it sent them.
    let mut previous: BTreeMap<u64, (i64, &String)> = BTreeMap::new();
    for (offset, value) in acked {
        let (producer, batch, record) = sent_order(value);
        if let Some((before_offset, before)) = previous.get(&producer) {
            if sent_order(before) > (producer, batch, record) {
                return Err(format!(
                    "{} was sent before {} but sits after it (offsets {offset} and {before_offset})",
                    short(value),
                    short(before)
                ));
            }
        }
        previous.insert(producer, (*offset, value));
    }
    for (offset, value) in acked {
        match log.get(*offset as usize) {
            Some(v) if v == value => {}
            Some(v) => {
                return Err(format!(
                    "acknowledged {} at offset {offset}, but the log has {} there",
                    short(value),
                    short(v)
                ))
            }
            None => {
                return Err(format!(
                    "acknowledged {} at offset {offset}, but the log ends at {}",
                    short(value),
                    log.len()
                ))
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (offset, value) in log.iter().enumerate().filter(|(_, v)| *v != GONE) {
        if !seen.insert(value) {
            return Err(format!(
                "{} appears twice (again at offset {offset}) although the producer is idempotent",
                short(value)
            ));
        }
    }
    Ok(())
}

/// (producer, batch, record) of a value written as `p<producer>-b<batch>-r<record>`.
pub(crate) fn sent_order(value: &str) -> (u64, u64, u64) {
    let parse = |part: Option<&str>| part.and_then(|p| p.get(1..)?.parse().ok()).unwrap_or(u64::MAX);
    let mut parts = value.split('-');
    (parse(parts.next()), parse(parts.next()), parse(parts.next()))
}

/// A value without its padding, for messages.
pub(crate) fn short(value: &str) -> String {
    format!("{:?}", value.splitn(4, '-').take(3).collect::<Vec<_>>().join("-"))
}
