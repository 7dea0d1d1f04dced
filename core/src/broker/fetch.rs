//! Fetch: plan a read of stored batch bytes per partition (below the high watermark), long-poll
//! when there is less than min_bytes, and answer with the bytes as stored, never re-encoded.

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, ResponseKind, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{Broker, RequestCtx};
use crate::batch::Batches;
use crate::buggify::Site;
use crate::ops::{ConnId, Purpose, RequestSlot};
use crate::partition::{fit_batches, trim_fetched, ReadBound, ReadPlan};
use crate::storage::{StorageError, TopicPartition};

#[derive(Debug)]
struct Slot {
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    error: i16,
    records: Option<Bytes>,
    /// The read in flight and the durable end of its segment.
    read: Option<(ReadPlan, u64)>,
    /// Reads repeated because the bytes failed their CRC.
    corrupt_rereads: u8,
    /// For a follower whose log diverged: the epoch and where it ends in this leader's log.
    diverging: Option<(i32, i64)>,
}

/// How often a fetch re-reads bytes that fail their CRC before it calls the corruption lasting.
pub(crate) const MAX_CORRUPT_REREADS: u8 = 2;

pub struct FetchState {
    ctx: RequestCtx,
    /// How far the fetch may read: consumers to the high watermark, followers to the log end.
    bound: ReadBound,
    read_committed: bool,
    min_bytes: usize,
    max_bytes: usize,
    /// Some while parked waiting for data.
    parked_until: Option<i64>,
    outstanding: usize,
    /// Topics in request order, each with its partition slots.
    topics: Vec<(TopicName, Uuid, Vec<Slot>)>,
}

impl FetchState {
    pub fn parked_until(&self) -> Option<i64> {
        self.parked_until
    }
    pub fn conn(&self) -> ConnId {
        self.ctx.conn
    }
    pub fn has_reads_in_flight(&self) -> bool {
        self.outstanding > 0
    }
    fn touches(&self, tp: &TopicPartition) -> bool {
        self.topics
            .iter()
            .any(|(name, _, slots)| name.0.as_str() == &*tp.topic && slots.iter().any(|s| s.partition == tp.partition))
    }
}

impl Broker {
    pub(crate) fn handle_fetch(&mut self, now_ms: i64, ctx: RequestCtx, request: FetchRequest) {
        let id = self.next_request_id;
        self.next_request_id += 1;
        // A broker's follower names itself (ReplicaState from v15, ReplicaId before).
        let replica = if ctx.version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
        let replica = (replica >= 0).then_some(replica);
        let mut topics = Vec::new();
        for ft in request.topics {
            // v13+ names topics by id only.
            let (name, topic_id) = if ctx.version >= 13 {
                let name =
                    self.topics.values().find(|t| t.id == ft.topic_id).map(|t| TopicName(t.name.to_string().into()));
                (name, ft.topic_id)
            } else {
                let id = self.topics.get(ft.topic.0.as_str()).map_or(Uuid::nil(), |t| t.id);
                (Some(ft.topic.clone()), id)
            };
            let unknown_error =
                if ctx.version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
            let slots = ft
                .partitions
                .into_iter()
                .map(|fp| {
                    let mut slot = Slot {
                        partition: fp.partition,
                        fetch_offset: fp.fetch_offset,
                        max_bytes: fp.partition_max_bytes.max(0) as usize,
                        error: 0,
                        records: None,
                        read: None,
                        corrupt_rereads: 0,
                        diverging: None,
                    };
                    let log =
                        name.as_ref().map(|n| self.served_partition(&TopicPartition::new(n.0.as_str(), fp.partition)));
                    let log = match log {
                        Some(Ok(log)) => Some(log),
                        Some(Err(ResponseError::UnknownTopicOrPartition)) | None => None,
                        Some(Err(error)) => {
                            slot.error = error.code();
                            return slot;
                        }
                    };
                    slot.error = match log {
                        None => unknown_error.code(),
                        Some(log) if log.failed.is_some() => ResponseError::KafkaStorageError.code(),
                        Some(log) if fp.current_leader_epoch > log.leader_epoch => {
                            ResponseError::UnknownLeaderEpoch.code()
                        }
                        Some(log) if fp.current_leader_epoch >= 0 && fp.current_leader_epoch < log.leader_epoch => {
                            ResponseError::FencedLeaderEpoch.code()
                        }
                        Some(log)
                            if fp.fetch_offset < log.log_start_offset || fp.fetch_offset > log.log_end_offset() =>
                        {
                            ResponseError::OffsetOutOfRange.code()
                        }
                        Some(_) => 0,
                    };
                    // A follower past this log's end may have diverged: the divergence is its
                    // answer, as in Kafka, not OFFSET_OUT_OF_RANGE.
                    let out_of_range = ResponseError::OffsetOutOfRange.code();
                    let beyond_end = log.is_some_and(|l| fp.fetch_offset > l.log_end_offset());
                    if let (Some(replica), Some(name)) = (replica, &name) {
                        if slot.error == 0 || (slot.error == out_of_range && beyond_end) {
                            let error = slot.error;
                            slot.error = 0;
                            let tp = TopicPartition::new(name.0.as_str(), fp.partition);
                            self.check_follower_fetch(&tp, replica, fp.last_fetched_epoch, &mut slot);
                            if slot.error == 0 && slot.diverging.is_none() {
                                slot.error = error;
                            }
                        }
                    }
                    slot
                })
                .collect();
            topics.push((name.unwrap_or_default(), topic_id, slots));
        }
        if let Some(replica) = replica {
            let broker_epoch = if ctx.version >= 15 { request.replica_state.replica_epoch } else { -1 };
            self.take_follower_progress(now_ms, (replica, broker_epoch), &topics);
        }
        let mut state = FetchState {
            ctx,
            bound: if replica.is_some() { ReadBound::LogEnd } else { ReadBound::HighWatermark },
            read_committed: request.isolation_level == 1 && replica.is_none(),
            min_bytes: request.min_bytes.max(0) as usize,
            max_bytes: if request.max_bytes <= 0 { usize::MAX / 2 } else { request.max_bytes as usize },
            parked_until: None,
            outstanding: 0,
            topics,
        };
        // An error or a divergence is news: answered at once.
        let has_error =
            state.topics.iter().any(|(_, _, slots)| slots.iter().any(|s| s.error != 0 || s.diverging.is_some()));
        let wait = request.max_wait_ms > 0 && !self.ops.buggify.fires(Site::FetchNoWait);
        if wait && !has_error && self.available(&state) < state.min_bytes.max(1) {
            state.parked_until = Some(now_ms + request.max_wait_ms as i64);
            self.fetches.insert(id, state);
            return;
        }
        self.fetches.insert(id, state);
        self.start_reads(id);
    }

    fn available(&self, state: &FetchState) -> usize {
        let mut total = 0usize;
        for (name, _, slots) in &state.topics {
            for s in slots.iter().filter(|s| s.error == 0) {
                if let Some(log) = self.partition(&TopicPartition::new(name.0.as_str(), s.partition)) {
                    if state.read_committed && s.fetch_offset >= log.last_stable_offset() {
                        continue;
                    }
                    total = total.saturating_add(log.bytes_available(s.fetch_offset, state.bound) as usize);
                }
            }
        }
        total
    }

    /// Issues one read per partition that has data, within the response's byte budget.
    fn start_reads(&mut self, id: u64) {
        let Some(mut state) = self.fetches.remove(&id) else {
            return;
        };
        state.parked_until = None;
        let mut budget = state.max_bytes;
        for (topic_index, (name, _, slots)) in state.topics.iter_mut().enumerate() {
            for (slot_index, slot) in slots.iter_mut().enumerate() {
                if slot.error != 0 || slot.diverging.is_some() || budget == 0 {
                    continue;
                }
                let tp = TopicPartition::new(name.0.as_str(), slot.partition);
                let Some(log) = self.topics.get(&tp.topic).and_then(|t| t.partitions.get(tp.partition as usize)) else {
                    continue;
                };
                let want = slot.max_bytes.min(budget);
                match log.plan_read(slot.fetch_offset, want, state.bound) {
                    Ok(Some(plan)) => {
                        budget = budget.saturating_sub(plan.len.min(want));
                        let end = plan.position + plan.len as u64;
                        let durable_end = log
                            .plan_read(slot.fetch_offset, usize::MAX / 2, state.bound)
                            .ok()
                            .flatten()
                            .map_or(end, |p| p.position + p.len as u64);
                        self.ops.read(
                            Purpose::FetchRead {
                                fetch: id,
                                slot: RequestSlot { topic: topic_index, partition: slot_index },
                            },
                            plan.file.clone(),
                            plan.position,
                            plan.len,
                        );
                        slot.read = Some((plan, durable_end));
                        state.outstanding += 1;
                    }
                    Ok(None) => {}
                    Err(_) => slot.error = ResponseError::OffsetOutOfRange.code(),
                }
            }
        }
        if state.outstanding == 0 {
            self.respond_fetch(state);
        } else {
            self.fetches.insert(id, state);
        }
    }

    pub(crate) fn on_fetch_read(&mut self, id: u64, slot_key: RequestSlot, result: Result<Bytes, StorageError>) {
        let Some(state) = self.fetches.get_mut(&id) else {
            return;
        };
        let slot = &mut state.topics[slot_key.topic].2[slot_key.partition];
        let (plan, durable_end) = slot.read.take().expect("a read was in flight");
        match result {
            Err(e) => {
                tracing::error!(file = %plan.file.relative_path(), "fetch read failed: {e}");
                slot.error = ResponseError::KafkaStorageError.code();
            }
            Ok(bytes) => match trim_fetched(&bytes, slot.fetch_offset, slot.max_bytes) {
                Ok(records) => {
                    let intact = intact_prefix(&records, slot.fetch_offset);
                    if intact < records.len() {
                        if slot.corrupt_rereads < MAX_CORRUPT_REREADS {
                            // A flipped bit on the way from the disk may not be there next time.
                            slot.corrupt_rereads += 1;
                            tracing::warn!(file = %plan.file.relative_path(), position = plan.position, "fetched bytes fail their CRC; reading again");
                            self.ops.read(
                                Purpose::FetchRead { fetch: id, slot: slot_key },
                                plan.file.clone(),
                                plan.position,
                                plan.len,
                            );
                            slot.read = Some((plan, durable_end));
                            return;
                        }
                        tracing::error!(file = %plan.file.relative_path(), position = plan.position, "stored batch fails its CRC; serving only the intact batches before it");
                    }
                    if intact == 0 {
                        slot.error = ResponseError::KafkaStorageError.code();
                    } else if self.ops.buggify.fires(Site::FetchOneBatch) {
                        let first = Batches::new(&records, false).next().map_or(intact, |(_, b)| b.len());
                        slot.records = Some(records.slice(..first.min(intact)));
                    } else {
                        slot.records = Some(records.slice(..intact));
                    }
                }
                Err((skip, len)) => {
                    let position = plan.position + skip as u64;
                    // A short read means the file holds less than the log believes: answer with
                    // nothing rather than read the same bytes again.
                    let short = bytes.len() < plan.len;
                    if short {
                        tracing::warn!(file = %plan.file.relative_path(), "short read at {}", plan.position);
                    }
                    // Re-read only to make progress: bytes that do not parse as a batch (a hole,
                    // corruption) or a batch that claims to run past the durable end would
                    // otherwise ask for the same read forever.
                    let len = len.min(durable_end.saturating_sub(position) as usize);
                    let progress = position > plan.position || len > plan.len;
                    if short || !progress {
                        // Waiting would not help: say so rather than answer empty forever.
                        tracing::error!(file = %plan.file.relative_path(), position, "unreadable batch; answering with a storage error");
                        slot.error = ResponseError::KafkaStorageError.code();
                    } else if position < durable_end {
                        let file = plan.file.clone();
                        self.ops.read(Purpose::FetchRead { fetch: id, slot: slot_key }, file.clone(), position, len);
                        slot.read = Some((ReadPlan { file, position, len }, durable_end));
                        return;
                    } else {
                        // Every batch up to the durable end lies before the fetch offset, which is
                        // below the high watermark: a base offset (outside the CRC) is corrupt.
                        tracing::error!(file = %plan.file.relative_path(), offset = slot.fetch_offset, "no stored batch holds the offset; answering with a storage error");
                        slot.error = ResponseError::KafkaStorageError.code();
                    }
                }
            },
        }
        state.outstanding -= 1;
        if state.outstanding == 0 {
            let state = self.fetches.remove(&id).expect("present");
            self.respond_fetch(state);
        }
    }

    fn respond_fetch(&mut self, state: FetchState) {
        let version = state.ctx.version;
        // The response's byte limit, in request order: only the first batch of the first
        // partition with data may exceed it.
        let mut used = 0usize;
        let mut state = state;
        for (_, _, slots) in state.topics.iter_mut() {
            for slot in slots.iter_mut() {
                if let Some(records) = &slot.records {
                    let fitted = fit_batches(records, state.max_bytes.saturating_sub(used), used == 0);
                    used += fitted.len();
                    slot.records = Some(fitted);
                }
            }
        }
        let mut responses = Vec::new();
        for (name, topic_id, slots) in state.topics {
            let partitions = slots
                .into_iter()
                .map(|s| {
                    let log = self.partition(&TopicPartition::new(name.0.as_str(), s.partition));
                    let (hw, lso, start) =
                        log.map_or((-1, -1, -1), |l| (l.high_watermark(), l.last_stable_offset(), l.log_start_offset));
                    let mut records = s.records.unwrap_or_default();
                    let aborted = match (state.read_committed, log) {
                        (false, _) => None,
                        (true, None) => Some(Vec::new()),
                        (true, Some(log)) => {
                            // read_committed sees nothing at or past the last stable offset.
                            records = cut_at_offset(&records, lso);
                            Some(
                                log.producers
                                    .aborted_between(s.fetch_offset, lso)
                                    .map(|a| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(a.producer_id))
                                            .with_first_offset(a.first_offset)
                                    })
                                    .collect(),
                            )
                        }
                    };
                    let diverging = s.diverging.map_or_else(EpochEndOffset::default, |(epoch, end)| {
                        EpochEndOffset::default().with_epoch(epoch).with_end_offset(end)
                    });
                    PartitionData::default()
                        .with_diverging_epoch(diverging)
                        .with_partition_index(s.partition)
                        .with_error_code(s.error)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(start)
                        .with_aborted_transactions(aborted)
                        .with_records(Some(records))
                })
                .collect();
            let mut topic = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                topic = topic.with_topic_id(topic_id);
            } else {
                topic = topic.with_topic(name);
            }
            responses.push(topic);
        }
        self.respond(state.ctx, ResponseKind::Fetch(FetchResponse::default().with_responses(responses)));
    }

    /// A follower's fetch of a partition led here: refused unless the follower is one of its
    /// replicas; answered with where the follower's last epoch ends here when its log went
    /// further in that epoch than this one (KIP-279's DivergingEpoch).
    fn check_follower_fetch(&self, tp: &TopicPartition, replica: i32, last_fetched_epoch: i32, slot: &mut Slot) {
        let replicas = self
            .view_topics()
            .filter(|_| !super::admin::is_internal_topic(&tp.topic))
            .and_then(|t| t.get(&*tp.topic))
            .and_then(|t| usize::try_from(tp.partition).ok().and_then(|i| t.partitions.get(i)))
            .map(|p| p.replicas.clone());
        if !replicas.is_some_and(|r| r.contains(&replica) && replica != self.config.node_id) {
            slot.error = ResponseError::NotLeaderOrFollower.code();
            return;
        }
        let Some(log) = self.partition(tp) else { return };
        if last_fetched_epoch >= 0 {
            let (epoch, end) = log.leader_epochs().end_offset_for(last_fetched_epoch, log.log_end_offset());
            if epoch != last_fetched_epoch || end < slot.fetch_offset {
                slot.diverging = Some((epoch, end));
            }
        }
    }

    /// A follower's fetch offsets are on its disk: they may move the high watermark.
    fn take_follower_progress(&mut self, now_ms: i64, replica: (i32, i64), topics: &[(TopicName, Uuid, Vec<Slot>)]) {
        for (name, _, slots) in topics {
            for slot in slots.iter().filter(|s| s.error == 0 && s.diverging.is_none()) {
                let tp = TopicPartition::new(name.0.as_str(), slot.partition);
                if self.record_follower_fetch(now_ms, &tp, replica, slot.fetch_offset) {
                    self.on_high_watermark(now_ms, &tp);
                }
            }
        }
    }

    /// New data on `tp`: parked fetches that now have enough are answered.
    pub(crate) fn wake_fetches(&mut self, _now_ms: i64, tp: &TopicPartition) {
        let ready: Vec<u64> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.parked_until.is_some() && f.touches(tp) && self.available(f) >= f.min_bytes.max(1))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.start_reads(id);
        }
    }

    pub(crate) fn expire_fetches(&mut self, now_ms: i64) {
        let due: Vec<u64> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.parked_until.is_some_and(|t| t <= now_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.start_reads(id);
        }
    }
}

/// The whole batches of `records` that start below `offset` (a partial batch at the end may
/// reach past it, so it goes too).
fn cut_at_offset(records: &Bytes, offset: i64) -> Bytes {
    let mut end = 0;
    for (position, batch) in Batches::new(records, false) {
        if batch.base_offset() >= offset {
            break;
        }
        end = position + batch.len();
    }
    records.slice(..end)
}

/// Length of the leading batches that are safe to serve: each passes its CRC, and their offsets
/// run on from one to the next starting at or before `fetch_offset` (the CRC does not cover the
/// base offset, so a corrupted one shows only as a break in the sequence).
pub(crate) fn intact_prefix(records: &[u8], fetch_offset: i64) -> usize {
    let mut next_base: Option<i64> = None;
    let mut intact = 0;
    for (position, batch) in Batches::new(records, true) {
        let in_sequence = match next_base {
            None => batch.base_offset() <= fetch_offset && batch.last_offset() >= fetch_offset,
            Some(expected) => batch.base_offset() == expected,
        };
        if !in_sequence {
            break;
        }
        next_base = Some(batch.last_offset() + 1);
        intact = position + batch.len();
    }
    intact
}
