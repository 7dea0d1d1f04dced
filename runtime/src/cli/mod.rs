//! The client side of the `spool` binary: commands that talk to any Kafka-compatible broker over
//! the wire protocol (`spool group ...`).

pub mod cluster;
pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use kafka_protocol::messages::{
    list_offsets_request, BrokerId, FindCoordinatorRequest, ListOffsetsRequest, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

pub use crate::client::Client;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// The broker could not be reached, or the connection broke or timed out: a long-running command
/// (a consumer) connects again instead of giving up.
#[derive(Debug)]
pub struct Disconnected(pub String);

impl std::fmt::Display for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Disconnected {}

pub fn is_disconnected(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Disconnected>().is_some()
}

pub async fn connect(addr: &str) -> Result<Client> {
    let socket = resolve(addr)?;
    Client::connect(socket, TIMEOUT)
        .await
        .map_err(|e| anyhow::Error::new(Disconnected(format!("cannot reach the broker at {addr}: {e}"))))
}

pub async fn call<R>(client: &mut Client, version: i16, body: R) -> Result<ResponseKind>
where
    R: kafka_protocol::protocol::Request + Into<kafka_protocol::messages::RequestKind>,
{
    client.call(version, body).await.map_err(|e| anyhow::Error::new(Disconnected(format!("request failed: {e}"))))
}

/// Ctrl-C or SIGTERM, as the binary reports it: a consumer then leaves its group and a producer
/// finishes what it is sending, instead of dying mid-request.
/// `None`: a stop that never comes (tests).
#[derive(Clone)]
pub struct Stop(Option<tokio::sync::watch::Receiver<bool>>);

impl Stop {
    pub fn new(signalled: tokio::sync::watch::Receiver<bool>) -> Self {
        Stop(Some(signalled))
    }

    pub fn never() -> Self {
        Stop(None)
    }

    pub fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Returns once a stop is requested.
    pub async fn wait(&mut self) {
        if let Some(rx) = &mut self.0 {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
            if *rx.borrow() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

/// Whether a broker answers ApiVersions without an error.
pub async fn health(bootstrap: &str) -> Result<String> {
    let mut client = connect(bootstrap).await?;
    match call(&mut client, 3, kafka_protocol::messages::ApiVersionsRequest::default()).await? {
        ResponseKind::ApiVersions(r) if r.error_code == 0 => {
            Ok(format!("ok: {bootstrap} serves {} APIs\n", r.api_keys.len()))
        }
        ResponseKind::ApiVersions(r) => {
            bail!("the broker at {bootstrap} answered ApiVersions with {}", error_text(r.error_code, None))
        }
        _ => bail!("unexpected answer to ApiVersions"),
    }
}

/// Connects to the group's coordinator (which may not be the bootstrap broker).
pub async fn coordinator(bootstrap: &str, group: &str) -> Result<Client> {
    let mut client = connect(bootstrap).await?;
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
    let ResponseKind::FindCoordinator(r) = call(&mut client, 3, request).await? else {
        bail!("unexpected answer to FindCoordinator")
    };
    if r.error_code != 0 {
        bail!(
            "the broker has no coordinator for group {group}: {}",
            error_text(r.error_code, r.error_message.as_deref())
        );
    }
    let address = format!("{}:{}", r.host.as_str(), r.port);
    if resolve(&address).ok() == resolve(bootstrap).ok() {
        return Ok(client);
    }
    connect(&address).await
}

/// A Kafka error by its name, with the broker's message or, for the errors a user meets first,
/// what to do about it: never a bare number.
pub fn error_text(code: i16, message: Option<&str>) -> String {
    let error = kafka_protocol::ResponseError::try_from_code(code);
    let name = error.map_or(format!("error {code}"), |e| format!("{e:?}"));
    let hint = match error {
        Some(kafka_protocol::ResponseError::InvalidTopicException) => {
            Some("topic names may hold only ASCII letters, digits, '.', '_' and '-', at most 249 of them")
        }
        Some(kafka_protocol::ResponseError::UnknownTopicOrPartition) => {
            Some("no such topic or partition: create it with `spool topic create`")
        }
        Some(kafka_protocol::ResponseError::MessageTooLarge) => {
            Some("the record is larger than the topic's max.message.bytes")
        }
        Some(
            kafka_protocol::ResponseError::CoordinatorNotAvailable
            | kafka_protocol::ResponseError::CoordinatorLoadInProgress
            | kafka_protocol::ResponseError::NotCoordinator,
        ) => Some("the group coordinator is not ready yet: try again in a moment"),
        Some(kafka_protocol::ResponseError::NonEmptyGroup) => {
            Some("the group has active members: stop its consumers first")
        }
        Some(kafka_protocol::ResponseError::GroupIdNotFound) => Some("no such group (see `spool group list`)"),
        Some(kafka_protocol::ResponseError::KafkaStorageError) => {
            Some("the broker cannot read or write this partition's data (see the broker's log)")
        }
        _ => None,
    };
    match (message.filter(|m| !m.is_empty()), hint) {
        (Some(m), _) => format!("{name}: {m}"),
        (None, Some(h)) => format!("{name}: {h}"),
        (None, None) => name,
    }
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Offsets of a topic's partitions at a timestamp (-1 latest, -2 earliest); partitions that
/// answered with an error are left out.
pub async fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>> {
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            ),
    ]);
    let ResponseKind::ListOffsets(r) = call(client, 5, request).await? else {
        bail!("unexpected answer to ListOffsets")
    };
    Ok(r.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.error_code == 0)
        .map(|p| (p.partition_index, p.offset))
        .collect())
}
