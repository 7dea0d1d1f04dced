//! `spool topic create | list | describe | delete | alter`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{call, connect, error_text, table, Output};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Parses `k=v` config arguments.
pub fn parse_configs(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("config {p:?} is not KEY=VALUE"),
        })
        .collect()
}

pub async fn create(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[String],
) -> Result<String> {
    let configs = parse_configs(configs)?;
    let mut client = connect(bootstrap).await?;
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    create_topics_request::CreatableTopicConfig::default().with_name(s(k)).with_value(Some(s(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![topic]);
    let ResponseKind::CreateTopics(r) = call(&mut client, 5, request).await? else {
        bail!("unexpected answer to CreateTopics")
    };
    let t = &r.topics[0];
    if t.error_code != 0 {
        bail!("creating topic {name} failed: {}", error_text(t.error_code, t.error_message.as_deref()));
    }
    Ok(format!("Created topic {name}.\n"))
}

pub async fn delete(bootstrap: &str, name: &str) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    let request = DeleteTopicsRequest::default().with_timeout_ms(30_000).with_topic_names(vec![TopicName(s(name))]);
    let ResponseKind::DeleteTopics(r) = call(&mut client, 4, request).await? else {
        bail!("unexpected answer to DeleteTopics")
    };
    let t = &r.responses[0];
    if t.error_code != 0 {
        bail!("deleting topic {name} failed: {}", error_text(t.error_code, t.error_message.as_deref()));
    }
    Ok(format!("Deleted topic {name}.\n"))
}

async fn metadata(client: &mut super::Client, topics: Option<&[&str]>) -> Result<MetadataResponse> {
    let request = MetadataRequest::default().with_allow_auto_topic_creation(false).with_topics(topics.map(|ts| {
        ts.iter().map(|t| metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(t))))).collect()
    }));
    // v12 carries topic ids.
    let ResponseKind::Metadata(m) = call(client, 12, request).await? else { bail!("unexpected answer to Metadata") };
    Ok(m)
}

pub async fn list(bootstrap: &str, output: Output) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    let m = metadata(&mut client, None).await?;
    let mut topics: Vec<(String, usize)> = m
        .topics
        .iter()
        .filter(|t| !t.is_internal)
        .filter_map(|t| t.name.as_ref().map(|n| (n.0.to_string(), t.partitions.len())))
        .collect();
    topics.sort();
    Ok(match output {
        Output::Json => {
            let list: Vec<_> = topics.iter().map(|(n, p)| json!({"topic": n, "partitions": p})).collect();
            format!("{}\n", serde_json::to_string_pretty(&list)?)
        }
        Output::Table => {
            table(&["TOPIC", "PARTITIONS"], topics.into_iter().map(|(n, p)| vec![n, p.to_string()]).collect())
        }
    })
}

const DYNAMIC_TOPIC_CONFIG: i8 = 1;

/// Kafka's name of a DescribeConfigs source.
fn source_name(source: i8) -> &'static str {
    match source {
        DYNAMIC_TOPIC_CONFIG => "DYNAMIC_TOPIC_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        _ => "UNKNOWN",
    }
}

pub async fn describe(bootstrap: &str, name: &str, output: Output) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    let m = metadata(&mut client, Some(&[name])).await?;
    let Some(t) = m.topics.first() else { bail!("empty metadata answer") };
    if t.error_code != 0 {
        bail!("topic {name}: {}", error_text(t.error_code, None));
    }
    let partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    let starts = super::list_offsets(&mut client, name, &partitions, -2).await?;
    let ends = super::list_offsets(&mut client, name, &partitions, -1).await?;
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configuration_keys(None),
    ]);
    let ResponseKind::DescribeConfigs(c) = call(&mut client, 4, request).await? else {
        bail!("unexpected answer to DescribeConfigs")
    };
    let configs: Vec<(String, String, i8)> = c
        .results
        .first()
        .map(|r| {
            r.configs
                .iter()
                .map(|e| (e.name.to_string(), e.value.as_deref().unwrap_or("").to_string(), e.config_source))
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<_> = t.partitions.iter().collect();
    rows.sort_by_key(|p| p.partition_index);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0.to_string()).collect::<Vec<_>>().join(",");
    Ok(match output {
        Output::Json => {
            let parts: Vec<_> = rows
                .iter()
                .map(|p| {
                    json!({"partition": p.partition_index, "leader": p.leader_id.0, "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                        "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(), "log_start_offset": starts.get(&p.partition_index), "log_end_offset": ends.get(&p.partition_index)})
                })
                .collect();
            let cfg: BTreeMap<_, _> = configs.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
            let doc = json!({"topic": name, "topic_id": t.topic_id.to_string(), "partitions": parts, "configs": cfg});
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        }
        Output::Table => {
            let overrides: Vec<String> = configs
                .iter()
                .filter(|(_, _, source)| *source == DYNAMIC_TOPIC_CONFIG)
                .map(|(k, v, _)| format!("{k}={v}"))
                .collect();
            let mut out = format!(
                "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tConfigs: {}\n\n",
                t.topic_id,
                rows.len(),
                if overrides.is_empty() { "-".to_string() } else { overrides.join(",") }
            );
            let body = rows
                .iter()
                .map(|p| {
                    let dash = |v: Option<&i64>| v.map_or("-".to_string(), |v| v.to_string());
                    vec![
                        p.partition_index.to_string(),
                        p.leader_id.0.to_string(),
                        ids(&p.replica_nodes),
                        ids(&p.isr_nodes),
                        dash(starts.get(&p.partition_index)),
                        dash(ends.get(&p.partition_index)),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START-OFFSET", "LOG-END-OFFSET"],
                body,
            ));
            // Every config with where its value comes from, as kafka-configs --describe --all.
            let config_rows = configs
                .iter()
                .map(|(k, v, source)| vec![k.clone(), v.clone(), source_name(*source).to_string()])
                .collect();
            out.push('\n');
            out.push_str(&table(&["CONFIG", "VALUE", "SOURCE"], config_rows));
            out
        }
    })
}

pub async fn alter(bootstrap: &str, name: &str, partitions: Option<i32>, configs: &[String]) -> Result<String> {
    let configs = parse_configs(configs)?;
    if partitions.is_none() && configs.is_empty() {
        bail!("nothing to alter: give --partitions and/or --config");
    }
    let mut client = connect(bootstrap).await?;
    let mut done = String::new();
    if let Some(count) = partitions {
        let request = CreatePartitionsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default().with_name(TopicName(s(name))).with_count(count),
        ]);
        let ResponseKind::CreatePartitions(r) = call(&mut client, 1, request).await? else {
            bail!("unexpected answer to CreatePartitions")
        };
        let t = &r.results[0];
        if t.error_code != 0 {
            bail!("changing the partitions of {name} failed: {}", error_text(t.error_code, t.error_message.as_deref()));
        }
        done.push_str(&format!("Topic {name} now has {count} partitions.\n"));
    }
    if !configs.is_empty() {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(name))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(0)
                                .with_value(Some(s(v)))
                        })
                        .collect(),
                ),
        ]);
        let ResponseKind::IncrementalAlterConfigs(r) = call(&mut client, 1, request).await? else {
            bail!("unexpected answer to IncrementalAlterConfigs")
        };
        let t = &r.responses[0];
        if t.error_code != 0 {
            bail!("changing the configs of {name} failed: {}", error_text(t.error_code, t.error_message.as_deref()));
        }
        done.push_str(&format!("Updated {} config(s) of topic {name}.\n", configs.len()));
    }
    Ok(done)
}
