//! `QuorumMember`: frames in, frames and storage actions out, a `RaftNode` inside. It owns the
//! bookkeeping the node leaves to its driver: which inbound connection waits for which answer,
//! and which request each peer's answer belongs to.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_response};
use kafka_protocol::messages::{
    alter_partition_response, AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterConfigsResponse,
    AlterPartitionRequest, AlterPartitionResponse, ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsResponse, CreateTopicsResponse,
    DeleteTopicsResponse, ElectLeadersResponse, IncrementalAlterConfigsResponse, ProducerId, RequestHeader,
    RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::answers;
use super::sessions::BrokerSessions;
use super::topics::{self, Decision, TopicDefaults};
use super::Now;
use crate::api_versions::CONTROLLER_APIS;
use crate::codec::{self, DecodeFailure};
use crate::config_changes::{self, ConfigAnswer};
use crate::metadata::{Endpoint, MetadataImage, MetadataRecord};
use crate::ops::ConnId;
use crate::raft::{wire, Message, NodeId, Payload, RaftAction, RaftNode, SnapshotId};

/// Requests from peers waiting for the node's answer; past it the oldest is forgotten (its
/// sender times out and asks again).
const MAX_WAITING_ANSWERS: usize = 1024;
/// Requests sent to peers whose answers are expected; the node bounds its own, this is a backstop.
const MAX_IN_FLIGHT: usize = 1024;

/// A voter and where its controller listener is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    pub voters: Vec<Voter>,
    pub cluster_id: String,
    /// Snapshot the image once this many entries were applied since the last snapshot (0: never).
    pub snapshot_every: u64,
    /// What the controller gives a topic its request leaves a setting out of.
    pub topic_defaults: TopicDefaults,
}

/// Brokers a cluster may register; past it new ids are refused (every one gets a session).
pub const MAX_BROKERS: usize = super::sessions::MAX_SESSIONS;

/// Broker registrations proposed and waiting to be committed; more are refused until some are.
const MAX_PENDING_REGISTRATIONS: usize = 256;

/// A fencing record the log could not take now is proposed again after this.
const FENCE_RETRY_MS: u64 = 100;

/// Producer ids per block a broker is given (Kafka's is 1000 too).
const PRODUCER_ID_BLOCK: i32 = 1000;

/// Admin requests (CreateTopics, ...) waiting for their entries to commit; more are refused.
const MAX_PENDING_ADMIN: usize = 256;

/// Entries applied to the image per call, so one input never does unbounded work.
const MAX_APPLIED_PER_TURN: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumAction {
    /// Write this response frame (size prefix included) on an inbound connection.
    Respond { conn: ConnId, frame: Bytes },
    /// Close an inbound connection that sent what cannot be served, as Kafka does.
    Close { conn: ConnId, reason: String },
    /// Send this request frame (size prefix included) to a voter's controller listener.
    SendToPeer { peer: NodeId, frame: Bytes },
    /// `PersistElection`, `Append`, `Truncate`, `Sync` or `WriteSnapshot`, as `RaftNode` specifies.
    Storage(RaftAction),
}

/// An inbound request the node has yet to answer.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    conn: ConnId,
    correlation_id: i32,
    version: i16,
}

pub struct QuorumMember {
    config: QuorumConfig,
    node: RaftNode,
    /// (sender, correlation) of each peer request the node holds, and where its answer goes.
    waiting: BTreeMap<(NodeId, i32), Waiting>,
    waiting_order: VecDeque<(NodeId, i32)>,
    /// (peer, correlation) of each request sent, and its API: a response frame does not name it.
    in_flight: BTreeMap<(NodeId, i32), (ApiKey, i16)>,
    in_flight_order: VecDeque<(NodeId, i32)>,
    actions: VecDeque<QuorumAction>,
    /// The committed metadata log, applied.
    image: MetadataImage,
    /// Committed entries the image refused (none, unless a controller wrote a bad record).
    refused: u64,
    /// Where the last snapshot this member asked for ends.
    snapshot_asked_end: u64,
    /// Registrations proposed by this member as leader, by the offset of their record: answered
    /// once the image has applied that offset.
    /// (offset of the unfencing record) -> (offset of the registration, who waits).
    pending_registrations: BTreeMap<u64, (u64, Waiting)>,
    /// Which brokers are alive, on the leader: silent ones are fenced.
    sessions: BrokerSessions,
    /// Admin requests proposed by this member as leader, by the offset of their last entry.
    pending_admin: BTreeMap<u64, PendingAdmin>,
    /// The last entry proposed for the admin request being handled.
    admin_proposed_through: Option<u64>,
    /// Entries proposed for an answer, by offset, with the epoch and bytes proposed: until the
    /// image applies that offset. (Epoch, offset) names one entry in Raft; the bytes alone do
    /// not (two leaders may propose the same record at the same offset).
    awaited: BTreeMap<u64, (i32, Bytes)>,
    /// The epoch in which this member leads, if it does: what is awaited belongs to it.
    leading_epoch: Option<i32>,
    /// For each awaited offset the image has passed: whether the entry there is the one proposed.
    verdicts: BTreeMap<u64, bool>,
    /// The end of the last block of producer ids proposed: a block proposed before the last one
    /// committed must not be handed out twice.
    producer_ids_proposed_end: i64,
    /// The last entry this controller proposed that changes partitions (leaders, ISRs). Such
    /// changes are computed from the image and set absolute values, so none other is proposed
    /// until the image applied it: two computed from one image would undo each other (an ISR
    /// change putting back a replica a restart just took out).
    partition_changes_at: Option<u64>,
    /// The image's applied end when leaders were last looked over.
    elections_checked_at: u64,
}

/// An admin request's answer, waiting for its entries: each topic's result, and what the image
/// must show for it to stand.
struct PendingAdmin {
    waiting: Waiting,
    answer: AdminAnswer,
}

enum AdminAnswer {
    CreateTopics(Vec<(CreatableTopicResult, Option<u64>)>),
    DeleteTopics(Vec<(DeletableTopicResult, Option<u64>)>),
    CreatePartitions(Vec<(CreatePartitionsTopicResult, Option<u64>)>),
    AlterConfigs(Vec<(alter_configs_response::AlterConfigsResourceResponse, Option<u64>)>),
    IncrementalAlterConfigs(Vec<(incremental_alter_configs_response::AlterConfigsResourceResponse, Option<u64>)>),
    /// (topic, partition, error) of each partition refused, and of each elected by the entry at
    /// `offset` (an error if that entry did not commit as proposed).
    ElectLeaders {
        refused: Vec<(String, i32, ResponseError)>,
        elected: Vec<(String, i32)>,
        offset: Option<u64>,
    },
    /// AlterPartition (KIP-497): each proposal's refusal, in request order, and the entry of the
    /// changes taken (an error for them if it did not commit as proposed). Taken proposals are
    /// answered with the partition as the image then has it.
    AlterPartition {
        proposals: Vec<(topics::IsrProposal, Option<ResponseError>)>,
        offset: Option<u64>,
    },
    /// A block of producer ids (KIP-730), from `start`, `len` long, written at this offset.
    ProducerIds {
        start: i64,
        len: i32,
        offset: u64,
    },
}

/// A per-topic result that can be turned into a refusal.
trait Refusable {
    fn refuse(self, error: ResponseError, message: &str) -> Self;
}

macro_rules! refusable {
    ($($t:ty),*) => {$(
        impl Refusable for $t {
            fn refuse(self, error: ResponseError, message: &str) -> Self {
                self.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message.to_string())))
            }
        }
    )*};
}
refusable!(
    CreatableTopicResult,
    DeletableTopicResult,
    CreatePartitionsTopicResult,
    alter_configs_response::AlterConfigsResourceResponse,
    incremental_alter_configs_response::AlterConfigsResourceResponse
);

/// Results whose entry did not commit as proposed (a leader change dropped it): the client is
/// told to ask the controller again.
fn settle<A: Refusable>(results: Vec<(A, Option<u64>)>, verdicts: &mut BTreeMap<u64, bool>) -> Vec<A> {
    results
        .into_iter()
        .map(|(answer, offset)| match offset {
            Some(o) if !verdicts.remove(&o).unwrap_or(false) => {
                answer.refuse(ResponseError::NotController, "the controller moved; retry")
            }
            _ => answer,
        })
        .collect()
}

impl AdminAnswer {
    /// The offsets of the entries the answer waits for.
    fn offsets(&self) -> Vec<u64> {
        fn of<A>(results: &[(A, Option<u64>)]) -> Vec<u64> {
            results.iter().filter_map(|(_, o)| *o).collect()
        }
        match self {
            AdminAnswer::CreateTopics(r) => of(r),
            AdminAnswer::DeleteTopics(r) => of(r),
            AdminAnswer::CreatePartitions(r) => of(r),
            AdminAnswer::AlterConfigs(r) => of(r),
            AdminAnswer::IncrementalAlterConfigs(r) => of(r),
            AdminAnswer::ProducerIds { offset, .. } => vec![*offset],
            AdminAnswer::AlterPartition { offset, .. } => offset.iter().copied().collect(),
            AdminAnswer::ElectLeaders { offset, .. } => offset.iter().copied().collect(),
        }
    }
}

impl QuorumMember {
    pub fn new(config: QuorumConfig, node: RaftNode) -> Self {
        assert_eq!(config.node_id, node.config().node_id, "the member and its node are one node");
        let mut ids: Vec<NodeId> = config.voters.iter().map(|v| v.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, node.config().voters, "the member and its node know the same voters");
        let mut member = QuorumMember {
            config,
            node,
            waiting: BTreeMap::new(),
            waiting_order: VecDeque::new(),
            in_flight: BTreeMap::new(),
            in_flight_order: VecDeque::new(),
            actions: VecDeque::new(),
            image: MetadataImage::default(),
            refused: 0,
            snapshot_asked_end: 0,
            pending_registrations: BTreeMap::new(),
            sessions: BrokerSessions::default(),
            pending_admin: BTreeMap::new(),
            admin_proposed_through: None,
            awaited: BTreeMap::new(),
            leading_epoch: None,
            verdicts: BTreeMap::new(),
            producer_ids_proposed_end: 0,
            partition_changes_at: None,
            elections_checked_at: 0,
        };
        member.drain_node();
        member
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// The cluster as the committed metadata log describes it, up to `image().applied_end()`.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn refused_records(&self) -> u64 {
        self.refused
    }

    pub fn next_deadline(&self) -> Option<u64> {
        let expiry = self.sessions.next_expiry().filter(|_| self.node.role() == crate::raft::RoleKind::Leader);
        self.node.next_deadline().into_iter().chain(expiry).min()
    }

    pub fn poll_action(&mut self) -> Option<QuorumAction> {
        self.drain_node();
        self.actions.pop_front()
    }

    pub fn handle_tick(&mut self, now: Now) {
        self.node.handle_tick(now.monotonic_ms);
        self.tend_sessions(now);
    }

    pub fn handle_election_persisted(&mut self, now: Now) {
        self.node.handle_election_persisted(now.monotonic_ms);
    }

    pub fn handle_synced(&mut self, now: Now, through: u64) {
        self.node.handle_synced(now.monotonic_ms, through);
        self.apply_committed();
        self.tend_sessions(now);
    }

    pub fn handle_snapshot_written(&mut self, now: Now, id: SnapshotId) {
        self.node.handle_snapshot_written(now.monotonic_ms, id);
    }

    /// Appends a record to the metadata log, on the leader; returns its offset.
    pub fn propose(&mut self, now: Now, data: Bytes) -> Result<u64, crate::raft::ProposeError> {
        self.node.propose(now.monotonic_ms, data)
    }

    /// A stopping leader hands over: the others hear EndQuorumEpoch and elect at once.
    pub fn resign(&mut self, now: Now) {
        self.node.resign(now.monotonic_ms);
    }

    /// A request frame (without its size prefix) from an inbound connection.
    pub fn handle_request(&mut self, now: Now, conn: ConnId, frame: Bytes) {
        let decoded = match codec::decode_request_for(CONTROLLER_APIS, frame) {
            Ok(decoded) => decoded,
            Err(DecodeFailure::ApiVersionsTooNew { correlation_id }) => {
                let body = ResponseKind::ApiVersions(answers::api_versions(answers::UNSUPPORTED_VERSION));
                self.respond(conn, correlation_id, 0, &body);
                return;
            }
            Err(DecodeFailure::Close(reason)) => {
                self.actions.push_back(QuorumAction::Close { conn, reason });
                return;
            }
        };
        let correlation_id = decoded.header.correlation_id;
        let version = decoded.header.request_api_version;
        let answer = match decoded.body {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(answers::api_versions(0)),
            RequestKind::DescribeQuorum(_) => {
                ResponseKind::DescribeQuorum(answers::describe_quorum(&self.node, &self.config, now, version))
            }
            RequestKind::DescribeCluster(request) => {
                ResponseKind::DescribeCluster(answers::describe_cluster(&self.node, &self.config, &request))
            }
            RequestKind::BrokerRegistration(request) => {
                let waiting = Waiting { conn, correlation_id, version };
                match self.register_broker(now, waiting, request) {
                    Some(answer) => ResponseKind::BrokerRegistration(answer),
                    None => return,
                }
            }
            RequestKind::BrokerHeartbeat(request) => {
                self.apply_committed();
                self.tend_sessions(now);
                ResponseKind::BrokerHeartbeat(self.broker_heartbeat(now, &request))
            }
            RequestKind::CreateTopics(request) => {
                let decisions = if self.is_active_controller() {
                    let next = self.node.log().end();
                    let defaults = &self.config.topic_defaults;
                    topics::create_topics(&self.image, defaults, &self.config.cluster_id, next, &request)
                } else {
                    not_controller(
                        request.topics.iter().map(|t| CreatableTopicResult::default().with_name(t.name.clone())),
                    )
                };
                let results = self.propose_decisions(now, decisions);
                let waiting = Waiting { conn, correlation_id, version };
                self.answer_when_applied(waiting, AdminAnswer::CreateTopics(results));
                return;
            }
            RequestKind::AlterConfigs(request) => {
                let resources = request
                    .resources
                    .iter()
                    .map(|r| {
                        let pairs =
                            r.configs.iter().map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())));
                        (r.resource_type, r.resource_name.clone(), config_changes::replaced(pairs))
                    })
                    .collect();
                let results = self.alter_configs_on_request(now, resources, request.validate_only);
                let waiting = Waiting { conn, correlation_id, version };
                self.answer_when_applied(waiting, AdminAnswer::AlterConfigs(results));
                return;
            }
            RequestKind::IncrementalAlterConfigs(request) => {
                let resources = request
                    .resources
                    .iter()
                    .map(|r| {
                        let ops = r
                            .configs
                            .iter()
                            .map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string())));
                        let current = topics::overrides_of(&self.image, r.resource_name.as_str());
                        (r.resource_type, r.resource_name.clone(), config_changes::incrementally(current, ops))
                    })
                    .collect();
                let results = self.alter_configs_on_request(now, resources, request.validate_only);
                let waiting = Waiting { conn, correlation_id, version };
                self.answer_when_applied(waiting, AdminAnswer::IncrementalAlterConfigs(results));
                return;
            }
            RequestKind::ElectLeaders(request) => {
                let wanted = request.topic_partitions.as_ref().map(|topics| {
                    topics.iter().map(|t| (t.topic.0.to_string(), t.partitions.clone())).collect::<Vec<_>>()
                });
                let answer = self.elect_on_request(now, request.election_type, wanted);
                let waiting = Waiting { conn, correlation_id, version };
                self.answer_when_applied(waiting, answer);
                return;
            }
            RequestKind::AlterPartition(request) => {
                let waiting = Waiting { conn, correlation_id, version };
                match self.alter_partition(now, &request) {
                    Ok(answer) => self.answer_when_applied(waiting, answer),
                    Err(error) => {
                        let body = AlterPartitionResponse::default().with_error_code(error.code());
                        self.respond(conn, correlation_id, version, &ResponseKind::AlterPartition(body));
                    }
                }
                return;
            }
            RequestKind::AllocateProducerIds(request) => {
                let waiting = Waiting { conn, correlation_id, version };
                match self.allocate_producer_ids(now, &request) {
                    Ok(answer) => self.answer_when_applied(waiting, answer),
                    Err(error) => {
                        let body = AllocateProducerIdsResponse::default().with_error_code(error.code());
                        self.respond(conn, correlation_id, version, &ResponseKind::AllocateProducerIds(body));
                    }
                }
                return;
            }
            RequestKind::DeleteTopics(request) => {
                let decisions = topics::delete_topics(&self.image, version, &request);
                let decisions = if self.is_active_controller() {
                    decisions
                } else {
                    not_controller(decisions.into_iter().map(|d| d.answer))
                };
                let results = self.propose_decisions(now, decisions);
                let waiting = Waiting { conn, correlation_id, version };
                self.answer_when_applied(waiting, AdminAnswer::DeleteTopics(results));
                return;
            }
            RequestKind::CreatePartitions(request) => {
                let decisions = if self.is_active_controller() {
                    topics::create_partitions(&self.image, &request)
                } else {
                    not_controller(
                        request.topics.iter().map(|t| CreatePartitionsTopicResult::default().with_name(t.name.clone())),
                    )
                };
                let results = self.propose_decisions(now, decisions);
                let waiting = Waiting { conn, correlation_id, version };
                self.answer_when_applied(waiting, AdminAnswer::CreatePartitions(results));
                return;
            }
            quorum_request => {
                let (from, request) = match wire::decode_request(quorum_request) {
                    Ok(decoded) => decoded,
                    Err(reason) => {
                        let reason = format!("bad {:?} request: {reason}", decoded.api_key);
                        self.actions.push_back(QuorumAction::Close { conn, reason });
                        return;
                    }
                };
                self.wait_for_answer(from, Waiting { conn, correlation_id, version });
                let correlation = correlation_id as u32 as u64;
                self.node.handle_message(now.monotonic_ms, from, Message::Request { correlation, request });
                // A follower's fetch may have committed a fencing: leaders move at once.
                self.apply_committed();
                self.elect_leaders(now);
                return;
            }
        };
        self.respond(conn, correlation_id, version, &answer);
    }

    /// Proposes each decision's entry; one the log cannot take is refused in the answer.
    fn propose_decisions<A: Refusable>(&mut self, now: Now, decisions: Vec<Decision<A>>) -> Vec<(A, Option<u64>)> {
        let room = self.pending_admin.len() < MAX_PENDING_ADMIN;
        decisions
            .into_iter()
            .map(|decision| {
                let Some(records) = decision.entry else {
                    return (decision.answer, None);
                };
                if !room {
                    let busy = "the controller has too many requests in progress";
                    return (decision.answer.refuse(ResponseError::ThrottlingQuotaExceeded, busy), None);
                }
                match self.propose_awaited(now, MetadataRecord::encode_all(&records)) {
                    Ok(offset) => (decision.answer, Some(offset)),
                    Err(crate::raft::ProposeError::NotLeader { .. }) => {
                        (decision.answer.refuse(ResponseError::NotController, "not the controller"), None)
                    }
                    Err(crate::raft::ProposeError::Busy) => {
                        let busy = "the metadata log has too much uncommitted; retry";
                        (decision.answer.refuse(ResponseError::RequestTimedOut, busy), None)
                    }
                }
            })
            .collect()
    }

    /// AlterConfigs and IncrementalAlterConfigs: each resource's new overrides checked, the
    /// changes proposed one entry per topic; refused off the active controller.
    fn alter_configs_on_request<A: ConfigAnswer + Refusable>(
        &mut self,
        now: Now,
        resources: Vec<config_changes::ResourceChange>,
        validate_only: bool,
    ) -> Vec<(A, Option<u64>)> {
        let decisions = resources
            .into_iter()
            .map(|(resource_type, name, next)| {
                let answer = A::named(resource_type, name.clone());
                if !self.is_active_controller() {
                    let answer = answer.refuse(ResponseError::NotController, "not the active controller");
                    return Decision { entry: None, answer };
                }
                let defaults = &self.config.topic_defaults;
                match topics::config_change(&self.image, defaults, resource_type, name.as_str(), next) {
                    Ok(entry) => Decision { entry: entry.filter(|_| !validate_only), answer },
                    Err((error, message)) => Decision { entry: None, answer: answer.refuse(error, &message) },
                }
            })
            .collect();
        self.propose_decisions(now, decisions)
    }

    /// ElectLeaders: every partition asked for refused off the active controller; else the
    /// changes as one entry, answered once committed.
    fn elect_on_request(
        &mut self,
        now: Now,
        election_type: i8,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> AdminAnswer {
        if !self.is_active_controller() {
            let refused = wanted
                .unwrap_or_default()
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p, ResponseError::NotController)))
                .collect();
            return AdminAnswer::ElectLeaders { refused, elected: Vec::new(), offset: None };
        }
        let topics::Election { mut refused, changes, elected } =
            topics::elect_leaders(&self.image, election_type, wanted);
        if changes.is_empty() {
            return AdminAnswer::ElectLeaders { refused, elected, offset: None };
        }
        let records: Vec<MetadataRecord> = changes.into_iter().map(MetadataRecord::PartitionChange).collect();
        match self.propose_awaited(now, MetadataRecord::encode_all(&records)) {
            Ok(offset) => {
                self.partition_changes_at = Some(offset);
                AdminAnswer::ElectLeaders { refused, elected, offset: Some(offset) }
            }
            Err(_) => {
                refused.extend(elected.into_iter().map(|(t, p)| (t, p, ResponseError::NotController)));
                AdminAnswer::ElectLeaders { refused, elected: Vec::new(), offset: None }
            }
        }
    }

    /// Proposes an entry whose commit an answer waits for.
    fn propose_awaited(&mut self, now: Now, data: Bytes) -> Result<u64, crate::raft::ProposeError> {
        self.end_lost_leadership();
        let offset = self.node.propose(now.monotonic_ms, data.clone())?;
        self.awaited.insert(offset, (self.node.epoch(), data));
        self.admin_proposed_through = Some(offset);
        Ok(offset)
    }

    /// AlterPartition from a partition leader (KIP-497): the ISRs it proposes, checked against
    /// the image (`topics::alter_partition`), the changes as one entry, answered once committed.
    fn alter_partition(&mut self, now: Now, request: &AlterPartitionRequest) -> Result<AdminAnswer, ResponseError> {
        if !self.is_active_controller() {
            return Err(ResponseError::NotController);
        }
        let leader = request.broker_id.0;
        if self.image.broker(leader).is_none_or(|b| b.epoch != request.broker_epoch) {
            return Err(ResponseError::StaleBrokerEpoch);
        }
        if self.pending_admin.len() >= MAX_PENDING_ADMIN {
            return Err(ResponseError::ThrottlingQuotaExceeded);
        }
        if !self.partition_changes_settled() {
            // Retried by the leader; checked then against an image that holds the change.
            return Err(ResponseError::RequestTimedOut);
        }
        let proposals: Vec<topics::IsrProposal> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| topics::IsrProposal {
                    topic_id: t.topic_id,
                    partition: p.partition_index,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr: if p.new_isr_with_epochs.is_empty() {
                        p.new_isr.iter().map(|b| (b.0, -1)).collect()
                    } else {
                        p.new_isr_with_epochs.iter().map(|b| (b.broker_id.0, b.broker_epoch)).collect()
                    },
                })
            })
            .collect();
        let (refusals, changes) = topics::alter_partition(&self.image, leader, &proposals);
        let offset = if changes.is_empty() {
            None
        } else {
            let records: Vec<MetadataRecord> = changes.into_iter().map(MetadataRecord::PartitionChange).collect();
            let offset = self
                .propose_awaited(now, MetadataRecord::encode_all(&records))
                .map_err(|_| ResponseError::NotController)?;
            self.partition_changes_at = Some(offset);
            Some(offset)
        };
        Ok(AdminAnswer::AlterPartition { proposals: proposals.into_iter().zip(refusals).collect(), offset })
    }

    /// KIP-730: a block of producer ids for a registered broker, after every block handed out
    /// or proposed before, answered once its record is committed.
    fn allocate_producer_ids(
        &mut self,
        now: Now,
        request: &AllocateProducerIdsRequest,
    ) -> Result<AdminAnswer, ResponseError> {
        if !self.is_active_controller() {
            return Err(ResponseError::NotController);
        }
        let registered = self.image.broker(request.broker_id.0).is_some_and(|b| b.epoch == request.broker_epoch);
        if !registered {
            return Err(ResponseError::StaleBrokerEpoch);
        }
        if self.pending_admin.len() >= MAX_PENDING_ADMIN {
            return Err(ResponseError::ThrottlingQuotaExceeded);
        }
        let start = self.image.next_producer_id().max(self.producer_ids_proposed_end);
        let end = start.checked_add(PRODUCER_ID_BLOCK as i64).ok_or(ResponseError::UnknownServerError)?;
        let record = MetadataRecord::ProducerIds { next_producer_id: end };
        let offset = self.propose_awaited(now, record.encode()).map_err(|e| match e {
            crate::raft::ProposeError::NotLeader { .. } => ResponseError::NotController,
            crate::raft::ProposeError::Busy => ResponseError::RequestTimedOut,
        })?;
        self.producer_ids_proposed_end = end;
        Ok(AdminAnswer::ProducerIds { start, len: PRODUCER_ID_BLOCK, offset })
    }

    /// Answers at once if nothing was proposed for it, else once the image applied its entries.
    fn answer_when_applied(&mut self, waiting: Waiting, answer: AdminAnswer) {
        match self.admin_proposed_through.take() {
            Some(last) => {
                self.pending_admin.insert(last, PendingAdmin { waiting, answer });
            }
            None => self.respond_admin(PendingAdmin { waiting, answer }),
        }
    }

    fn respond_admin(&mut self, pending: PendingAdmin) {
        let verdicts = &mut self.verdicts;
        let body = match pending.answer {
            AdminAnswer::CreateTopics(results) => {
                ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(settle(results, verdicts)))
            }
            AdminAnswer::DeleteTopics(results) => {
                ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(settle(results, verdicts)))
            }
            AdminAnswer::CreatePartitions(results) => ResponseKind::CreatePartitions(
                CreatePartitionsResponse::default().with_results(settle(results, verdicts)),
            ),
            AdminAnswer::AlterConfigs(results) => {
                ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(settle(results, verdicts)))
            }
            AdminAnswer::IncrementalAlterConfigs(results) => ResponseKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsResponse::default().with_responses(settle(results, verdicts)),
            ),
            AdminAnswer::ElectLeaders { refused, elected, offset } => {
                let committed = offset.is_some_and(|o| verdicts.remove(&o).unwrap_or(false));
                let moved = (!committed).then_some(ResponseError::NotController);
                let results = refused
                    .into_iter()
                    .map(|(t, p, error)| (t, p, Some(error)))
                    .chain(elected.into_iter().map(|(t, p)| (t, p, moved)));
                ResponseKind::ElectLeaders(
                    ElectLeadersResponse::default()
                        .with_replica_election_results(crate::broker::election_results(results)),
                )
            }
            AdminAnswer::AlterPartition { proposals, offset } => {
                let committed = offset.is_none_or(|o| verdicts.remove(&o).unwrap_or(false));
                let mut topics: Vec<alter_partition_response::TopicData> = Vec::new();
                for (proposal, refusal) in proposals {
                    let error = refusal.or((!committed).then_some(ResponseError::NotController));
                    let mut answer = alter_partition_response::PartitionData::default()
                        .with_partition_index(proposal.partition)
                        .with_error_code(error.map_or(0, |e| e.code()));
                    let now =
                        self.image.topic_by_id(proposal.topic_id).and_then(|t| t.partitions.get(&proposal.partition));
                    if let (None, Some(p)) = (error, now) {
                        answer = answer
                            .with_leader_id(kafka_protocol::messages::BrokerId(p.leader))
                            .with_leader_epoch(p.leader_epoch)
                            .with_isr(p.isr.iter().map(|&b| kafka_protocol::messages::BrokerId(b)).collect())
                            .with_partition_epoch(p.partition_epoch);
                    }
                    match topics.iter_mut().find(|t| t.topic_id == proposal.topic_id) {
                        Some(t) => t.partitions.push(answer),
                        None => topics.push(
                            alter_partition_response::TopicData::default()
                                .with_topic_id(proposal.topic_id)
                                .with_partitions(vec![answer]),
                        ),
                    }
                }
                ResponseKind::AlterPartition(AlterPartitionResponse::default().with_topics(topics))
            }
            AdminAnswer::ProducerIds { start, len, offset } => {
                let answer = if verdicts.remove(&offset).unwrap_or(false) {
                    AllocateProducerIdsResponse::default()
                        .with_producer_id_start(ProducerId(start))
                        .with_producer_id_len(len)
                } else {
                    AllocateProducerIdsResponse::default().with_error_code(ResponseError::NotController.code())
                };
                ResponseKind::AllocateProducerIds(answer)
            }
        };
        let Waiting { conn, correlation_id, version } = pending.waiting;
        self.respond(conn, correlation_id, version, &body);
    }

    /// Admin answers whose entries the image has now applied (or another leader's replaced).
    fn answer_admin(&mut self) {
        let applied = self.image.applied_end();
        while let Some(entry) = self.pending_admin.first_entry() {
            if *entry.key() >= applied {
                break;
            }
            let pending = entry.remove();
            self.respond_admin(pending);
        }
    }

    /// On the active controller: partitions whose leader is fenced get another (or none), and
    /// leaderless ones a returning replica, one batch of changes at a time.
    /// Whether the image applied every partition change this controller proposed.
    fn partition_changes_settled(&self) -> bool {
        self.partition_changes_at.is_none_or(|at| at < self.image.applied_end())
    }

    fn elect_leaders(&mut self, now: Now) {
        self.end_lost_leadership();
        let applied = self.image.applied_end();
        if !self.is_active_controller() || !self.partition_changes_settled() || self.elections_checked_at == applied {
            return;
        }
        self.elections_checked_at = applied;
        let changes = topics::leader_changes(&self.image);
        if changes.is_empty() {
            return;
        }
        let records: Vec<MetadataRecord> = changes.into_iter().map(MetadataRecord::PartitionChange).collect();
        match self.node.propose(now.monotonic_ms, MetadataRecord::encode_all(&records)) {
            Ok(offset) => {
                tracing::info!(partitions = records.len(), "electing partition leaders");
                self.partition_changes_at = Some(offset);
            }
            // Looked over again once the image moves (the log is busy committing).
            Err(_) => self.elections_checked_at = 0,
        }
    }

    /// KIP-631's broker registration, on the active controller: a RegisterBroker record, answered
    /// with its offset (the broker epoch) once committed. None: the answer waits for the commit.
    fn register_broker(
        &mut self,
        now: Now,
        waiting: Waiting,
        request: BrokerRegistrationRequest,
    ) -> Option<BrokerRegistrationResponse> {
        self.end_lost_leadership();
        let refuse = |error: ResponseError| Some(BrokerRegistrationResponse::default().with_error_code(error.code()));
        if !self.is_active_controller() {
            return refuse(ResponseError::NotController);
        }
        if request.cluster_id.as_str() != self.config.cluster_id {
            return refuse(ResponseError::InconsistentClusterId);
        }
        let broker_id = request.broker_id.0;
        if broker_id < 0 {
            return refuse(ResponseError::InvalidRequest);
        }
        if self.image.broker(broker_id).is_none() && self.image.brokers().count() >= MAX_BROKERS {
            return refuse(ResponseError::InvalidRegistration);
        }
        // This incarnation's registration, already committed: a retry.
        let committed = self.image.broker(broker_id).filter(|b| b.incarnation == request.incarnation_id);
        if let Some(known) = committed.filter(|b| !b.fenced) {
            return Some(BrokerRegistrationResponse::default().with_broker_epoch(known.epoch));
        }
        let registered_at = committed.map(|b| b.epoch as u64);
        if self.pending_registrations.len() >= MAX_PENDING_REGISTRATIONS {
            return refuse(ResponseError::ThrottlingQuotaExceeded);
        }
        let record = MetadataRecord::RegisterBroker {
            broker_id,
            incarnation: request.incarnation_id,
            endpoints: request
                .listeners
                .iter()
                .map(|l| Endpoint { listener: l.name.to_string(), host: l.host.to_string(), port: l.port })
                .collect(),
            rack: request.rack.as_ref().map(|r| r.to_string()),
        };
        // Registered brokers start fenced (KIP-631); with no replica to catch up yet, the
        // controller lets it in at once. Heartbeats and fencing on expiry come with replication.
        let unfence = MetadataRecord::BrokerFenced { broker_id, fenced: false };
        let restarted = self.image.broker(broker_id).is_some_and(|b| b.incarnation != request.incarnation_id);
        let mut records = vec![record];
        let changes = if restarted { topics::restarted_broker_changes(&self.image, broker_id) } else { Vec::new() };
        if !changes.is_empty() && !self.partition_changes_settled() {
            return refuse(ResponseError::RequestTimedOut);
        }
        let changes_partitions = !changes.is_empty();
        records.extend(changes.into_iter().map(MetadataRecord::PartitionChange));
        let registered = match registered_at {
            Some(offset) => offset,
            None => match self.node.propose(now.monotonic_ms, MetadataRecord::encode_all(&records)) {
                Ok(offset) => {
                    if changes_partitions {
                        self.partition_changes_at = Some(offset);
                    }
                    offset
                }
                Err(crate::raft::ProposeError::NotLeader { .. }) => return refuse(ResponseError::NotController),
                Err(crate::raft::ProposeError::Busy) => return refuse(ResponseError::RequestTimedOut),
            },
        };
        match self.node.propose(now.monotonic_ms, unfence.encode()) {
            Ok(last) => {
                self.pending_registrations.insert(last, (registered, waiting));
                None
            }
            // The registration may commit alone; the broker's retry finds it and is let in.
            Err(_) => refuse(ResponseError::RequestTimedOut),
        }
    }

    /// KIP-631's heartbeat, on the active controller: the broker's session starts again; a broker
    /// that asks to be fenced, or to shut down, is fenced; a fenced one that has caught up with
    /// the metadata log up to its own registration is let in again. The answer tells the state
    /// the image holds now; a change proposed here shows in a later heartbeat's answer.
    fn broker_heartbeat(&mut self, now: Now, request: &BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
        let refuse = |error: ResponseError| BrokerHeartbeatResponse::default().with_error_code(error.code());
        if !self.is_active_controller() {
            return refuse(ResponseError::NotController);
        }
        let broker_id = request.broker_id.0;
        let Some(registration) = self.image.broker(broker_id).filter(|b| b.epoch == request.broker_epoch) else {
            return refuse(ResponseError::StaleBrokerEpoch);
        };
        let (fenced, registered_at) = (registration.fenced, registration.epoch);
        self.sessions.heartbeat(broker_id, now.monotonic_ms);
        let caught_up = request.current_metadata_offset >= registered_at;
        let fence = request.want_fence || request.want_shut_down;
        let change = match (fenced, fence) {
            (false, true) => Some(true),
            (true, false) if caught_up => Some(false),
            _ => None,
        };
        if let Some(fenced) = change.filter(|_| !self.sessions.is_pending(broker_id)) {
            let record = MetadataRecord::BrokerFenced { broker_id, fenced };
            if let Ok(offset) = self.node.propose(now.monotonic_ms, record.encode()) {
                self.sessions.proposed(broker_id, offset);
            }
        }
        BrokerHeartbeatResponse::default()
            .with_is_caught_up(caught_up)
            .with_is_fenced(fenced)
            // A broker asking to stop may stop once it is fenced and leads nothing (both
            // committed), so no client is sent to it after it goes.
            .with_should_shut_down(
                request.want_shut_down && fenced && !self.sessions.is_pending(broker_id) && !self.leads_any(broker_id),
            )
    }

    fn leads_any(&self, broker_id: crate::metadata::BrokerId) -> bool {
        self.image.topics().any(|t| t.partitions.values().any(|p| p.leader == broker_id))
    }

    /// The leader acts as the controller once its image has applied everything before its own
    /// epoch (its LeaderChange entry): before that it may not know registrations an earlier
    /// leader committed, as Kafka's controller waits to replay up to its epoch's start.
    fn is_active_controller(&self) -> bool {
        self.node.epoch_start().is_some_and(|start| self.image.applied_end() > start)
    }

    /// On the leader: every unfenced broker has a session, and one whose session ended is fenced.
    /// Off it: no sessions (a new leader gives every broker a full one).
    fn tend_sessions(&mut self, now: Now) {
        if self.node.role() != crate::raft::RoleKind::Leader {
            self.sessions.clear();
            return;
        }
        if !self.is_active_controller() {
            return;
        }
        self.sessions.applied_through(self.image.applied_end());
        for broker in self.image.brokers().filter(|b| !b.fenced) {
            self.sessions.watch(broker.id, now.monotonic_ms);
        }
        for broker_id in self.sessions.expired(now.monotonic_ms) {
            if self.image.broker(broker_id).is_none_or(|b| b.fenced) {
                self.sessions.forget(broker_id);
                continue;
            }
            let record = MetadataRecord::BrokerFenced { broker_id, fenced: true };
            match self.node.propose(now.monotonic_ms, record.encode()) {
                Ok(offset) => {
                    tracing::info!(broker = broker_id, "broker session expired: fencing it");
                    self.sessions.proposed(broker_id, offset);
                    self.sessions.forget(broker_id);
                }
                Err(_) => {
                    // Busy: tried again shortly, not at once (the deadline would stay in the past).
                    self.sessions.postpone(broker_id, now.monotonic_ms + FENCE_RETRY_MS);
                }
            }
        }
        self.elect_leaders(now);
    }

    /// Registrations whose record the image has now applied, or replaced by another leader's.
    fn answer_registrations(&mut self) {
        let applied = self.image.applied_end();
        while let Some(entry) = self.pending_registrations.first_entry() {
            if *entry.key() >= applied {
                break;
            }
            let (_, (offset, waiting)) = entry.remove_entry();
            let committed = self.image.brokers().any(|b| b.epoch == offset as i64 && !b.fenced);
            let answer = if committed {
                BrokerRegistrationResponse::default().with_broker_epoch(offset as i64)
            } else {
                BrokerRegistrationResponse::default().with_error_code(ResponseError::NotController.code())
            };
            self.respond(
                waiting.conn,
                waiting.correlation_id,
                waiting.version,
                &ResponseKind::BrokerRegistration(answer),
            );
        }
    }

    /// The connection is gone: answers still owed to it are dropped.
    pub fn handle_closed(&mut self, conn: ConnId) {
        self.pending_registrations.retain(|_, (_, w)| w.conn != conn);
        let (gone, kept): (BTreeMap<u64, PendingAdmin>, _) =
            std::mem::take(&mut self.pending_admin).into_iter().partition(|(_, p)| p.waiting.conn == conn);
        self.pending_admin = kept;
        for offset in gone.values().flat_map(|p| p.answer.offsets()) {
            self.awaited.remove(&offset);
            self.verdicts.remove(&offset);
        }
        self.waiting.retain(|_, w| w.conn != conn);
        let waiting = &self.waiting;
        self.waiting_order.retain(|key| waiting.contains_key(key));
    }

    /// A response frame (without its size prefix) from a peer we sent a request to.
    pub fn handle_peer_response(&mut self, now: Now, peer: NodeId, frame: Bytes) -> Result<(), String> {
        if frame.len() < 4 {
            return Err(format!("a response frame of {} bytes from node {peer}", frame.len()));
        }
        let correlation_id = i32::from_be_bytes(frame[0..4].try_into().expect("4 bytes"));
        let Some((api_key, version)) = self.in_flight.remove(&(peer, correlation_id)) else {
            return Err(format!("node {peer} answered correlation {correlation_id}, which is not in flight"));
        };
        self.in_flight_order.retain(|key| *key != (peer, correlation_id));
        let (_, body) = codec::decode_response(api_key, version, frame)?;
        let response = wire::decode_response(api_key, body)?;
        let correlation = correlation_id as u32 as u64;
        self.node.handle_message(now.monotonic_ms, peer, Message::Response { correlation, response });
        self.apply_committed();
        self.elect_leaders(now);
        Ok(())
    }

    /// The connection to `peer` broke: nothing sent on it will be answered.
    pub fn handle_peer_lost(&mut self, now: Now, peer: NodeId) {
        self.in_flight.retain(|(to, _), _| *to != peer);
        self.in_flight_order.retain(|(to, _)| *to != peer);
        self.node.handle_peer_lost(now.monotonic_ms, peer);
    }

    fn wait_for_answer(&mut self, from: NodeId, waiting: Waiting) {
        let key = (from, waiting.correlation_id);
        if self.waiting.insert(key, waiting).is_none() {
            self.waiting_order.push_back(key);
        }
        while self.waiting.len() > MAX_WAITING_ANSWERS {
            let oldest = self.waiting_order.pop_front().expect("the order lists every waiting answer");
            self.waiting.remove(&oldest);
        }
    }

    fn respond(&mut self, conn: ConnId, correlation_id: i32, version: i16, body: &ResponseKind) {
        let frame = codec::encode_response(correlation_id, version, body).expect("our own answers encode");
        self.actions.push_back(QuorumAction::Respond { conn, frame });
    }

    /// Brings the image up to the high watermark: from the node's snapshot when it holds one past
    /// the image (at start, or installed from the leader), then entry by entry; and asks the node
    /// for a snapshot of the image every `snapshot_every` entries.
    fn apply_committed(&mut self) {
        if let Some((id, data)) = self.node.latest_snapshot() {
            if id.end_offset > self.image.applied_end() {
                let image = MetadataImage::from_snapshot(data)
                    .unwrap_or_else(|e| panic!("the quorum's snapshot {id:?} is not an image: {e}"));
                assert_eq!(image.applied_end(), id.end_offset, "a snapshot's image ends where the snapshot does");
                self.image = image;
                self.snapshot_asked_end = self.snapshot_asked_end.max(id.end_offset);
                // Entries a snapshot passes over cannot be told apart: not known to be ours.
                let rest = self.awaited.split_off(&id.end_offset);
                for (offset, _) in std::mem::replace(&mut self.awaited, rest) {
                    self.verdicts.insert(offset, false);
                }
            }
        }
        let committed = self.node.high_watermark().min(self.node.log().end());
        if self.image.applied_end() < committed {
            let entries = self.node.log().entries_from(self.image.applied_end(), MAX_APPLIED_PER_TURN);
            assert!(
                entries.first().is_some_and(|e| e.offset == self.image.applied_end()),
                "the log holds the entries the image has yet to apply"
            );
            for entry in entries.iter().take_while(|e| e.offset < committed) {
                let proposed = self.awaited.remove(&entry.offset);
                let replayed = self.image.replay(std::iter::once(entry));
                if let Some((epoch, data)) = proposed {
                    // Ours only if this very entry committed and the image took it.
                    let same = entry.epoch == epoch && matches!(&entry.payload, Payload::Data(d) if *d == data);
                    self.verdicts.insert(entry.offset, same && replayed.is_ok());
                }
                if let Err(e) = replayed {
                    // Every node refuses it alike, so images stay the same everywhere.
                    tracing::error!("metadata entry refused: {e}");
                    self.image.pass_over(entry.offset);
                    self.refused += 1;
                }
            }
        }
        self.answer_registrations();
        self.answer_admin();
        let every = self.config.snapshot_every;
        if every > 0 && self.image.applied_end() >= self.snapshot_asked_end + every {
            let end = self.image.applied_end();
            if self.node.may_snapshot().is_ok() && self.node.snapshot(end, self.image.to_snapshot()).is_ok() {
                self.snapshot_asked_end = end;
            }
        }
    }

    /// A leadership this member's answers were proposed in has ended (or another began): they
    /// are answered NOT_CONTROLLER, as Kafka's controller fails its requests when it resigns. A
    /// later leadership may reuse their offsets, so nothing of the old one may wait on.
    fn end_lost_leadership(&mut self) {
        let leading = (self.node.role() == crate::raft::RoleKind::Leader).then(|| self.node.epoch());
        if leading == self.leading_epoch {
            return;
        }
        self.leading_epoch = leading;
        self.awaited.clear();
        self.verdicts.clear();
        self.partition_changes_at = None;
        self.elections_checked_at = 0;
        for (_, pending) in std::mem::take(&mut self.pending_admin) {
            self.respond_admin(pending);
        }
        for (_, (_, waiting)) in std::mem::take(&mut self.pending_registrations) {
            let answer = BrokerRegistrationResponse::default().with_error_code(ResponseError::NotController.code());
            self.respond(
                waiting.conn,
                waiting.correlation_id,
                waiting.version,
                &ResponseKind::BrokerRegistration(answer),
            );
        }
    }

    /// Moves the node's actions into ours, framing its messages.
    fn drain_node(&mut self) {
        self.end_lost_leadership();
        self.apply_committed();
        if self.node.role() != crate::raft::RoleKind::Leader {
            self.sessions.clear();
        }
        while let Some(action) = self.node.poll_action() {
            match action {
                RaftAction::Send { to, message: Message::Request { correlation, request } } => {
                    let (api_key, version) = wire::api_key(&request);
                    let correlation_id = correlation as i32;
                    assert_eq!(correlation_id as u32 as u64, correlation, "the node's correlations fit an i32");
                    let header = RequestHeader::default()
                        .with_request_api_key(api_key as i16)
                        .with_request_api_version(version)
                        .with_correlation_id(correlation_id)
                        .with_client_id(Some(StrBytes::from_string(format!("raft-client-{}", self.config.node_id))));
                    let body = wire::encode_request(&request, to, &self.config.cluster_id);
                    let frame = codec::encode_request(&header, &body).expect("our own requests encode");
                    self.expect_answer(to, correlation_id, api_key, version);
                    self.actions.push_back(QuorumAction::SendToPeer { peer: to, frame });
                }
                RaftAction::Send { to, message: Message::Response { correlation, response } } => {
                    let key = (to, correlation as i32);
                    // Gone if its connection closed or it was crowded out: the asker retries.
                    if let Some(waiting) = self.waiting.remove(&key) {
                        self.waiting_order.retain(|k| *k != key);
                        let body = wire::encode_response(&response);
                        self.respond(waiting.conn, waiting.correlation_id, waiting.version, &body);
                    }
                }
                storage => self.actions.push_back(QuorumAction::Storage(storage)),
            }
        }
    }

    fn snapshot_end(&self) -> u64 {
        self.node.latest_snapshot().map_or(0, |(id, _)| id.end_offset)
    }

    fn expect_answer(&mut self, peer: NodeId, correlation_id: i32, api_key: ApiKey, version: i16) {
        let key = (peer, correlation_id);
        if self.in_flight.insert(key, (api_key, version)).is_none() {
            self.in_flight_order.push_back(key);
        }
        while self.in_flight.len() > MAX_IN_FLIGHT {
            let oldest = self.in_flight_order.pop_front().expect("the order lists every request in flight");
            self.in_flight.remove(&oldest);
        }
    }

    pub fn check_invariants(&self) {
        self.node.check_invariants();
        self.image.check_invariants();
        assert!(
            self.image.applied_end() <= self.node.high_watermark().max(self.snapshot_end()),
            "the image ran ahead of the commit"
        );
        assert_eq!(self.waiting.len(), self.waiting_order.len(), "waiting answers and their order disagree");
        assert_eq!(self.in_flight.len(), self.in_flight_order.len(), "requests in flight and their order disagree");
        assert!(self.waiting.len() <= MAX_WAITING_ANSWERS && self.in_flight.len() <= MAX_IN_FLIGHT);
        assert!(self.pending_registrations.len() <= MAX_PENDING_REGISTRATIONS);
        assert!(self.pending_admin.len() <= MAX_PENDING_ADMIN + 1);
        assert!(self.admin_proposed_through.is_none(), "an admin proposal left without its answer");
        if let Some((&first, _)) = self.awaited.first_key_value() {
            assert!(first >= self.image.applied_end(), "a proposal awaited below the applied end");
        }
        let waited_for: std::collections::BTreeSet<u64> =
            self.pending_admin.values().flat_map(|p| p.answer.offsets()).collect();
        assert!(
            self.awaited.keys().chain(self.verdicts.keys()).all(|o| waited_for.contains(o)),
            "a proposal awaited by no answer"
        );
        if let Some((&first, _)) = self.pending_admin.first_key_value() {
            assert!(first >= self.image.applied_end(), "an admin answer left unanswered below the applied end");
        }
        assert!(
            self.sessions.is_empty() || self.node.role() == crate::raft::RoleKind::Leader,
            "broker sessions kept off the leader"
        );
        if let Some((&first, _)) = self.pending_registrations.first_key_value() {
            assert!(first >= self.image.applied_end(), "a registration left unanswered below the applied end");
        }
    }
}

/// Every topic of a request refused: this node is not the active controller.
fn not_controller<A: Refusable>(answers: impl Iterator<Item = A>) -> Vec<Decision<A>> {
    answers
        .map(|a| Decision { entry: None, answer: a.refuse(ResponseError::NotController, "not the active controller") })
        .collect()
}
