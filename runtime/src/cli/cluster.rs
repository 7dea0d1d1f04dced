//! `spool cluster info`: brokers, controller, cluster id and the API versions served;
//! `spool cluster quorum`: the metadata quorum, its leader and each voter's lag.

use anyhow::{bail, Result};
use kafka_protocol::messages::{
    describe_quorum_request, describe_quorum_response, ApiKey, ApiVersionsRequest, DescribeQuorumRequest,
    DescribeQuorumResponse, MetadataRequest, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde_json::json;

use super::{call, connect, table, Output};

pub async fn info(bootstrap: &str, output: Output) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    let ResponseKind::ApiVersions(v) = call(&mut client, 3, ApiVersionsRequest::default()).await? else {
        bail!("unexpected answer to ApiVersions")
    };
    let ResponseKind::Metadata(m) =
        call(&mut client, 12, MetadataRequest::default().with_topics(Some(Vec::new()))).await?
    else {
        bail!("unexpected answer to Metadata")
    };
    let cluster = m.cluster_id.as_deref().unwrap_or("-").to_string();
    let brokers: Vec<(i32, String, i32)> =
        m.brokers.iter().map(|b| (b.node_id.0, b.host.to_string(), b.port)).collect();
    let apis: Vec<(String, i16, i16)> = v
        .api_keys
        .iter()
        .map(|k| {
            (
                ApiKey::try_from(k.api_key).map_or(format!("key {}", k.api_key), |a| format!("{a:?}")),
                k.min_version,
                k.max_version,
            )
        })
        .collect();
    Ok(match output {
        Output::Json => {
            let doc = json!({
                "cluster_id": cluster, "controller": m.controller_id.0,
                "brokers": brokers.iter().map(|(id, h, p)| json!({"id": id, "host": h, "port": p})).collect::<Vec<_>>(),
                "api_versions": apis.iter().map(|(n, lo, hi)| json!({"api": n, "min": lo, "max": hi})).collect::<Vec<_>>(),
            });
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        }
        Output::Table => {
            let mut out = format!("Cluster {cluster}, controller {}\n\n", m.controller_id.0);
            out.push_str(&table(
                &["BROKER", "HOST", "PORT"],
                brokers.iter().map(|(i, h, p)| vec![i.to_string(), h.clone(), p.to_string()]).collect(),
            ));
            out.push('\n');
            out.push_str(&table(
                &["API", "MIN", "MAX"],
                apis.iter().map(|(n, lo, hi)| vec![n.clone(), lo.to_string(), hi.to_string()]).collect(),
            ));
            out
        }
    })
}

/// `spool cluster quorum`: the metadata quorum as its leader describes it (DescribeQuorum on a
/// controller listener, what `kafka-metadata-quorum describe --status --replication` shows). Any
/// controller will do: one that does not lead names the leader, which is asked then.
pub async fn quorum(bootstrap_controller: &str, output: Output) -> Result<String> {
    let mut addresses: Vec<String> =
        bootstrap_controller.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    if addresses.is_empty() {
        bail!("--bootstrap-controller names no controller");
    }
    let mut asked = Vec::new();
    let mut failures = Vec::new();
    while let Some(address) = addresses.first().cloned() {
        addresses.remove(0);
        if asked.contains(&address) || asked.len() > 8 {
            continue;
        }
        asked.push(address.clone());
        let answer = match describe_quorum(&address).await {
            Ok(answer) => answer,
            Err(e) => {
                failures.push(format!("{address}: {e:#}"));
                continue;
            }
        };
        let Some(partition) = answer.topics.first().and_then(|t| t.partitions.first()) else {
            failures.push(format!("{address}: an answer without the metadata partition"));
            continue;
        };
        if partition.error_code != 0 {
            // Not the leader: it names the leader, and DescribeQuorum v2 says where it listens.
            let leader = answer.nodes.iter().find(|n| n.node_id == partition.leader_id);
            if let Some(listener) = leader.and_then(|n| n.listeners.first()) {
                addresses.insert(0, format!("{}:{}", listener.host, listener.port));
            }
            failures.push(format!("{address}: {}", error_name(partition.error_code)));
            continue;
        }
        return render_quorum(partition, output);
    }
    bail!("no controller described the quorum: {}", failures.join("; "))
}

async fn describe_quorum(address: &str) -> Result<DescribeQuorumResponse> {
    let mut client = connect(address).await?;
    let request = DescribeQuorumRequest::default().with_topics(vec![describe_quorum_request::TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![describe_quorum_request::PartitionData::default().with_partition_index(0)])]);
    let ResponseKind::DescribeQuorum(answer) = call(&mut client, 2, request).await? else {
        bail!("unexpected answer to DescribeQuorum")
    };
    if answer.error_code != 0 {
        bail!("{}", error_name(answer.error_code));
    }
    Ok(answer)
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or(format!("error {code}"), |e| format!("{e:?}"))
}

fn render_quorum(partition: &describe_quorum_response::PartitionData, output: Output) -> Result<String> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let leader = partition.leader_id.0;
    let leader_end = partition
        .current_voters
        .iter()
        .find(|r| r.replica_id.0 == leader)
        .map_or(partition.high_watermark, |r| r.log_end_offset);
    // (node, role, log end, lag, ms since its last fetch)
    let rows: Vec<(i32, &str, i64, i64, Option<i64>)> = partition
        .current_voters
        .iter()
        .map(|r| (r, if r.replica_id.0 == leader { "Leader" } else { "Follower" }))
        .chain(partition.observers.iter().map(|r| (r, "Observer")))
        .map(|(r, role)| {
            let since = (r.last_fetch_timestamp >= 0 && r.replica_id.0 != leader)
                .then(|| (now_ms - r.last_fetch_timestamp).max(0));
            (r.replica_id.0, role, r.log_end_offset, (leader_end - r.log_end_offset).max(0), since)
        })
        .collect();
    Ok(match output {
        Output::Json => {
            let doc = json!({
                "leader": leader, "epoch": partition.leader_epoch, "high_watermark": partition.high_watermark,
                "nodes": rows.iter().map(|(id, role, end, lag, since)| json!({
                    "id": id, "role": role, "log_end_offset": end, "lag": lag, "last_fetch_ms_ago": since,
                })).collect::<Vec<_>>(),
            });
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        }
        Output::Table => {
            let mut out = format!(
                "Leader {leader}, epoch {}, high watermark {}\n\n",
                partition.leader_epoch, partition.high_watermark
            );
            out.push_str(&table(
                &["NODE", "ROLE", "LOG END", "LAG", "LAST FETCH"],
                rows.iter()
                    .map(|(id, role, end, lag, since)| {
                        vec![
                            id.to_string(),
                            role.to_string(),
                            end.to_string(),
                            lag.to_string(),
                            since.map_or("-".to_string(), |ms| format!("{ms} ms ago")),
                        ]
                    })
                    .collect(),
            ));
            out
        }
    })
}
