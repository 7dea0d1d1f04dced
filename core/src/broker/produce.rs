//! Produce: validate, deduplicate and append each partition's batches, then answer once the
//! high watermark (the fsynced end) covers them. acks=0 gets no answer at all.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Broker, RequestCtx};
use crate::ops::RequestSlot;
use crate::partition::AppendError;
use crate::records::ClientBatchError;
use crate::storage::TopicPartition;

/// What an acknowledgement waits for: acks=all for the high watermark (the in-sync replicas
/// hold the batch durably), acks=1 for the leader's own durable end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum WaitFor {
    DurableEnd,
    HighWatermark,
}

/// One partition of a produce request waiting for its last offset to be passed. Ordered by
/// what it waits for, partition, then offset, so one range finds every wait a move covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ProduceWait {
    until: WaitFor,
    tp: TopicPartition,
    last_offset: i64,
    produce: u64,
    slot: RequestSlot,
}

impl ProduceWait {
    fn first_of(until: WaitFor, tp: &TopicPartition, last_offset: i64) -> Self {
        ProduceWait { until, tp: tp.clone(), last_offset, produce: 0, slot: RequestSlot { topic: 0, partition: 0 } }
    }

    fn last_of(until: WaitFor, tp: &TopicPartition) -> Self {
        ProduceWait {
            until,
            tp: tp.clone(),
            last_offset: i64::MAX,
            produce: u64::MAX,
            slot: RequestSlot { topic: usize::MAX, partition: usize::MAX },
        }
    }
}

pub(crate) struct PendingProduce {
    ctx: RequestCtx,
    acks: i16,
    topics: Vec<(TopicName, Vec<PartitionProduceResponse>)>,
    waiting: usize,
}

fn error_response(index: i32, error: ResponseError, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Kafka's INVALID_RECORD cases for a client's batches; framing and CRC errors are left to the
/// append, which answers them with CORRUPT_MESSAGE.
fn invalid_client_records(records: &bytes::Bytes) -> Option<String> {
    match crate::records::check_client_batches(records) {
        Err(ClientBatchError::Invalid(message)) => Some(message),
        Ok(()) | Err(ClientBatchError::Corrupt(_)) => None,
    }
}

/// The offset below which a wait of this kind is passed.
fn passed(log: &crate::partition::PartitionLog, until: WaitFor) -> i64 {
    match until {
        WaitFor::DurableEnd => log.durable_end(),
        WaitFor::HighWatermark => log.high_watermark(),
    }
}

fn refuse(index: i32, error: ResponseError, message: Option<String>) -> Box<PartitionProduceResponse> {
    Box::new(error_response(index, error, message))
}

impl Broker {
    pub(crate) fn handle_produce(&mut self, now_ms: i64, ctx: RequestCtx, request: ProduceRequest) {
        let acks = request.acks;
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut waits = Vec::new();
        let mut topics = Vec::new();
        let mut moved = Vec::new();
        for topic_data in request.topic_data {
            let name = topic_data.name.clone();
            let mut partitions = Vec::new();
            let known = self.topics.contains_key(name.0.as_str());
            if !known {
                self.maybe_auto_create(name.0.as_str());
            }
            for pd in topic_data.partition_data {
                let slot = partitions.len();
                let result = if !matches!(acks, -1..=1) {
                    Err(refuse(
                        pd.index,
                        ResponseError::InvalidRequiredAcks,
                        Some(format!("acks={acks} is not one of -1, 0, 1")),
                    ))
                } else if super::admin::is_internal_topic(name.0.as_str()) {
                    Err(refuse(
                        pd.index,
                        ResponseError::InvalidTopicException,
                        Some("cannot produce to an internal topic".into()),
                    ))
                } else if let Some(message) = pd.records.as_ref().and_then(invalid_client_records) {
                    Err(refuse(pd.index, ResponseError::InvalidRecord, Some(message)))
                } else if let Err((error, message)) = self.check_transactional_produce(
                    request.transactional_id.as_ref().map(|t| t.0.as_str()),
                    name.0.as_str(),
                    pd.index,
                    pd.records.as_ref(),
                ) {
                    Err(refuse(pd.index, error, Some(message)))
                } else {
                    let tp = TopicPartition::new(name.0.as_str(), pd.index);
                    let before = self.partition(&tp).map_or(0, |p| p.high_watermark());
                    let result = self.append_one(now_ms, acks, name.0.as_str(), pd.index, pd.records.as_ref());
                    // Relaxed durability moves the high watermark on append: wake fetches now.
                    if self.partition(&tp).is_some_and(|p| p.high_watermark() > before) {
                        moved.push(tp);
                    }
                    result
                };
                match result {
                    Ok((response, last_offset)) => {
                        let tp = TopicPartition::new(name.0.as_str(), pd.index);
                        let until = if acks == 1 { WaitFor::DurableEnd } else { WaitFor::HighWatermark };
                        let passed = self.partition(&tp).map_or(i64::MAX, |p| passed(p, until));
                        if acks != 0 && passed <= last_offset {
                            let slot = RequestSlot { topic: topics.len(), partition: slot };
                            waits.push(ProduceWait { until, tp, last_offset, produce: id, slot });
                        }
                        partitions.push(response);
                    }
                    Err(response) => partitions.push(*response),
                }
            }
            topics.push((name, partitions));
        }
        for tp in moved {
            self.wake_fetches(now_ms, &tp);
        }
        if acks == 0 {
            self.respond_nothing(ctx);
            return;
        }
        let pending = PendingProduce { ctx, acks, topics, waiting: waits.len() };
        if pending.waiting == 0 {
            self.respond_produce(pending);
            return;
        }
        for wait in waits {
            let fresh = self.produce_waits.insert(wait);
            assert!(fresh, "a produce waits once per response slot");
        }
        self.produces.insert(id, pending);
    }

    /// Appends one partition's records. Ok carries the success answer and the last offset the
    /// answer waits for.
    fn append_one(
        &mut self,
        now_ms: i64,
        acks: i16,
        topic: &str,
        partition: i32,
        records: Option<&bytes::Bytes>,
    ) -> Result<(PartitionProduceResponse, i64), Box<PartitionProduceResponse>> {
        let tp = TopicPartition::new(topic, partition);
        let min_insync = match self.served_partition(&tp) {
            Ok(log) => log.config.min_insync_replicas,
            Err(error) => return Err(refuse(partition, error, None)),
        };
        let isr = self.isr_size(&tp) as i64;
        if acks == -1 && isr < min_insync {
            // Kafka's strict rule: not even appended while too few replicas are in sync.
            let message = format!("the in-sync replicas ({isr}) are fewer than min.insync.replicas ({min_insync})");
            return Err(refuse(partition, ResponseError::NotEnoughReplicas, Some(message)));
        }
        let Some(records) = records else {
            return Err(refuse(partition, ResponseError::CorruptMessage, Some("no records".into())));
        };
        match self.append_to_log(now_ms, &tp, records).expect("the partition exists") {
            Ok(appended) => Ok((
                PartitionProduceResponse::default()
                    .with_index(partition)
                    .with_base_offset(appended.base_offset)
                    .with_log_append_time_ms(appended.log_append_time)
                    .with_log_start_offset(self.partition(&tp).map_or(0, |p| p.log_start_offset)),
                appended.last_offset,
            )),
            Err(e) => {
                tracing::debug!(topic, partition, "produce refused: {e:?}");
                let (code, message) = match e {
                    AppendError::Corrupt(m) => (ResponseError::CorruptMessage, m),
                    AppendError::TooLarge { size, max } => (
                        ResponseError::MessageTooLarge,
                        format!("batch of {size} bytes exceeds max.message.bytes {max}"),
                    ),
                    AppendError::OutOfOrder(m) => (ResponseError::OutOfOrderSequenceNumber, m),
                    AppendError::FencedEpoch(m) => (ResponseError::InvalidProducerEpoch, m),
                    AppendError::Offline(m) => (ResponseError::KafkaStorageError, m),
                    AppendError::NotLeader => {
                        (ResponseError::NotLeaderOrFollower, "this broker follows the partition".to_string())
                    }
                };
                Err(refuse(partition, code, Some(message)))
            }
        }
    }

    fn respond_produce(&mut self, pending: PendingProduce) {
        debug_assert!(pending.acks != 0);
        let responses = pending
            .topics
            .into_iter()
            .map(|(name, partitions)| {
                TopicProduceResponse::default().with_name(name).with_partition_responses(partitions)
            })
            .collect();
        self.respond(pending.ctx, ResponseKind::Produce(ProduceResponse::default().with_responses(responses)));
    }

    /// Answers the produces that the high watermark or durable end of `tp` now covers.
    pub(crate) fn release_produce_waits(&mut self, tp: &TopicPartition) {
        for until in [WaitFor::DurableEnd, WaitFor::HighWatermark] {
            let to = self.partition(tp).map_or(i64::MAX, |p| passed(p, until));
            let covered: Vec<_> = self
                .produce_waits
                .range(ProduceWait::first_of(until, tp, i64::MIN)..ProduceWait::first_of(until, tp, to))
                .cloned()
                .collect();
            for wait in covered {
                self.produce_waits.remove(&wait);
                self.finish_wait(wait.produce, None);
            }
        }
    }

    /// Answers every produce waiting on `tp` with an error (partition offline or deleted).
    pub(crate) fn fail_produce_waits(&mut self, tp: &TopicPartition) {
        let error = match self.partition(tp) {
            Some(p) => (ResponseError::KafkaStorageError, p.failed.clone().unwrap_or_else(|| "storage error".into())),
            None => (ResponseError::UnknownTopicOrPartition, "the topic was deleted".into()),
        };
        self.fail_produce_waits_with(tp, error);
    }

    /// Answers every produce waiting on `tp` with `error` (the partition failed, went, or its
    /// leadership moved: the client retries, and an idempotent retry is deduplicated).
    pub(crate) fn fail_produce_waits_with(&mut self, tp: &TopicPartition, error: (ResponseError, String)) {
        let waiting: Vec<_> = [WaitFor::DurableEnd, WaitFor::HighWatermark]
            .into_iter()
            .flat_map(|until| {
                self.produce_waits.range(ProduceWait::first_of(until, tp, i64::MIN)..=ProduceWait::last_of(until, tp))
            })
            .cloned()
            .collect();
        for wait in waiting {
            self.produce_waits.remove(&wait);
            self.finish_wait(wait.produce, Some((wait.slot, error.clone())));
        }
    }

    /// Each wait belongs to a pending produce that counts it, and waits only while the high
    /// watermark is below its last offset.
    pub(super) fn check_produce_waits(&self) {
        let mut counted = std::collections::BTreeMap::<u64, usize>::new();
        for wait in &self.produce_waits {
            *counted.entry(wait.produce).or_default() += 1;
            if let Some(p) = self.partition(&wait.tp).filter(|p| p.failed.is_none()) {
                assert!(
                    wait.last_offset >= passed(p, wait.until),
                    "{}: a produce up to {} waits below its {:?} {}",
                    wait.tp,
                    wait.last_offset,
                    wait.until,
                    passed(p, wait.until)
                );
            }
        }
        for (id, pending) in &self.produces {
            assert_eq!(counted.get(id).copied().unwrap_or(0), pending.waiting, "produce {id} miscounts its waits");
            assert!(pending.waiting > 0, "produce {id} is pending with nothing to wait for");
        }
        for id in counted.keys() {
            assert!(self.produces.contains_key(id), "a wait for produce {id}, which is gone");
        }
    }

    fn finish_wait(&mut self, id: u64, error: Option<(RequestSlot, (ResponseError, String))>) {
        let pending = self.produces.get_mut(&id).expect("a produce wait belongs to a pending produce");
        assert!(pending.waiting > 0);
        if let Some((slot, (code, message))) = error {
            let response = &mut pending.topics[slot.topic].1[slot.partition];
            *response = error_response(response.index, code, Some(message));
        }
        pending.waiting -= 1;
        if pending.waiting == 0 {
            let pending = self.produces.remove(&id).expect("present");
            self.respond_produce(pending);
        }
    }
}
