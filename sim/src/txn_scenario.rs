//! The transactions scenario: a transactional producer runs transactions across two partitions,
//! committing or aborting each, while the nemesis works on the broker; some EndTxn requests are
//! sent twice (the copy held up or racing on its own connection). A restart fences the producer,
//! which takes a new epoch and carries on. Afterwards a read_committed reader (filtering aborted
//! transactions as a Kafka consumer does) must see every acknowledged commit whole, nothing of
//! an aborted transaction, and any transaction whose outcome the producer never learned either
//! whole or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use madsim::runtime::Handle;
use spool_core::mem_disk::MemDisk;
use spool_runtime::client::Client;

use crate::disk::{DiskFaults, SimDisk};
use crate::draw;
use crate::faults::{self, Nemesis, NetFaults};
use crate::scenario::{connect, create_topic, fetch_at, producer_batch, start_broker, BrokerKnobs, HEAL_LIMIT};

const TOPIC: &str = "ledger";
const PARTITIONS: i32 = 2;
const TXN_ID: &str = "sim-txn";

#[derive(Debug, Clone)]
struct Params {
    transactions: u64,
    records_per_partition: u64,
    abort_rate: f64,
    duplicate_end: f64,
}

/// What the producer learned about each transaction.
#[derive(Default)]
struct Outcomes {
    committed: BTreeSet<u64>,
    aborted: BTreeSet<u64>,
    /// A commit was asked for and never answered.
    unknown: BTreeSet<u64>,
}

pub fn run_seed(seed: u64) -> Result<String, String> {
    crate::seed::simulate(seed, scenario)
}

async fn scenario() -> Result<String, String> {
    let params = Params {
        transactions: draw::int("txn.transactions", 5..60),
        records_per_partition: draw::int("txn.records_per_partition", 1..4),
        abort_rate: draw::int("txn.abort_percent", 0..60) as f64 / 100.0,
        duplicate_end: draw::rate("txn.duplicate_end", 0.05, 0.5),
    };
    let disk_faults = DiskFaults::draw("txn", false);
    let net = NetFaults::draw("txn");
    let nemesis = Nemesis::draw("txn");
    let handle = Handle::current();
    let disk = SimDisk::new(MemDisk::new(), disk_faults);
    let broker = start_broker(&handle, disk.clone(), &net, BrokerKnobs::draw("txn"));
    let client = handle.create_node().name("txn-client").ip("10.0.0.3".parse().expect("ip")).build();
    let mut nodes = crate::seed::KillOnExit::new(&handle);
    nodes.add(&broker);
    nodes.add(&client);
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let workload = client.spawn(run_transactions(params.clone(), outcomes.clone()));
    let applied = faults::run(&nemesis, &broker, &disk, &net).await;
    tokio::time::timeout(HEAL_LIMIT, workload)
        .await
        .map_err(|_| format!("liveness: the transactional producer did not finish within {}s", HEAL_LIMIT.as_secs()))?
        .map_err(|e| format!("producer task failed: {e}"))??;
    let visible = client.spawn(read_committed()).await.map_err(|e| format!("reader task failed: {e}"))??;
    let o = outcomes.lock().expect("outcomes");
    check(&params, &o, &visible)?;
    Ok(format!(
        "{applied}, {} committed, {} aborted, {} unknown, {} records visible",
        o.committed.len(),
        o.aborted.len(),
        o.unknown.len(),
        visible.len()
    ))
}

/// Every acknowledged commit whole, nothing aborted, unknown outcomes all or nothing, no record
/// twice, and transactions in order within a partition.
fn check(params: &Params, o: &Outcomes, visible: &[(i32, i64, String)]) -> Result<(), String> {
    let whole = (params.records_per_partition * PARTITIONS as u64) as usize;
    let mut by_txn: BTreeMap<u64, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut last_txn: BTreeMap<i32, u64> = BTreeMap::new();
    for (partition, offset, value) in visible {
        if !seen.insert(value) {
            return Err(format!("{value:?} is visible twice (again at offset {offset} of partition {partition})"));
        }
        let txn = txn_of(value);
        if last_txn.get(partition).is_some_and(|&t| t > txn) {
            return Err(format!("{value:?} at offset {offset} of partition {partition} follows a later transaction"));
        }
        last_txn.insert(*partition, txn);
        *by_txn.entry(txn).or_default() += 1;
    }
    for t in &o.committed {
        let n = by_txn.get(t).copied().unwrap_or(0);
        if n != whole {
            return Err(format!("transaction {t} was committed, but {n} of its {whole} records are visible"));
        }
    }
    for t in &o.aborted {
        if let Some(n) = by_txn.get(t) {
            return Err(format!("transaction {t} was aborted, but {n} of its records are visible to read_committed"));
        }
    }
    for (t, n) in &by_txn {
        if *n != whole {
            return Err(format!("transaction {t} is partly visible: {n} of {whole} records"));
        }
    }
    Ok(())
}

fn txn_of(value: &str) -> u64 {
    value.split('-').next().and_then(|t| t[1..].parse().ok()).unwrap_or(u64::MAX)
}

/// How a transactional request ended.
enum Reply {
    Ok,
    /// The producer's epoch is no longer current (a restart, a timeout, a newer incarnation):
    /// its open transaction is or will be aborted.
    Fenced,
}

fn classify(code: i16, what: &str) -> Result<Option<Reply>, String> {
    use ResponseError::*;
    let retriable = [
        ConcurrentTransactions,
        CoordinatorLoadInProgress,
        CoordinatorNotAvailable,
        NotCoordinator,
        KafkaStorageError,
        RequestTimedOut,
        NotEnoughReplicas,
    ];
    let fenced = [InvalidProducerEpoch, ProducerFenced, InvalidProducerIdMapping, InvalidTxnState];
    match code {
        0 => Ok(Some(Reply::Ok)),
        c if c == DuplicateSequenceNumber.code() => Ok(Some(Reply::Ok)),
        c if retriable.iter().any(|e| e.code() == c) => Ok(None),
        c if fenced.iter().any(|e| e.code() == c) => Ok(Some(Reply::Fenced)),
        c => Err(format!("{what} failed with error {c}")),
    }
}

struct Producer {
    client: Client,
    id: (i64, i16),
    sequences: [i32; PARTITIONS as usize],
    /// A request of the current call may still be in flight on an abandoned connection.
    in_flight_copy: bool,
}

impl Producer {
    /// Sends `request` until it gets a final answer; reconnects after connection trouble.
    async fn call<R>(&mut self, version: i16, request: R, what: &str) -> Result<Reply, String>
    where
        R: kafka_protocol::protocol::Request + Into<RequestKind> + Clone,
    {
        loop {
            let code = match self.client.call(version, request.clone()).await {
                Ok(ResponseKind::AddPartitionsToTxn(r)) => r
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| t.results_by_partition.iter())
                    .map(|p| p.partition_error_code)
                    .find(|&c| c != 0)
                    .unwrap_or(r.error_code),
                Ok(ResponseKind::Produce(r)) => r.responses[0].partition_responses[0].error_code,
                Ok(ResponseKind::EndTxn(r)) => r.error_code,
                Ok(ResponseKind::InitProducerId(r)) => {
                    if r.error_code == 0 {
                        self.id = (r.producer_id.0, r.producer_epoch);
                    }
                    r.error_code
                }
                Ok(other) => return Err(format!("{what}: unexpected response {other:?}")),
                Err(_) => {
                    self.in_flight_copy = true;
                    self.client = connect().await;
                    continue;
                }
            };
            match classify(code, what)? {
                Some(reply) => return Ok(reply),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A fresh epoch (aborting whatever the previous one left open).
    async fn init(&mut self) -> Result<(), String> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(TXN_ID))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        match self.call(4, request, "InitProducerId").await? {
            Reply::Ok => {
                self.sequences = [0; PARTITIONS as usize];
                Ok(())
            }
            Reply::Fenced => Err("InitProducerId was fenced".into()),
        }
    }
}

async fn run_transactions(params: Params, outcomes: Arc<Mutex<Outcomes>>) -> Result<(), String> {
    let mut client = connect().await;
    create_topic(&mut client, TOPIC, PARTITIONS, None).await;
    let mut producer = Producer { client, id: (-1, -1), sequences: [0; PARTITIONS as usize], in_flight_copy: false };
    producer.init().await?;
    for t in 0..params.transactions {
        let commit = !draw::happens(params.abort_rate);
        let outcome = run_one(&mut producer, &params, t, commit).await?;
        let mut o = outcomes.lock().expect("outcomes");
        match outcome {
            Some(true) => o.committed.insert(t),
            Some(false) => o.aborted.insert(t),
            None => o.unknown.insert(t),
        };
    }
    Ok(())
}

/// One transaction: Some(committed?) when the outcome is known, None when a commit went
/// unanswered. A fenced producer takes a new epoch before returning.
async fn run_one(producer: &mut Producer, params: &Params, t: u64, commit: bool) -> Result<Option<bool>, String> {
    let (pid, epoch) = producer.id;
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(TXN_ID)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions((0..PARTITIONS).collect())]);
    if let Reply::Fenced = producer.call(3, add, "AddPartitionsToTxn").await? {
        producer.init().await?;
        return Ok(Some(false));
    }
    for partition in 0..PARTITIONS {
        let values: Vec<String> =
            (0..params.records_per_partition).map(|r| format!("t{t}-p{partition}-r{r}")).collect();
        let sequence = producer.sequences[partition as usize];
        let request = ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(TXN_ID))))
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(producer_batch((pid, epoch), sequence, true, &values)))])]);
        if let Reply::Fenced = producer.call(9, request, "transactional Produce").await? {
            producer.init().await?;
            return Ok(Some(false));
        }
        producer.sequences[partition as usize] += values.len() as i32;
    }
    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str(TXN_ID)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    producer.in_flight_copy = draw::happens(params.duplicate_end);
    if producer.in_flight_copy {
        // The same EndTxn on its own connection, racing (or trailing) the original.
        let copy = end.clone();
        tokio::spawn(async move {
            let _ = connect().await.call(3, copy).await;
        });
    }
    match producer.call(3, end, "EndTxn").await? {
        Reply::Ok => {
            // A copy still in flight would end the next transaction with this one's decision
            // (transactions v1 cannot tell them apart): a new epoch fences it first.
            if producer.in_flight_copy {
                producer.init().await?;
            }
            Ok(Some(commit))
        }
        // An abort never commits; a commit whose answer was a fencing may still have been
        // decided by an earlier copy of the request.
        Reply::Fenced => {
            producer.init().await?;
            Ok(if commit { None } else { Some(false) })
        }
    }
}

/// Reads both partitions with isolation read_committed, skipping aborted transactions by the
/// response's aborted list and control records, up to the last stable offset once it has caught
/// up with the high watermark. Returns (partition, offset, value).
async fn read_committed() -> Result<Vec<(i32, i64, String)>, String> {
    let mut client = connect().await;
    let mut visible = Vec::new();
    for partition in 0..PARTITIONS {
        let mut position = 0i64;
        let mut stalled_since = tokio::time::Instant::now();
        loop {
            if stalled_since.elapsed() > Duration::from_secs(60) {
                return Err(format!("liveness: read_committed stuck at offset {position} of partition {partition}"));
            }
            let Some(p) = fetch_at(&mut client, TOPIC, partition, position, 1).await? else {
                continue;
            };
            if p.error_code == ResponseError::KafkaStorageError.code() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if p.error_code == ResponseError::OffsetOutOfRange.code() && p.log_start_offset > position {
                // The log can start past 0 when records never acknowledged were not kept; the
                // checker still finds any committed record that went with them.
                position = p.log_start_offset;
                continue;
            }
            if p.error_code != 0 {
                return Err(format!("read_committed fetch at {position} failed with error {}", p.error_code));
            }
            if position >= p.high_watermark && p.last_stable_offset == p.high_watermark {
                break;
            }
            let before = position;
            let mut aborted: Vec<(i64, i64)> =
                p.aborted_transactions.unwrap_or_default().iter().map(|a| (a.first_offset, a.producer_id.0)).collect();
            aborted.sort_unstable();
            let mut aborting: BTreeSet<i64> = BTreeSet::new();
            let mut records = p.records.unwrap_or_default();
            while !records.is_empty() {
                let set = RecordBatchDecoder::decode(&mut records)
                    .map_err(|e| format!("fetched bytes do not decode: {e}"))?;
                for r in set.records {
                    if r.offset < position {
                        continue;
                    }
                    while aborted.first().is_some_and(|(first, _)| *first <= r.offset) {
                        aborting.insert(aborted.remove(0).1);
                    }
                    position = r.offset + 1;
                    if r.control {
                        let abort = r.key.as_ref().is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0]);
                        if abort {
                            aborting.remove(&r.producer_id);
                        }
                        continue;
                    }
                    if r.transactional && aborting.contains(&r.producer_id) {
                        continue;
                    }
                    let value = String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned();
                    visible.push((partition, r.offset, value));
                }
            }
            if position > before {
                stalled_since = tokio::time::Instant::now();
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(visible)
}
