//! What the controller listener tells Kafka's tools: ApiVersions, DescribeQuorum (what
//! `kafka-metadata-quorum describe` prints) and DescribeCluster for the controller endpoint
//! (KIP-919: how an admin client bootstrapped with `--bootstrap-controller` finds the leader).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_quorum_response::{self, Listener, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::member::QuorumConfig;
use super::{Now, CONTROLLER_LISTENER};
use crate::api_versions::CONTROLLER_APIS;
use crate::raft::{wire, RaftNode};

pub(super) const UNSUPPORTED_VERSION: i16 = 35;
/// DescribeCluster's endpoint type for controllers (KIP-919).
const CONTROLLER_ENDPOINT: i8 = 2;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub(super) fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let api_keys = CONTROLLER_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.advertised_min)
                .with_max_version(api.max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

/// Answered by the leader only, as Kafka's controllers do; others say NOT_LEADER_OR_FOLLOWER.
/// Endpoints and error messages exist from version 2 on.
pub(super) fn describe_quorum(
    node: &RaftNode,
    config: &QuorumConfig,
    now: Now,
    version: i16,
) -> DescribeQuorumResponse {
    let nodes = config
        .voters
        .iter()
        .map(|v| {
            describe_quorum_response::Node::default().with_node_id(BrokerId(v.id)).with_listeners(vec![
                Listener::default().with_name(s(CONTROLLER_LISTENER)).with_host(s(&v.host)).with_port(v.port),
            ])
        })
        .filter(|_| version >= 2)
        .collect();
    // The leader's monotonic times, shown on the wall clock.
    let wall = |t: Option<u64>| t.map_or(-1, |t| now.wall_ms - now.monotonic_ms.saturating_sub(t) as i64);
    let partition = match node.replica_states(now.monotonic_ms) {
        Some(states) => {
            let replica = |r: &crate::raft::ReplicaState| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(r.id))
                    .with_log_end_offset(r.durable_end as i64)
                    .with_last_fetch_timestamp(wall(r.last_fetch_ms))
                    .with_last_caught_up_timestamp(wall(r.last_caught_up_ms))
            };
            PartitionData::default()
                .with_leader_id(BrokerId(config.node_id))
                .with_leader_epoch(node.epoch())
                .with_high_watermark(node.high_watermark() as i64)
                .with_current_voters(states.voters.iter().map(replica).collect())
                .with_observers(states.observers.iter().map(replica).collect())
        }
        None => PartitionData::default()
            .with_error_code(ResponseError::NotLeaderOrFollower.code())
            .with_error_message((version >= 2).then(|| s("this controller is not the quorum's leader")))
            .with_leader_id(BrokerId(node.leader().unwrap_or(-1)))
            .with_leader_epoch(node.epoch()),
    };
    DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(s(wire::METADATA_TOPIC)))
            .with_partitions(vec![partition.with_partition_index(0)])])
        .with_nodes(nodes)
}

/// The controllers, and which of them leads, for an admin client bootstrapped on controllers.
pub(super) fn describe_cluster(
    node: &RaftNode,
    config: &QuorumConfig,
    request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default().with_endpoint_type(CONTROLLER_ENDPOINT);
    if request.endpoint_type != CONTROLLER_ENDPOINT {
        return response
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(s("this is a controller listener: ask it with --bootstrap-controller")));
    }
    let brokers = config
        .voters
        .iter()
        .map(|v| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(v.id))
                .with_host(s(&v.host))
                .with_port(v.port as i32)
        })
        .collect();
    response
        .with_cluster_id(s(&config.cluster_id))
        .with_controller_id(BrokerId(node.leader().unwrap_or(-1)))
        .with_brokers(brokers)
}
