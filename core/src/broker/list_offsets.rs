//! ListOffsets (earliest, latest, max timestamp, by timestamp) and OffsetForLeaderEpoch. A
//! timestamp search reads stored batches, so it may continue across several reads.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
    TopicName,
};
use kafka_protocol::ResponseError;

use super::{Broker, RequestCtx};
use crate::batch::{Batch, Batches};
use crate::ops::Purpose;
use crate::partition::ReadPlan;
use crate::records;
use crate::storage::{StorageError, TopicPartition};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;
const LATEST_TIERED: i64 = -6;
/// How much a timestamp search reads at a time.
const SEARCH_CHUNK: usize = 1 << 20;

struct Search {
    topic_index: usize,
    partition_index: usize,
    target: i64,
    /// The log start offset when the search began: records below it are deleted, as if gone.
    from_offset: i64,
    plan: ReadPlan,
    /// Durable end of the segment being searched.
    end: u64,
}

pub(crate) struct TimeSearch {
    ctx: RequestCtx,
    topics: Vec<(TopicName, Vec<ListOffsetsPartitionResponse>)>,
    searches: Vec<Option<Search>>,
    outstanding: usize,
}

fn answer(partition: i32, error: i16, timestamp: i64, offset: i64) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(partition)
        .with_error_code(error)
        .with_timestamp(timestamp)
        .with_offset(offset)
}

/// The first record in `batch` at or after `from_offset` with a timestamp at or after `target`,
/// as (offset, timestamp) (Kafka's `LogSegment.findOffsetByTimestamp`).
fn first_record_at_or_after(batch: &Batch<'_>, target: i64, from_offset: i64) -> (i64, i64) {
    if batch.is_log_append_time() {
        return (batch.base_offset().max(from_offset), batch.max_timestamp());
    }
    let mut found = None;
    if let Ok(area) = records::decompressed(batch, records::MAX_DECOMPRESSED_BATCH_BYTES) {
        let _ = records::for_each_record(&area, batch.records_count(), |r| {
            let timestamp = batch.base_timestamp().wrapping_add(r.timestamp_delta);
            let offset = batch.base_offset() + r.offset_delta as i64;
            if found.is_none() && timestamp >= target && offset >= from_offset {
                found = Some((offset, timestamp));
            }
        });
    }
    // Unreadable records: batch granularity is still a correct lower bound.
    found.unwrap_or((batch.base_offset().max(from_offset), batch.max_timestamp()))
}

impl Broker {
    pub(crate) fn handle_list_offsets(&mut self, ctx: RequestCtx, request: ListOffsetsRequest) {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut search = TimeSearch { ctx, topics: Vec::new(), searches: Vec::new(), outstanding: 0 };
        let read_committed = request.isolation_level == 1;
        for (topic_index, t) in request.topics.into_iter().enumerate() {
            let mut partitions = Vec::new();
            for (partition_index, p) in t.partitions.into_iter().enumerate() {
                let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                let log = match self.served_partition(&tp) {
                    Ok(log) => log,
                    Err(error) => {
                        partitions.push(answer(p.partition_index, error.code(), -1, -1));
                        continue;
                    }
                };
                if log.failed.is_some() {
                    partitions.push(answer(p.partition_index, ResponseError::KafkaStorageError.code(), -1, -1));
                    continue;
                }
                let response = match p.timestamp {
                    LATEST | LATEST_TIERED if read_committed => {
                        answer(p.partition_index, 0, -1, log.last_stable_offset())
                    }
                    LATEST | LATEST_TIERED => answer(p.partition_index, 0, -1, log.high_watermark()),
                    EARLIEST | EARLIEST_LOCAL | EARLIEST_PENDING_UPLOAD => {
                        answer(p.partition_index, 0, -1, log.log_start_offset)
                    }
                    // The largest timestamp is searched for like any other, so the answer is the
                    // first record holding it (Kafka's offsetOfMaxTimestamp), not its batch's end.
                    MAX_TIMESTAMP | 0.. => {
                        let target = if p.timestamp == MAX_TIMESTAMP {
                            log.max_timestamp().map(|(_, ts)| ts)
                        } else {
                            Some(p.timestamp)
                        };
                        let from_offset = log.log_start_offset;
                        if let Some((target, plan)) = target.and_then(|ts| Some((ts, log.plan_time_search(ts)?))) {
                            let end = plan.position + plan.len as u64;
                            let plan = ReadPlan { len: plan.len.min(SEARCH_CHUNK), ..plan };
                            let slot = search.searches.len();
                            self.ops.read(
                                Purpose::TimeSearchRead { request: id, slot },
                                plan.file.clone(),
                                plan.position,
                                plan.len,
                            );
                            let search_one = Search { topic_index, partition_index, target, from_offset, plan, end };
                            search.searches.push(Some(search_one));
                            search.outstanding += 1;
                        }
                        answer(p.partition_index, 0, -1, -1)
                    }
                    _ => answer(p.partition_index, ResponseError::InvalidRequest.code(), -1, -1),
                };
                partitions.push(response);
            }
            search.topics.push((t.name, partitions));
        }
        if search.outstanding == 0 {
            self.respond_list_offsets(search);
        } else {
            self.time_searches.insert(id, search);
        }
    }

    pub(crate) fn on_time_search_read(&mut self, id: u64, slot: usize, result: Result<Bytes, StorageError>) {
        let Some(state) = self.time_searches.get_mut(&id) else {
            return;
        };
        let search = state.searches[slot].take().expect("search in flight");
        let response = &mut state.topics[search.topic_index].1[search.partition_index];
        let mut next_read = None;
        match result {
            Err(e) => {
                tracing::error!("timestamp search read failed: {e}");
                response.error_code = ResponseError::KafkaStorageError.code();
            }
            Ok(bytes) => {
                let mut batches = Batches::new(&bytes, false);
                let found = batches
                    .by_ref()
                    .find(|(_, b)| b.max_timestamp() >= search.target && b.last_offset() >= search.from_offset);
                match found {
                    Some((_, batch)) => {
                        let (offset, ts) = first_record_at_or_after(&batch, search.target, search.from_offset);
                        *response = answer(response.partition_index, 0, ts, offset);
                    }
                    None => {
                        let consumed = batches.position() as u64;
                        let position = search.plan.position + consumed;
                        // A short read, or no progress, ends the search (nothing found).
                        let progress = consumed > 0 || bytes.len() >= search.plan.len;
                        if position < search.end && progress && bytes.len() >= search.plan.len.min(1) {
                            // Go on after the whole batches seen; a batch larger than the chunk is read whole.
                            let whole = Batch::total_len(&bytes[consumed as usize..]).unwrap_or(SEARCH_CHUNK);
                            let len = whole.max(SEARCH_CHUNK).min((search.end - position) as usize);
                            next_read =
                                Some(Search { plan: ReadPlan { position, len, ..search.plan.clone() }, ..search });
                        }
                    }
                }
            }
        }
        if let Some(s) = next_read {
            self.ops.read(
                Purpose::TimeSearchRead { request: id, slot },
                s.plan.file.clone(),
                s.plan.position,
                s.plan.len,
            );
            state.searches[slot] = Some(s);
            return;
        }
        state.outstanding -= 1;
        if state.outstanding == 0 {
            let state = self.time_searches.remove(&id).expect("present");
            self.respond_list_offsets(state);
        }
    }

    fn respond_list_offsets(&mut self, state: TimeSearch) {
        // The leader epoch field exists from v4 on.
        let with_epoch = state.ctx.version >= 4;
        let topics = state
            .topics
            .into_iter()
            .map(|(name, mut partitions)| {
                if with_epoch {
                    for p in partitions.iter_mut().filter(|p| p.error_code == 0 && p.offset >= 0) {
                        p.leader_epoch = 0;
                    }
                }
                ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
            })
            .collect();
        self.respond(state.ctx, ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics)));
    }

    pub(crate) fn handle_offset_for_leader_epoch(&mut self, ctx: RequestCtx, request: OffsetForLeaderEpochRequest) {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let base = EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let log = match self.served_partition(&TopicPartition::new(t.topic.0.as_str(), p.partition)) {
                            Ok(log) => log,
                            Err(error) => return base.with_error_code(error.code()),
                        };
                        if p.current_leader_epoch > log.leader_epoch {
                            return base.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                        }
                        if p.current_leader_epoch >= 0 && p.current_leader_epoch < log.leader_epoch {
                            return base.with_error_code(ResponseError::FencedLeaderEpoch.code());
                        }
                        let (epoch, end) = log.leader_epochs().end_offset_for(p.leader_epoch, log.log_end_offset());
                        base.with_leader_epoch(epoch).with_end_offset(end)
                    })
                    .collect();
                OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
            })
            .collect();
        self.respond(
            ctx,
            ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(topics)),
        );
    }
}
