//! Drives a Broker over MemDisk with encoded requests, as a driver would, with no I/O or clock.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use spool_core::codec;
use spool_core::config::BrokerConfig;
use spool_core::loader;
use spool_core::mem_disk::MemDisk;
use spool_core::storage::{Completion, FileKind, StorageError, StorageOp};
use spool_core::{Action, Broker, ConnId, Peer};

pub struct Node {
    pub broker: Broker,
    pub disk: MemDisk,
    pub config: BrokerConfig,
    pub now: i64,
    pub responses: BTreeMap<ConnId, VecDeque<Bytes>>,
    pub closed: BTreeSet<ConnId>,
    /// While set, fsyncs wait in `held` instead of completing.
    pub hold_syncs: bool,
    pub held: Vec<StorageOp>,
    pub syncs_issued: usize,
    /// Each upcoming read gets one byte of its result flipped: at this index, or counted from
    /// the end when negative (a bad read, not a bad disk).
    pub flip_next_reads: VecDeque<isize>,
    /// fsyncs touching a file of this topic fail (EIO) instead of making anything durable.
    pub fail_syncs_of: Option<String>,
    /// Log writes to this segment (topic, base offset) fail (ENOSPC) and write nothing.
    pub fail_writes_of: Option<(String, i64)>,
    /// Each upcoming metadata replacement fails if its entry is true.
    pub fail_meta_writes: VecDeque<bool>,
    /// The length of every read asked for, in order.
    pub read_lens: Vec<usize>,
    /// Every log write: (segment base, position, chunk count), in order.
    pub log_writes: Vec<(i64, u64, usize)>,
    /// Set when the broker asked for a restart in place.
    pub restart_requested: Option<String>,
    /// Requests to peers not yet answered: (id, destination, frame with size prefix).
    pub forwarded: Vec<(u64, Peer, Bytes)>,
    next_correlation: i32,
}

pub const START_MS: i64 = 1_700_000_000_000;

impl Node {
    pub fn new(config: BrokerConfig) -> Self {
        Self::boot(config, MemDisk::new(), START_MS)
    }

    fn boot(config: BrokerConfig, disk: MemDisk, now: i64) -> Self {
        Self::boot_with(config, disk, now, VecDeque::new())
    }

    fn boot_with(config: BrokerConfig, mut disk: MemDisk, now: i64, flip_next_reads: VecDeque<isize>) -> Self {
        let (state, repairs) =
            loader::load(&mut disk, config.node_id, 4096, || "test-cluster".to_string()).expect("load");
        disk.apply_repairs(&repairs);
        let broker = Broker::new(config.clone(), state, now);
        let mut node = Node {
            broker,
            disk,
            config,
            now,
            responses: BTreeMap::new(),
            closed: BTreeSet::new(),
            hold_syncs: false,
            held: Vec::new(),
            syncs_issued: 0,
            flip_next_reads,
            fail_syncs_of: None,
            fail_writes_of: None,
            fail_meta_writes: VecDeque::new(),
            read_lens: Vec::new(),
            log_writes: Vec::new(),
            restart_requested: None,
            forwarded: Vec::new(),
            next_correlation: 1,
        };
        node.run();
        node
    }

    pub fn single() -> Self {
        Self::new(BrokerConfig::single_node("127.0.0.1", 9092))
    }

    /// Power loss: unsynced writes are gone; the node restarts and recovers.
    pub fn crash_and_restart(self) -> Self {
        let mut disk = self.disk;
        disk.crash(&mut |_| 0);
        Self::boot(self.config, disk, self.now)
    }

    /// Power loss where `torn(base_offset)` sectors of each log's unsynced tail survive.
    pub fn crash_and_restart_torn(self, torn: impl Fn(i64) -> usize) -> Self {
        let mut disk = self.disk;
        disk.crash(&mut |f| torn(f.base_offset));
        Self::boot(self.config, disk, self.now)
    }

    /// The process dies but the machine does not: unsynced writes stay in the page cache and
    /// the restarted node sees them.
    pub fn kill_and_restart(self) -> Self {
        Self::boot(self.config, self.disk, self.now)
    }

    /// A crash and restart in which the first reads after start-up come back with a flipped byte.
    pub fn crash_and_restart_with_bad_reads(self, flips: &[isize]) -> Self {
        let mut disk = self.disk;
        disk.crash(&mut |_| 0);
        let flips: VecDeque<isize> = flips.iter().copied().collect();
        Self::boot_with(self.config, disk, self.now, flips)
    }

    pub fn clean_restart(mut self) -> Self {
        self.hold_syncs = false;
        self.release_syncs();
        self.broker.handle_shutdown();
        let done = self.run();
        assert!(done, "shutdown completes once everything is synced");
        let mut disk = self.disk;
        disk.mark_clean_shutdown();
        Self::boot(self.config, disk, self.now)
    }

    /// Executes actions until none are left. Returns true if shutdown completed.
    pub fn run(&mut self) -> bool {
        let mut done = false;
        while let Some(action) = self.broker.poll_action() {
            match action {
                Action::Send { conn, frame } => self.responses.entry(conn).or_default().push_back(frame),
                Action::Close { conn, .. } => {
                    self.closed.insert(conn);
                }
                Action::ShutdownComplete => done = true,
                Action::Restart { reason } => self.restart_requested = Some(reason),
                Action::Forward { id, to, frame } => self.forwarded.push((id, to, frame)),
                Action::Storage(op) => {
                    if let StorageOp::Sync { id, files } = &op {
                        if files.iter().any(|f| Some(&*f.tp.topic) == self.fail_syncs_of.as_deref()) {
                            let failed = Completion::Synced { id: *id, result: Err(StorageError("EIO".into())) };
                            self.broker.handle_completion(self.now, failed);
                            continue;
                        }
                    }
                    if let StorageOp::Write { id, file, .. } = &op {
                        let segment = (file.tp.topic.to_string(), file.base_offset);
                        if file.kind == FileKind::Log && self.fail_writes_of.as_ref() == Some(&segment) {
                            let failed = Completion::Written { id: *id, result: Err(StorageError("ENOSPC".into())) };
                            self.broker.handle_completion(self.now, failed);
                            continue;
                        }
                    }
                    if let StorageOp::WriteMeta { id, .. } = &op {
                        if self.fail_meta_writes.pop_front() == Some(true) {
                            let failed =
                                Completion::MetaWritten { id: *id, result: Err(StorageError("ENOSPC".into())) };
                            self.broker.handle_completion(self.now, failed);
                            continue;
                        }
                    }
                    if let StorageOp::Read { len, .. } = &op {
                        self.read_lens.push(*len);
                    }
                    if let StorageOp::Write { file, position, chunks, .. } = &op {
                        if file.kind == FileKind::Log {
                            self.log_writes.push((file.base_offset, *position, chunks.len()));
                        }
                    }
                    if matches!(op, StorageOp::Sync { .. }) {
                        self.syncs_issued += 1;
                        if self.hold_syncs {
                            self.held.push(op);
                            continue;
                        }
                    }
                    if let Some(mut c) = self.disk.execute(op) {
                        if let Completion::Read { result: Ok(bytes), .. } = &mut c {
                            if let Some(at) = self.flip_next_reads.pop_front() {
                                let mut flipped = bytes.to_vec();
                                let at = if at < 0 { flipped.len() as isize + at } else { at };
                                if let Some(b) = flipped.get_mut(at as usize) {
                                    *b ^= 0x10;
                                }
                                *bytes = Bytes::from(flipped);
                            }
                        }
                        self.broker.handle_completion(self.now, c);
                    }
                }
            }
        }
        done
    }

    pub fn release_syncs(&mut self) {
        for op in std::mem::take(&mut self.held) {
            let c: Completion = self.disk.execute(op).expect("sync completes");
            self.broker.handle_completion(self.now, c);
        }
        self.run();
    }

    pub fn advance(&mut self, ms: i64) {
        self.now += ms;
        self.broker.handle_tick(self.now);
        self.run();
    }

    /// Sends a request; returns its correlation id.
    pub fn send<R: kafka_protocol::protocol::Request + Into<RequestKind>>(
        &mut self,
        conn: ConnId,
        version: i16,
        body: R,
    ) -> i32 {
        let correlation = self.queue(conn, version, body);
        self.run();
        correlation
    }

    /// Hands a request to the broker without carrying out its actions yet, as a driver does
    /// with requests that arrive in the same turn.
    pub fn queue<R: kafka_protocol::protocol::Request + Into<RequestKind>>(
        &mut self,
        conn: ConnId,
        version: i16,
        body: R,
    ) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let frame = codec::encode_request(&header, &body.into()).expect("encode request");
        self.broker.handle_frame(self.now, conn, frame.slice(4..));
        correlation
    }

    /// Takes the next response on `conn`, if one was sent.
    pub fn take<R: kafka_protocol::protocol::Request>(
        &mut self,
        conn: ConnId,
        version: i16,
    ) -> Option<(i32, ResponseKind)> {
        let frame = self.responses.get_mut(&conn)?.pop_front()?;
        let key = ApiKey::try_from(R::KEY).expect("key");
        Some(codec::decode_response(key, version, frame.slice(4..)).expect("decode response"))
    }

    /// Request and its immediate response.
    pub fn call<R: kafka_protocol::protocol::Request + Into<RequestKind>>(
        &mut self,
        conn: ConnId,
        version: i16,
        body: R,
    ) -> ResponseKind {
        let correlation = self.send(conn, version, body);
        let (got, response) =
            self.take::<R>(conn, version).unwrap_or_else(|| panic!("no response to api {} v{version}", R::KEY));
        assert_eq!(got, correlation);
        response
    }
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn records(values: &[&str], producer: Option<(i64, i16, i32)>, timestamp: i64) -> Bytes {
    encode_records(values, producer, timestamp, false)
}

/// A transactional batch of a producer (id, epoch, base sequence).
pub fn txn_records(values: &[&str], producer: (i64, i16, i32), timestamp: i64) -> Bytes {
    encode_records(values, Some(producer), timestamp, true)
}

/// A plain batch of (value, timestamp) records.
pub fn records_at(values: &[(&str, i64)]) -> Bytes {
    let (values, timestamps): (Vec<&str>, Vec<i64>) = values.iter().copied().unzip();
    encode_records_at(&values, None, &timestamps, false)
}

fn encode_records(values: &[&str], producer: Option<(i64, i16, i32)>, timestamp: i64, transactional: bool) -> Bytes {
    let timestamps: Vec<i64> = (0..values.len() as i64).map(|i| timestamp + i).collect();
    encode_records_at(values, producer, &timestamps, transactional)
}

fn encode_records_at(
    values: &[&str],
    producer: Option<(i64, i16, i32)>,
    timestamps: &[i64],
    transactional: bool,
) -> Bytes {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
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
            sequence: base_sequence + i as i32,
            timestamp: timestamps[i],
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .unwrap();
    buf.freeze()
}

pub fn produce_request(topic_name: &str, partition: i32, acks: i16, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(topic(topic_name)).with_partition_data(vec![
            produce_request::PartitionProduceData::default().with_index(partition).with_records(Some(batch)),
        ]),
    ])
}

pub fn fetch_request(topic_name: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default().with_topic(topic(topic_name)).with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20),
        ])])
}

pub fn create_topic(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreateTopicsRequest {
    CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            ),
    ])
}

pub fn produce_partition(r: &ResponseKind) -> &produce_response::PartitionProduceResponse {
    match r {
        ResponseKind::Produce(p) => &p.responses[0].partition_responses[0],
        other => panic!("not a produce response: {other:?}"),
    }
}

pub fn fetch_partition(r: &ResponseKind) -> &fetch_response::PartitionData {
    match r {
        ResponseKind::Fetch(f) => &f.responses[0].partitions[0],
        other => panic!("not a fetch response: {other:?}"),
    }
}

/// (offset, value) of every record in fetched bytes; control records (transaction markers) are
/// skipped, as clients skip them.
pub fn decode_values(bytes: &Bytes) -> Vec<(i64, String)> {
    let mut buf = bytes.clone();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode(&mut buf).expect("fetched batches decode");
        for r in set.records.into_iter().filter(|r| !r.control) {
            out.push((r.offset, String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap()));
        }
    }
    out
}
