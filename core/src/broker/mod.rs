//! The broker state machine. Inputs: connection events and request frames, storage completions,
//! and the passing of time (`now_ms` on every call). Outputs: [`Action`]s drained with
//! [`Broker::poll_action`], and the next deadline from [`Broker::next_deadline`]. It never reads
//! a clock, touches a file or a socket, or draws a random number.

mod admin;
mod checkpoints;
mod cluster;
mod coordinators;
mod fetch;
mod groups;
mod invariants;
mod list_offsets;
mod metadata;
mod produce;
mod recovery_points;
mod replication;
mod txn;

pub(crate) use admin::{creatable_name_problem, is_internal_topic, requested_overrides};
pub(crate) use cluster::election_results;
pub use recovery_points::{decode_recovery_points, recovery_point_key};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::buggify::Buggify;
use crate::codec::{self, DecodeFailure};
use crate::config::{BrokerConfig, TopicConfig};
use crate::group::{GroupCoordinator, PersistId};
use crate::leader_epochs::LeaderEpochs;
use crate::meta::{ClusterMeta, MetaChange};
use crate::ops::{Action, ConnId, Ops, Purpose};
use crate::partition::ReadPlan;
use crate::partition::{AppendError, Appended, PartitionLog};
use crate::producer_state::ProducerStates;
use crate::recovery::RecoveredSegment;
use crate::storage::{Completion, MetaFile, OpId, TopicPartition};
use crate::txn::Transactions;

pub use cluster::{ClusterView, PartitionView, TopicView};
pub use fetch::FetchState;
pub use groups::OFFSETS_TOPIC;

/// A partition as recovery left it on disk.
#[derive(Debug, Default)]
pub struct LoadedPartition {
    pub segments: Vec<RecoveredSegment>,
    pub producers: ProducerStates,
    pub log_start_offset: i64,
    pub leader_epochs: LeaderEpochs,
    /// The cache differs from the checkpoint (rebuilt, extended or trimmed): write it again.
    pub leader_epochs_changed: bool,
}

/// Everything the driver read from the data directory at start.
#[derive(Debug)]
pub struct LoadedState {
    pub meta: ClusterMeta,
    pub partitions: BTreeMap<TopicPartition, LoadedPartition>,
}

pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: Vec<PartitionLog>,
    pub overrides: BTreeMap<String, String>,
}

/// Where a request came from and how to answer it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestCtx {
    pub conn: ConnId,
    pub seq: u64,
    pub correlation_id: i32,
    pub version: i16,
}

#[derive(Default)]
struct Connection {
    next_seq: u64,
    next_to_send: u64,
    /// Finished responses waiting for earlier ones; None = a request with no response (acks=0).
    ready: BTreeMap<u64, Option<Bytes>>,
    /// The client's address as Kafka shows it ("/127.0.0.1").
    host: String,
}

/// What happens once a metadata change is durable.
enum Deferred {
    Respond(RequestCtx, ResponseKind),
    InitProducerId(RequestCtx, kafka_protocol::messages::InitProducerIdRequest),
    /// A commit's decision is durable: write its markers, then answer the EndTxn.
    TxnDecided(String, RequestCtx),
}

/// How long to wait before writing a checkpoint or metadata again after `failures` failed
/// writes in a row (a full disk): 200 ms doubling to 10 s.
fn retry_backoff_ms(failures: u32) -> i64 {
    (100i64 << failures.min(7)).min(10_000)
}

/// A metadata change waiting to be written. `internal` changes are the broker's own (its
/// identity, the offsets topic, transaction states, auto-created topics): written again after a
/// failure rather than dropped, since no client request would ask for them again.
struct QueuedChange {
    change: MetaChange,
    deferred: Option<Deferred>,
    internal: bool,
}

struct MetaWrite {
    id: OpId,
    changes: Vec<MetaChange>,
    deferred: Vec<Deferred>,
    internal: Vec<MetaChange>,
    next: ClusterMeta,
}

pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) topics: BTreeMap<Arc<str>, Topic>,
    pub(crate) ops: Ops,
    conns: BTreeMap<ConnId, Connection>,
    /// Connections this broker closed whose disconnect the driver has not reported yet: frames
    /// still in flight from them are dropped, never executed.
    closed_conns: BTreeSet<ConnId>,
    /// Metadata as durable on disk (what clients see) and as it will be once queued changes land.
    durable_meta: ClusterMeta,
    pub(crate) desired_meta: ClusterMeta,
    meta_queue: Vec<QueuedChange>,
    /// After a failed metadata write, when to write again what the broker itself queued (a full
    /// disk); a client's changes are dropped instead and its request fails.
    meta_retry_at_ms: Option<i64>,
    meta_failures: u32,
    meta_in_flight: Option<MetaWrite>,
    next_producer_id: i64,
    pub(crate) next_request_id: u64,
    pub(crate) produces: BTreeMap<u64, produce::PendingProduce>,
    pub(crate) produce_waits: BTreeSet<produce::ProduceWait>,
    pub(crate) fetches: BTreeMap<u64, FetchState>,
    pub(crate) time_searches: BTreeMap<u64, list_offsets::TimeSearch>,
    next_retention_check_ms: i64,
    pub(crate) groups: GroupCoordinator,
    /// JoinGroup / SyncGroup requests waiting for the coordinator, by token.
    pub(crate) group_waiters: BTreeMap<u64, RequestCtx>,
    /// OffsetCommit / OffsetDelete answers waiting for their records to be durable.
    pub(crate) commit_waiters: BTreeMap<PersistId, (RequestCtx, ResponseKind)>,
    /// (last offset, persist) of coordinator records waiting for the high watermark.
    pub(crate) group_persists: BTreeSet<(i64, PersistId)>,
    /// The offset and read in flight while loading the coordinator's log.
    pub(crate) group_load: Option<(i64, ReadPlan)>,
    /// Reads of the offsets log repeated after an error or a CRC failure, for the current chunk.
    pub(crate) group_load_rereads: u8,
    pub(crate) loaded_at_ms: i64,
    pub(crate) txns: Transactions,
    /// (partition, marker offset, transactional id) waiting for the high watermark to pass.
    pub(crate) marker_waits: BTreeSet<(TopicPartition, i64, String)>,
    pub(crate) ending: BTreeMap<String, txn::EndingTxn>,
    /// Commits whose offsets wait for the groups to load, and whose offsets are being written.
    pub(crate) txn_offsets_after_load: Vec<(String, Option<RequestCtx>)>,
    pub(crate) txn_offset_persists: BTreeMap<PersistId, (String, Option<RequestCtx>)>,
    log_starts: checkpoints::CheckpointFile,
    leader_epochs: checkpoints::CheckpointFile,
    recovery_points: recovery_points::RecoveryPoints,
    shutting_down: bool,
    shutdown_reported: bool,
    /// When a partition first went offline, while one is.
    offline_since_ms: Option<i64>,
    /// The stop under way is a restart in place, for this reason.
    restart_reason: Option<String>,
    /// The cluster as the metadata quorum's image shows it, when this node is in one.
    pub(crate) cluster_view: Option<ClusterView>,
    stray_topics_logged: BTreeSet<String>,
    /// Admin requests forwarded to the active controller, by forward id.
    forwards: BTreeMap<u64, cluster::Forwarded>,
    next_forward_id: u64,
    /// In a cluster, the block of producer ids the controller gave this broker: [next, end).
    cluster_producer_ids: (i64, i64),
    /// InitProducerId requests waiting for a block from the controller.
    producer_id_waiters: Vec<(RequestCtx, kafka_protocol::messages::InitProducerIdRequest)>,
    /// Followers of the partitions led here, and fetches to the leaders of those followed.
    pub(crate) replication: replication::Replication,
}

impl Broker {
    pub fn new(config: BrokerConfig, loaded: LoadedState, now_ms: i64) -> Self {
        let buggify = config.buggify;
        let LoadedState { meta, mut partitions } = loaded;
        let leader_epochs_changed = partitions.values().any(|p| p.leader_epochs_changed);
        let mut topics = BTreeMap::new();
        for t in &meta.topics {
            let name: Arc<str> = Arc::from(t.name.as_str());
            let topic_config = TopicConfig::resolve(&config.topic_defaults, &t.configs).unwrap_or_else(|e| {
                tracing::warn!(topic = %t.name, "stored topic config is invalid ({e}); using defaults");
                config.topic_defaults.clone()
            });
            let logs = (0..t.partitions)
                .map(|p| {
                    let tp = TopicPartition { topic: name.clone(), partition: p };
                    match partitions.remove(&tp) {
                        Some(lp) => PartitionLog::recovered(
                            tp,
                            topic_config.clone(),
                            lp.segments,
                            lp.log_start_offset,
                            (lp.producers, lp.leader_epochs),
                            now_ms,
                        ),
                        None => PartitionLog::create(tp, topic_config.clone(), now_ms),
                    }
                })
                .collect();
            let id = t.id.parse().unwrap_or_else(|_| meta.new_topic_id(&t.name));
            topics.insert(name.clone(), Topic { name, id, partitions: logs, overrides: t.configs.clone() });
        }
        for tp in partitions.keys() {
            tracing::warn!(partition = %tp, "data directory holds a partition of no known topic; ignoring it");
        }
        let next_producer_id = meta.producer_id_block_end;
        let recovery_point_interval_ms = config.recovery_point_interval_ms;
        let mut broker = Broker {
            next_retention_check_ms: now_ms + config.retention_check_interval_ms,
            groups: GroupCoordinator::new(config.group.clone(), now_ms),
            group_waiters: BTreeMap::new(),
            commit_waiters: BTreeMap::new(),
            group_persists: BTreeSet::new(),
            group_load: None,
            group_load_rereads: 0,
            loaded_at_ms: now_ms,
            txns: Transactions::from_meta(&meta.transactions),
            marker_waits: BTreeSet::new(),
            ending: BTreeMap::new(),
            txn_offsets_after_load: Vec::new(),
            txn_offset_persists: BTreeMap::new(),
            config,
            topics,
            ops: Ops::new(Buggify::new(buggify)),
            conns: BTreeMap::new(),
            closed_conns: BTreeSet::new(),
            desired_meta: meta.clone(),
            durable_meta: meta,
            meta_queue: Vec::new(),
            meta_retry_at_ms: None,
            meta_failures: 0,
            meta_in_flight: None,
            next_producer_id,
            next_request_id: 0,
            produces: BTreeMap::new(),
            produce_waits: BTreeSet::new(),
            fetches: BTreeMap::new(),
            time_searches: BTreeMap::new(),
            log_starts: checkpoints::CheckpointFile::new(
                MetaFile::LogStartOffsets,
                Purpose::LogStartCheckpoint,
                "records below the log start may reappear",
            ),
            leader_epochs: checkpoints::CheckpointFile::new(
                MetaFile::LeaderEpochs,
                Purpose::LeaderEpochCheckpoint,
                "the next start rebuilds the leader epochs from the batches",
            ),
            recovery_points: recovery_points::RecoveryPoints::new(now_ms + recovery_point_interval_ms),
            shutting_down: false,
            shutdown_reported: false,
            offline_since_ms: None,
            restart_reason: None,
            cluster_view: None,
            stray_topics_logged: BTreeSet::new(),
            forwards: BTreeMap::new(),
            next_forward_id: 0,
            cluster_producer_ids: (0, 0),
            producer_id_waiters: Vec::new(),
            replication: replication::Replication::default(),
        };
        // Persist identity on first start (and any repair done above), and leader epochs the
        // loader rebuilt or extended.
        broker.queue_meta_silent(MetaChange::ProducerIdBlock { end: next_producer_id });
        if leader_epochs_changed {
            broker.mark_leader_epochs_dirty();
        }
        if broker.topics.contains_key(OFFSETS_TOPIC) {
            broker.start_group_load(now_ms);
        } else {
            // Committed offsets are kept forever; empty groups' offsets expire by themselves.
            let configs = [("retention.ms".to_string(), "-1".to_string())].into_iter().collect();
            let id = broker.desired_meta.new_topic_id(OFFSETS_TOPIC).to_string();
            let meta = crate::meta::TopicMeta {
                name: OFFSETS_TOPIC.to_string(),
                id,
                partitions: 1,
                configs,
                from_cluster: false,
            };
            broker.queue_meta_silent(MetaChange::CreateTopic(meta));
        }
        broker.recover_transactions(now_ms);
        broker
    }

    /// One line of state for a trace: node and role, then per partition its leader epoch, log
    /// end offset and high watermark, then per group its generation and state.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut line = format!("node={} role=leader", self.config.node_id);
        for topic in self.topics.values() {
            for (i, p) in topic.partitions.iter().enumerate() {
                let failed = if p.failed.is_some() { " OFFLINE" } else { "" };
                let _ = write!(
                    line,
                    " {}-{i}:e{}/leo{}/hw{}{failed}",
                    topic.name,
                    p.leader_epoch,
                    p.log_end_offset(),
                    p.high_watermark()
                );
            }
        }
        if self.groups.is_loading() {
            line.push_str(" groups:loading");
        }
        for g in self.groups.groups() {
            let _ = write!(line, " {}:g{}/{:?}/{}m", g.id, g.generation, g.state, g.members.len());
        }
        line
    }

    /// The quorum's cluster id for a node in one (every broker answers the same), else the
    /// data directory's own.
    pub fn cluster_id(&self) -> &str {
        match self.cluster_view.as_ref().and_then(|v| v.cluster_id.as_deref()) {
            Some(id) => id,
            None => &self.durable_meta.cluster_id,
        }
    }
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }
    pub fn partition(&self, tp: &TopicPartition) -> Option<&PartitionLog> {
        self.topics.get(&tp.topic)?.partitions.get(usize::try_from(tp.partition).ok()?)
    }
    pub(crate) fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionLog> {
        self.topics.get_mut(topic)?.partitions.get_mut(usize::try_from(partition).ok()?)
    }

    /// Appends to a partition's log (None: no such partition), then lets the high watermark
    /// follow (relaxed durability makes an append durable at once).
    pub(crate) fn append_to_log(
        &mut self,
        now_ms: i64,
        tp: &TopicPartition,
        records: &Bytes,
    ) -> Option<Result<Appended, AppendError>> {
        let durability = self.config.durability;
        let log = self.topics.get_mut(&tp.topic)?.partitions.get_mut(usize::try_from(tp.partition).ok()?)?;
        let appended = log.append(records, now_ms, durability, &mut self.ops);
        self.advance_high_watermark(tp);
        if self.in_cluster() {
            // Followers' fetches wait at the log end.
            self.wake_fetches(now_ms, tp);
        }
        Some(appended)
    }

    /// Moves a partition's high watermark as far as the replicas that count hold it durably:
    /// on a single node, its own durable end (see `replication.rs`). Returns whether it moved.
    fn advance_high_watermark(&mut self, tp: &TopicPartition) -> bool {
        let Some(target) = self.high_watermark_target(tp) else {
            return false;
        };
        let Some(log) = self.partition_mut(&tp.topic, tp.partition) else {
            return false;
        };
        if target <= log.high_watermark() {
            return false;
        }
        let to = log.batch_end_at_or_below(target);
        log.advance_high_watermark(to)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        if !self.ops.syncs_due.is_empty() {
            self.start_due_syncs();
            self.debug_check_invariants();
        }
        self.ops.pop()
    }

    /// Group commits of the partitions that appended since the driver last polled: the appends of
    /// every request handled in one turn share one fsync.
    fn start_due_syncs(&mut self) {
        for tp in std::mem::take(&mut self.ops.syncs_due) {
            if let Some(p) = self.topics.get_mut(&tp.topic).and_then(|t| t.partitions.get_mut(tp.partition as usize)) {
                p.maybe_sync(&mut self.ops);
            }
        }
    }

    /// The earliest time at which `handle_tick` has work to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let fetch = self.fetches.values().filter_map(|f| f.parked_until()).min();
        let recovery_points = Some(self.recovery_points.next_due_ms());
        [
            fetch,
            self.groups.next_deadline(),
            self.txns.next_deadline(),
            Some(self.next_retention_check_ms),
            recovery_points,
            self.log_starts.retry_at_ms(),
            self.leader_epochs.retry_at_ms(),
            self.meta_retry_at_ms,
            self.replication.next_deadline(),
            self.offline_since_ms.filter(|_| !self.shutting_down).map(|at| at + self.config.offline_restart_after_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_connect(&mut self, conn: ConnId) {
        assert!(!self.closed_conns.contains(&conn), "connection ids are never reused");
        self.conns.insert(conn, Connection::default());
        self.debug_check_invariants();
    }

    /// A connection from a known peer address (shown for group members).
    pub fn handle_connect_from(&mut self, conn: ConnId, peer_ip: &str) {
        assert!(!self.closed_conns.contains(&conn), "connection ids are never reused");
        self.conns.insert(conn, Connection { host: format!("/{peer_ip}"), ..Connection::default() });
        self.debug_check_invariants();
    }

    /// Requests read from `conn` and not yet answered (or, for acks=0, finished): the driver
    /// stops reading a connection at its limit.
    pub fn unanswered_requests(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| {
            assert!(c.next_to_send <= c.next_seq);
            (c.next_seq - c.next_to_send) as usize
        })
    }

    fn client_host(&self, conn: ConnId) -> String {
        self.conns
            .get(&conn)
            .map(|c| c.host.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/unknown".to_string())
    }

    pub fn handle_disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.closed_conns.remove(&conn);
        // Parked fetches of a gone connection need no answer.
        self.fetches.retain(|_, f| f.conn() != conn || f.has_reads_in_flight());
        self.debug_check_invariants();
    }

    /// One request frame (without its size prefix) from a connection.
    pub fn handle_frame(&mut self, now_ms: i64, conn: ConnId, frame: Bytes) {
        self.serve_frame(now_ms, conn, frame);
        self.debug_check_invariants();
    }

    fn serve_frame(&mut self, now_ms: i64, conn: ConnId, frame: Bytes) {
        if self.closed_conns.contains(&conn) {
            tracing::debug!(conn, "dropping a request that arrived after its connection was closed");
            return;
        }
        if !self.conns.contains_key(&conn) {
            self.handle_connect(conn);
        }
        if frame.len() > self.config.max_request_bytes {
            self.close(
                conn,
                format!("request of {} bytes exceeds the limit of {}", frame.len(), self.config.max_request_bytes),
            );
            return;
        }
        let raw = frame.clone();
        let decoded = match codec::decode_request(frame) {
            Ok(d) => d,
            Err(DecodeFailure::ApiVersionsTooNew { correlation_id }) => {
                let ctx = self.begin(conn, correlation_id, 0);
                let body = metadata::api_versions(ResponseError::UnsupportedVersion.code(), self.in_cluster());
                self.respond(ctx, ResponseKind::ApiVersions(body));
                return;
            }
            Err(DecodeFailure::Close(reason)) => {
                self.close(conn, reason);
                return;
            }
        };
        let version = decoded.header.request_api_version;
        let client_id = decoded.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
        let ctx = self.begin(conn, decoded.header.correlation_id, version);
        tracing::trace!(conn, api = ?decoded.api_key, version, "request");
        if self.shutting_down && decoded.api_key != ApiKey::ApiVersions {
            self.close(conn, "broker is shutting down".to_string());
            return;
        }
        if self.in_cluster() {
            if let Some(fallback) = cluster::not_controller(&decoded.body) {
                self.forward(ctx, &raw, fallback);
                return;
            }
            if let Some(refusal) = self.misdirected(&decoded.body) {
                self.respond(ctx, refusal);
                return;
            }
        }
        match decoded.body {
            RequestKind::ApiVersions(_) => {
                let body: ApiVersionsResponse = metadata::api_versions(0, self.in_cluster());
                self.respond(ctx, ResponseKind::ApiVersions(body))
            }
            RequestKind::Metadata(r) => self.handle_metadata(ctx, r),
            RequestKind::Produce(r) => self.handle_produce(now_ms, ctx, r),
            RequestKind::Fetch(r) => self.handle_fetch(now_ms, ctx, r),
            RequestKind::ListOffsets(r) => self.handle_list_offsets(ctx, r),
            RequestKind::OffsetForLeaderEpoch(r) => self.handle_offset_for_leader_epoch(ctx, r),
            RequestKind::FindCoordinator(r) => self.handle_find_coordinator(ctx, r),
            RequestKind::DescribeCluster(r) => self.handle_describe_cluster(ctx, r),
            RequestKind::ElectLeaders(r) => self.handle_elect_leaders(ctx, r),
            RequestKind::DescribeQuorum(_) => {
                // Not in a quorum (in one, it was forwarded to the controller above).
                let mut body = kafka_protocol::messages::DescribeQuorumResponse::default()
                    .with_error_code(ResponseError::InvalidRequest.code());
                if ctx.version >= 2 {
                    body.error_message = Some(kafka_protocol::protocol::StrBytes::from_static_str(
                        "this broker is not in a metadata quorum",
                    ));
                }
                self.respond(ctx, ResponseKind::DescribeQuorum(body))
            }
            RequestKind::CreateTopics(r) => self.handle_create_topics(ctx, r),
            RequestKind::DeleteTopics(r) => self.handle_delete_topics(ctx, r),
            RequestKind::CreatePartitions(r) => self.handle_create_partitions(ctx, r),
            RequestKind::DescribeConfigs(r) => self.handle_describe_configs(ctx, r),
            RequestKind::AlterConfigs(r) => self.handle_alter_configs(ctx, r),
            RequestKind::IncrementalAlterConfigs(r) => self.handle_incremental_alter_configs(ctx, r),
            RequestKind::DeleteRecords(r) => self.handle_delete_records(ctx, r),
            RequestKind::InitProducerId(r) => self.handle_init_producer_id(now_ms, ctx, r),
            RequestKind::AddPartitionsToTxn(r) => self.handle_add_partitions_to_txn(now_ms, ctx, r),
            RequestKind::AddOffsetsToTxn(r) => self.handle_add_offsets_to_txn(now_ms, ctx, r),
            RequestKind::TxnOffsetCommit(r) => self.handle_txn_offset_commit(ctx, r),
            RequestKind::EndTxn(r) => self.handle_end_txn(now_ms, ctx, r),
            RequestKind::JoinGroup(r) => {
                let host = self.client_host(conn);
                self.handle_join_group(now_ms, ctx, client_id, host, r)
            }
            RequestKind::SyncGroup(r) => self.handle_sync_group(now_ms, ctx, r),
            RequestKind::Heartbeat(r) => self.handle_heartbeat(now_ms, ctx, r),
            RequestKind::LeaveGroup(r) => self.handle_leave_group(now_ms, ctx, r),
            RequestKind::OffsetCommit(r) => self.handle_offset_commit(now_ms, ctx, r),
            RequestKind::OffsetFetch(r) => self.handle_offset_fetch(ctx, r),
            RequestKind::DescribeGroups(r) => self.handle_describe_groups(ctx, r),
            RequestKind::ListGroups(r) => self.handle_list_groups(ctx, r),
            RequestKind::DeleteGroups(r) => self.handle_delete_groups(now_ms, ctx, r),
            RequestKind::OffsetDelete(r) => self.handle_offset_delete(now_ms, ctx, r),
            other => {
                // Unreachable while codec::decode_request only admits served keys; kept total.
                self.close(conn, format!("no handler for {:?}", std::mem::discriminant(&other)));
            }
        }
    }

    /// A storage operation this broker issued finished. Each operation completes exactly once;
    /// a completion for an operation not in flight is a driver bug and panics. Whatever it
    /// finished, a shutdown or restart waiting on it may now be reported.
    pub fn handle_completion(&mut self, now_ms: i64, completion: Completion) {
        self.route_completion(now_ms, completion);
        self.check_shutdown();
        self.debug_check_invariants();
    }

    fn route_completion(&mut self, now_ms: i64, completion: Completion) {
        let id = completion.id();
        let Some(purpose) = self.ops.complete(id) else {
            panic!("completion for an unknown operation {id:?}: {completion:?}");
        };
        match (purpose, completion) {
            (Purpose::PartitionWrite(tp), Completion::Written { result, .. }) => {
                if let Err(e) = result {
                    if let Some(p) = self.partition_mut(&tp.topic, tp.partition) {
                        p.fail(format!("write failed: {e}"));
                        self.offline_since_ms.get_or_insert(now_ms);
                    }
                    self.fail_produce_waits(&tp);
                }
            }
            (Purpose::PartitionSync(tp), Completion::Synced { result, .. }) => {
                let durable_moved =
                    match self.topics.get_mut(&tp.topic).and_then(|t| t.partitions.get_mut(tp.partition as usize)) {
                        Some(p) => p.on_synced(id, result.map_err(|e| e.0), &mut self.ops),
                        None => false,
                    };
                if durable_moved && self.in_cluster() {
                    // A follower asks for more once what it copied is durable.
                    self.pump_replica_fetches(now_ms);
                }
                if durable_moved {
                    // acks=1 waits for the leader's durable end alone.
                    self.release_produce_waits(&tp);
                }
                if durable_moved && self.advance_high_watermark(&tp) {
                    self.on_high_watermark(now_ms, &tp);
                } else if self.partition(&tp).is_some_and(|p| p.failed.is_some()) {
                    self.offline_since_ms.get_or_insert(now_ms);
                    self.fail_produce_waits(&tp);
                    self.release_marker_waits(now_ms, &tp);
                    if &*tp.topic == OFFSETS_TOPIC {
                        self.release_group_persists(now_ms);
                    }
                }
            }
            (Purpose::FetchRead { fetch, slot }, Completion::Read { result, .. }) => {
                self.on_fetch_read(fetch, slot, result)
            }
            (Purpose::TimeSearchRead { request, slot }, Completion::Read { result, .. }) => {
                self.on_time_search_read(request, slot, result)
            }
            (Purpose::GroupLoadRead, Completion::Read { result, .. }) => self.on_group_load_read(now_ms, result),
            (Purpose::Meta, Completion::MetaWritten { result, .. }) => {
                self.on_meta_written(now_ms, result.map_err(|e| e.0))
            }
            (
                purpose @ (Purpose::LogStartCheckpoint | Purpose::LeaderEpochCheckpoint),
                Completion::MetaWritten { result, .. },
            ) => {
                self.on_checkpoint_written(now_ms, &purpose, result);
            }
            (Purpose::RecoveryPointCheckpoint, Completion::MetaWritten { result, .. }) => {
                self.on_recovery_points_written(result)
            }
            (purpose, completion) => {
                panic!("completion {completion:?} does not match its operation {purpose:?}");
            }
        }
    }

    /// Time passed: expire long-poll fetches, apply retention.
    pub fn handle_tick(&mut self, now_ms: i64) {
        self.maybe_restart(now_ms);
        self.retry_meta(now_ms);
        self.retry_checkpoints(now_ms);
        self.expire_fetches(now_ms);
        self.groups.tick(now_ms);
        self.pump_groups(now_ms);
        self.expire_transactions(now_ms);
        self.maybe_write_recovery_points(now_ms);
        self.pump_replica_fetches(now_ms);
        self.tick_isr(now_ms);
        if now_ms >= self.next_retention_check_ms {
            self.next_retention_check_ms = now_ms + self.config.retention_check_interval_ms;
            let mut moved = false;
            for topic in self.topics.values_mut() {
                for p in &mut topic.partitions {
                    moved |= p.apply_retention(now_ms, &mut self.ops);
                }
            }
            if moved {
                self.mark_log_starts_dirty();
            }
        }
        self.debug_check_invariants();
    }

    /// A partition offline for `offline_restart_after_ms`: stop as for a shutdown, then ask the
    /// driver for a restart in place. Recovery then repairs the partition as after a crash; if
    /// the disk still fails, the new broker takes it offline again and asks again later.
    fn maybe_restart(&mut self, now_ms: i64) {
        let Some(since) = self.offline_since_ms else {
            return;
        };
        if self.shutting_down || now_ms < since + self.config.offline_restart_after_ms {
            return;
        }
        let offline: Vec<String> = self
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.failed.is_some())
            .map(|p| p.tp.to_string())
            .collect();
        if offline.is_empty() {
            // The offline partitions were deleted meanwhile: nothing needs recovering.
            self.offline_since_ms = None;
            return;
        }
        let reason = format!(
            "{} partition(s) offline for {} ms ({}); restarting in place to recover them",
            offline.len(),
            now_ms - since,
            offline.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
        tracing::warn!("{reason}");
        self.restart_reason = Some(reason);
        self.handle_shutdown();
    }

    /// Stop serving, make everything durable, then report `Action::ShutdownComplete`.
    pub fn handle_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                p.flush_for_shutdown(&mut self.ops);
            }
        }
        self.flush_checkpoints();
        // One last try for what waits on a metadata retry; a failure now drops it.
        self.meta_retry_at_ms = None;
        self.maybe_write_meta();
        self.check_shutdown();
        self.debug_check_invariants();
    }

    fn check_shutdown(&mut self) {
        if !self.shutting_down || self.shutdown_reported {
            return;
        }
        let quiet = self.topics.values().all(|t| t.partitions.iter().all(|p| p.is_quiescent() || p.failed.is_some()));
        let checkpoints_done = self.log_starts.settled()
            && self.leader_epochs.settled()
            && !self.recovery_points.write_in_flight()
            && self.meta_in_flight.is_none();
        // A restart waits for every operation, so that none completes into the new broker.
        let drained = self.restart_reason.is_none() || self.ops.in_flight() == 0;
        if quiet && checkpoints_done && drained {
            self.shutdown_reported = true;
            match self.restart_reason.take() {
                Some(reason) => self.ops.push(Action::Restart { reason }),
                None => self.ops.push(Action::ShutdownComplete),
            }
        }
    }

    // ---- responses, in request order per connection ----

    fn begin(&mut self, conn: ConnId, correlation_id: i32, version: i16) -> RequestCtx {
        let c = self.conns.entry(conn).or_default();
        let seq = c.next_seq;
        c.next_seq += 1;
        RequestCtx { conn, seq, correlation_id, version }
    }

    pub(crate) fn respond(&mut self, ctx: RequestCtx, body: ResponseKind) {
        match codec::encode_response(ctx.correlation_id, ctx.version, &body) {
            Ok(frame) => self.finish(ctx, Some(frame)),
            Err(e) => self.close(ctx.conn, format!("could not encode a response: {e}")),
        }
    }

    /// A request that gets no response (produce with acks=0) still holds its place in the order.
    pub(crate) fn respond_nothing(&mut self, ctx: RequestCtx) {
        self.finish(ctx, None);
    }

    pub(crate) fn finish(&mut self, ctx: RequestCtx, frame: Option<Bytes>) {
        let Some(c) = self.conns.get_mut(&ctx.conn) else {
            return;
        };
        c.ready.insert(ctx.seq, frame);
        while let Some(frame) = c.ready.remove(&c.next_to_send) {
            c.next_to_send += 1;
            if let Some(frame) = frame {
                self.ops.push(Action::Send { conn: ctx.conn, frame });
            }
        }
    }

    pub(crate) fn close(&mut self, conn: ConnId, reason: String) {
        tracing::info!(conn, "closing connection: {reason}");
        self.conns.remove(&conn);
        self.closed_conns.insert(conn);
        self.ops.push(Action::Close { conn, reason });
    }

    // ---- metadata changes ----

    pub(crate) fn topic_exists_or_pending(&self, name: &str) -> bool {
        self.desired_meta.topic(name).is_some()
    }

    fn queue_meta(&mut self, change: MetaChange, deferred: Option<Deferred>) {
        self.enqueue_meta(QueuedChange { change, deferred, internal: false });
    }

    fn enqueue_meta(&mut self, queued: QueuedChange) {
        self.desired_meta.apply(&queued.change);
        self.meta_queue.push(queued);
        self.maybe_write_meta();
    }

    fn maybe_write_meta(&mut self) {
        if self.meta_in_flight.is_some() || self.meta_queue.is_empty() || self.meta_retry_at_ms.is_some() {
            return;
        }
        let mut next = self.durable_meta.clone();
        let mut changes = Vec::new();
        let mut deferred = Vec::new();
        let mut internal = Vec::new();
        for queued in self.meta_queue.drain(..) {
            next.apply(&queued.change);
            if queued.internal {
                internal.push(queued.change.clone());
            }
            changes.push(queued.change);
            deferred.extend(queued.deferred);
        }
        let id = self.ops.write_meta(Purpose::Meta, MetaFile::Cluster, Bytes::from(next.encode()));
        self.meta_in_flight = Some(MetaWrite { id, changes, deferred, internal, next });
    }

    fn retry_meta(&mut self, now_ms: i64) {
        if self.meta_retry_at_ms.is_some_and(|at| now_ms >= at) {
            self.meta_retry_at_ms = None;
            self.maybe_write_meta();
        }
    }

    fn on_meta_written(&mut self, now_ms: i64, result: Result<(), String>) {
        let Some(write) = self.meta_in_flight.take() else {
            return;
        };
        debug_assert!(self.ops.in_flight() < usize::MAX && write.id.0 > 0);
        if let Err(e) = result {
            self.meta_failures += 1;
            let retried = write.internal.len();
            if retried > 0 && !self.shutting_down {
                // The broker's own changes go first again, in their order, after a backoff.
                let backoff_ms = retry_backoff_ms(self.meta_failures);
                let mut queue: Vec<QueuedChange> = write
                    .internal
                    .into_iter()
                    .map(|change| QueuedChange { change, deferred: None, internal: true })
                    .collect();
                queue.append(&mut self.meta_queue);
                self.meta_queue = queue;
                self.meta_retry_at_ms = Some(now_ms + backoff_ms);
            }
            if self.meta_failures.is_power_of_two() {
                tracing::error!(
                    failures = self.meta_failures,
                    "cluster metadata write failed: {e}; clients' changes dropped, {retried} of the broker's own written again later"
                );
            }
            self.desired_meta = self.durable_meta.clone();
            for change in self.meta_queue.iter().map(|q| q.change.clone()).collect::<Vec<_>>() {
                self.desired_meta.apply(&change);
            }
            for d in write.deferred {
                let ctx = match d {
                    Deferred::Respond(ctx, _) | Deferred::InitProducerId(ctx, _) => ctx,
                    Deferred::TxnDecided(id, ctx) => {
                        self.txn_decision_failed(&id);
                        ctx
                    }
                };
                self.close(ctx.conn, format!("metadata write failed: {e}"));
            }
        } else {
            self.meta_failures = 0;
            self.durable_meta = write.next;
            for change in &write.changes {
                self.apply_live(now_ms, change);
            }
            // A log created for the image takes its role and epoch from it.
            self.follow_view(now_ms);
            for d in write.deferred {
                match d {
                    Deferred::Respond(ctx, body) => self.respond(ctx, body),
                    Deferred::InitProducerId(ctx, r) => self.handle_init_producer_id(now_ms, ctx, r),
                    Deferred::TxnDecided(id, ctx) => self.write_markers(now_ms, &id, Some(ctx)),
                }
            }
        }
        self.maybe_write_meta();
    }

    /// Makes a durable metadata change visible.
    fn apply_live(&mut self, now_ms: i64, change: &MetaChange) {
        match change {
            MetaChange::CreateTopic(t) => {
                let name: Arc<str> = Arc::from(t.name.as_str());
                let config = TopicConfig::resolve(&self.config.topic_defaults, &t.configs)
                    .unwrap_or_else(|_| self.config.topic_defaults.clone());
                let partitions = (0..t.partitions)
                    .map(|p| {
                        PartitionLog::create(
                            TopicPartition { topic: name.clone(), partition: p },
                            config.clone(),
                            now_ms,
                        )
                    })
                    .collect();
                let id = t.id.parse().unwrap_or_default();
                self.topics.insert(name.clone(), Topic { name, id, partitions, overrides: t.configs.clone() });
                self.mark_leader_epochs_dirty();
                if t.name == OFFSETS_TOPIC {
                    self.start_group_load(now_ms);
                }
            }
            MetaChange::DeleteTopic(name) => {
                if let Some(topic) = self.topics.remove(name.as_str()) {
                    for p in &topic.partitions {
                        self.ops.delete_partition(p.tp.clone());
                        self.fail_produce_waits(&p.tp);
                        // A marker in a deleted partition never becomes durable: stop waiting.
                        self.release_marker_waits(now_ms, &p.tp);
                    }
                    tracing::info!(topic = %name, "topic deleted");
                    // While loading, the end of the load forgets them (the topic is gone by then).
                    if !self.groups.is_loading() {
                        self.groups.forget_topic(name);
                        self.pump_groups(now_ms);
                    }
                }
            }
            MetaChange::SetPartitions { topic, count } => {
                let defaults = self.config.topic_defaults.clone();
                if let Some(t) = self.topics.get_mut(topic.as_str()) {
                    let config = TopicConfig::resolve(&defaults, &t.overrides).unwrap_or(defaults);
                    for p in t.partitions.len() as i32..*count {
                        t.partitions.push(PartitionLog::create(
                            TopicPartition { topic: t.name.clone(), partition: p },
                            config.clone(),
                            now_ms,
                        ));
                    }
                    self.mark_leader_epochs_dirty();
                }
            }
            MetaChange::SetConfigs { topic, configs } => {
                let defaults = self.config.topic_defaults.clone();
                if let Some(t) = self.topics.get_mut(topic.as_str()) {
                    t.overrides = configs.clone();
                    let config = TopicConfig::resolve(&defaults, configs).unwrap_or(defaults);
                    for p in &mut t.partitions {
                        p.config = config.clone();
                    }
                }
            }
            MetaChange::ProducerIdBlock { .. } | MetaChange::SetTransaction { .. } => {}
        }
    }

    /// Hands out a producer id from the durable block, or None when a new block must be made
    /// durable first (so a restart never reuses an id).
    pub(crate) fn allocate_producer_id(&mut self) -> Option<i64> {
        if self.in_cluster() {
            return self.allocate_cluster_producer_id();
        }
        if self.next_producer_id < self.durable_meta.producer_id_block_end {
            let id = self.next_producer_id;
            self.next_producer_id += 1;
            Some(id)
        } else {
            None
        }
    }

    pub(crate) fn request_producer_id_block(
        &mut self,
        ctx: RequestCtx,
        r: kafka_protocol::messages::InitProducerIdRequest,
    ) {
        if self.in_cluster() {
            self.request_cluster_producer_ids(ctx, r);
            return;
        }
        const BLOCK: i64 = 1000;
        let end = self.desired_meta.producer_id_block_end.max(self.next_producer_id) + BLOCK;
        self.queue_meta(MetaChange::ProducerIdBlock { end }, Some(Deferred::InitProducerId(ctx, r)));
    }

    pub(crate) fn queue_meta_respond(&mut self, changes: Vec<MetaChange>, ctx: RequestCtx, body: ResponseKind) {
        if changes.is_empty() {
            self.respond(ctx, body);
            return;
        }
        let last = changes.len() - 1;
        for (i, change) in changes.into_iter().enumerate() {
            let deferred = if i == last { Some(Deferred::Respond(ctx, body.clone())) } else { None };
            self.queue_meta(change, deferred);
        }
    }

    /// Queues a change of the broker's own, which no client answer waits for.
    pub(crate) fn queue_meta_silent(&mut self, change: MetaChange) {
        self.enqueue_meta(QueuedChange { change, deferred: None, internal: true });
    }

    /// The high watermark of `tp` moved: answer produces it covers and wake fetches on it.
    fn on_high_watermark(&mut self, now_ms: i64, tp: &TopicPartition) {
        if &*tp.topic == OFFSETS_TOPIC {
            self.release_group_persists(now_ms);
        }
        self.release_produce_waits(tp);
        self.release_marker_waits(now_ms, tp);
        self.wake_fetches(now_ms, tp);
    }
}

/// Reads the persisted log start offsets (`log-start-offsets.json`), keyed by partition dir name.
pub fn decode_log_starts(bytes: &[u8]) -> BTreeMap<String, i64> {
    serde_json::from_slice(bytes).unwrap_or_default()
}
