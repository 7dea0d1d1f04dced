//! Which broker of a cluster coordinates a group or a transactional id. Until coordinators move
//! with replicated partitions (the replication issue), each key has one home: drawn from the key
//! over the registered brokers (fenced or not), so every broker answers FindCoordinator alike
//! and a group's members all meet at one broker. A home that is fenced is unavailable
//! (COORDINATOR_NOT_AVAILABLE, which clients retry) rather than moved: its state is on its disk.
//! A request for a key whose home is elsewhere gets NOT_COORDINATOR, and the client asks again.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::Broker;

/// FindCoordinator's key types.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// Where a key is coordinated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Home {
    Here,
    /// Another broker, unfenced: (id, host, port).
    There(i32, String, i32),
    /// Its home is fenced, or the cluster's brokers are not known yet.
    Unavailable,
}

/// FNV-1a: stable across versions and platforms, unlike std's hasher.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Broker {
    /// The home of a group or transactional id: this broker alone on a single node.
    pub(crate) fn home_of(&self, key: &str) -> Home {
        let Some(view) = &self.cluster_view else {
            return Home::Here;
        };
        if view.registered.is_empty() {
            return Home::Unavailable;
        }
        let id = view.registered[(key_hash(key) % view.registered.len() as u64) as usize];
        if id == self.config.node_id {
            return Home::Here;
        }
        match view.brokers.iter().find(|(b, _, _)| *b == id) {
            Some((id, host, port)) => Home::There(*id, host.clone(), *port),
            None => Home::Unavailable,
        }
    }

    /// FindCoordinator's answer for one key: (error if any, node id, host, port).
    pub(crate) fn coordinator_answer(&self, key_type: i8, key: &str) -> (Option<ResponseError>, i32, String, i32) {
        if key_type != GROUP && key_type != TRANSACTION {
            return (Some(ResponseError::InvalidRequest), -1, String::new(), -1);
        }
        match self.home_of(key) {
            Home::Here => {
                let config = &self.config;
                (None, config.node_id, config.advertised_host.clone(), config.advertised_port)
            }
            Home::There(id, host, port) => (None, id, host, port),
            Home::Unavailable => (Some(ResponseError::CoordinatorNotAvailable), -1, String::new(), -1),
        }
    }

    /// The error for a group named in a request of several, if its home is not here.
    pub(crate) fn not_home(&self, key: &str) -> Option<i16> {
        match self.home_of(key) {
            Home::Here => None,
            Home::There(..) => Some(ResponseError::NotCoordinator.code()),
            Home::Unavailable => Some(ResponseError::CoordinatorNotAvailable.code()),
        }
    }

    /// In a cluster, a coordinator request whose key lives on another broker: its answer
    /// (NOT_COORDINATOR, or COORDINATOR_NOT_AVAILABLE while the home is fenced).
    pub(crate) fn misdirected(&self, body: &RequestKind) -> Option<ResponseKind> {
        // On a single node every key's home is here.
        let key = coordinator_key(body)?;
        let error = match self.home_of(key) {
            Home::Here => return None,
            Home::There(..) => ResponseError::NotCoordinator,
            Home::Unavailable => ResponseError::CoordinatorNotAvailable,
        };
        Some(refusal(body, error.code()))
    }
}

/// The group or transactional id a coordinator request is about (one key only: requests
/// naming several groups are answered per group where they are kept).
fn coordinator_key(body: &RequestKind) -> Option<&str> {
    Some(match body {
        RequestKind::JoinGroup(r) => r.group_id.0.as_str(),
        RequestKind::SyncGroup(r) => r.group_id.0.as_str(),
        RequestKind::Heartbeat(r) => r.group_id.0.as_str(),
        RequestKind::LeaveGroup(r) => r.group_id.0.as_str(),
        RequestKind::OffsetCommit(r) => r.group_id.0.as_str(),
        RequestKind::OffsetDelete(r) => r.group_id.0.as_str(),
        RequestKind::TxnOffsetCommit(r) => r.group_id.0.as_str(),
        RequestKind::OffsetFetch(r) if r.groups.is_empty() => r.group_id.0.as_str(),
        RequestKind::InitProducerId(r) => r.transactional_id.as_ref().filter(|t| !t.0.is_empty())?.0.as_str(),
        RequestKind::AddPartitionsToTxn(r) if r.transactions.is_empty() => r.v3_and_below_transactional_id.0.as_str(),
        RequestKind::AddOffsetsToTxn(r) => r.transactional_id.0.as_str(),
        RequestKind::EndTxn(r) => r.transactional_id.0.as_str(),
        _ => return None,
    })
}

/// The request answered with `error` wherever its answer carries one.
fn refusal(body: &RequestKind, error: i16) -> ResponseKind {
    match body {
        RequestKind::JoinGroup(_) => {
            ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(error).with_generation_id(-1))
        }
        RequestKind::SyncGroup(_) => ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(error)),
        RequestKind::Heartbeat(_) => ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(error)),
        RequestKind::LeaveGroup(_) => ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(error)),
        RequestKind::OffsetDelete(_) => {
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(error))
        }
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(
            TxnOffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(
            OffsetFetchResponse::default().with_error_code(error).with_topics(
                r.topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|&p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
        RequestKind::InitProducerId(_) => ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(error)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                r.v3_and_below_topics
                    .iter()
                    .map(|t| {
                        AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|&p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_partition_error_code(error)
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
        RequestKind::AddOffsetsToTxn(_) => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(error))
        }
        RequestKind::EndTxn(_) => ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(error)),
        _ => unreachable!("only requests with a coordinator key are refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::key_hash;

    #[test]
    fn the_key_hash_is_fixed() {
        // Every broker of every version must agree on where a group lives.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
