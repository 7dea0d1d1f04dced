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
use kafka_protocol::messages::{
    alter_partition_request, AlterPartitionRequest, ApiKey, BrokerId, FetchRequest, RequestHeader, RequestKind,
    ResponseKind,
};
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

/// A follower not caught up with its leader for this long leaves the ISR (Kafka's
/// `replica.lag.time.max.ms` was 10 s before 2.5).
pub(crate) const REPLICA_LAG_TIME_MAX_MS: i64 = 10_000;
/// After an ISR change that was not answered (the controller out of reach, or moving), the
/// leader proposes it again after this long.
const ISR_CHANGE_RETRY_MS: i64 = 500;

/// What a leader knows of one follower, from its fetches in this leadership.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FollowerState {
    /// The fetch offset of its last fetch: on its disk.
    pub durable_end: i64,
    /// The broker epoch it fetched with (KIP-903): an ISR change names it.
    pub broker_epoch: i64,
    /// When it last held everything the leader had (Kafka's lastCaughtUpTimeMs).
    pub last_caught_up_ms: i64,
    /// The leader's log end and the time at its last fetch: a fetch that reaches that end
    /// shows it was caught up then.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

/// An ISR change proposed to the controller and not yet in the view.
#[derive(Clone, Debug)]
pub(crate) struct PendingIsr {
    /// (broker, broker epoch) of the proposed ISR.
    pub proposed: Vec<(i32, i64)>,
    /// The partition epoch the change was proposed against: a view past it ends the wait.
    pub partition_epoch: i32,
    /// Not in flight: to be proposed again at this time.
    pub retry_at_ms: Option<i64>,
}

/// What this broker knows as a leader of its followers, and as a follower of its leaders.
#[derive(Debug, Default)]
pub(crate) struct Replication {
    /// Per partition led here, what each follower's fetches in this leadership showed. A
    /// follower not heard from yet holds the high watermark back.
    followers: BTreeMap<TopicPartition, BTreeMap<i32, FollowerState>>,
    /// Per partition led here, when the leadership began (followers not heard from since are
    /// out of date from then).
    led_since_ms: BTreeMap<TopicPartition, i64>,
    /// ISR changes proposed and not yet in the view (at most one per partition). Until then the
    /// high watermark counts the larger of the two ISRs (Kafka's maximal ISR).
    pending_isr: BTreeMap<TopicPartition, PendingIsr>,
    /// When the ISRs of the partitions led here are next checked for laggards.
    next_isr_check_ms: Option<i64>,
    /// Per partition followed here, the leader's high watermark as last heard.
    leader_hw: BTreeMap<TopicPartition, i64>,
    /// Leaders a fetch is in flight to.
    fetching: BTreeSet<i32>,
    /// Leaders not to ask again before this time.
    backoff_until: BTreeMap<i32, i64>,
}

impl Replication {
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let retries = self.pending_isr.values().filter_map(|p| p.retry_at_ms);
        self.backoff_until.values().copied().chain(retries).chain(self.next_isr_check_ms).min()
    }

    /// A leadership began (`Some(now)`) or ended here: what was known of the followers, and any
    /// ISR change proposed, is void.
    pub(crate) fn reset_leadership(&mut self, tp: &TopicPartition, led_since_ms: Option<i64>) {
        self.followers.remove(tp);
        self.pending_isr.remove(tp);
        match led_since_ms {
            Some(at) => {
                self.led_since_ms.insert(tp.clone(), at);
                self.next_isr_check_ms.get_or_insert(at + REPLICA_LAG_TIME_MAX_MS / 2);
            }
            None => {
                self.led_since_ms.remove(tp);
            }
        }
    }

    /// Forgets partitions that are gone (their topic deleted).
    pub(crate) fn retain_partitions(&mut self, keep: impl Fn(&TopicPartition) -> bool) {
        self.followers.retain(|tp, _| keep(tp));
        self.leader_hw.retain(|tp, _| keep(tp));
        self.led_since_ms.retain(|tp, _| keep(tp));
        self.pending_isr.retain(|tp, _| keep(tp));
    }

    /// The view shows partition `tp` at `partition_epoch`: a change proposed before it is
    /// decided, one way or the other.
    pub(crate) fn view_moved(&mut self, tp: &TopicPartition, partition_epoch: i32) {
        if self.pending_isr.get(tp).is_some_and(|p| partition_epoch > p.partition_epoch) {
            self.pending_isr.remove(tp);
        }
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
            // A recovered high watermark is first checked against the leader's, by a fetch sent
            // as a consumer's (which the leader counts for nothing): a replica's fetch would let
            // the leader take it into the ISR before the answer shows whether its log must be
            // copied afresh. Partitions that need it go first, alone.
            let unconfirmed = |log: &crate::partition::PartitionLog| log.high_watermark_unconfirmed();
            let probing = partitions.iter().any(|f| self.partition(&f.tp).is_some_and(unconfirmed));
            let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
            for f in &partitions {
                let Some(log) = self.partition(&f.tp) else { continue };
                // The offset a follower names is on its disk: it asks again once what it
                // copied is synced.
                let on_disk = log.durable_end();
                if log.failed.is_some() || on_disk != log.log_end_offset() || unconfirmed(log) != probing {
                    continue;
                }
                let (fetch_offset, last_fetched_epoch, max_bytes) = if probing {
                    (log.log_start_offset, -1, 1)
                } else {
                    (on_disk, log.last_epoch(), FETCH_PARTITION_MAX_BYTES)
                };
                topics.entry(f.topic_id).or_default().push(
                    FetchPartition::default()
                        .with_partition(f.tp.partition)
                        .with_current_leader_epoch(f.leader_epoch)
                        .with_fetch_offset(fetch_offset)
                        .with_last_fetched_epoch(last_fetched_epoch)
                        .with_log_start_offset(log.log_start_offset)
                        .with_partition_max_bytes(max_bytes),
                );
            }
            if topics.is_empty() {
                continue;
            }
            let me = self.config.node_id;
            let replica_state = if probing {
                ReplicaState::default().with_replica_id(BrokerId(-1)).with_replica_epoch(-1)
            } else {
                ReplicaState::default().with_replica_id(BrokerId(me)).with_replica_epoch(broker_epoch)
            };
            let request = FetchRequest::default()
                .with_replica_state(replica_state)
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
                if self.partition(&f.tp).is_some_and(|log| log.high_watermark_unconfirmed()) {
                    // The answer to a probe from the log start: only its high watermark counts.
                    self.replication.leader_hw.insert(f.tp.clone(), p.high_watermark);
                    self.settle_recovered_high_watermark(&f.tp, p.high_watermark);
                    continue;
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
            // Only a high watermark recovery set (to the durable end, after a crash) can be above
            // what the leader holds: what this log has past `agreed` was never committed, and
            // its producer state there is not known, so the leader's log is copied afresh.
            let recovered = log.high_watermark();
            if !log.empty_for_copy(&mut self.ops) {
                return false;
            }
            tracing::warn!(
                partition = %tp, agreed, high_watermark = recovered,
                "the leader's log diverges below this replica's recovered high watermark; copying it again"
            );
            self.mark_leader_epochs_dirty();
            return true;
        }
        let cut = log.batch_end_at_or_below(agreed.max(log.high_watermark())).max(log.high_watermark());
        tracing::info!(partition = %tp, epoch, end_offset, cut, "log diverged from the leader's; cutting it back");
        log.truncate_to(cut, &mut self.ops);
        self.mark_leader_epochs_dirty();
        true
    }

    /// A restarted follower's high watermark is recovery's (its durable end), which may cover a
    /// tail no leader committed: once the leader's reaches it, it is confirmed; while the
    /// leader's is below it, the log is copied afresh (before the follower can join the ISR,
    /// which it left by restarting), since a later leader might hold less there and the log
    /// cannot be cut below its high watermark.
    fn settle_recovered_high_watermark(&mut self, tp: &TopicPartition, leader_high_watermark: i64) {
        let Some(log) = self.topics.get_mut(&tp.topic).and_then(|t| t.partitions.get_mut(tp.partition as usize)) else {
            return;
        };
        if !log.high_watermark_unconfirmed() {
            return;
        }
        if leader_high_watermark >= log.high_watermark() {
            log.confirm_high_watermark();
            return;
        }
        let recovered = log.high_watermark();
        if !log.empty_for_copy(&mut self.ops) {
            return;
        }
        tracing::warn!(
            partition = %tp, recovered, leader_high_watermark,
            "this replica's recovered high watermark is past its leader's; copying the log again"
        );
        self.mark_leader_epochs_dirty();
    }

    /// The replicas a leader counts for the high watermark of `tp`: the view's ISR and any ISR
    /// change it proposed and has not seen committed (Kafka's maximal ISR). None where this node
    /// does not lead `tp`.
    pub fn maximal_isr(&self, tp: &TopicPartition) -> Option<BTreeSet<i32>> {
        let view = self.view_partition(tp).filter(|_| !admin::is_internal_topic(&tp.topic))?;
        if view.leader != self.config.node_id || !self.partition(tp)?.is_leading() {
            return None;
        }
        let proposed = self.replication.pending_isr.get(tp).map(|p| p.proposed.iter().map(|(id, _)| *id));
        Some(view.isr.iter().copied().chain(proposed.into_iter().flatten()).collect())
    }

    /// Where the high watermark of a partition may move now: on a single node (and for the
    /// node's own internal topics) its durable end; a leader's, the least durable end over the
    /// in-sync replicas, unless they are fewer than `min.insync.replicas`; a follower's, its
    /// leader's as last heard, within its own durable end. In a cluster, a partition the view
    /// does not show yet (a restarted broker catching up with the image) holds still: its
    /// durable end may be a tail no leader acknowledged.
    pub(crate) fn high_watermark_target(&self, tp: &TopicPartition) -> Option<i64> {
        let log = self.partition(tp)?;
        if !self.in_cluster() || admin::is_internal_topic(&tp.topic) {
            return Some(log.durable_end());
        }
        let view = self.view_partition(tp)?;
        if !log.is_leading() {
            let heard = self.replication.leader_hw.get(tp).copied().unwrap_or(log.high_watermark());
            return Some(heard.min(log.durable_end()));
        }
        if view.leader != self.config.node_id || (view.isr.len() as i64) < log.config.min_insync_replicas {
            return None;
        }
        let followers = self.replication.followers.get(tp);
        let maximal = self.maximal_isr(tp)?;
        let mut target = log.durable_end();
        for replica in maximal.iter().filter(|&&r| r != self.config.node_id) {
            let durable = followers.and_then(|f| f.get(replica)).map_or(log.high_watermark(), |f| f.durable_end);
            target = target.min(durable);
        }
        Some(target)
    }

    /// A follower's fetch reached this leader: `fetch_offset` is on its disk. Returns whether
    /// the high watermark moved.
    pub(crate) fn record_follower_fetch(
        &mut self,
        now_ms: i64,
        tp: &TopicPartition,
        replica: (i32, i64),
        fetch_offset: i64,
    ) -> bool {
        let Some(log_end) = self.partition(tp).map(|l| l.log_end_offset()) else { return false };
        let (id, broker_epoch) = replica;
        let since = self.replication.led_since_ms.get(tp).copied().unwrap_or(now_ms);
        let state = self.replication.followers.entry(tp.clone()).or_default().entry(id).or_insert(FollowerState {
            durable_end: fetch_offset,
            broker_epoch,
            last_caught_up_ms: since,
            last_fetch_leader_end: i64::MAX,
            last_fetch_ms: now_ms,
        });
        if fetch_offset >= log_end {
            state.last_caught_up_ms = now_ms;
        } else if fetch_offset >= state.last_fetch_leader_end {
            state.last_caught_up_ms = state.last_caught_up_ms.max(state.last_fetch_ms);
        }
        state.durable_end = fetch_offset;
        state.broker_epoch = broker_epoch;
        state.last_fetch_leader_end = log_end;
        state.last_fetch_ms = now_ms;
        let moved = self.advance_high_watermark(tp);
        self.maybe_change_isr(now_ms, tp);
        moved
    }

    /// Proposes the ISR a partition led here should have (KIP-497): followers that caught up
    /// with the high watermark and this leadership's first offset join (Kafka's rule: else one
    /// could lead without records committed before it joined); members not caught up for
    /// `REPLICA_LAG_TIME_MAX_MS` leave. One change in flight per partition.
    fn maybe_change_isr(&mut self, now_ms: i64, tp: &TopicPartition) {
        if self.replication.pending_isr.contains_key(tp) || self.shutting_down {
            return;
        }
        let me = self.config.node_id;
        let Some(view) = self.view_partition(tp).filter(|p| p.leader == me) else { return };
        let Some(log) = self.partition(tp).filter(|l| l.is_leading() && l.failed.is_none()) else { return };
        let epoch_start = log.leader_epochs().latest().map_or(0, |e| e.start_offset);
        let (hw, usable) = (log.high_watermark(), self.cluster_view.as_ref().map(|v| v.brokers.clone()));
        let usable = |id: i32| usable.as_ref().is_some_and(|b| b.iter().any(|(b, _, _)| *b == id));
        let followers = self.replication.followers.get(tp);
        let since = self.replication.led_since_ms.get(tp).copied().unwrap_or(now_ms);
        let state = |id: i32| followers.and_then(|f| f.get(&id)).copied();
        let mut proposed: Vec<(i32, i64)> = Vec::new();
        for &id in &view.replicas {
            let epoch = state(id).map_or(-1, |s| s.broker_epoch);
            let keep = if id == me {
                true
            } else if view.isr.contains(&id) {
                let caught_up = state(id).map_or(since, |s| s.last_caught_up_ms);
                now_ms - caught_up <= REPLICA_LAG_TIME_MAX_MS
            } else {
                state(id).is_some_and(|s| s.durable_end >= hw && s.durable_end >= epoch_start) && usable(id)
            };
            if keep {
                proposed.push((
                    id,
                    if id == me {
                        self.cluster_view.as_ref().and_then(|v| v.broker_epoch).unwrap_or(-1)
                    } else {
                        epoch
                    },
                ));
            }
        }
        let mut now_isr: Vec<i32> = view.isr.clone();
        now_isr.sort_unstable();
        let mut next: Vec<i32> = proposed.iter().map(|(id, _)| *id).collect();
        next.sort_unstable();
        if next == now_isr {
            return;
        }
        tracing::info!(partition = %tp, isr = ?now_isr, proposed = ?next, "proposing an ISR change");
        let pending = PendingIsr { proposed, partition_epoch: view.partition_epoch, retry_at_ms: None };
        self.replication.pending_isr.insert(tp.clone(), pending);
        self.send_isr_change(tp);
    }

    /// The view of `tp` if it is of the topic this node holds, not an older one of that name.
    fn view_partition(&self, tp: &TopicPartition) -> Option<&super::PartitionView> {
        let view = self.view_topics()?.get(&*tp.topic)?;
        if self.topics.get(&*tp.topic).is_none_or(|local| local.id != view.id) {
            return None;
        }
        view.partitions.get(usize::try_from(tp.partition).ok()?)
    }

    /// Sends the pending ISR change of `tp` to the controller.
    fn send_isr_change(&mut self, tp: &TopicPartition) {
        let (Some(pending), Some(view), Some(broker_epoch)) = (
            self.replication.pending_isr.get(tp).cloned(),
            self.view_partition(tp).cloned(),
            self.cluster_view.as_ref().and_then(|v| v.broker_epoch),
        ) else {
            return;
        };
        let Some(topic_id) = self.topics.get(&*tp.topic).map(|t| t.id) else { return };
        if self.forwards.len() >= MAX_FORWARDS {
            if let Some(p) = self.replication.pending_isr.get_mut(tp) {
                p.retry_at_ms = Some(0);
            }
            return;
        }
        let me = self.config.node_id;
        let partition = alter_partition_request::PartitionData::default()
            .with_partition_index(tp.partition)
            .with_leader_epoch(view.leader_epoch)
            .with_partition_epoch(pending.partition_epoch)
            .with_new_isr_with_epochs(
                pending
                    .proposed
                    .iter()
                    .map(|&(id, epoch)| {
                        alter_partition_request::BrokerState::default()
                            .with_broker_id(BrokerId(id))
                            .with_broker_epoch(epoch)
                    })
                    .collect(),
            );
        let request = AlterPartitionRequest::default()
            .with_broker_id(BrokerId(me))
            .with_broker_epoch(broker_epoch)
            .with_topics(vec![alter_partition_request::TopicData::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![partition])]);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::AlterPartition as i16)
            .with_request_api_version(3)
            .with_correlation_id(0)
            .with_client_id(Some(StrBytes::from_string(format!("spool-broker-{me}"))));
        let frame = crate::codec::encode_request(&header, &RequestKind::AlterPartition(request))
            .expect("our own requests encode");
        self.send_to(Peer::Controller, frame, Forwarded::IsrChange(tp.clone()));
    }

    /// The controller answered an ISR change. Taken: the view will show it. Refused for good
    /// (INELIGIBLE_REPLICA, OPERATION_NOT_ATTEMPTED, or this leadership is over): dropped, and
    /// proposed afresh when still due. Otherwise (no answer, the controller moving, a stale
    /// partition epoch): kept as the maximal ISR until the view moves, and sent again.
    pub(crate) fn on_isr_change_answer(&mut self, now_ms: i64, tp: &TopicPartition, answer: Result<Bytes, String>) {
        if !self.replication.pending_isr.contains_key(tp) {
            return;
        }
        let decoded = answer.and_then(|frame| match crate::codec::decode_response(ApiKey::AlterPartition, 3, frame)? {
            (_, ResponseKind::AlterPartition(r)) => Ok(r),
            _ => Err("not an AlterPartition answer".to_string()),
        });
        let error = match decoded {
            Err(e) => {
                tracing::debug!(partition = %tp, "ISR change not answered: {e}");
                Some(ResponseError::RequestTimedOut)
            }
            Ok(r) if r.error_code != 0 => ResponseError::try_from_code(r.error_code),
            Ok(r) => {
                let code = r.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition_index == tp.partition);
                code.and_then(|p| ResponseError::try_from_code(p.error_code))
            }
        };
        match error {
            None => {}
            Some(
                ResponseError::IneligibleReplica
                | ResponseError::OperationNotAttempted
                | ResponseError::FencedLeaderEpoch
                | ResponseError::InvalidRequest
                | ResponseError::UnknownTopicOrPartition,
            ) => {
                tracing::info!(partition = %tp, ?error, "ISR change refused");
                self.replication.pending_isr.remove(tp);
                if self.advance_high_watermark(tp) {
                    self.on_high_watermark(now_ms, tp);
                }
            }
            Some(error) => {
                tracing::debug!(partition = %tp, ?error, "ISR change to be sent again");
                if let Some(p) = self.replication.pending_isr.get_mut(tp) {
                    p.retry_at_ms = Some(now_ms + ISR_CHANGE_RETRY_MS);
                }
            }
        }
    }

    /// Time passed: ISR changes due again are sent, and every partition led here is checked
    /// for laggards every half of `REPLICA_LAG_TIME_MAX_MS`.
    pub(crate) fn tick_isr(&mut self, now_ms: i64) {
        let due: Vec<TopicPartition> = self
            .replication
            .pending_isr
            .iter()
            .filter(|(_, p)| p.retry_at_ms.is_some_and(|at| at <= now_ms))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            if let Some(p) = self.replication.pending_isr.get_mut(&tp) {
                p.retry_at_ms = None;
            }
            self.send_isr_change(&tp);
        }
        if self.replication.next_isr_check_ms.is_some_and(|at| at <= now_ms) {
            let led: Vec<TopicPartition> = self.replication.led_since_ms.keys().cloned().collect();
            self.replication.next_isr_check_ms = (!led.is_empty()).then_some(now_ms + REPLICA_LAG_TIME_MAX_MS / 2);
            for tp in led {
                self.maybe_change_isr(now_ms, &tp);
            }
        }
    }
}
