//! A broker in a cluster: what the metadata image tells it (the brokers, the topics with their
//! replicas and leaders), the local logs kept in step with it, and the admin requests it
//! forwards to the active controller (Kafka's forwarding, KIP-590, without the envelope: the
//! client's own frame goes to the controller listener, and its answer comes back as it is).
//!
//! A local log is created for every topic with a replica here (marked as the cluster's in
//! `cluster.json`), and deleted when the image drops that topic, or has another of its name: the
//! cluster deleted it, perhaps while this node was away. A local topic the cluster never had
//! (kept from before the node joined a cluster) stays on disk unserved, and is logged: losing
//! data on a guess is worse than keeping it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_response};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterConfigsResponse, ApiKey, BrokerId, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsResponse, DescribeQuorumResponse, ElectLeadersRequest, ElectLeadersResponse,
    IncrementalAlterConfigsResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId, RequestHeader,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{admin, Broker, RequestCtx};
use crate::meta::{MetaChange, TopicMeta};
use crate::ops::{Action, Peer};
use crate::partition::PartitionLog;
use crate::storage::TopicPartition;

/// Admin requests forwarded and not yet answered; past it a request is refused at once.
pub(crate) const MAX_FORWARDS: usize = 256;

/// The cluster as the metadata quorum's image shows it: what Metadata and DescribeCluster
/// answer, which partitions this broker leads, and where the active controller listens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: Option<String>,
    /// (node id, host, port) of each unfenced broker's client listener.
    pub brokers: Vec<(i32, String, i32)>,
    /// Every registered broker's id, fenced or not, in order: where groups and transactional
    /// ids live (see `coordinators.rs`).
    pub registered: Vec<i32>,
    /// The topics, by name; None until the image holds this broker's own registration (an image
    /// that has not caught up must not make the broker drop its logs).
    pub topics: Option<Arc<BTreeMap<String, TopicView>>>,
    /// Where the active controller listens (host, port): where admin requests are forwarded.
    pub controller: Option<(String, u16)>,
    /// This broker's epoch (its registration's offset), once the image holds its registration.
    pub broker_epoch: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    pub id: Uuid,
    pub partitions: Vec<PartitionView>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    /// -1: none (every replica of its ISR is fenced).
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped by every change of the partition: an ISR change names the epoch it changes.
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Who waits for a forwarded request's answer.
pub(crate) enum Forwarded {
    /// A client's request: its answer goes back as the controller gave it, or `fallback` if the
    /// controller could not be asked.
    Client { ctx: RequestCtx, fallback: Box<ResponseKind> },
    /// A topic this broker asked for on a client's behalf (auto-creation): nobody waits.
    AutoCreate(String),
    /// A block of producer ids (KIP-730): `producer_id_waiters` wait for it.
    ProducerIds,
    /// A follower's fetch from the leader of these partitions (see `replication.rs`).
    ReplicaFetch { leader: i32 },
    /// An ISR change this leader proposed for a partition (AlterPartition, KIP-497).
    IsrChange(TopicPartition),
}

/// InitProducerId requests that may wait for a block at once; more are told to retry.
const MAX_PRODUCER_ID_WAITERS: usize = 1024;

impl Broker {
    /// The metadata quorum's view of the cluster changed. Topics with a replica here get a
    /// local log; leaders here take the image's leader epoch.
    pub fn handle_cluster_view(&mut self, now_ms: i64, view: ClusterView) {
        self.cluster_view = Some(view);
        self.follow_view(now_ms);
        self.debug_check_invariants();
    }

    /// Logs, roles and epochs in step with the view; then high watermarks a changed ISR lets
    /// move, and fetches to the leaders of what this broker follows.
    pub(crate) fn follow_view(&mut self, now_ms: i64) {
        if !self.in_cluster() {
            return;
        }
        self.follow_image(now_ms);
        let partitions: Vec<TopicPartition> = self
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len()).map(|i| TopicPartition::new(&t.name, i as i32)))
            .collect();
        for tp in partitions {
            if self.advance_high_watermark(&tp) {
                self.on_high_watermark(now_ms, &tp);
            }
        }
        self.pump_replica_fetches(now_ms);
    }

    /// Whether this broker is part of a cluster (its topics come from the controller).
    pub(crate) fn in_cluster(&self) -> bool {
        self.cluster_view.is_some()
    }

    pub(crate) fn view_topics(&self) -> Option<&BTreeMap<String, TopicView>> {
        self.cluster_view.as_ref().and_then(|v| v.topics.as_deref())
    }

    /// The partition a client reads or writes, if this broker serves it: in a cluster, only a
    /// partition the image says it leads (internal topics stay this node's own).
    pub(crate) fn served_partition(&self, tp: &TopicPartition) -> Result<&PartitionLog, ResponseError> {
        if self.in_cluster() && !admin::is_internal_topic(&tp.topic) {
            let view = self.view_topics().and_then(|t| t.get(&*tp.topic));
            let partition = view.and_then(|t| usize::try_from(tp.partition).ok().and_then(|i| t.partitions.get(i)));
            match partition {
                None => return Err(ResponseError::UnknownTopicOrPartition),
                Some(p) if p.leader != self.config.node_id => return Err(ResponseError::NotLeaderOrFollower),
                Some(_) => {}
            }
            let local = self.topics.get(&*tp.topic).filter(|t| view.is_some_and(|v| v.id == t.id));
            if local.is_none() {
                // Led here by the image, its log not created yet: clients retry.
                return Err(ResponseError::NotLeaderOrFollower);
            }
        }
        self.partition(tp).ok_or(ResponseError::UnknownTopicOrPartition)
    }

    /// The in-sync replicas of a partition this broker leads (itself alone on a single node).
    pub(crate) fn isr_size(&self, tp: &TopicPartition) -> usize {
        match self.view_topics().and_then(|t| t.get(&*tp.topic)) {
            Some(view) if !admin::is_internal_topic(&tp.topic) => {
                usize::try_from(tp.partition).ok().and_then(|i| view.partitions.get(i)).map_or(0, |p| p.isr.len())
            }
            _ => 1,
        }
    }

    /// Brings the local logs in step with the image: creates those with a replica here, deletes
    /// those the image dropped, and leads in the image's epoch where it says so.
    pub(crate) fn follow_image(&mut self, now_ms: i64) {
        let Some(topics) = self.cluster_view.as_ref().and_then(|v| v.topics.clone()) else {
            self.follow_until_led();
            return;
        };
        let me = self.config.node_id;
        for (name, view) in topics.iter() {
            let hosted = view.partitions.iter().any(|p| p.replicas.contains(&me));
            let local = self.desired_meta.topic(name).map(|t| (t.id.clone(), t.partitions, t.configs.clone()));
            let ours = self.desired_meta.topic(name).is_some_and(|t| self.is_clusters(t));
            let created = TopicMeta {
                name: name.clone(),
                id: view.id.to_string(),
                partitions: view.partitions.len() as i32,
                configs: view.configs.clone(),
                from_cluster: true,
            };
            match local {
                Some((id, ..)) if id != view.id.to_string() && !ours => self.warn_stray_once(
                    name,
                    "the cluster has a topic named as one this data directory held before it joined; the old one \
                     is kept on disk, and this broker does not host the cluster's",
                ),
                Some((id, ..)) if id != view.id.to_string() => {
                    // Deleted and created again while this broker was away: the old log goes.
                    tracing::info!(topic = %name, "the cluster has a new topic of this name; dropping the old log");
                    self.queue_meta_silent(MetaChange::DeleteTopic(name.clone()));
                    if hosted {
                        self.queue_meta_silent(MetaChange::CreateTopic(created));
                    }
                }
                Some(_) if !hosted => {
                    tracing::info!(topic = %name, "no replica of this topic is here any more; deleting its log");
                    self.queue_meta_silent(MetaChange::DeleteTopic(name.clone()));
                }
                Some((_, partitions, configs)) => {
                    if partitions < created.partitions {
                        let count = created.partitions;
                        self.queue_meta_silent(MetaChange::SetPartitions { topic: name.clone(), count });
                    }
                    if configs != created.configs {
                        let configs = created.configs;
                        self.queue_meta_silent(MetaChange::SetConfigs { topic: name.clone(), configs });
                    }
                }
                None if hosted => self.queue_meta_silent(MetaChange::CreateTopic(created)),
                None => {}
            }
        }
        let gone: Vec<(String, bool)> = self
            .desired_meta
            .topics
            .iter()
            .filter(|t| !admin::is_internal_topic(&t.name) && !topics.contains_key(&t.name))
            .map(|t| (t.name.clone(), self.is_clusters(t)))
            .collect();
        for (name, seen) in gone {
            if seen {
                tracing::info!(topic = %name, "topic deleted in the cluster; deleting its log");
                self.queue_meta_silent(MetaChange::DeleteTopic(name));
            } else {
                let why =
                    "this data directory holds a topic the cluster does not know; it is kept on disk and not served";
                self.warn_stray_once(&name, why);
            }
        }
        self.lead_in_image_epochs(now_ms, &topics);
    }

    /// Before the image is known (a broker just started), no log leads: a recovered log
    /// starts out leading its last epoch, which another broker may have led since.
    fn follow_until_led(&mut self) {
        for topic in self.topics.values_mut().filter(|t| !admin::is_internal_topic(&t.name)) {
            for log in topic.partitions.iter_mut().filter(|log| log.is_leading()) {
                log.become_follower(log.leader_epoch);
            }
        }
    }

    fn warn_stray_once(&mut self, name: &str, why: &str) {
        if self.stray_topics_logged.insert(name.to_string()) {
            tracing::warn!(topic = %name, "{why}");
        }
    }

    /// Whether a local topic is the cluster's (created from the image), not one held from before
    /// this node joined.
    fn is_clusters(&self, topic: &TopicMeta) -> bool {
        topic.from_cluster
    }

    /// Each local partition takes its role from the image: where this broker leads, it leads in
    /// the image's leader epoch (records appended from now on carry it, clients' epochs are
    /// checked against it); where another broker leads, or none does, it follows. A leadership
    /// lost answers what waits on it NOT_LEADER_OR_FOLLOWER, so producers retry at the new leader.
    fn lead_in_image_epochs(&mut self, now_ms: i64, topics: &BTreeMap<String, TopicView>) {
        let me = self.config.node_id;
        let mut moved = false;
        let mut lost = Vec::new();
        for (name, view) in topics {
            let Some(local) = self.topics.get_mut(name.as_str()).filter(|t| t.id == view.id) else {
                continue;
            };
            for (i, (log, p)) in local.partitions.iter_mut().zip(&view.partitions).enumerate() {
                let tp = TopicPartition::new(name, i as i32);
                if p.leader_epoch < log.leader_epoch {
                    continue;
                }
                self.replication.view_moved(&tp, p.partition_epoch);
                if p.leader == me {
                    if !log.is_leading() || p.leader_epoch > log.leader_epoch {
                        log.become_leader(p.leader_epoch);
                        self.replication.reset_leadership(&tp, Some(now_ms));
                        moved = true;
                    }
                } else if p.replicas.contains(&me) && (log.is_leading() || p.leader_epoch > log.leader_epoch) {
                    if log.is_leading() {
                        lost.push(tp.clone());
                    }
                    log.become_follower(p.leader_epoch);
                    self.replication.reset_leadership(&tp, None);
                }
            }
        }
        self.replication.retain_partitions(|tp| topics.contains_key(&*tp.topic));
        for tp in lost {
            tracing::info!(partition = %tp, "leadership moved away; following");
            let error = (ResponseError::NotLeaderOrFollower, "leadership moved to another broker".to_string());
            self.fail_produce_waits_with(&tp, error);
        }
        if moved {
            self.mark_leader_epochs_dirty();
        }
    }

    /// Sends a client's admin request (its frame as read, without the size prefix) to the active
    /// controller; its answer is relayed in the request's place.
    pub(crate) fn forward(&mut self, ctx: RequestCtx, frame: &Bytes, fallback: ResponseKind) {
        if self.forwards.len() >= MAX_FORWARDS {
            self.respond(ctx, fallback);
            return;
        }
        let mut sized = BytesMut::with_capacity(frame.len() + 4);
        sized.put_u32(frame.len() as u32);
        sized.extend_from_slice(frame);
        self.send_forward(sized.freeze(), Forwarded::Client { ctx, fallback: Box::new(fallback) });
    }

    fn send_forward(&mut self, frame: Bytes, waiting: Forwarded) {
        self.send_to(Peer::Controller, frame, waiting);
    }

    /// Sends a request frame (size prefix included) to a peer; its answer comes back to
    /// `handle_forwarded` under the id returned.
    pub(crate) fn send_to(&mut self, to: Peer, frame: Bytes, waiting: Forwarded) -> u64 {
        let id = self.next_forward_id;
        self.next_forward_id += 1;
        self.forwards.insert(id, waiting);
        self.ops.push(Action::Forward { id, to, frame });
        id
    }

    /// Asks the controller for a topic a client named (auto-creation), with the defaults.
    pub(crate) fn auto_create_in_cluster(&mut self, name: &str) {
        if self.forwards.len() >= MAX_FORWARDS
            || self.forwards.values().any(|f| matches!(f, Forwarded::AutoCreate(n) if n == name))
        {
            return;
        }
        tracing::info!(topic = name, "asking the controller to create a topic");
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(-1)
                .with_replication_factor(-1)])
            .with_timeout_ms(30_000);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::CreateTopics as i16)
            .with_request_api_version(7)
            .with_correlation_id(0)
            .with_client_id(Some(StrBytes::from_string(format!("spool-broker-{}", self.config.node_id))));
        let frame = crate::codec::encode_request(&header, &RequestKind::CreateTopics(request))
            .expect("our own requests encode");
        self.send_forward(frame, Forwarded::AutoCreate(name.to_string()));
    }

    /// A producer id from the block the controller gave this broker, if any is left.
    pub(crate) fn allocate_cluster_producer_id(&mut self) -> Option<i64> {
        let (next, end) = &mut self.cluster_producer_ids;
        if *next < *end {
            *next += 1;
            return Some(*next - 1);
        }
        None
    }

    /// InitProducerId waits for a block of producer ids from the controller (KIP-730), asked for
    /// once for every request waiting; ids are unique across the cluster, as the controller
    /// hands out each block once.
    pub(crate) fn request_cluster_producer_ids(&mut self, ctx: RequestCtx, request: InitProducerIdRequest) {
        let epoch = self.cluster_view.as_ref().and_then(|v| v.broker_epoch);
        let (Some(epoch), true) = (epoch, self.producer_id_waiters.len() < MAX_PRODUCER_ID_WAITERS) else {
            self.refuse_init_producer_id(ctx);
            return;
        };
        self.producer_id_waiters.push((ctx, request));
        if self.forwards.values().any(|f| matches!(f, Forwarded::ProducerIds)) {
            return;
        }
        let request = AllocateProducerIdsRequest::default()
            .with_broker_id(BrokerId(self.config.node_id))
            .with_broker_epoch(epoch);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::AllocateProducerIds as i16)
            .with_request_api_version(0)
            .with_correlation_id(0)
            .with_client_id(Some(StrBytes::from_string(format!("spool-broker-{}", self.config.node_id))));
        let frame = crate::codec::encode_request(&header, &RequestKind::AllocateProducerIds(request))
            .expect("our own requests encode");
        self.send_forward(frame, Forwarded::ProducerIds);
    }

    /// COORDINATOR_NOT_AVAILABLE: producers retry InitProducerId.
    fn refuse_init_producer_id(&mut self, ctx: RequestCtx) {
        let body = InitProducerIdResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        self.respond(ctx, ResponseKind::InitProducerId(body));
    }

    fn on_producer_ids(&mut self, now_ms: i64, answer: Result<Bytes, String>) {
        let block =
            answer.and_then(|frame| match crate::codec::decode_response(ApiKey::AllocateProducerIds, 0, frame)? {
                (_, ResponseKind::AllocateProducerIds(r)) if r.error_code == 0 && r.producer_id_len > 0 => {
                    let start = r.producer_id_start.0;
                    match start.checked_add(r.producer_id_len as i64) {
                        Some(end) if start >= 0 => Ok((start, end)),
                        _ => Err(format!("a block of producer ids from {start} that does not fit")),
                    }
                }
                (_, ResponseKind::AllocateProducerIds(r)) => Err(format!("error {}", r.error_code)),
                _ => Err("not an AllocateProducerIds answer".to_string()),
            });
        let waiters = std::mem::take(&mut self.producer_id_waiters);
        match block {
            Ok(block) => {
                tracing::info!(start = block.0, end = block.1, "producer ids from the controller");
                self.cluster_producer_ids = block;
                for (ctx, request) in waiters {
                    self.handle_init_producer_id(now_ms, ctx, request);
                }
            }
            Err(e) => {
                tracing::debug!("no producer ids from the controller: {e}");
                for (ctx, _) in waiters {
                    self.refuse_init_producer_id(ctx);
                }
            }
        }
    }

    /// The controller answered a forwarded request (the response frame without its size prefix),
    /// or could not be asked. Each forward is answered exactly once.
    pub fn handle_forwarded(&mut self, now_ms: i64, id: u64, answer: Result<Bytes, String>) {
        let waiting = self.forwards.remove(&id).unwrap_or_else(|| panic!("answer to forward {id}, not in flight"));
        match waiting {
            Forwarded::ProducerIds => self.on_producer_ids(now_ms, answer),
            Forwarded::ReplicaFetch { leader } => self.on_replica_fetch_answer(now_ms, leader, answer),
            Forwarded::IsrChange(tp) => self.on_isr_change_answer(now_ms, &tp, answer),
            Forwarded::AutoCreate(name) => {
                if let Err(e) = answer {
                    tracing::debug!(topic = %name, "auto-creation not forwarded: {e}");
                }
            }
            Forwarded::Client { ctx, fallback } => {
                let correlation = answer
                    .as_ref()
                    .ok()
                    .and_then(|f| f.get(0..4))
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                match answer {
                    Ok(frame) if correlation == Some(ctx.correlation_id) => {
                        let mut sized = BytesMut::with_capacity(frame.len() + 4);
                        sized.put_u32(frame.len() as u32);
                        sized.extend_from_slice(&frame);
                        self.finish(ctx, Some(sized.freeze()));
                    }
                    Ok(_) => {
                        tracing::warn!("the controller answered a forwarded request with another correlation id");
                        self.respond(ctx, *fallback);
                    }
                    Err(e) => {
                        tracing::debug!("forwarding to the controller failed: {e}");
                        self.respond(ctx, *fallback);
                    }
                }
            }
        }
        self.debug_check_invariants();
    }
}

/// What a forwarded request is answered with when the controller cannot be asked: every topic
/// (or config resource) NOT_CONTROLLER, which clients retry after refreshing their metadata.
/// None: the request is not forwarded.
pub(crate) fn not_controller(request: &RequestKind) -> Option<ResponseKind> {
    let error = ResponseError::NotController.code();
    let message = || Some(StrBytes::from_static_str("no active controller could be reached; retry"));
    Some(match request {
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(
            CreateTopicsResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(error)
                            .with_error_message(message())
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteTopics(r) => {
            let by_name = r.topic_names.iter().map(|n| (Some(n.clone()), Uuid::nil()));
            let by_state = r.topics.iter().map(|t| (t.name.clone(), t.topic_id));
            ResponseKind::DeleteTopics(
                DeleteTopicsResponse::default().with_responses(
                    by_name
                        .chain(by_state)
                        .map(|(name, id)| {
                            DeletableTopicResult::default()
                                .with_name(name)
                                .with_topic_id(id)
                                .with_error_code(error)
                                .with_error_message(message())
                        })
                        .collect(),
                ),
            )
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(
            AlterConfigsResponse::default().with_responses(
                r.resources
                    .iter()
                    .map(|r| {
                        alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                            .with_error_code(error)
                            .with_error_message(message())
                    })
                    .collect(),
            ),
        ),
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsResponse::default().with_responses(
                r.resources
                    .iter()
                    .map(|r| {
                        incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                            .with_error_code(error)
                            .with_error_message(message())
                    })
                    .collect(),
            ),
        ),
        RequestKind::DescribeQuorum(_) => {
            ResponseKind::DescribeQuorum(DescribeQuorumResponse::default().with_error_code(error))
        }
        RequestKind::ElectLeaders(r) => ResponseKind::ElectLeaders(
            ElectLeadersResponse::default().with_replica_election_results(election_results(
                r.topic_partitions
                    .iter()
                    .flatten()
                    .flat_map(|t| {
                        t.partitions.iter().map(|&p| (t.topic.0.to_string(), p, Some(ResponseError::NotController)))
                    })
                    .collect::<Vec<_>>()
                    .into_iter(),
            )),
        ),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
            CreatePartitionsResponse::default().with_results(
                r.topics
                    .iter()
                    .map(|t| {
                        CreatePartitionsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(error)
                            .with_error_message(message())
                    })
                    .collect(),
            ),
        ),
        _ => return None,
    })
}

/// ElectLeaders' per-topic results from (topic, partition, error if any), in order.
pub(crate) fn election_results(
    results: impl Iterator<Item = (String, i32, Option<ResponseError>)>,
) -> Vec<ReplicaElectionResult> {
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, error) in results {
        let result = PartitionResult::default().with_partition_id(partition);
        let result = match error {
            Some(e) => {
                result.with_error_code(e.code()).with_error_message(Some(StrBytes::from_string(format!("{e:?}"))))
            }
            None => result,
        };
        by_topic.entry(topic).or_default().push(result);
    }
    by_topic
        .into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_id);
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partitions)
        })
        .collect()
}

impl Broker {
    /// ElectLeaders on a single node: each partition's leader is its only replica already.
    pub(crate) fn handle_elect_leaders(&mut self, ctx: RequestCtx, request: ElectLeadersRequest) {
        let results = request.topic_partitions.iter().flatten().flat_map(|t| {
            let name = t.topic.0.to_string();
            let known = self.topics.get(name.as_str()).map_or(0, |t| t.partitions.len() as i32);
            t.partitions.iter().map(move |&p| {
                let error = if (0..known).contains(&p) {
                    ResponseError::ElectionNotNeeded
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                (name.clone(), p, Some(error))
            })
        });
        let results = election_results(results.collect::<Vec<_>>().into_iter());
        let body = ElectLeadersResponse::default().with_replica_election_results(results);
        self.respond(ctx, ResponseKind::ElectLeaders(body));
    }
}
