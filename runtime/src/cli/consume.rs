//! `spool consume TOPIC`: prints records as a member of a consumer group (join, range assignment,
//! leave on exit, on Ctrl-C and on SIGTERM). With `--group` it commits after each poll; without, it
//! joins a generated `console-consumer-NNNNN` group and commits nothing, as Kafka's console consumer
//! does. A broker that restarts is waited for and the consumer carries on where it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use serde_json::json;
use spool_core::group::decode_consumer_assignment;

use super::{call, connect, coordinator, Client, Output, Stop};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub struct ConsumeOptions {
    /// None: a generated group whose offsets are not committed.
    pub group: Option<String>,
    pub from_beginning: bool,
    pub max_messages: Option<usize>,
    /// Exit after this long without a new record.
    pub timeout: Option<Duration>,
    /// kcat-like: %t topic, %p partition, %o offset, %k key, %s value, %T timestamp, %h headers.
    pub format: String,
    pub output: Output,
}

pub async fn partition_count(client: &mut Client, topic: &str, allow_create: bool) -> Result<i32> {
    for _ in 0..50 {
        let request = MetadataRequest::default().with_allow_auto_topic_creation(allow_create).with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
        ]));
        let ResponseKind::Metadata(m) = call(client, 9, request).await? else { bail!("unexpected answer to Metadata") };
        let t = m.topics.first().ok_or_else(|| anyhow::anyhow!("empty metadata answer"))?;
        match t.error_code {
            0 => return Ok(t.partitions.len() as i32),
            e if e == ResponseError::LeaderNotAvailable.code() => tokio::time::sleep(Duration::from_millis(100)).await,
            e if e == ResponseError::UnknownTopicOrPartition.code() => bail!("topic {topic} does not exist"),
            e => bail!("metadata for {topic} failed: {}", super::error_text(e, None)),
        }
    }
    bail!("topic {topic} has no leader yet")
}

fn render(options: &ConsumeOptions, topic: &str, partition: i32, r: &kafka_protocol::records::Record) -> String {
    let key = r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned());
    let value = r.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()))
        .collect();
    if options.output == Output::Json {
        let h: BTreeMap<_, _> = headers.iter().cloned().collect();
        return format!(
            "{}\n",
            json!({"topic": topic, "partition": partition, "offset": r.offset, "timestamp": r.timestamp, "key": key, "value": value, "headers": h})
        );
    }
    let mut out = String::new();
    let mut chars = options.format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(f)) => {
                chars.next();
                match f {
                    't' => out.push_str(topic),
                    'p' => out.push_str(&partition.to_string()),
                    'o' => out.push_str(&r.offset.to_string()),
                    'k' => out.push_str(key.as_deref().unwrap_or("")),
                    's' => out.push_str(value.as_deref().unwrap_or("")),
                    'T' => out.push_str(&r.timestamp.to_string()),
                    'h' => out.push_str(&headers.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")),
                    '%' => out.push('%'),
                    other => {
                        out.push('%');
                        out.push(other);
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push('\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push('\t');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Fetches from `positions` once; prints what arrived and advances the positions.
async fn poll(
    client: &mut Client,
    topic: &str,
    positions: &mut BTreeMap<i32, i64>,
    options: &ConsumeOptions,
    printed: &mut usize,
) -> Result<bool> {
    let partitions = positions
        .iter()
        .map(|(p, o)| {
            fetch_request::FetchPartition::default()
                .with_partition(*p)
                .with_fetch_offset(*o)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(partitions)]);
    let ResponseKind::Fetch(f) = call(client, 11, request).await? else { bail!("unexpected answer to Fetch") };
    let mut any = false;
    let mut text = String::new();
    for p in f.responses.iter().flat_map(|t| t.partitions.iter()) {
        if p.error_code != 0 {
            bail!("fetching {topic}-{} failed: {}", p.partition_index, super::error_text(p.error_code, None));
        }
        let position = positions[&p.partition_index];
        let mut records = p.records.clone().unwrap_or_default();
        while !records.is_empty() {
            let set =
                RecordBatchDecoder::decode(&mut records).map_err(|e| anyhow::anyhow!("undecodable records: {e}"))?;
            for r in set.records.iter().filter(|r| r.offset >= position && !r.control) {
                if options.max_messages.is_some_and(|m| *printed >= m) {
                    break;
                }
                text.push_str(&render(options, topic, p.partition_index, r));
                *printed += 1;
                any = true;
                positions.insert(p.partition_index, r.offset + 1);
            }
        }
    }
    print!("{text}");
    Ok(any)
}

/// Where a consumer is, kept across reconnects.
struct Progress {
    printed: usize,
    idle_since: Instant,
}

impl Progress {
    fn done(&self, options: &ConsumeOptions, stop: &Stop) -> bool {
        stop.requested()
            || options.max_messages.is_some_and(|m| self.printed >= m)
            || options.timeout.is_some_and(|t| self.idle_since.elapsed() >= t)
    }
}

/// Waits before connecting again: 200 ms doubling to 5 s, or less if a stop comes.
async fn reconnect_pause(attempt: &mut u32, why: &anyhow::Error, stop: &mut Stop) {
    let pause = Duration::from_millis(200 << (*attempt).min(5)).min(Duration::from_secs(5));
    if attempt.is_power_of_two() || *attempt == 0 {
        eprintln!("lost the broker ({why:#}); connecting again in {pause:?}");
    }
    *attempt += 1;
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.wait() => {}
    }
}

/// Prints records until `--max-messages`, `--timeout-ms` or a stop (Ctrl-C, SIGTERM). A broker
/// that goes away is waited for, as Kafka's clients do. Returns Kafka's closing line.
pub async fn run(bootstrap: &str, topic: &str, options: ConsumeOptions, mut stop: Stop) -> Result<String> {
    let mut progress = Progress { printed: 0, idle_since: Instant::now() };
    let session = Session {
        group: options.group.clone().unwrap_or_else(|| format!("console-consumer-{}", rand::random::<u32>() % 100_000)),
        commit: options.group.is_some(),
    };
    let mut member = String::new();
    let mut positions = BTreeMap::new();
    let mut attempt = 0u32;
    while !progress.done(&options, &stop) {
        let result =
            consume_in_group(bootstrap, topic, &session, &options, &mut progress, &mut member, &mut positions, &stop)
                .await;
        match result {
            Ok(()) => break,
            Err(e) if super::is_disconnected(&e) => reconnect_pause(&mut attempt, &e, &mut stop).await,
            Err(e) => return Err(e),
        }
    }
    eprintln!("Processed a total of {} messages", progress.printed);
    Ok(String::new())
}

/// The group a consumer joins, and whether it commits there.
struct Session {
    group: String,
    commit: bool,
}

fn subscription(topic: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(-1);
    b.freeze()
}

fn range_assignment(topic: &str, members: &[String], partitions: i32) -> Vec<(String, Bytes)> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let n = sorted.len() as i32;
    sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // Kafka's range assignor: contiguous runs, the first members get one extra.
            let (per, extra) = (partitions / n, partitions % n);
            let start = i as i32 * per + (i as i32).min(extra);
            let len = per + if (i as i32) < extra { 1 } else { 0 };
            let mut b = BytesMut::new();
            b.put_i16(0);
            b.put_i32(1);
            b.put_i16(topic.len() as i16);
            b.put_slice(topic.as_bytes());
            b.put_i32(len);
            for p in start..start + len {
                b.put_i32(p);
            }
            b.put_i32(-1);
            (m.clone(), b.freeze())
        })
        .collect()
}

/// One session in the group: join, consume what is assigned, commit, leave on the way out. A
/// member id survives a reconnect; the broker answers UNKNOWN_MEMBER_ID if it forgot it. Positions
/// reached survive too, so a consumer that commits nothing neither repeats nor skips records.
#[allow(clippy::too_many_arguments)]
async fn consume_in_group(
    bootstrap: &str,
    topic: &str,
    session: &Session,
    options: &ConsumeOptions,
    progress: &mut Progress,
    member: &mut String,
    reached: &mut BTreeMap<i32, i64>,
    stop: &Stop,
) -> Result<()> {
    let group = session.group.as_str();
    let mut client = coordinator(bootstrap, group).await?;
    let mut data = connect(bootstrap).await?;
    let count = partition_count(&mut data, topic, false).await?;
    let gid = || GroupId(s(group));
    'rejoin: while !progress.done(options, stop) {
        let join = JoinGroupRequest::default()
            .with_group_id(gid())
            .with_session_timeout_ms(45_000)
            .with_rebalance_timeout_ms(60_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(subscription(topic))]);
        let mut stop_waiting = stop.clone();
        let joined = tokio::select! {
            joined = call(&mut client, 7, join) => joined?,
            _ = stop_waiting.wait() => break 'rejoin,
        };
        let ResponseKind::JoinGroup(j) = joined else { bail!("unexpected answer to JoinGroup") };
        if j.error_code == ResponseError::MemberIdRequired.code() {
            *member = j.member_id.to_string();
            continue;
        }
        if j.error_code == ResponseError::UnknownMemberId.code() {
            member.clear();
            continue;
        }
        if j.error_code != 0 {
            bail!("joining group {group} failed: {}", super::error_text(j.error_code, None));
        }
        *member = j.member_id.to_string();
        let assignments = if j.leader == j.member_id {
            range_assignment(topic, &j.members.iter().map(|m| m.member_id.to_string()).collect::<Vec<_>>(), count)
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(gid())
            .with_generation_id(j.generation_id)
            .with_member_id(s(member))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(m, a)| {
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(s(&m))
                            .with_assignment(a)
                    })
                    .collect(),
            );
        let ResponseKind::SyncGroup(sg) = call(&mut client, 3, sync).await? else {
            bail!("unexpected answer to SyncGroup")
        };
        if sg.error_code != 0 {
            continue;
        }
        // Kafka's --timeout-ms counts time without a message, not time spent joining the group.
        progress.idle_since = Instant::now();
        let mine: Vec<i32> = decode_consumer_assignment(&sg.assignment)
            .into_iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p)
            .collect();
        let fetch = OffsetFetchRequest::default().with_group_id(gid()).with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(mine.clone()),
        ]));
        let ResponseKind::OffsetFetch(f) = call(&mut client, 7, fetch).await? else {
            bail!("unexpected answer to OffsetFetch")
        };
        let default =
            super::list_offsets(&mut data, topic, &mine, if options.from_beginning { -2 } else { -1 }).await?;
        let mut positions: BTreeMap<i32, i64> = f
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| {
                (
                    p.partition_index,
                    if p.committed_offset >= 0 {
                        p.committed_offset
                    } else if let Some(reached) = reached.get(&p.partition_index) {
                        *reached
                    } else {
                        default.get(&p.partition_index).copied().unwrap_or(0)
                    },
                )
            })
            .collect();
        let mut last_heartbeat = Instant::now();
        while !progress.done(options, stop) {
            if !positions.is_empty() {
                let before = positions.clone();
                if poll(&mut data, topic, &mut positions, options, &mut progress.printed).await? {
                    progress.idle_since = Instant::now();
                }
                reached.extend(positions.iter().map(|(p, o)| (*p, *o)));
                if session.commit && positions != before {
                    let commit = OffsetCommitRequest::default()
                        .with_group_id(gid())
                        .with_generation_id_or_member_epoch(j.generation_id)
                        .with_member_id(s(member))
                        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s(topic)))
                            .with_partitions(
                                positions
                                    .iter()
                                    .map(|(p, o)| {
                                        offset_commit_request::OffsetCommitRequestPartition::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(*o)
                                    })
                                    .collect(),
                            )]);
                    call(&mut client, 8, commit).await?;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if last_heartbeat.elapsed() >= Duration::from_secs(3) {
                last_heartbeat = Instant::now();
                let hb = HeartbeatRequest::default()
                    .with_group_id(gid())
                    .with_generation_id(j.generation_id)
                    .with_member_id(s(member));
                let ResponseKind::Heartbeat(h) = call(&mut client, 3, hb).await? else {
                    bail!("unexpected answer to Heartbeat")
                };
                if h.error_code != 0 {
                    continue 'rejoin;
                }
            }
        }
    }
    // Leaving at once hands the partitions to the others now, not after the session timeout.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid())
        .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(s(member))]);
    let _ = call(&mut client, 3, leave).await;
    Ok(())
}
