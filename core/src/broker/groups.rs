//! Consumer-group APIs: the glue between the wire, the group coordinator state machine and its
//! internal log (`__consumer_offsets`, written through the same storage path as user data).

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;

use super::fetch::{intact_prefix, MAX_CORRUPT_REREADS};
use super::{Broker, RequestCtx};
use crate::group::records::{Committed, GroupRecord};
use crate::group::{JoinArgs, JoinResult, OffsetDeletion, Output, PersistId, SyncArgs, SyncResult};
use crate::ops::Purpose;
use crate::partition::{trim_fetched, ReadBound, ReadPlan};
use crate::storage::{StorageError, TopicPartition};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const LOAD_CHUNK: usize = 4 << 20;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|x| x.to_string())
}

/// Committed offsets of one topic: (partition, offset, leader epoch, metadata).
type TopicOffsets = (TopicName, Vec<(i32, i64, i32, Option<String>)>);

pub(super) fn offsets_tp() -> TopicPartition {
    TopicPartition::new(OFFSETS_TOPIC, 0)
}

impl Broker {
    pub(crate) fn handle_find_coordinator(&mut self, ctx: RequestCtx, request: FindCoordinatorRequest) {
        // Groups (0) and transactions (1): here on a single node, at the key's home in a cluster.
        let response = if ctx.version >= 4 {
            let coordinators = request
                .coordinator_keys
                .iter()
                .map(|key| {
                    let (error, node, host, port) = self.coordinator_answer(request.key_type, key.as_str());
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_error_code(error_code(error))
                        .with_error_message(coordinator_message(error))
                        .with_node_id(BrokerId(node))
                        .with_host(s(&host))
                        .with_port(port)
                })
                .collect();
            FindCoordinatorResponse::default().with_coordinators(coordinators)
        } else {
            let (error, node, host, port) = self.coordinator_answer(request.key_type, request.key.as_str());
            FindCoordinatorResponse::default()
                .with_error_code(error_code(error))
                .with_error_message(coordinator_message(error))
                .with_node_id(BrokerId(node))
                .with_host(s(&host))
                .with_port(port)
        };
        self.respond(ctx, ResponseKind::FindCoordinator(response));
    }

    fn group_token(&mut self, ctx: RequestCtx) -> u64 {
        let token = self.next_request_id;
        self.next_request_id += 1;
        self.group_waiters.insert(token, ctx);
        token
    }

    pub(crate) fn handle_join_group(
        &mut self,
        now_ms: i64,
        ctx: RequestCtx,
        client_id: String,
        client_host: String,
        r: JoinGroupRequest,
    ) {
        let token = self.group_token(ctx);
        let args = JoinArgs {
            group: r.group_id.0.to_string(),
            member_id: r.member_id.to_string(),
            instance_id: opt(&r.group_instance_id),
            client_id,
            client_host,
            session_timeout_ms: r.session_timeout_ms,
            // v0 has no rebalance timeout: it is the session timeout.
            rebalance_timeout_ms: if ctx.version >= 1 { r.rebalance_timeout_ms } else { r.session_timeout_ms },
            protocol_type: r.protocol_type.to_string(),
            protocols: r.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
            require_known_member_id: ctx.version >= 4,
        };
        self.groups.join(token, args, now_ms);
        self.pump_groups(now_ms);
    }

    pub(crate) fn handle_sync_group(&mut self, now_ms: i64, ctx: RequestCtx, r: SyncGroupRequest) {
        let token = self.group_token(ctx);
        let args = SyncArgs {
            group: r.group_id.0.to_string(),
            generation: r.generation_id,
            member_id: r.member_id.to_string(),
            instance_id: opt(&r.group_instance_id),
            protocol_type: opt(&r.protocol_type),
            protocol_name: opt(&r.protocol_name),
            assignments: r.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
        };
        self.groups.sync(token, args, now_ms);
        self.pump_groups(now_ms);
    }

    pub(crate) fn handle_heartbeat(&mut self, now_ms: i64, ctx: RequestCtx, r: HeartbeatRequest) {
        let error = self.groups.heartbeat(
            r.group_id.0.as_str(),
            r.generation_id,
            r.member_id.as_str(),
            r.group_instance_id.as_deref(),
            now_ms,
        );
        self.respond(ctx, ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(error)));
        self.pump_groups(now_ms);
    }

    pub(crate) fn handle_leave_group(&mut self, now_ms: i64, ctx: RequestCtx, r: LeaveGroupRequest) {
        let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
            r.members.iter().map(|m| (m.member_id.to_string(), opt(&m.group_instance_id))).collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        let (error, errors) = self.groups.leave(r.group_id.0.as_str(), &members, now_ms);
        let mut response = LeaveGroupResponse::default();
        if ctx.version >= 3 {
            response.error_code = error;
            response.members = members
                .iter()
                .zip(errors.iter().chain(std::iter::repeat(&error)))
                .map(|((m, i), e)| {
                    MemberResponse::default()
                        .with_member_id(s(m))
                        .with_group_instance_id(i.as_deref().map(s))
                        .with_error_code(*e)
                })
                .collect();
        } else {
            response.error_code = if error != 0 { error } else { errors.first().copied().unwrap_or(0) };
        }
        self.respond(ctx, ResponseKind::LeaveGroup(response));
        self.pump_groups(now_ms);
    }

    pub(crate) fn handle_offset_commit(&mut self, now_ms: i64, ctx: RequestCtx, r: OffsetCommitRequest) {
        let max_metadata = self.groups.config.max_metadata_bytes;
        let mut accepted = Vec::new();
        let mut topics = Vec::new();
        for t in &r.topics {
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                let error = if metadata.as_ref().is_some_and(|m| m.len() > max_metadata) {
                    ResponseError::OffsetMetadataTooLarge.code()
                } else if self.partition(&TopicPartition::new(t.name.0.as_str(), p.partition_index)).is_none() {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    accepted.push((
                        (t.name.0.to_string(), p.partition_index),
                        Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_ms: now_ms,
                        },
                    ));
                    0
                };
                partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error),
                );
            }
            topics.push(OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions));
        }
        let mut response = OffsetCommitResponse::default().with_topics(topics);
        if accepted.is_empty() {
            self.respond(ctx, ResponseKind::OffsetCommit(response));
            return;
        }
        let generation = if ctx.version >= 1 { r.generation_id_or_member_epoch } else { -1 };
        match self.groups.commit(
            r.group_id.0.as_str(),
            generation,
            r.member_id.as_str(),
            r.group_instance_id.as_deref(),
            accepted,
            now_ms,
        ) {
            Ok(id) => {
                self.commit_waiters.insert(id, (ctx, ResponseKind::OffsetCommit(response)));
                self.pump_groups(now_ms);
            }
            Err(e) => {
                for t in &mut response.topics {
                    for p in &mut t.partitions {
                        if p.error_code == 0 {
                            p.error_code = e.code();
                        }
                    }
                }
                self.respond(ctx, ResponseKind::OffsetCommit(response));
            }
        }
    }

    fn fetch_offsets_of(&self, group: &str, topics: Option<Vec<(TopicName, Vec<i32>)>>) -> (i16, Vec<TopicOffsets>) {
        if self.groups.is_loading() {
            return (ResponseError::CoordinatorLoadInProgress.code(), Vec::new());
        }
        let wanted: Vec<(TopicName, Vec<i32>)> = match topics {
            Some(t) => t,
            None => {
                // Every committed offset of the group, topic by topic.
                let mut all: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                if let Some(g) = self.groups.group(group) {
                    for (t, p) in g.offsets.keys() {
                        all.entry(t.clone()).or_default().push(*p);
                    }
                }
                all.into_iter().map(|(t, ps)| (TopicName(s(&t)), ps)).collect()
            }
        };
        let result = wanted
            .into_iter()
            .map(|(name, partitions)| {
                let rows = partitions
                    .into_iter()
                    .map(|p| match self.groups.committed(group, name.0.as_str(), p) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone()),
                        None => (p, -1, -1, Some(String::new())),
                    })
                    .collect();
                (name, rows)
            })
            .collect();
        (0, result)
    }

    pub(crate) fn handle_offset_fetch(&mut self, ctx: RequestCtx, r: OffsetFetchRequest) {
        let mut response = OffsetFetchResponse::default();
        if ctx.version >= 8 {
            response.groups = r
                .groups
                .into_iter()
                .map(|g| {
                    if let Some(error) = self.not_home(g.group_id.0.as_str()) {
                        return OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(error);
                    }
                    let topics = g.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
                    let (error, rows) = self.fetch_offsets_of(g.group_id.0.as_str(), topics);
                    let topics = rows
                        .into_iter()
                        .map(|(name, parts)| {
                            let partitions = parts
                                .into_iter()
                                .map(|(p, o, e, m)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(m.map(|m| s(&m)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default().with_name(name).with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(error)
                        .with_topics(topics)
                })
                .collect();
        } else {
            let topics = r.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
            let (error, rows) = self.fetch_offsets_of(r.group_id.0.as_str(), topics);
            response.error_code = error;
            response.topics = rows
                .into_iter()
                .map(|(name, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, o, e, m)| {
                            let row = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_metadata(m.map(|m| s(&m)));
                            let row = if ctx.version >= 5 { row.with_committed_leader_epoch(e) } else { row };
                            // Before v2 there is no top-level error: each partition carries it.
                            if ctx.version < 2 {
                                row.with_error_code(error)
                            } else {
                                row
                            }
                        })
                        .collect();
                    OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
                })
                .collect();
        }
        self.respond(ctx, ResponseKind::OffsetFetch(response));
    }

    pub(crate) fn handle_describe_groups(&mut self, ctx: RequestCtx, r: DescribeGroupsRequest) {
        let loading = self.groups.is_loading();
        let groups = r
            .groups
            .into_iter()
            .map(|id| {
                let described = DescribedGroup::default().with_group_id(id.clone());
                if let Some(error) = self.not_home(id.0.as_str()) {
                    return described.with_error_code(error);
                }
                if loading {
                    return described.with_error_code(ResponseError::CoordinatorLoadInProgress.code());
                }
                match self.groups.group(id.0.as_str()) {
                    None => described.with_group_state(StrBytes::from_static_str("Dead")),
                    Some(g) => {
                        let protocol = g.protocol.clone().unwrap_or_default();
                        let members = g
                            .members
                            .values()
                            .map(|m| {
                                let mut member = DescribedGroupMember::default()
                                    .with_member_id(s(&m.member_id))
                                    .with_client_id(s(&m.client_id))
                                    .with_client_host(s(&m.client_host))
                                    .with_member_metadata(
                                        m.protocols
                                            .iter()
                                            .find(|(n, _)| *n == protocol)
                                            .map(|(_, b)| b.clone())
                                            .unwrap_or_default(),
                                    )
                                    .with_member_assignment(m.assignment.clone());
                                if ctx.version >= 4 {
                                    member = member.with_group_instance_id(m.instance_id.as_deref().map(s));
                                }
                                member
                            })
                            .collect();
                        described
                            .with_group_state(StrBytes::from_static_str(g.state.name()))
                            .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
                            .with_protocol_data(s(&protocol))
                            .with_members(members)
                    }
                }
            })
            .collect();
        self.respond(ctx, ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups)));
    }

    pub(crate) fn handle_list_groups(&mut self, ctx: RequestCtx, r: ListGroupsRequest) {
        if self.groups.is_loading() {
            let response =
                ListGroupsResponse::default().with_error_code(ResponseError::CoordinatorLoadInProgress.code());
            return self.respond(ctx, ResponseKind::ListGroups(response));
        }
        let wanted_states: Vec<String> = r.states_filter.iter().map(|x| x.to_lowercase()).collect();
        let wanted_types: Vec<String> = r.types_filter.iter().map(|x| x.to_lowercase()).collect();
        let groups = self
            .groups
            .groups()
            .filter(|g| wanted_states.is_empty() || wanted_states.contains(&g.state.name().to_lowercase()))
            .filter(|_| wanted_types.is_empty() || wanted_types.contains(&"classic".to_string()))
            .map(|g| {
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(s(&g.id)))
                    .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")));
                if ctx.version >= 4 {
                    listed = listed.with_group_state(StrBytes::from_static_str(g.state.name()));
                }
                if ctx.version >= 5 {
                    listed = listed.with_group_type(StrBytes::from_static_str("classic"));
                }
                listed
            })
            .collect();
        self.respond(ctx, ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups)));
    }

    pub(crate) fn handle_delete_groups(&mut self, now_ms: i64, ctx: RequestCtx, r: DeleteGroupsRequest) {
        let results = r
            .groups_names
            .into_iter()
            .map(|g| {
                let error = match self.not_home(g.0.as_str()) {
                    Some(error) => error,
                    None => self.groups.delete_group(g.0.as_str()),
                };
                delete_groups_response::DeletableGroupResult::default().with_group_id(g).with_error_code(error)
            })
            .collect();
        self.respond(ctx, ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results)));
        self.pump_groups(now_ms);
    }

    pub(crate) fn handle_offset_delete(&mut self, now_ms: i64, ctx: RequestCtx, r: OffsetDeleteRequest) {
        let partitions: Vec<(String, i32)> = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index)))
            .collect();
        let outcome = self.groups.delete_offsets(r.group_id.0.as_str(), partitions);
        let refused = match &outcome {
            Ok(deletion) => deletion.refused.iter().cloned().collect(),
            Err(_) => BTreeSet::new(),
        };
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let key = (t.name.0.to_string(), p.partition_index);
                        let error =
                            if refused.contains(&key) { ResponseError::GroupSubscribedToTopic.code() } else { 0 };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        let mut response = OffsetDeleteResponse::default().with_topics(topics);
        match outcome {
            Ok(OffsetDeletion { persist: Some(id), .. }) => {
                self.commit_waiters.insert(id, (ctx, ResponseKind::OffsetDelete(response)));
                self.pump_groups(now_ms);
            }
            Ok(OffsetDeletion { persist: None, .. }) => self.respond(ctx, ResponseKind::OffsetDelete(response)),
            Err(e) => {
                response.error_code = e.code();
                response.topics.clear();
                self.respond(ctx, ResponseKind::OffsetDelete(response));
            }
        }
    }

    // ---- coordinator outputs and the internal log ----

    /// The offsets log is read: the groups serve from now on. Offsets of topics deleted while
    /// the coordinator was away (a crash before their tombstones) go now.
    fn finish_group_load(&mut self, now_ms: i64) {
        self.groups.finish_loading(now_ms);
        let gone: Vec<String> =
            self.groups.topics_with_offsets().into_iter().filter(|t| !self.topics.contains_key(t.as_str())).collect();
        for topic in gone {
            tracing::info!(topic, "forgetting committed offsets of a deleted topic");
            self.groups.forget_topic(&topic);
        }
        self.pump_groups(now_ms);
    }

    /// Carries out what the coordinator asked for: answers and appends to its log.
    pub(crate) fn pump_groups(&mut self, now_ms: i64) {
        self.on_txn_offsets(now_ms, None);
        while let Some(output) = self.groups.poll_output() {
            match output {
                Output::Join(token, result) => {
                    if let Some(ctx) = self.group_waiters.remove(&token) {
                        let body = join_response(ctx.version, result);
                        self.respond(ctx, ResponseKind::JoinGroup(body));
                    }
                }
                Output::Sync(token, result) => {
                    if let Some(ctx) = self.group_waiters.remove(&token) {
                        self.respond(ctx, ResponseKind::SyncGroup(sync_response(result)));
                    }
                }
                Output::Persist(id, records) => self.append_group_records(now_ms, id, records),
            }
        }
    }

    fn append_group_records(&mut self, now_ms: i64, id: PersistId, records: Vec<GroupRecord>) {
        let batch = encode_group_batch(&records, now_ms);
        let tp = offsets_tp();
        let appended = match self.append_to_log(now_ms, &tp, &batch) {
            Some(result) => result.map_err(|e| format!("{e:?}")),
            None => Err("the offsets topic does not exist yet".to_string()),
        };
        match appended {
            Ok(a) => {
                let hw = self.partition(&tp).map_or(0, |p| p.high_watermark());
                if hw > a.last_offset {
                    self.on_group_persisted(now_ms, id, true);
                } else {
                    self.group_persists.insert((a.last_offset, id));
                }
            }
            Err(e) => {
                tracing::error!("could not append group records: {e}");
                self.on_group_persisted(now_ms, id, false);
            }
        }
    }

    fn on_group_persisted(&mut self, now_ms: i64, id: PersistId, ok: bool) {
        self.groups.persisted(id, ok, now_ms);
        self.on_txn_offsets(now_ms, Some((id, ok)));
        if let Some((ctx, mut body)) = self.commit_waiters.remove(&id) {
            if !ok {
                if let ResponseKind::OffsetCommit(r) = &mut body {
                    for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                        p.error_code = ResponseError::CoordinatorNotAvailable.code();
                    }
                }
            }
            self.respond(ctx, body);
        }
        self.pump_groups(now_ms);
    }

    /// The offsets partition's high watermark moved (or it failed): finish covered persists.
    pub(crate) fn release_group_persists(&mut self, now_ms: i64) {
        let tp = offsets_tp();
        let (hw, failed) = self.partition(&tp).map_or((0, true), |p| (p.high_watermark(), p.failed.is_some()));
        let done: Vec<(i64, PersistId)> =
            self.group_persists.iter().filter(|(last, _)| failed || *last < hw).cloned().collect();
        for key in done {
            self.group_persists.remove(&key);
            self.on_group_persisted(now_ms, key.1, !failed);
        }
    }

    // ---- loading the coordinator from its log at start ----

    /// Starts replaying the offsets log, or declares the coordinator loaded if there is none.
    pub(crate) fn start_group_load(&mut self, now_ms: i64) {
        let start = self.partition(&offsets_tp()).map(|p| (p.log_start_offset, p.high_watermark()));
        match start {
            Some((from, hw)) if from < hw => self.read_group_log(from),
            _ => self.finish_group_load(now_ms),
        }
    }

    fn read_group_log(&mut self, offset: i64) {
        let Some(log) = self.partition(&offsets_tp()) else {
            return;
        };
        match log.plan_read(offset, LOAD_CHUNK, ReadBound::HighWatermark) {
            Ok(Some(plan)) => {
                self.group_load_rereads = 0;
                self.group_load = Some((offset, plan.clone()));
                self.ops.read(Purpose::GroupLoadRead, plan.file, plan.position, plan.len);
            }
            _ => {
                self.group_load = None;
                self.finish_group_load(self.loaded_at_ms);
            }
        }
    }

    fn reread_group_log(&mut self, offset: i64, plan: ReadPlan) {
        self.group_load_rereads += 1;
        self.group_load = Some((offset, plan.clone()));
        self.ops.read(Purpose::GroupLoadRead, plan.file, plan.position, plan.len);
    }

    pub(crate) fn on_group_load_read(&mut self, now_ms: i64, result: Result<Bytes, StorageError>) {
        let Some((offset, plan)) = self.group_load.take() else {
            return;
        };
        let bytes = match result {
            Ok(b) => b,
            Err(e) if self.group_load_rereads < MAX_CORRUPT_REREADS => {
                tracing::warn!("reading the offsets log failed: {e}; reading again");
                self.reread_group_log(offset, plan);
                return;
            }
            Err(e) => {
                tracing::error!("reading the offsets log failed: {e}; groups load what was read");
                self.finish_group_load(now_ms);
                return;
            }
        };
        let records = match trim_fetched(&bytes, offset, LOAD_CHUNK) {
            Ok(r) if intact_prefix(&r, offset) < r.len() && self.group_load_rereads < MAX_CORRUPT_REREADS => {
                tracing::warn!(offset, "offsets log bytes fail their CRC; reading again");
                self.reread_group_log(offset, plan);
                return;
            }
            Ok(r) => {
                let intact = intact_prefix(&r, offset);
                if intact < r.len() {
                    tracing::error!(offset, "stored offsets log batch fails its CRC; groups load what is intact");
                }
                r.slice(..intact)
            }
            Err(_) if bytes.len() < plan.len => {
                tracing::error!(offset, "short read of the offsets log; groups load what was read");
                self.finish_group_load(now_ms);
                return;
            }
            Err((skip, len)) if skip == 0 && len <= plan.len => {
                tracing::error!(offset, "unreadable batch in the offsets log; groups load what was read");
                self.finish_group_load(now_ms);
                return;
            }
            Err((skip, len)) => {
                let plan = ReadPlan { position: plan.position + skip as u64, len, ..plan };
                self.group_load = Some((offset, plan.clone()));
                self.ops.read(Purpose::GroupLoadRead, plan.file, plan.position, plan.len);
                return;
            }
        };
        let mut next = offset;
        let mut buf = records;
        while !buf.is_empty() {
            let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
                tracing::error!(offset = next, "undecodable batch in the offsets log; stopping the load there");
                break;
            };
            for r in set.records {
                next = next.max(r.offset + 1);
                if r.offset < offset {
                    continue;
                }
                if let Some(key) = &r.key {
                    if let Some(record) = GroupRecord::decode(key, r.value.as_deref()) {
                        self.groups.load(record, now_ms);
                    }
                }
            }
        }
        let hw = self.partition(&offsets_tp()).map_or(0, |p| p.high_watermark());
        if next >= hw || next == offset {
            self.finish_group_load(now_ms);
            tracing::info!(groups = self.groups.groups().count(), "group coordinator loaded");
        } else {
            self.read_group_log(next);
        }
    }
}

fn join_response(version: i16, r: JoinResult) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_name(Some(s(r.protocol_name.as_deref().unwrap_or(""))))
        .with_leader(s(&r.leader))
        .with_member_id(s(&r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let m = JoinGroupResponseMember::default().with_member_id(s(&id)).with_metadata(metadata);
                    if version >= 5 {
                        m.with_group_instance_id(instance.as_deref().map(s))
                    } else {
                        m
                    }
                })
                .collect(),
        );
    if version >= 7 {
        response.protocol_type = r.protocol_type.as_deref().map(s);
        if r.protocol_name.is_none() {
            response.protocol_name = None;
        }
    }
    response
}

fn sync_response(r: SyncResult) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_protocol_type(r.protocol_type.as_deref().map(s))
        .with_protocol_name(r.protocol_name.as_deref().map(s))
        .with_assignment(r.assignment)
}

fn encode_group_batch(records: &[GroupRecord], now_ms: i64) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, value) = r.encode();
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1 + i as i32,
                timestamp: now_ms,
                key: Some(key),
                value,
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("group records encode");
    buf.freeze()
}

fn coordinator_message(error: Option<ResponseError>) -> Option<StrBytes> {
    match error? {
        ResponseError::InvalidRequest => Some(StrBytes::from_static_str("unknown coordinator key type")),
        _ => Some(StrBytes::from_static_str("the coordinator is not available; retry")),
    }
}

fn error_code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}
