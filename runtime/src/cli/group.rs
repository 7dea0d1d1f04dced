//! `spool group list`, `describe`, `reset-offsets` and `delete`: what `kafka-consumer-groups.sh` does.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use spool_core::group::decode_consumer_assignment;

use super::{call, connect, coordinator, table, Output};

pub async fn list(bootstrap: &str, output: Output) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    let ResponseKind::ListGroups(r) = call(&mut client, 4, ListGroupsRequest::default()).await? else {
        bail!("unexpected answer to ListGroups")
    };
    if r.error_code != 0 {
        bail!("listing groups failed: {}", super::error_text(r.error_code, None));
    }
    let mut groups: Vec<(String, String, String)> = r
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string(), g.protocol_type.to_string()))
        .collect();
    groups.sort();
    Ok(match output {
        Output::Json => {
            let list: Vec<_> =
                groups.iter().map(|(g, s, t)| json!({"group": g, "state": s, "protocol_type": t})).collect();
            format!("{}\n", serde_json::to_string_pretty(&list)?)
        }
        Output::Table => {
            table(&["GROUP", "STATE", "PROTOCOL-TYPE"], groups.into_iter().map(|(g, s, t)| vec![g, s, t]).collect())
        }
    })
}

/// `spool group delete G`: deletes a group with no members, and its committed offsets
/// (`kafka-consumer-groups --delete`).
pub async fn delete(bootstrap: &str, group: &str) -> Result<String> {
    let mut client = coordinator(bootstrap, group).await?;
    let request =
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let ResponseKind::DeleteGroups(r) = call(&mut client, 2, request).await? else {
        bail!("unexpected answer to DeleteGroups")
    };
    let result = r.results.first().ok_or_else(|| anyhow::anyhow!("empty DeleteGroups answer"))?;
    if result.error_code != 0 {
        bail!("deleting group {group} failed: {}", super::error_text(result.error_code, None));
    }
    Ok(format!("Deleted group {group}.\n"))
}

/// One row of `group describe`: a partition the group owns or has an offset for.
struct Row {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: Option<i64>,
    member: Option<(String, String, String)>,
}

pub async fn describe(bootstrap: &str, group: &str, output: Output) -> Result<String> {
    let mut client = coordinator(bootstrap, group).await?;
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let ResponseKind::DescribeGroups(d) = call(&mut client, 5, request).await? else {
        bail!("unexpected answer to DescribeGroups")
    };
    let described = d.groups.into_iter().next().ok_or_else(|| anyhow::anyhow!("empty DescribeGroups answer"))?;
    if described.error_code != 0 {
        bail!("describing group {group} failed: {}", super::error_text(described.error_code, None));
    }
    let state = described.group_state.to_string();
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None)]);
    let ResponseKind::OffsetFetch(f) = call(&mut client, 8, fetch).await? else {
        bail!("unexpected answer to OffsetFetch")
    };
    if state == "Dead" && f.groups.iter().all(|g| g.topics.is_empty()) {
        bail!("consumer group '{group}' does not exist");
    }
    let mut rows: BTreeMap<(String, i32), Row> = BTreeMap::new();
    for m in &described.members {
        for (topic, partition) in decode_consumer_assignment(&m.member_assignment) {
            let row = rows.entry((topic.clone(), partition)).or_insert(Row {
                topic,
                partition,
                committed: None,
                end: None,
                member: None,
            });
            row.member = Some((m.member_id.to_string(), m.client_host.to_string(), m.client_id.to_string()));
        }
    }
    for g in &f.groups {
        for t in &g.topics {
            for p in &t.partitions {
                if p.committed_offset < 0 {
                    continue;
                }
                let topic = t.name.0.to_string();
                let row = rows.entry((topic.clone(), p.partition_index)).or_insert(Row {
                    topic,
                    partition: p.partition_index,
                    committed: None,
                    end: None,
                    member: None,
                });
                row.committed = Some(p.committed_offset);
            }
        }
    }
    // Log end offsets come from the partitions' leader; ask the bootstrap broker.
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in rows.keys() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    if !by_topic.is_empty() {
        let mut broker = connect(bootstrap).await?;
        let topics = by_topic
            .iter()
            .map(|(t, ps)| {
                ListOffsetsTopic::default().with_name(TopicName(StrBytes::from_string(t.clone()))).with_partitions(
                    ps.iter()
                        .map(|p| ListOffsetsPartition::default().with_partition_index(*p).with_timestamp(-1))
                        .collect(),
                )
            })
            .collect();
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(topics);
        if let ResponseKind::ListOffsets(l) = call(&mut broker, 5, request).await? {
            for t in l.topics {
                for p in t.partitions.into_iter().filter(|p| p.error_code == 0) {
                    if let Some(row) = rows.get_mut(&(t.name.0.to_string(), p.partition_index)) {
                        row.end = Some(p.offset);
                    }
                }
            }
        }
    }
    // As Kafka's kafka-consumer-groups computes it: a committed offset past the end (the topic
    // was truncated or re-created) shows as a negative lag, never as 0.
    let lag = |r: &Row| match (r.committed, r.end) {
        (Some(c), Some(e)) => Some(e - c),
        (None, Some(e)) => Some(e),
        _ => None,
    };
    let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    Ok(match output {
        Output::Json => {
            let partitions: Vec<_> = rows
                .values()
                .map(|r| {
                    json!({
                        "topic": r.topic, "partition": r.partition, "committed_offset": r.committed,
                        "log_end_offset": r.end, "lag": lag(r),
                        "member_id": r.member.as_ref().map(|m| &m.0), "host": r.member.as_ref().map(|m| &m.1),
                        "client_id": r.member.as_ref().map(|m| &m.2),
                    })
                })
                .collect();
            let members: Vec<_> = described
                .members
                .iter()
                .map(|m| json!({"member_id": m.member_id.as_str(), "client_id": m.client_id.as_str(), "host": m.client_host.as_str(), "group_instance_id": m.group_instance_id.as_deref()}))
                .collect();
            let doc = json!({"group": group, "state": state, "protocol": described.protocol_data.as_str(), "members": members, "partitions": partitions});
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        }
        Output::Table => {
            let mut out = format!("Group {group} is {state} with {} member(s).\n\n", described.members.len());
            let body = rows
                .values()
                .map(|r| {
                    let (member, host, client) =
                        r.member.clone().unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
                    vec![
                        group.to_string(),
                        r.topic.clone(),
                        r.partition.to_string(),
                        dash(r.committed),
                        dash(r.end),
                        dash(lag(r)),
                        member,
                        host,
                        client,
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "GROUP",
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID",
                ],
                body,
            ));
            out
        }
    })
}

/// Where `reset-offsets` moves a group's committed offsets.
#[derive(Clone, Copy, Debug)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
}

/// Commits new offsets for every partition of `topic` as a standalone (generation -1) commit,
/// which the coordinator accepts only while the group has no members, as Kafka does.
pub async fn reset_offsets(bootstrap: &str, group: &str, topic: &str, to: ResetTo, output: Output) -> Result<String> {
    let mut broker = connect(bootstrap).await?;
    let partitions = super::consume::partition_count(&mut broker, topic, false).await?;
    let all: Vec<i32> = (0..partitions).collect();
    let targets: BTreeMap<i32, i64> = match to {
        ResetTo::Offset(o) => all.iter().map(|p| (*p, o)).collect(),
        ResetTo::Earliest | ResetTo::Latest => {
            let ts = if matches!(to, ResetTo::Earliest) { -2 } else { -1 };
            let topics = vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    all.iter()
                        .map(|p| ListOffsetsPartition::default().with_partition_index(*p).with_timestamp(ts))
                        .collect(),
                )];
            let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(topics);
            let ResponseKind::ListOffsets(l) = call(&mut broker, 5, request).await? else {
                bail!("unexpected answer to ListOffsets")
            };
            l.topics.iter().flat_map(|t| t.partitions.iter()).map(|p| (p.partition_index, p.offset)).collect()
        }
    };
    let mut client = coordinator(bootstrap, group).await?;
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                targets
                    .iter()
                    .map(|(p, o)| {
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )]);
    let ResponseKind::OffsetCommit(r) = call(&mut client, 8, request).await? else {
        bail!("unexpected answer to OffsetCommit")
    };
    for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
        if p.error_code == kafka_protocol::ResponseError::UnknownMemberId.code() {
            bail!("group {group} has active members: stop its consumers before resetting offsets");
        }
        if p.error_code != 0 {
            bail!("resetting {topic}-{} failed: {}", p.partition_index, super::error_text(p.error_code, None));
        }
    }
    Ok(match output {
        Output::Json => {
            let rows: Vec<_> =
                targets.iter().map(|(p, o)| json!({"topic": topic, "partition": p, "new_offset": o})).collect();
            format!("{}\n", serde_json::to_string_pretty(&rows)?)
        }
        Output::Table => table(
            &["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
            targets
                .iter()
                .map(|(p, o)| vec![group.to_string(), topic.to_string(), p.to_string(), o.to_string()])
                .collect(),
        ),
    })
}
