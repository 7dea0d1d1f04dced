//! Consumer groups under faults: simulated group consumers (join, sync with a range assignor,
//! fetch, commit, heartbeat) join, leave, crash and rejoin while a producer writes; the broker
//! itself may crash. Checked: no partition owned by two members of one generation, committed
//! offsets only at delivered positions, and once faults stop the group settles and every
//! acknowledged record is consumed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use spool_core::group::decode_consumer_assignment;
use spool_core::mem_disk::MemDisk;
use spool_runtime::client::Client;

use crate::disk::{DiskFaults, SimDisk};
use crate::draw;
use crate::faults::{self, Nemesis, NetFaults};
use crate::scenario::{broker_addr, create_topic, start_broker, BrokerKnobs, HEAL_LIMIT};

const TOPIC: &str = "events";
const GROUP: &str = "workers";

#[derive(Debug, Clone)]
struct Params {
    partitions: i32,
    consumers: usize,
    records: usize,
    consumer_faults: usize,
}

#[derive(Default)]
struct Observed {
    /// generation -> member -> partitions, from successful syncs.
    owned: BTreeMap<i32, BTreeMap<String, BTreeSet<i32>>>,
    /// (partition, offset) -> value, as delivered to any consumer.
    delivered: BTreeMap<(i32, i64), String>,
    /// Acknowledged commits: (partition, offset).
    commits: Vec<(i32, i64)>,
    /// Values whose produce was acknowledged.
    acked: BTreeSet<String>,
    /// Set when faults stop; consumers stop leaving on their own.
    healing: bool,
    /// The newest generation any member has synced in: from then on the broker refuses a
    /// heartbeat or commit of an older one (ILLEGAL_GENERATION), whatever the faults.
    newest_synced_generation: i32,
    /// Invariants a consumer saw broken, as it saw them.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Observed>>;

pub fn run_seed(seed: u64) -> Result<String, String> {
    crate::seed::simulate(seed, scenario)
}

async fn scenario() -> Result<String, String> {
    let params = Params {
        partitions: draw::int("groups.partitions", 1..7) as i32,
        consumers: draw::int("groups.consumers", 1..5) as usize,
        records: draw::int("groups.records", 20..300) as usize,
        consumer_faults: draw::int("groups.consumer_faults", 0..6) as usize,
    };
    let disk_faults = DiskFaults::draw("groups", false);
    let net = NetFaults::draw("groups");
    let nemesis = Nemesis::draw("groups");
    let handle = Handle::current();
    let disk = SimDisk::new(MemDisk::new(), disk_faults);
    let broker = start_broker(&handle, disk.clone(), &net, BrokerKnobs::draw("groups"));
    let observed: Shared = Arc::new(Mutex::new(Observed::default()));

    let producer = handle.create_node().name("producer").ip("10.0.0.2".parse().expect("ip")).build();
    let produced = producer.spawn(produce(params.clone(), observed.clone()));
    let consumer_node = |i: usize| {
        let observed = observed.clone();
        handle
            .create_node()
            .name(format!("consumer-{i}"))
            .ip(format!("10.0.1.{}", i + 1).parse().expect("ip"))
            .init(move || consume(observed.clone()))
            .build()
    };
    let consumers: Vec<_> = (0..params.consumers).map(consumer_node).collect();
    let mut nodes = crate::seed::KillOnExit::new(&handle);
    for node in consumers.iter().chain([&broker, &producer]) {
        nodes.add(node);
    }

    // Faults: consumers crash (silently), leave and come back, while the nemesis works on the
    // broker.
    let consumer_faults = async {
        for _ in 0..params.consumer_faults {
            tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(100..8000))).await;
            let victim = &consumers[thread_rng().gen_range(0..consumers.len())];
            handle.kill(victim.id());
            tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(0..10_000))).await;
            handle.restart(victim.id());
        }
    };
    let (applied, ()) = tokio::join!(faults::run(&nemesis, &broker, &disk, &net), consumer_faults);
    tokio::time::timeout(HEAL_LIMIT, produced)
        .await
        .map_err(|_| {
            format!("liveness: the producer did not finish within {}s after faults stopped", HEAL_LIMIT.as_secs())
        })?
        .map_err(|e| format!("producer task failed: {e}"))??;
    observed.lock().expect("observed").healing = true;

    // Faults stop: within the bound the group settles and every acknowledged record is consumed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (missing, stable) = {
            let o = observed.lock().expect("observed");
            let seen: BTreeSet<&String> = o.delivered.values().collect();
            (o.acked.iter().filter(|v| !seen.contains(v)).count(), true)
        };
        // Ask from a node with an address (the main task has none).
        let state = producer.spawn(group_state()).await.ok().flatten();
        let settled = stable && state.as_deref() == Some("Stable");
        if missing == 0 && settled {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("liveness: after faults stopped, {missing} acknowledged records were never consumed (group stable: {settled})"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let o = observed.lock().expect("observed");
    check(&o)?;
    Ok(format!(
        "{applied}, {} generations, {} commits, {} records consumed",
        o.owned.len(),
        o.commits.len(),
        o.delivered.len()
    ))
}

fn check(o: &Observed) -> Result<(), String> {
    if let Some(v) = o.violations.first() {
        return Err(v.clone());
    }
    for (generation, owners) in &o.owned {
        let mut seen = BTreeMap::new();
        for (member, parts) in owners {
            for p in parts {
                if let Some(other) = seen.insert(*p, member) {
                    return Err(format!("partition {p} owned by {other} and {member} in generation {generation}"));
                }
            }
        }
    }
    for &(p, offset) in &o.commits {
        if offset > 0 && !o.delivered.contains_key(&(p, offset - 1)) {
            return Err(format!(
                "committed offset {offset} of partition {p}, but offset {} was never delivered",
                offset - 1
            ));
        }
    }
    Ok(())
}

async fn connect() -> Client {
    loop {
        if let Ok(c) = Client::connect(broker_addr(), Duration::from_secs(2)).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn group_state() -> Option<String> {
    let mut c = Client::connect(broker_addr(), Duration::from_secs(2)).await.ok()?;
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str(GROUP))]);
    match c.call(5, req).await.ok()? {
        ResponseKind::DescribeGroups(d) => d.groups.first().map(|g| g.group_state.to_string()),
        _ => None,
    }
}

fn batch(values: &[String]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1 + i as i32,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

async fn produce(params: Params, observed: Shared) -> Result<(), String> {
    let mut client = connect().await;
    create_topic(&mut client, TOPIC, params.partitions, None).await;
    for i in 0..params.records {
        let value = format!("r{i}");
        let partition = i as i32 % params.partitions;
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch(std::slice::from_ref(&value))))]),
        ]);
        // Retries may duplicate a record (no idempotence here); consumers see values as a set.
        loop {
            match client.call(9, request.clone()).await {
                Ok(ResponseKind::Produce(r)) if r.responses[0].partition_responses[0].error_code == 0 => {
                    observed.lock().expect("observed").acked.insert(value.clone());
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => client = connect().await,
            }
        }
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(0..50))).await;
    }
    Ok(())
}

/// ConsumerProtocolSubscription v0 for our topic.
fn subscription() -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(TOPIC.len() as i16);
    b.put_slice(TOPIC.as_bytes());
    b.put_i32(-1);
    b.freeze()
}

/// Range assignment of the topic's partitions over the (sorted) members.
fn assign(members: &[String], partitions: i32) -> Vec<(String, Bytes)> {
    let mut sorted = members.to_vec();
    sorted.sort();
    sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mine: Vec<i32> = (0..partitions).filter(|p| *p as usize % sorted.len() == i).collect();
            let mut b = BytesMut::new();
            b.put_i16(0);
            b.put_i32(1);
            b.put_i16(TOPIC.len() as i16);
            b.put_slice(TOPIC.as_bytes());
            b.put_i32(mine.len() as i32);
            for p in mine {
                b.put_i32(p);
            }
            b.put_i32(-1);
            (m.clone(), b.freeze())
        })
        .collect()
}

fn g() -> GroupId {
    GroupId(StrBytes::from_static_str(GROUP))
}

/// One consumer's life: join, sync, then fetch/commit/heartbeat until the group rebalances.
async fn consume(observed: Shared) {
    let mut client = connect().await;
    let mut member = String::new();
    loop {
        // Join (the first attempt gets MEMBER_ID_REQUIRED and an id).
        let join = JoinGroupRequest::default()
            .with_group_id(g())
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.clone()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(subscription())]);
        let joined = match client.call(7, join).await {
            Ok(ResponseKind::JoinGroup(j)) => j,
            _ => {
                client = connect().await;
                continue;
            }
        };
        if joined.error_code == ResponseError::MemberIdRequired.code() {
            member = joined.member_id.to_string();
            continue;
        }
        if joined.error_code == ResponseError::UnknownMemberId.code() {
            member.clear();
            continue;
        }
        if joined.error_code != 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        member = joined.member_id.to_string();
        let generation = joined.generation_id;
        let partitions = match metadata_partitions(&mut client).await {
            Some(n) => n,
            None => continue,
        };
        let assignments = if joined.leader == joined.member_id {
            assign(&joined.members.iter().map(|m| m.member_id.to_string()).collect::<Vec<_>>(), partitions)
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(g())
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.clone()))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(m, a)| {
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(m))
                            .with_assignment(a)
                    })
                    .collect(),
            );
        let synced = match client.call(3, sync).await {
            Ok(ResponseKind::SyncGroup(s)) if s.error_code == 0 => s,
            Ok(_) => continue,
            Err(_) => {
                client = connect().await;
                continue;
            }
        };
        let mine: Vec<i32> = decode_consumer_assignment(&synced.assignment).into_iter().map(|(_, p)| p).collect();
        {
            let mut o = observed.lock().expect("observed");
            o.owned.entry(generation).or_default().insert(member.clone(), mine.iter().cloned().collect());
            o.newest_synced_generation = o.newest_synced_generation.max(generation);
        }
        if run_generation(&mut client, &member, generation, &mine, &observed).await.is_err() {
            client = connect().await;
        }
    }
}

async fn metadata_partitions(client: &mut Client) -> Option<i32> {
    // A consumer must not create the topic (with the default partition count) before the
    // producer creates it with its own.
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]));
    match client.call(9, req).await.ok()? {
        ResponseKind::Metadata(m) if m.topics.first().is_some_and(|t| t.error_code == 0) => {
            Some(m.topics[0].partitions.len() as i32)
        }
        _ => None,
    }
}

fn newest_synced(observed: &Shared) -> i32 {
    observed.lock().expect("observed").newest_synced_generation
}

/// A request of `generation` sent once `newer` had synced was accepted: Kafka refuses it with
/// ILLEGAL_GENERATION, so a zombie member can neither stay nor commit over the new owner.
fn refused_if_stale(observed: &Shared, what: &str, member: &str, generation: i32, newer: i32) {
    if generation < newer {
        observed.lock().expect("observed").violations.push(format!(
            "member {member}'s {what} of generation {generation}, sent after generation {newer} had synced, was \
             accepted"
        ));
    }
}

/// Consumes the assigned partitions until the group moves on. Err = connection trouble.
async fn run_generation(
    client: &mut Client,
    member: &str,
    generation: i32,
    mine: &[i32],
    observed: &Shared,
) -> Result<(), ()> {
    // Start from the committed offsets.
    let fetch = OffsetFetchRequest::default().with_group_id(g()).with_topics(Some(vec![
        offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_indexes(mine.to_vec()),
    ]));
    let mut positions: BTreeMap<i32, i64> = match client.call(7, fetch).await.map_err(|_| ())? {
        ResponseKind::OffsetFetch(f) if f.error_code == 0 => f
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.committed_offset.max(0)))
            .collect(),
        _ => return Ok(()),
    };
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut high_watermarks: BTreeMap<i32, i64> = BTreeMap::new();
    loop {
        if last_heartbeat.elapsed() > Duration::from_millis(1000) {
            last_heartbeat = tokio::time::Instant::now();
            let hb = HeartbeatRequest::default()
                .with_group_id(g())
                .with_generation_id(generation)
                .with_member_id(StrBytes::from_string(member.to_string()));
            let newer = newest_synced(observed);
            match client.call(3, hb).await.map_err(|_| ())? {
                ResponseKind::Heartbeat(h) if h.error_code == 0 => {
                    refused_if_stale(observed, "heartbeat", member, generation, newer);
                }
                _ => return Ok(()),
            }
            // Now and then a consumer leaves politely (and rejoins as a new member).
            let healing = observed.lock().expect("observed").healing;
            if !healing && thread_rng().gen_ratio(1, 200) {
                let leave = LeaveGroupRequest::default()
                    .with_group_id(g())
                    .with_member_id(StrBytes::from_string(member.to_string()));
                let _ = client.call(1, leave).await;
                return Ok(());
            }
        }
        if mine.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let partitions = mine
            .iter()
            .map(|p| {
                fetch_request::FetchPartition::default()
                    .with_partition(*p)
                    .with_fetch_offset(positions.get(p).copied().unwrap_or(0))
                    .with_partition_max_bytes(64 << 10)
            })
            .collect();
        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(300)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(partitions)]);
        let ResponseKind::Fetch(f) = client.call(12, fetch).await.map_err(|_| ())? else { return Err(()) };
        let mut commits = Vec::new();
        for p in f.responses.iter().flat_map(|t| t.partitions.iter()) {
            if p.error_code == ResponseError::OffsetOutOfRange.code() {
                // auto.offset.reset=earliest: the log may now start later than 0.
                positions.insert(p.partition_index, p.log_start_offset.max(0));
                continue;
            }
            let mut records = p.records.clone().unwrap_or_default();
            let position = positions.get(&p.partition_index).copied().unwrap_or(0);
            let mut next = position;
            let mut o = observed.lock().expect("observed");
            // The high watermark a member sees never goes down: its fetches are sequential, so
            // this holds across reconnects and broker restarts too.
            let seen_hw = high_watermarks.entry(p.partition_index).or_insert(0);
            if p.error_code == 0 && p.high_watermark < *seen_hw {
                o.violations.push(format!(
                    "member {member} saw the high watermark of partition {} go from {seen_hw} down to {}",
                    p.partition_index, p.high_watermark
                ));
            }
            *seen_hw = (*seen_hw).max(p.high_watermark);
            while !records.is_empty() {
                let Ok(set) = RecordBatchDecoder::decode(&mut records) else { break };
                if let Some(r) = set.records.iter().find(|r| r.offset >= p.high_watermark) {
                    // A consumer is never served a record the broker does not count as durable.
                    o.violations.push(format!(
                        "member {member} was served offset {} of partition {} at or past the high watermark {} \
                         of the same answer",
                        r.offset, p.partition_index, p.high_watermark
                    ));
                }
                for r in set.records.into_iter().filter(|r| r.offset >= position) {
                    if r.offset != next {
                        o.violations.push(format!(
                            "member {member} in generation {generation} at offset {next} of partition {} was handed offset {} (a skip)",
                            p.partition_index, r.offset
                        ));
                    }
                    let value = String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned();
                    if let Some(before) = o.delivered.insert((p.partition_index, r.offset), value.clone()) {
                        if before != value {
                            o.violations.push(format!(
                                "offset {} of partition {} held {before:?} and later {value:?}",
                                r.offset, p.partition_index
                            ));
                        }
                    }
                    next = r.offset + 1;
                }
            }
            drop(o);
            if next > position {
                positions.insert(p.partition_index, next);
                commits.push((p.partition_index, next));
            }
        }
        if !commits.is_empty() {
            let commit = OffsetCommitRequest::default()
                .with_group_id(g())
                .with_generation_id_or_member_epoch(generation)
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(
                        commits
                            .iter()
                            .map(|(p, o)| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    )]);
            let newer = newest_synced(observed);
            match client.call(8, commit).await.map_err(|_| ())? {
                ResponseKind::OffsetCommit(c) => {
                    if c.topics.iter().flat_map(|t| t.partitions.iter()).any(|p| p.error_code == 0) {
                        refused_if_stale(observed, "offset commit", member, generation, newer);
                    }
                    let mut o = observed.lock().expect("observed");
                    for p in c.topics.iter().flat_map(|t| t.partitions.iter()).filter(|p| p.error_code == 0) {
                        if let Some((_, offset)) = commits.iter().find(|(q, _)| *q == p.partition_index) {
                            o.commits.push((p.partition_index, *offset));
                        }
                    }
                    if c.topics.iter().flat_map(|t| t.partitions.iter()).any(|p| p.error_code != 0) {
                        return Ok(());
                    }
                }
                _ => return Err(()),
            }
        }
    }
}
