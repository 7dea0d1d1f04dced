//! The quorum's messages as Kafka's own: Vote, BeginQuorumEpoch, EndQuorumEpoch and Fetch of the
//! `__cluster_metadata` partition, encoded by `kafka-protocol`. Entries travel as record batches:
//! data as plain records, a LeaderChange as a control record (type 2) holding Kafka's
//! LeaderChangeMessage.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    begin_quorum_epoch_request, begin_quorum_epoch_response, end_quorum_epoch_request, end_quorum_epoch_response,
    fetch_request, fetch_response, fetch_snapshot_request, fetch_snapshot_response, leader_change_message,
    vote_request, vote_response, ApiKey, BeginQuorumEpochRequest, BeginQuorumEpochResponse, BrokerId,
    EndQuorumEpochRequest, EndQuorumEpochResponse, FetchRequest, FetchResponse as KafkaFetchResponse,
    FetchSnapshotRequest, FetchSnapshotResponse, LeaderChangeMessage, RequestKind, ResponseKind, TopicName,
    VoteRequest, VoteResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::log::{Entry, Payload, SnapshotId};
use super::message::{Diverging, FetchResponse, RaftError, Request, Response, SnapshotChunk};
use super::NodeId;

pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// Kafka's fixed id for the metadata topic (`Uuid.METADATA_TOPIC_ID`).
pub const METADATA_TOPIC_ID: Uuid = Uuid::from_u128(1);

/// The versions Spool's nodes speak to each other.
pub const VOTE_VERSION: i16 = 2;
pub const BEGIN_QUORUM_EPOCH_VERSION: i16 = 1;
pub const END_QUORUM_EPOCH_VERSION: i16 = 1;
pub const FETCH_VERSION: i16 = 17;
pub const FETCH_SNAPSHOT_VERSION: i16 = 1;

const LEADER_CHANGE_CONTROL_TYPE: i16 = 2;

pub fn api_key(request: &Request) -> (ApiKey, i16) {
    match request {
        Request::Vote { .. } => (ApiKey::Vote, VOTE_VERSION),
        Request::BeginQuorumEpoch { .. } => (ApiKey::BeginQuorumEpoch, BEGIN_QUORUM_EPOCH_VERSION),
        Request::EndQuorumEpoch { .. } => (ApiKey::EndQuorumEpoch, END_QUORUM_EPOCH_VERSION),
        Request::Fetch { .. } => (ApiKey::Fetch, FETCH_VERSION),
        Request::FetchSnapshot { .. } => (ApiKey::FetchSnapshot, FETCH_SNAPSHOT_VERSION),
    }
}

/// A request as Kafka's message, addressed to `to`.
pub fn encode_request(request: &Request, to: NodeId, cluster_id: &str) -> RequestKind {
    let cluster_id = Some(StrBytes::from_string(cluster_id.to_string()));
    let topic_name = TopicName(StrBytes::from_static_str(METADATA_TOPIC));
    match *request {
        Request::Vote { epoch, candidate, last_epoch, log_end } => {
            let partition = vote_request::PartitionData::default()
                .with_replica_epoch(epoch)
                .with_replica_id(BrokerId(candidate))
                .with_last_offset_epoch(last_epoch)
                .with_last_offset(log_end as i64);
            let topic = vote_request::TopicData::default().with_topic_name(topic_name).with_partitions(vec![partition]);
            RequestKind::Vote(
                VoteRequest::default().with_cluster_id(cluster_id).with_voter_id(BrokerId(to)).with_topics(vec![topic]),
            )
        }
        Request::BeginQuorumEpoch { epoch, leader } => {
            let partition = begin_quorum_epoch_request::PartitionData::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch);
            let topic = begin_quorum_epoch_request::TopicData::default()
                .with_topic_name(topic_name)
                .with_partitions(vec![partition]);
            RequestKind::BeginQuorumEpoch(
                BeginQuorumEpochRequest::default()
                    .with_cluster_id(cluster_id)
                    .with_voter_id(BrokerId(to))
                    .with_topics(vec![topic]),
            )
        }
        Request::EndQuorumEpoch { epoch, leader, ref preferred_successors } => {
            let candidates = preferred_successors
                .iter()
                .map(|&s| end_quorum_epoch_request::ReplicaInfo::default().with_candidate_id(BrokerId(s)))
                .collect();
            let partition = end_quorum_epoch_request::PartitionData::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch)
                .with_preferred_candidates(candidates);
            let topic = end_quorum_epoch_request::TopicData::default()
                .with_topic_name(topic_name)
                .with_partitions(vec![partition]);
            RequestKind::EndQuorumEpoch(
                EndQuorumEpochRequest::default().with_cluster_id(cluster_id).with_topics(vec![topic]),
            )
        }
        Request::Fetch { epoch, replica, fetch_offset, last_fetched_epoch, max_wait_ms } => {
            let partition = fetch_request::FetchPartition::default()
                .with_current_leader_epoch(epoch)
                .with_fetch_offset(fetch_offset as i64)
                .with_last_fetched_epoch(last_fetched_epoch)
                .with_partition_max_bytes(i32::MAX);
            let topic =
                fetch_request::FetchTopic::default().with_topic_id(METADATA_TOPIC_ID).with_partitions(vec![partition]);
            let state = fetch_request::ReplicaState::default().with_replica_id(BrokerId(replica));
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_cluster_id(cluster_id)
                    .with_replica_state(state)
                    .with_max_wait_ms(max_wait_ms.min(i32::MAX as u64) as i32)
                    .with_max_bytes(i32::MAX)
                    .with_topics(vec![topic]),
            )
        }
        Request::FetchSnapshot { epoch, replica, snapshot, position } => {
            let partition = fetch_snapshot_request::PartitionSnapshot::default()
                .with_current_leader_epoch(epoch)
                .with_snapshot_id(
                    fetch_snapshot_request::SnapshotId::default()
                        .with_end_offset(snapshot.end_offset as i64)
                        .with_epoch(snapshot.epoch),
                )
                .with_position(position as i64);
            let topic =
                fetch_snapshot_request::TopicSnapshot::default().with_name(topic_name).with_partitions(vec![partition]);
            RequestKind::FetchSnapshot(
                FetchSnapshotRequest::default()
                    .with_cluster_id(cluster_id)
                    .with_replica_id(BrokerId(replica))
                    .with_max_bytes(i32::MAX)
                    .with_topics(vec![topic]),
            )
        }
    }
}

fn non_negative(value: i64, what: &str) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("negative {what} {value}"))
}

/// Kafka's message back to a request, with the node that sent it (named in the message itself).
pub fn decode_request(kind: RequestKind) -> Result<(NodeId, Request), String> {
    match kind {
        RequestKind::Vote(vote) => {
            let p = single(vote.topics.into_iter().flat_map(|t| t.partitions))?;
            let candidate = p.replica_id.0;
            let request = Request::Vote {
                epoch: p.replica_epoch,
                candidate,
                last_epoch: p.last_offset_epoch,
                log_end: non_negative(p.last_offset, "last offset")?,
            };
            Ok((candidate, request))
        }
        RequestKind::BeginQuorumEpoch(begin) => {
            let p = single(begin.topics.into_iter().flat_map(|t| t.partitions))?;
            Ok((p.leader_id.0, Request::BeginQuorumEpoch { epoch: p.leader_epoch, leader: p.leader_id.0 }))
        }
        RequestKind::EndQuorumEpoch(end) => {
            let p = single(end.topics.into_iter().flat_map(|t| t.partitions))?;
            let mut preferred_successors: Vec<NodeId> = p.preferred_successors.clone();
            preferred_successors.extend(p.preferred_candidates.iter().map(|c| c.candidate_id.0));
            Ok((
                p.leader_id.0,
                Request::EndQuorumEpoch { epoch: p.leader_epoch, leader: p.leader_id.0, preferred_successors },
            ))
        }
        RequestKind::Fetch(fetch) => {
            let replica = fetch.replica_state.replica_id.0;
            let p = single(
                fetch.topics.into_iter().filter(|t| t.topic_id == METADATA_TOPIC_ID).flat_map(|t| t.partitions),
            )?;
            let request = Request::Fetch {
                epoch: p.current_leader_epoch,
                replica,
                fetch_offset: non_negative(p.fetch_offset, "fetch offset")?,
                last_fetched_epoch: p.last_fetched_epoch,
                max_wait_ms: non_negative(fetch.max_wait_ms.into(), "max wait")?,
            };
            Ok((replica, request))
        }
        RequestKind::FetchSnapshot(fetch) => {
            let replica = fetch.replica_id.0;
            let p = single(fetch.topics.into_iter().flat_map(|t| t.partitions))?;
            let request = Request::FetchSnapshot {
                epoch: p.current_leader_epoch,
                replica,
                snapshot: SnapshotId {
                    end_offset: non_negative(p.snapshot_id.end_offset, "snapshot end")?,
                    epoch: p.snapshot_id.epoch,
                },
                position: non_negative(p.position, "snapshot position")?,
            };
            Ok((replica, request))
        }
        other => Err(format!("not a quorum request: {other:?}")),
    }
}

fn single<T>(mut items: impl Iterator<Item = T>) -> Result<T, String> {
    let first = items.next().ok_or("no partition of the metadata topic")?;
    if items.next().is_some() {
        return Err("more than one partition of the metadata topic".to_string());
    }
    Ok(first)
}

fn error_code(error: Option<RaftError>) -> i16 {
    match error {
        None => 0,
        Some(RaftError::FencedLeaderEpoch) => ResponseError::FencedLeaderEpoch.code(),
        Some(RaftError::NotLeader) => ResponseError::NotLeaderOrFollower.code(),
        Some(RaftError::UnknownLeaderEpoch) => ResponseError::UnknownLeaderEpoch.code(),
        Some(RaftError::InconsistentVoter) => ResponseError::InconsistentVoterSet.code(),
        Some(RaftError::SnapshotNotFound) => ResponseError::SnapshotNotFound.code(),
    }
}

fn raft_error(code: i16) -> Result<Option<RaftError>, String> {
    Ok(match code {
        0 => None,
        c if c == ResponseError::FencedLeaderEpoch.code() => Some(RaftError::FencedLeaderEpoch),
        c if c == ResponseError::NotLeaderOrFollower.code() => Some(RaftError::NotLeader),
        c if c == ResponseError::UnknownLeaderEpoch.code() => Some(RaftError::UnknownLeaderEpoch),
        c if c == ResponseError::InconsistentVoterSet.code() => Some(RaftError::InconsistentVoter),
        c if c == ResponseError::SnapshotNotFound.code() => Some(RaftError::SnapshotNotFound),
        other => return Err(format!("unexpected quorum error code {other}")),
    })
}

fn leader_id(leader: Option<NodeId>) -> BrokerId {
    BrokerId(leader.unwrap_or(-1))
}

fn leader_of(id: BrokerId) -> Option<NodeId> {
    (id.0 >= 0).then_some(id.0)
}

pub fn encode_response(response: &Response) -> ResponseKind {
    let topic_name = TopicName(StrBytes::from_static_str(METADATA_TOPIC));
    match response {
        &Response::Vote { epoch, leader, granted, error } => {
            let partition = vote_response::PartitionData::default()
                .with_error_code(error_code(error))
                .with_leader_id(leader_id(leader))
                .with_leader_epoch(epoch)
                .with_vote_granted(granted);
            let topic =
                vote_response::TopicData::default().with_topic_name(topic_name).with_partitions(vec![partition]);
            ResponseKind::Vote(VoteResponse::default().with_topics(vec![topic]))
        }
        &Response::BeginQuorumEpoch { epoch, leader, error } => {
            let partition = begin_quorum_epoch_response::PartitionData::default()
                .with_error_code(error_code(error))
                .with_leader_id(leader_id(leader))
                .with_leader_epoch(epoch);
            let topic = begin_quorum_epoch_response::TopicData::default()
                .with_topic_name(topic_name)
                .with_partitions(vec![partition]);
            ResponseKind::BeginQuorumEpoch(BeginQuorumEpochResponse::default().with_topics(vec![topic]))
        }
        &Response::EndQuorumEpoch { epoch, leader, error } => {
            let partition = end_quorum_epoch_response::PartitionData::default()
                .with_error_code(error_code(error))
                .with_leader_id(leader_id(leader))
                .with_leader_epoch(epoch);
            let topic = end_quorum_epoch_response::TopicData::default()
                .with_topic_name(topic_name)
                .with_partitions(vec![partition]);
            ResponseKind::EndQuorumEpoch(EndQuorumEpochResponse::default().with_topics(vec![topic]))
        }
        Response::Fetch(fetch) => {
            let mut partition = fetch_response::PartitionData::default()
                .with_error_code(error_code(fetch.error))
                .with_high_watermark(fetch.high_watermark.map_or(-1, |h| h as i64))
                .with_current_leader(
                    fetch_response::LeaderIdAndEpoch::default()
                        .with_leader_id(leader_id(fetch.leader))
                        .with_leader_epoch(fetch.epoch),
                )
                .with_records((!fetch.entries.is_empty()).then(|| encode_entries(&fetch.entries)));
            if let Some(d) = fetch.diverging {
                partition = partition.with_diverging_epoch(
                    fetch_response::EpochEndOffset::default().with_epoch(d.epoch).with_end_offset(d.end_offset as i64),
                );
            }
            if let Some(id) = fetch.snapshot {
                partition = partition.with_snapshot_id(
                    fetch_response::SnapshotId::default().with_end_offset(id.end_offset as i64).with_epoch(id.epoch),
                );
            }
            let topic = fetch_response::FetchableTopicResponse::default()
                .with_topic_id(METADATA_TOPIC_ID)
                .with_partitions(vec![partition]);
            ResponseKind::Fetch(KafkaFetchResponse::default().with_responses(vec![topic]))
        }
        Response::FetchSnapshot(chunk) => {
            let partition = fetch_snapshot_response::PartitionSnapshot::default()
                .with_error_code(error_code(chunk.error))
                .with_snapshot_id(
                    fetch_snapshot_response::SnapshotId::default()
                        .with_end_offset(chunk.snapshot.end_offset as i64)
                        .with_epoch(chunk.snapshot.epoch),
                )
                .with_current_leader(
                    fetch_snapshot_response::LeaderIdAndEpoch::default()
                        .with_leader_id(leader_id(chunk.leader))
                        .with_leader_epoch(chunk.epoch),
                )
                .with_size(chunk.size as i64)
                .with_position(chunk.position as i64)
                .with_unaligned_records(chunk.bytes.clone());
            let topic = fetch_snapshot_response::TopicSnapshot::default()
                .with_name(topic_name)
                .with_partitions(vec![partition]);
            ResponseKind::FetchSnapshot(FetchSnapshotResponse::default().with_topics(vec![topic]))
        }
    }
}

/// Kafka's response back; `api_key` is the request's (a response does not name it).
pub fn decode_response(api_key: ApiKey, kind: ResponseKind) -> Result<Response, String> {
    match (api_key, kind) {
        (ApiKey::Vote, ResponseKind::Vote(vote)) => {
            let p = single(vote.topics.into_iter().flat_map(|t| t.partitions))?;
            Ok(Response::Vote {
                epoch: p.leader_epoch,
                leader: leader_of(p.leader_id),
                granted: p.vote_granted,
                error: raft_error(p.error_code)?,
            })
        }
        (ApiKey::BeginQuorumEpoch, ResponseKind::BeginQuorumEpoch(begin)) => {
            let p = single(begin.topics.into_iter().flat_map(|t| t.partitions))?;
            Ok(Response::BeginQuorumEpoch {
                epoch: p.leader_epoch,
                leader: leader_of(p.leader_id),
                error: raft_error(p.error_code)?,
            })
        }
        (ApiKey::EndQuorumEpoch, ResponseKind::EndQuorumEpoch(end)) => {
            let p = single(end.topics.into_iter().flat_map(|t| t.partitions))?;
            Ok(Response::EndQuorumEpoch {
                epoch: p.leader_epoch,
                leader: leader_of(p.leader_id),
                error: raft_error(p.error_code)?,
            })
        }
        (ApiKey::Fetch, ResponseKind::Fetch(fetch)) => {
            let p = single(
                fetch.responses.into_iter().filter(|t| t.topic_id == METADATA_TOPIC_ID).flat_map(|t| t.partitions),
            )?;
            let diverging = (p.diverging_epoch.epoch >= 0).then_some(()).map(|()| Diverging {
                epoch: p.diverging_epoch.epoch,
                end_offset: p.diverging_epoch.end_offset.max(0) as u64,
            });
            let snapshot = (p.snapshot_id.end_offset >= 0 && p.snapshot_id.epoch >= 0)
                .then_some(SnapshotId { end_offset: p.snapshot_id.end_offset as u64, epoch: p.snapshot_id.epoch });
            let entries = match p.records {
                Some(records) => decode_entries(records)?,
                None => Vec::new(),
            };
            Ok(Response::Fetch(FetchResponse {
                epoch: p.current_leader.leader_epoch,
                leader: leader_of(p.current_leader.leader_id),
                error: raft_error(p.error_code)?,
                high_watermark: (p.high_watermark >= 0).then_some(p.high_watermark as u64),
                diverging,
                snapshot,
                entries,
            }))
        }
        (ApiKey::FetchSnapshot, ResponseKind::FetchSnapshot(fetch)) => {
            let p = single(fetch.topics.into_iter().flat_map(|t| t.partitions))?;
            Ok(Response::FetchSnapshot(SnapshotChunk {
                epoch: p.current_leader.leader_epoch,
                leader: leader_of(p.current_leader.leader_id),
                error: raft_error(p.error_code)?,
                snapshot: SnapshotId {
                    end_offset: non_negative(p.snapshot_id.end_offset, "snapshot end")?,
                    epoch: p.snapshot_id.epoch,
                },
                size: non_negative(p.size, "snapshot size")?,
                position: non_negative(p.position, "snapshot position")?,
                bytes: p.unaligned_records,
            }))
        }
        (key, other) => Err(format!("{key:?} answered with {other:?}")),
    }
}

/// Entries as record batches, one batch per run of entries with the same epoch and kind.
pub fn encode_entries(entries: &[Entry]) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    let mut run: Vec<Record> = Vec::new();
    for entry in entries {
        let record = entry_record(entry);
        if run.last().is_some_and(|last| {
            last.partition_leader_epoch != record.partition_leader_epoch || last.control || record.control
        }) {
            RecordBatchEncoder::encode(&mut buf, run.iter(), &options).expect("raft entries encode");
            run.clear();
        }
        run.push(record);
    }
    if !run.is_empty() {
        RecordBatchEncoder::encode(&mut buf, run.iter(), &options).expect("raft entries encode");
    }
    buf.freeze()
}

fn entry_record(entry: &Entry) -> Record {
    let (control, key, value) = match &entry.payload {
        Payload::Data(data) => (false, None, Some(data.clone())),
        Payload::LeaderChange { leader } => {
            let mut key = BytesMut::new();
            key.extend_from_slice(&0i16.to_be_bytes());
            key.extend_from_slice(&LEADER_CHANGE_CONTROL_TYPE.to_be_bytes());
            let message = LeaderChangeMessage::default()
                .with_leader_id(BrokerId(*leader))
                .with_voters(vec![leader_change_message::Voter::default().with_voter_id(*leader)]);
            let mut value = BytesMut::new();
            message.encode(&mut value, 0).expect("a LeaderChangeMessage encodes");
            (true, Some(key.freeze()), Some(value.freeze()))
        }
    };
    Record {
        transactional: false,
        control,
        delete_horizon: false,
        partition_leader_epoch: entry.epoch,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: entry.offset as i64,
        sequence: -1,
        timestamp: 0,
        key,
        value,
        headers: Default::default(),
    }
}

pub fn decode_entries(mut records: Bytes) -> Result<Vec<Entry>, String> {
    let sets = RecordBatchDecoder::decode_all(&mut records).map_err(|e| format!("metadata records: {e}"))?;
    let mut entries = Vec::new();
    for set in sets {
        for record in set.records {
            let payload = if record.control {
                let key = record.key.ok_or("a control record without a key")?;
                if key.len() < 4 || i16::from_be_bytes([key[2], key[3]]) != LEADER_CHANGE_CONTROL_TYPE {
                    return Err("an unknown control record in the metadata log".to_string());
                }
                let mut value = record.value.ok_or("a LeaderChange without a value")?;
                let message =
                    LeaderChangeMessage::decode(&mut value, 0).map_err(|e| format!("LeaderChangeMessage: {e}"))?;
                Payload::LeaderChange { leader: message.leader_id.0 }
            } else {
                Payload::Data(record.value.unwrap_or_default())
            };
            let offset = non_negative(record.offset, "record offset")?;
            entries.push(Entry { offset, epoch: record.partition_leader_epoch, payload });
        }
    }
    Ok(entries)
}
