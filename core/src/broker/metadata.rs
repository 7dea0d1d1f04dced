//! ApiVersions, Metadata (with topic auto-creation), DescribeCluster and FindCoordinator.

use std::collections::BTreeMap;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Broker, RequestCtx};
use crate::api_versions::SERVED_APIS;

/// Our ApiVersions answer. Optional tagged fields stay empty: librdkafka before 2.2 mis-skips them.
/// DescribeQuorum is listed only by a broker in a quorum.
pub(crate) fn api_versions(error_code: i16, in_cluster: bool) -> ApiVersionsResponse {
    let api_keys = SERVED_APIS
        .iter()
        .filter(|api| in_cluster || api.key != kafka_protocol::messages::ApiKey::DescribeQuorum)
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.advertised_min)
                .with_max_version(api.max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys)
}

impl Broker {
    fn node(&self) -> (BrokerId, StrBytes, i32) {
        (
            BrokerId(self.config.node_id),
            StrBytes::from_string(self.config.advertised_host.clone()),
            self.config.advertised_port,
        )
    }

    /// This broker and every other the quorum registered, by id. A client bootstrapped here
    /// always finds this broker, registered yet or not.
    fn brokers(&self) -> Vec<(BrokerId, StrBytes, i32)> {
        let mut brokers: BTreeMap<i32, (StrBytes, i32)> = BTreeMap::new();
        for (id, host, port) in self.cluster_view.iter().flat_map(|v| v.brokers.iter()) {
            brokers.insert(*id, (StrBytes::from_string(host.clone()), *port));
        }
        let (node_id, host, port) = self.node();
        brokers.insert(node_id.0, (host, port));
        brokers.into_iter().map(|(id, (host, port))| (BrokerId(id), host, port)).collect()
    }

    pub(crate) fn handle_metadata(&mut self, ctx: RequestCtx, request: MetadataRequest) {
        let (node_id, _, _) = self.node();
        // v0: an empty list means every topic; v1+: null means every topic.
        let wanted: Option<Vec<MetadataRequestTopicRef>> = match request.topics {
            None => None,
            Some(list) if list.is_empty() && ctx.version == 0 => None,
            Some(list) => {
                Some(list.into_iter().map(|t| MetadataRequestTopicRef { name: t.name, id: t.topic_id }).collect())
            }
        };
        let auto_create = request.allow_auto_topic_creation || ctx.version < 4;
        if self.in_cluster() {
            let topics = self.describe_cluster_topics(wanted, auto_create);
            self.respond_metadata(ctx, topics);
            return;
        }
        let topics = match wanted {
            None => self.topics.values().map(|t| self.describe_topic(&t.name, node_id)).collect(),
            Some(list) => list
                .into_iter()
                .map(|wanted| {
                    let name = match (&wanted.name, wanted.id.is_nil()) {
                        (Some(n), _) => n.0.to_string(),
                        (None, false) => match self.topics.values().find(|t| t.id == wanted.id) {
                            Some(t) => t.name.to_string(),
                            None => {
                                return MetadataResponseTopic::default()
                                    .with_topic_id(wanted.id)
                                    .with_error_code(ResponseError::UnknownTopicId.code())
                            }
                        },
                        (None, true) => String::new(),
                    };
                    if self.topics.contains_key(name.as_str()) {
                        return self.describe_topic(&name, node_id);
                    }
                    let error = if let Err(e) = super::admin::validate_topic_name(&name) {
                        tracing::debug!("metadata for invalid topic name: {e}");
                        ResponseError::InvalidTopicException
                    } else if self.topic_exists_or_pending(&name) || (auto_create && self.maybe_auto_create(&name)) {
                        ResponseError::LeaderNotAvailable
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(name.into())))
                        .with_error_code(error.code())
                })
                .collect(),
        };
        self.respond_metadata(ctx, topics);
    }

    fn respond_metadata(&mut self, ctx: RequestCtx, topics: Vec<MetadataResponseTopic>) {
        let (node_id, _, _) = self.node();
        let response = MetadataResponse::default()
            .with_brokers(
                self.brokers()
                    .into_iter()
                    .map(|(id, host, port)| {
                        MetadataResponseBroker::default().with_node_id(id).with_host(host).with_port(port)
                    })
                    .collect(),
            )
            .with_cluster_id(Some(StrBytes::from_string(self.cluster_id().to_string())))
            .with_controller_id(node_id)
            .with_topics(topics);
        self.respond(ctx, ResponseKind::Metadata(response));
    }

    /// Metadata in a cluster: the image's topics, and this node's own internal ones.
    fn describe_cluster_topics(
        &mut self,
        wanted: Option<Vec<MetadataRequestTopicRef>>,
        auto_create: bool,
    ) -> Vec<MetadataResponseTopic> {
        let (node_id, _, _) = self.node();
        let internal: Vec<String> =
            self.topics.keys().filter(|n| super::admin::is_internal_topic(n)).map(|n| n.to_string()).collect();
        let Some(wanted) = wanted else {
            let mut topics: Vec<MetadataResponseTopic> =
                internal.iter().map(|name| self.describe_topic(name, node_id)).collect();
            if let Some(view) = self.view_topics() {
                topics.extend(view.iter().map(|(name, t)| self.describe_view_topic(name, t)));
            }
            return topics;
        };
        wanted
            .into_iter()
            .map(|wanted| {
                let name = match (&wanted.name, wanted.id.is_nil()) {
                    (Some(n), _) => n.0.to_string(),
                    (None, false) => {
                        let by_id = self.view_topics().and_then(|v| v.iter().find(|(_, t)| t.id == wanted.id));
                        match by_id {
                            Some((name, _)) => name.clone(),
                            None => {
                                return MetadataResponseTopic::default()
                                    .with_topic_id(wanted.id)
                                    .with_error_code(ResponseError::UnknownTopicId.code())
                            }
                        }
                    }
                    (None, true) => String::new(),
                };
                if internal.contains(&name) {
                    return self.describe_topic(&name, node_id);
                }
                if let Some(t) = self.view_topics().and_then(|v| v.get(&name)) {
                    return self.describe_view_topic(&name, t);
                }
                let error = if super::admin::validate_topic_name(&name).is_err() {
                    ResponseError::InvalidTopicException
                } else if auto_create && self.maybe_auto_create(&name) {
                    ResponseError::LeaderNotAvailable
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                MetadataResponseTopic::default().with_name(Some(TopicName(name.into()))).with_error_code(error.code())
            })
            .collect()
    }

    /// A topic as the image shows it: replicas, ISR, the leader and its epoch; replicas on
    /// brokers not unfenced are listed offline, and a partition without a leader says so.
    fn describe_view_topic(&self, name: &str, topic: &super::TopicView) -> MetadataResponseTopic {
        let live: Vec<i32> = self.brokers().iter().map(|(id, _, _)| id.0).collect();
        let me = self.config.node_id;
        let local = self.topics.get(name).filter(|t| t.id == topic.id);
        let ids = |ids: &[i32]| ids.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
        let partitions = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let failed = p.leader == me
                    && local.and_then(|t| t.partitions.get(index)).is_some_and(|log| log.failed.is_some());
                let error = if p.leader < 0 {
                    ResponseError::LeaderNotAvailable.code()
                } else if failed {
                    ResponseError::KafkaStorageError.code()
                } else {
                    0
                };
                let offline: Vec<i32> = p.replicas.iter().copied().filter(|r| !live.contains(r)).collect();
                MetadataResponsePartition::default()
                    .with_error_code(error)
                    .with_partition_index(index as i32)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(ids(&p.replicas))
                    .with_isr_nodes(ids(&p.isr))
                    .with_offline_replicas(ids(&offline))
            })
            .collect();
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_topic_id(topic.id)
            .with_partitions(partitions)
    }

    fn describe_topic(&self, name: &str, node_id: BrokerId) -> MetadataResponseTopic {
        let topic = &self.topics[name];
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let error = if p.failed.is_some() { ResponseError::KafkaStorageError.code() } else { 0 };
                MetadataResponsePartition::default()
                    .with_error_code(error)
                    .with_partition_index(p.tp.partition)
                    .with_leader_id(node_id)
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(vec![node_id])
                    .with_isr_nodes(vec![node_id])
            })
            .collect();
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            .with_topic_id(topic.id)
            .with_is_internal(super::admin::is_internal_topic(name))
            .with_partitions(partitions)
    }

    pub(crate) fn handle_describe_cluster(&mut self, ctx: RequestCtx, _request: DescribeClusterRequest) {
        let (node_id, _, _) = self.node();
        // The controller a client sends admin requests to: this broker serves them itself.
        let response = DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(self.cluster_id().to_string()))
            .with_controller_id(node_id)
            .with_endpoint_type(1)
            .with_brokers(
                self.brokers()
                    .into_iter()
                    .map(|(id, host, port)| {
                        DescribeClusterBroker::default().with_broker_id(id).with_host(host).with_port(port)
                    })
                    .collect(),
            );
        self.respond(ctx, ResponseKind::DescribeCluster(response));
    }
}

struct MetadataRequestTopicRef {
    name: Option<TopicName>,
    id: uuid::Uuid,
}
