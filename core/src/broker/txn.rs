//! Transactions: the wire side of the transaction coordinator (`crate::txn`), the markers it
//! writes into each partition of a transaction, and the finishing of transactions that a
//! restart interrupted.

use std::collections::BTreeMap;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::{Broker, Deferred, RequestCtx};
use crate::batch::{self, Batch};
use crate::group::records::Committed;
use crate::group::PersistId;
use crate::meta::{MetaChange, TxnMeta, TxnOffset};
use crate::storage::TopicPartition;
use crate::txn::{EndStep, Phase, Transaction, MAX_TIMEOUT_MS};

/// A group's committed offset of one partition.
type GroupOffset = ((String, i32), Committed);

/// A transaction whose markers are being written.
pub(crate) struct EndingTxn {
    remaining: usize,
    reply: Option<RequestCtx>,
}

fn init_response(error: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error.code())
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

impl Broker {
    /// InitProducerId with a transactional id: the id's producer, its epoch bumped so any older
    /// incarnation is fenced; an open transaction is aborted first (the client retries).
    pub(crate) fn init_transactional_producer(&mut self, now_ms: i64, ctx: RequestCtx, r: InitProducerIdRequest) {
        let id = r.transactional_id.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
        if r.transaction_timeout_ms <= 0 || r.transaction_timeout_ms > MAX_TIMEOUT_MS {
            let body = init_response(ResponseError::InvalidTransactionTimeout);
            self.respond(ctx, ResponseKind::InitProducerId(body));
            return;
        }
        let meta = match self.txns.by_id.get(&id) {
            None => {
                let Some(producer_id) = self.allocate_producer_id() else {
                    self.request_producer_id_block(ctx, r);
                    return;
                };
                TxnMeta { producer_id, epoch: 0, timeout_ms: r.transaction_timeout_ms, commit: None }
            }
            Some(txn) => {
                // KIP-360: a producer that names itself must be the current incarnation.
                if r.producer_id.0 >= 0 && (r.producer_id.0 != txn.producer_id || r.producer_epoch != txn.epoch) {
                    let body = init_response(ResponseError::InvalidProducerEpoch);
                    self.respond(ctx, ResponseKind::InitProducerId(body));
                    return;
                }
                match txn.phase {
                    Phase::Ongoing => {
                        self.abort_fencing(now_ms, &id);
                        let body = init_response(ResponseError::ConcurrentTransactions);
                        self.respond(ctx, ResponseKind::InitProducerId(body));
                        return;
                    }
                    Phase::Ending { .. } => {
                        let body = init_response(ResponseError::ConcurrentTransactions);
                        self.respond(ctx, ResponseKind::InitProducerId(body));
                        return;
                    }
                    Phase::Empty => {}
                }
                match txn.epoch.checked_add(1).filter(|e| *e < i16::MAX) {
                    Some(epoch) => TxnMeta {
                        producer_id: txn.producer_id,
                        epoch,
                        timeout_ms: r.transaction_timeout_ms,
                        commit: None,
                    },
                    None => {
                        // The epoch is exhausted: a new producer id starts over at epoch 0.
                        let Some(producer_id) = self.allocate_producer_id() else {
                            self.request_producer_id_block(ctx, r);
                            return;
                        };
                        TxnMeta { producer_id, epoch: 0, timeout_ms: r.transaction_timeout_ms, commit: None }
                    }
                }
            }
        };
        let mut txn = Transaction::new(&meta);
        if let Some(old) = self.txns.by_id.get(&id) {
            txn.last_outcome = old.last_outcome;
        }
        self.txns.by_id.insert(id.clone(), txn);
        let body = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(meta.producer_id))
            .with_producer_epoch(meta.epoch);
        self.queue_meta(
            MetaChange::SetTransaction { id, meta },
            Some(Deferred::Respond(ctx, ResponseKind::InitProducerId(body))),
        );
    }

    pub(crate) fn handle_add_partitions_to_txn(&mut self, now_ms: i64, ctx: RequestCtx, r: AddPartitionsToTxnRequest) {
        let id = r.v3_and_below_transactional_id.0.to_string();
        let requested: Vec<(String, i32)> = r
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let unknown: Vec<bool> = requested
            .iter()
            .map(|(t, p)| t == super::OFFSETS_TOPIC || self.partition(&TopicPartition::new(t, *p)).is_none())
            .collect();
        let outcome = if unknown.iter().any(|u| *u) {
            Err(None)
        } else {
            let (pid, epoch) = (r.v3_and_below_producer_id.0, r.v3_and_below_producer_epoch);
            self.txns.add_partitions(&id, pid, epoch, &requested, now_ms).map_err(Some)
        };
        let mut at = 0;
        let results = r
            .v3_and_below_topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let error = match &outcome {
                            Ok(()) => 0,
                            Err(Some(e)) => e.code(),
                            Err(None) if unknown[at] => ResponseError::UnknownTopicOrPartition.code(),
                            Err(None) => ResponseError::OperationNotAttempted.code(),
                        };
                        at += 1;
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(*p)
                            .with_partition_error_code(error)
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(partitions)
            })
            .collect();
        let body = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
        self.respond(ctx, ResponseKind::AddPartitionsToTxn(body));
    }

    pub(crate) fn handle_add_offsets_to_txn(&mut self, now_ms: i64, ctx: RequestCtx, r: AddOffsetsToTxnRequest) {
        let id = r.transactional_id.0.to_string();
        let error = match self.txns.add_group(&id, r.producer_id.0, r.producer_epoch, r.group_id.0.as_str(), now_ms) {
            Ok(()) => 0,
            Err(e) => e.code(),
        };
        self.respond(ctx, ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(error)));
    }

    pub(crate) fn handle_txn_offset_commit(&mut self, ctx: RequestCtx, r: TxnOffsetCommitRequest) {
        let id = r.transactional_id.0.to_string();
        let group = r.group_id.0.to_string();
        let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
        let checked = self
            .groups
            .check_transactional_committer(&group, r.generation_id, r.member_id.as_str(), instance.as_deref())
            .and_then(|()| {
                let offsets = r
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| TxnOffset {
                            group: group.clone(),
                            topic: t.name.0.to_string(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                    })
                    .collect();
                self.txns.add_offsets(&id, r.producer_id.0, r.producer_epoch, offsets)
            });
        let error = checked.err().map_or(0, |e| e.code());
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        self.respond(ctx, ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics)));
    }

    pub(crate) fn handle_end_txn(&mut self, now_ms: i64, ctx: RequestCtx, r: EndTxnRequest) {
        let id = r.transactional_id.0.to_string();
        match self.txns.end(&id, r.producer_id.0, r.producer_epoch, r.committed) {
            Err(e) => self.respond_end_txn(ctx, e.code()),
            Ok(EndStep::Answer(code)) => self.respond_end_txn(ctx, code),
            Ok(EndStep::Finish { commit: false }) => self.write_markers(now_ms, &id, Some(ctx)),
            Ok(EndStep::Finish { commit: true }) => {
                // The decision is durable before any marker, so a restart finishes the commit.
                let txn = &self.txns.by_id[&id];
                let mut record = txn.commit_record();
                record.first_offsets = txn
                    .partitions
                    .iter()
                    .filter_map(|(topic, partition)| {
                        let log = self.partition(&TopicPartition::new(topic, *partition))?;
                        let first = log.producers.get(txn.producer_id)?.txn_first_offset?;
                        Some((topic.clone(), *partition, first))
                    })
                    .collect();
                let meta = txn.meta(Some(record));
                self.queue_meta(
                    MetaChange::SetTransaction { id: id.clone(), meta },
                    Some(Deferred::TxnDecided(id, ctx)),
                );
            }
        }
    }

    pub(crate) fn respond_end_txn(&mut self, ctx: RequestCtx, error: i16) {
        self.respond(ctx, ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(error)));
    }

    /// The commit decision could not be made durable: the transaction stays open (and times out).
    pub(crate) fn txn_decision_failed(&mut self, id: &str) {
        if let Some(txn) = self.txns.by_id.get_mut(id) {
            txn.phase = Phase::Ongoing;
        }
    }

    /// Aborts an open transaction with a bumped epoch (a timeout, or a new incarnation).
    pub(crate) fn abort_fencing(&mut self, now_ms: i64, id: &str) {
        let Some(meta) = self.txns.abort_fencing(id) else {
            return;
        };
        tracing::info!(transactional_id = id, epoch = meta.epoch, "aborting a transaction and fencing its producer");
        self.queue_meta_silent(MetaChange::SetTransaction { id: id.to_string(), meta });
        self.write_markers(now_ms, id, None);
    }

    /// Aborts transactions that outlived their timeout.
    pub(crate) fn expire_transactions(&mut self, now_ms: i64) {
        for id in self.txns.expired(now_ms) {
            self.abort_fencing(now_ms, &id);
        }
    }

    /// Writes the ending transaction's marker into each of its partitions that holds its data,
    /// then finishes it once they are all durable.
    pub(crate) fn write_markers(&mut self, now_ms: i64, id: &str, reply: Option<RequestCtx>) {
        let txn = &self.txns.by_id[id];
        let Phase::Ending { commit } = txn.phase else {
            debug_assert!(false, "markers are written only for an ending transaction");
            tracing::error!(transactional_id = id, "markers asked for a transaction that is not ending");
            if let Some(ctx) = reply {
                self.respond_end_txn(ctx, ResponseError::InvalidTxnState.code());
            }
            return;
        };
        let (producer_id, epoch) = (txn.producer_id, txn.epoch);
        let partitions: Vec<(String, i32)> = txn.partitions.iter().cloned().collect();
        let marker = batch::transaction_marker(producer_id, epoch, commit, now_ms);
        let mut remaining = 0;
        let mut blocked = false;
        for (topic, partition) in partitions {
            let tp = TopicPartition::new(&topic, partition);
            match self.append_marker(now_ms, &tp, producer_id, &marker) {
                MarkerWrite::NotNeeded => {}
                MarkerWrite::Durable { at } => {
                    self.marker_waits.insert((tp, at, id.to_string()));
                    remaining += 1;
                }
                // Never counted down: the transaction stays ending until a restart's recovery
                // writes the marker again (the decision is durable in the metadata).
                MarkerWrite::Offline => {
                    remaining += 1;
                    blocked = true;
                }
            }
        }
        let reply = if blocked { self.answer_blocked_end(reply) } else { reply };
        self.ending.insert(id.to_string(), EndingTxn { remaining, reply });
        if remaining == 0 {
            self.markers_durable(now_ms, id);
        }
    }

    /// Appends a marker where `producer_id` has a transaction open.
    fn append_marker(
        &mut self,
        now_ms: i64,
        tp: &TopicPartition,
        producer_id: i64,
        marker: &bytes::Bytes,
    ) -> MarkerWrite {
        let Some(log) = self.partition(tp) else {
            return MarkerWrite::NotNeeded;
        };
        if !log.producers.has_open_transaction(producer_id) {
            return MarkerWrite::NotNeeded;
        }
        let before = log.high_watermark();
        match self.append_to_log(now_ms, tp, marker).expect("the partition exists") {
            Ok(appended) => {
                let hw = self.partition(tp).map_or(i64::MAX, |p| p.high_watermark());
                if hw > before {
                    self.wake_fetches(now_ms, tp);
                }
                if hw <= appended.last_offset {
                    MarkerWrite::Durable { at: appended.last_offset }
                } else {
                    MarkerWrite::NotNeeded
                }
            }
            Err(e) => {
                tracing::error!(partition = %tp, "could not write a transaction marker: {e:?}");
                MarkerWrite::Offline
            }
        }
    }

    /// A transaction that cannot end before a restart does not hold its EndTxn (and every later
    /// answer on that connection): the client hears a retriable error and asks again.
    fn answer_blocked_end(&mut self, reply: Option<RequestCtx>) -> Option<RequestCtx> {
        if let Some(ctx) = reply {
            self.respond_end_txn(ctx, ResponseError::CoordinatorNotAvailable.code());
        }
        None
    }

    /// `tp`'s high watermark moved, it failed, or it was deleted: count the markers it made
    /// durable. A marker on a failed partition is never counted: its transaction stays ending
    /// until a restart's recovery writes the marker again; a deleted partition needs none.
    pub(crate) fn release_marker_waits(&mut self, now_ms: i64, tp: &TopicPartition) {
        let (hw, failed) = self.partition(tp).map_or((i64::MAX, false), |p| (p.high_watermark(), p.failed.is_some()));
        let waits: Vec<_> = self
            .marker_waits
            .range((tp.clone(), i64::MIN, String::new())..(tp.clone(), i64::MAX, String::new()))
            .filter(|(_, offset, _)| failed || *offset < hw)
            .cloned()
            .collect();
        for wait in waits {
            self.marker_waits.remove(&wait);
            if failed {
                tracing::error!(partition = %tp, transactional_id = wait.2, "a transaction marker was lost with its partition; the transaction ends after a restart");
                let reply = self.ending.get_mut(&wait.2).and_then(|e| e.reply.take());
                self.answer_blocked_end(reply);
                continue;
            }
            let id = wait.2;
            let finished = self.ending.get_mut(&id).is_some_and(|e| {
                e.remaining -= 1;
                e.remaining == 0
            });
            if finished {
                self.markers_durable(now_ms, &id);
            }
        }
    }

    /// Every marker is durable: a commit's offsets go to their groups, then the transaction ends.
    fn markers_durable(&mut self, now_ms: i64, id: &str) {
        let reply = self.ending.remove(id).and_then(|e| e.reply);
        let txn = &self.txns.by_id[id];
        let commit = matches!(txn.phase, Phase::Ending { commit: true });
        let offsets: Vec<TxnOffset> = if commit { txn.offsets.values().cloned().collect() } else { Vec::new() };
        if offsets.is_empty() {
            self.end_transaction(id, reply);
            return;
        }
        if self.groups.is_loading() {
            // A commit finished during start-up; its offsets wait for the groups to load.
            self.txn_offsets_after_load.push((id.to_string(), reply));
            return;
        }
        self.apply_txn_offsets(now_ms, id, reply, offsets);
    }

    fn apply_txn_offsets(&mut self, now_ms: i64, id: &str, reply: Option<RequestCtx>, offsets: Vec<TxnOffset>) {
        let mut by_group: BTreeMap<String, Vec<GroupOffset>> = BTreeMap::new();
        for o in offsets {
            let committed =
                Committed { offset: o.offset, leader_epoch: o.leader_epoch, metadata: o.metadata, commit_ms: now_ms };
            by_group.entry(o.group).or_default().push(((o.topic, o.partition), committed));
        }
        let mut last: Option<PersistId> = None;
        for (group, offsets) in by_group {
            match self.groups.commit_transactional(&group, offsets, now_ms) {
                Ok(persist) => last = Some(persist),
                Err(e) => tracing::error!(group, "could not write a transaction's offsets: {e:?}"),
            }
        }
        match last {
            // Persists of the offsets log complete in order: the last one covers the others.
            Some(persist) => {
                self.txn_offset_persists.insert(persist, (id.to_string(), reply));
                self.pump_groups(now_ms);
            }
            None => self.end_transaction(id, reply),
        }
    }

    /// Called once the groups have loaded, and when an offsets write is durable.
    pub(crate) fn on_txn_offsets(&mut self, now_ms: i64, persist: Option<(PersistId, bool)>) {
        if let Some((persist, ok)) = persist {
            if let Some((id, reply)) = self.txn_offset_persists.remove(&persist) {
                if ok {
                    self.end_transaction(&id, reply);
                } else if let Some(ctx) = reply {
                    // The decision stays durable; a restart writes the offsets again.
                    self.respond_end_txn(ctx, ResponseError::CoordinatorNotAvailable.code());
                }
            }
        }
        if !self.groups.is_loading() {
            for (id, reply) in std::mem::take(&mut self.txn_offsets_after_load) {
                let offsets = self.txns.by_id[&id].offsets.values().cloned().collect();
                self.apply_txn_offsets(now_ms, &id, reply, offsets);
            }
        }
    }

    fn end_transaction(&mut self, id: &str, reply: Option<RequestCtx>) {
        if let Some(meta) = self.txns.ended(id) {
            self.queue_meta_silent(MetaChange::SetTransaction { id: id.to_string(), meta });
        }
        if let Some(ctx) = reply {
            self.respond_end_txn(ctx, 0);
        }
    }

    /// Produce of a transactional batch: its transaction must be open and hold the partition.
    pub(crate) fn check_transactional_produce(
        &self,
        transactional_id: Option<&str>,
        topic: &str,
        partition: i32,
        records: Option<&bytes::Bytes>,
    ) -> Result<(), (ResponseError, String)> {
        let Some(first) = records.and_then(|r| Batch::parse(r).ok()) else {
            return Ok(()); // the append refuses it with the precise reason
        };
        match (transactional_id, first.is_transactional()) {
            (None, false) => Ok(()),
            (None, true) => {
                Err((ResponseError::InvalidTxnState, "a transactional batch needs a transactional id".into()))
            }
            (Some(_), false) => {
                Err((ResponseError::InvalidTxnState, "a transactional producer sent a non-transactional batch".into()))
            }
            (Some(id), true) => self
                .txns
                .admits(id, first.producer_id(), first.producer_epoch(), topic, partition)
                .map_err(|e| (e, format!("partition {topic}-{partition} is not in an open transaction of {id}"))),
        }
    }

    /// At start: finishes commits that were decided before a restart, and aborts every other
    /// transaction left open in a partition, fencing its producer (the partitions of an open
    /// transaction are not durable, so it cannot go on).
    pub(crate) fn recover_transactions(&mut self, now_ms: i64) {
        let committing: Vec<(String, crate::meta::TxnCommit)> = self
            .durable_meta
            .transactions
            .iter()
            .filter_map(|(id, m)| m.commit.clone().map(|c| (id.clone(), c)))
            .collect();
        for (id, record) in committing {
            let producer_id = self.txns.by_id[&id].producer_id;
            // With one epoch for many transactions (transactions v1), a decision whose clearing
            // was lost would otherwise commit the next transaction: a transaction of the
            // producer open anywhere the decision does not name shows the decision is done.
            let stale = self.topics.values().flat_map(|t| t.partitions.iter()).any(|log| {
                log.producers.get(producer_id).and_then(|e| e.txn_first_offset).is_some_and(|open| {
                    !record.first_offsets.iter().any(|(topic, partition, first)| {
                        **topic == *log.tp.topic && *partition == log.tp.partition && *first == open
                    })
                })
            });
            if stale {
                tracing::warn!(transactional_id = %id, "a commit decision outlived its transaction; dropping it");
                let meta = self.txns.by_id[&id].meta(None);
                self.queue_meta_silent(MetaChange::SetTransaction { id: id.clone(), meta });
                continue;
            }
            let txn = self.txns.by_id.get_mut(&id).expect("loaded from the same metadata");
            txn.phase = Phase::Ending { commit: true };
            txn.partitions = record.partitions.into_iter().collect();
            txn.offsets =
                record.offsets.into_iter().map(|o| ((o.group.clone(), o.topic.clone(), o.partition), o)).collect();
            tracing::info!(transactional_id = %id, "finishing a commit interrupted by a restart");
            self.write_markers(now_ms, &id, None);
        }
        let mut open: BTreeMap<i64, (i16, Vec<(String, i32)>)> = BTreeMap::new();
        for topic in self.topics.values() {
            for log in &topic.partitions {
                for (producer_id, epoch) in log.producers.open_transactions() {
                    let entry = open.entry(producer_id).or_insert((epoch, Vec::new()));
                    entry.0 = entry.0.max(epoch);
                    entry.1.push((log.tp.topic.to_string(), log.tp.partition));
                }
            }
        }
        for (producer_id, (epoch, partitions)) in open {
            match self.txns.by_producer(producer_id).map(str::to_string) {
                Some(id) if self.txns.by_id[&id].phase == Phase::Empty => {
                    let txn = self.txns.by_id.get_mut(&id).expect("found");
                    txn.phase = Phase::Ongoing;
                    txn.partitions = partitions.into_iter().collect();
                    self.abort_fencing(now_ms, &id);
                }
                Some(_) => {} // being committed above
                None => {
                    // No transactional id knows this producer any more: abort with its epoch.
                    let marker = batch::transaction_marker(producer_id, epoch, false, now_ms);
                    for (topic, partition) in partitions {
                        self.append_marker(now_ms, &TopicPartition::new(&topic, partition), producer_id, &marker);
                    }
                }
            }
        }
    }
}

/// What writing one transaction marker into one partition came to.
enum MarkerWrite {
    /// No transaction of the producer is open there (or the marker is already durable).
    NotNeeded,
    /// Appended; the transaction ends once the high watermark passes `at`.
    Durable { at: i64 },
    /// The partition is offline: the marker cannot be written in this incarnation.
    Offline,
}
