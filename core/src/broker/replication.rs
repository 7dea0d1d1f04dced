//! Partition replication, as Kafka's ISR replication: a follower copies its leader's log with
//! Fetch requests sent as a replica (KIP-903's ReplicaState, LastFetchedEpoch), and a leader
//! moves the high watermark to the least durable end over its in-sync replicas.
//!
//! Stricter than Kafka: a follower fetches only from its durable end (it asks again once what
//! it copied is fsynced), so the offset a leader counts for it is on its disk; the high
//! watermark does not move while the ISR is smaller than `min.insync.replicas` (KIP-966's strict
//! mode). A follower whose log diverged (a tail its leader does not hold) cuts it back where the
//! leader's answer says (DivergingEpoch, KIP-279), never below its high watermark.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::cluster::{Forwarded, MAX_FORWARDS};
use super::{admin, Broker};
use crate::ops::Peer;
use crate::storage::TopicPartition;

/// How long a follower's fetch waits at the leader for new data.
const FETCH_WAIT_MS: i32 = 500;
const FETCH_MAX_BYTES: i32 = 8 << 20;
const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
/// After a failed fetch, or an answer that needs the metadata to change first, a follower asks
/// that leader again after this long.
const FETCH_BACKOFF_MS: i64 = 100;
/// The Fetch version followers send: ReplicaState with the broker epoch (v15), topic ids.
pub(crate) const REPLICA_FETCH_VERSION: i16 = 15;

/// What this broker knows as a leader of its followers, and as a follower of its leaders.
#[derive(Debug, Default)]
pub(crate) struct Replication {
    /// Per partition led here, each follower's durable end as its last fetch in this
    /// leadership showed it. A follower not heard from yet holds the high watermark back.
    followers: BTreeMap<TopicPartition, BTreeMap<i32, i64>>,
    /// Per partition followed here, the leader's high watermark as last heard.
    leader_hw: BTreeMap<TopicPartition, i64>,
    /// Leaders a fetch is in flight to.
    fetching: BTreeSet<i32>,
    /// Leaders not to ask again before this time.
    backoff_until: BTreeMap<i32, i64>,
}

impl Replication {
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.backoff_until.values().copied().min()
    }

    /// A leadership began or ended here: what was known of the followers is void.
    pub(crate) fn forget_followers(&mut self, tp: &TopicPartition) {
        self.followers.remove(tp);
    }

    /// Forgets partitions that are gone (their topic deleted).
    pub(crate) fn retain_partitions(&mut self, keep: impl Fn(&TopicPartition) -> bool) {
        self.followers.retain(|tp, _| keep(tp));
        self.leader_hw.retain(|tp, _| keep(tp));
    }
}

/// One partition in a follower's fetch, as the answer is matched back.
struct Followed {
    tp: TopicPartition,
    topic_id: Uuid,
    leader: i32,
    leader_epoch: i32,
}

impl Broker {
    /// Partitions with a replica here whose leader (per the image) is another broker, and
    /// whose local log follows it.
    fn followed_partitions(&self) -> Vec<Followed> {
        let me = self.config.node_id;
        let Some(topics) = self.view_topics() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, view) in topics {
            let Some(local) = self.topics.get(name.as_str()).filter(|t| t.id == view.id) else {
                continue;
            };
            for (i, (log, p)) in local.partitions.iter().zip(&view.partitions).enumerate() {
                if p.leader >= 0 && p.leader != me && p.replicas.contains(&me) && !log.is_leading() {
                    out.push(Followed {
                        tp: TopicPartition::new(name, i as i32),
                        topic_id: view.id,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                    });
                }
            }
        }
        out
    }

    /// Sends a fetch to every leader that has none in flight, for its partitions whose copied
    /// data is all durable here (the fetch offset is the durable end).
    pub(crate) fn pump_replica_fetches(&mut self, now_ms: i64) {
        if self.shutting_down {
            return;
        }
        let Some(broker_epoch) = self.cluster_view.as_ref().and_then(|v| v.broker_epoch) else {
            return;
        };
        self.replication.backoff_until.retain(|_, until| *until > now_ms);
        let mut by_leader: BTreeMap<i32, Vec<Followed>> = BTreeMap::new();
        for f in self.followed_partitions() {
            by_leader.entry(f.leader).or_default().push(f);
        }
        for (leader, partitions) in by_leader {
            if self.replication.fetching.contains(&leader)
                || self.replication.backoff_until.contains_key(&leader)
                || self.forwards.len() >= MAX_FORWARDS
            {
                continue;
            }
            let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
            for f in &partitions {
                let Some(log) = self.partition(&f.tp) else { continue };
                if log.failed.is_some() || log.durable_end() != log.log_end_offset() {
                    continue;
                }
                topics.entry(f.topic_id).or_default().push(
                    FetchPartition::default()
                        .with_partition(f.tp.partition)
                        .with_current_leader_epoch(f.leader_epoch)
                        .with_fetch_offset(log.durable_end())
                        .with_last_fetched_epoch(log.last_epoch())
                        .with_log_start_offset(log.log_start_offset)
                        .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES),
                );
            }
            if topics.is_empty() {
                continue;
            }
            let me = self.config.node_id;
            let request = FetchRequest::default()
                .with_replica_state(
                    ReplicaState::default().with_replica_id(BrokerId(me)).with_replica_epoch(broker_epoch),
                )
                .with_max_wait_ms(FETCH_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_isolation_level(0)
                .with_session_epoch(-1)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(id, partitions)| FetchTopic::default().with_topic_id(id).with_partitions(partitions))
                        .collect(),
                );
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Fetch as i16)
                .with_request_api_version(REPLICA_FETCH_VERSION)
                .with_correlation_id(0)
                .with_client_id(Some(StrBytes::from_string(format!("spool-replica-{me}"))));
            let frame =
                crate::codec::encode_request(&header, &RequestKind::Fetch(request)).expect("our own requests encode");
            self.replication.fetching.insert(leader);
            self.send_to(Peer::Broker(leader), frame, Forwarded::ReplicaFetch { leader });
        }
    }

    /// A leader answered a follower's fetch (or could not be asked).
    pub(crate) fn on_replica_fetch_answer(&mut self, now_ms: i64, leader: i32, answer: Result<Bytes, String>) {
        let removed = self.replication.fetching.remove(&leader);
        assert!(removed, "an answer from leader {leader} with no fetch in flight");
        let response = answer.and_then(|frame| {
            match crate::codec::decode_response(ApiKey::Fetch, REPLICA_FETCH_VERSION, frame)? {
                (_, ResponseKind::Fetch(r)) if r.error_code == 0 => Ok(r),
                (_, ResponseKind::Fetch(r)) => Err(format!("error {}", r.error_code)),
                _ => Err("not a Fetch answer".to_string()),
            }
        });
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, "replica fetch failed: {e}");
                self.replication.backoff_until.insert(leader, now_ms + FETCH_BACKOFF_MS);
                return;
            }
        };
        let followed: BTreeMap<(Uuid, i32), Followed> =
            self.followed_partitions().into_iter().map(|f| ((f.topic_id, f.tp.partition), f)).collect();
        let mut wait_for_metadata = false;
        for topic in response.responses {
            for p in topic.partitions {
                // The image may have moved on while the fetch was out: only what still follows
                // this leader takes the answer.
                let Some(f) = followed.get(&(topic.topic_id, p.partition_index)).filter(|f| f.leader == leader) else {
                    continue;
                };
                match ResponseError::try_from_code(p.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        tracing::warn!(partition = %f.tp, leader, "the leader no longer holds this replica's offset");
                        wait_for_metadata = true;
                        continue;
                    }
                    Some(error) => {
                        tracing::debug!(partition = %f.tp, leader, ?error, "replica fetch refused");
                        wait_for_metadata = true;
                        continue;
                    }
                }
                if p.diverging_epoch.epoch >= 0 {
                    if !self.cut_diverged_log(&f.tp, p.diverging_epoch.epoch, p.diverging_epoch.end_offset) {
                        wait_for_metadata = true;
                    }
                    continue;
                }
                self.replication.leader_hw.insert(f.tp.clone(), p.high_watermark);
                if let Some(records) = p.records.filter(|r| !r.is_empty()) {
                    let durability = self.config.durability;
                    let log =
                        self.topics.get_mut(&f.tp.topic).and_then(|t| t.partitions.get_mut(f.tp.partition as usize));
                    let Some(log) = log else { continue };
                    if let Err(e) = log.append_replicated(&records, now_ms, durability, &mut self.ops) {
                        tracing::warn!(partition = %f.tp, leader, "copied batches not appended: {e:?}");
                        wait_for_metadata = true;
                    }
                }
                if self.advance_high_watermark(&f.tp) {
                    self.on_high_watermark(now_ms, &f.tp);
                }
            }
        }
        if wait_for_metadata {
            self.replication.backoff_until.insert(leader, now_ms + FETCH_BACKOFF_MS);
        }
        self.pump_replica_fetches(now_ms);
    }

    /// The leader says this replica's log diverged after `epoch`, which ends at `end_offset` in
    /// the leader's log: the log is cut to where the two agree (KIP-279), never below the high
    /// watermark.
    /// Returns whether it was cut.
    fn cut_diverged_log(&mut self, tp: &TopicPartition, epoch: i32, end_offset: i64) -> bool {
        let log = self.topics.get_mut(&tp.topic).and_then(|t| t.partitions.get_mut(tp.partition as usize));
        let Some(log) = log else { return false };
        let (_, own_end) = log.leader_epochs().end_offset_for(epoch, log.log_end_offset());
        let agreed = end_offset.min(own_end).min(log.log_end_offset());
        if agreed < log.high_watermark() {
            tracing::error!(
                partition = %tp, agreed, high_watermark = log.high_watermark(),
                "the leader's log diverges below this replica's high watermark; not cutting committed records"
            );
            return false;
        }
        let cut = log.batch_end_at_or_below(agreed.max(log.high_watermark())).max(log.high_watermark());
        tracing::info!(partition = %tp, epoch, end_offset, cut, "log diverged from the leader's; cutting it back");
        log.truncate_to(cut, &mut self.ops);
        self.mark_leader_epochs_dirty();
        true
    }

    /// Where the high watermark of a partition may move now: on a single node (and for the
    /// node's own internal topics) its durable end; a leader's, the least durable end over the
    /// in-sync replicas, unless they are fewer than `min.insync.replicas`; a follower's, its
    /// leader's as last heard, within its own durable end.
    pub(crate) fn high_watermark_target(&self, tp: &TopicPartition) -> Option<i64> {
        let log = self.partition(tp)?;
        let view = self
            .view_topics()
            .filter(|_| !admin::is_internal_topic(&tp.topic))
            .and_then(|t| t.get(&*tp.topic))
            .filter(|t| self.topics.get(&*tp.topic).is_some_and(|local| local.id == t.id))
            .and_then(|t| usize::try_from(tp.partition).ok().and_then(|i| t.partitions.get(i)));
        let Some(view) = view else {
            return Some(log.durable_end());
        };
        if !log.is_leading() {
            let heard = self.replication.leader_hw.get(tp).copied().unwrap_or(log.high_watermark());
            return Some(heard.min(log.durable_end()));
        }
        if view.leader != self.config.node_id || (view.isr.len() as i64) < log.config.min_insync_replicas {
            return None;
        }
        let followers = self.replication.followers.get(tp);
        let mut target = log.durable_end();
        for replica in view.isr.iter().filter(|&&r| r != self.config.node_id) {
            let durable = followers.and_then(|f| f.get(replica)).copied().unwrap_or(log.high_watermark());
            target = target.min(durable);
        }
        Some(target)
    }

    /// A follower's fetch reached this leader: `fetch_offset` is on its disk. Returns whether
    /// the high watermark moved.
    pub(crate) fn record_follower_fetch(&mut self, tp: &TopicPartition, replica: i32, fetch_offset: i64) -> bool {
        let entry = self.replication.followers.entry(tp.clone()).or_default();
        let known = entry.entry(replica).or_insert(fetch_offset);
        *known = fetch_offset;
        self.advance_high_watermark(tp)
    }
}
