//! The broker's invariants, asserted after every input when debug assertions are on (the
//! simulator and the test suite build with them; production builds skip the walk).

use std::collections::BTreeSet;

use super::Broker;
use crate::ops::Purpose;

impl Broker {
    /// Asserts every invariant of the broker and its parts. A failure is a programmer error.
    pub fn check_invariants(&self) {
        for topic in self.topics.values() {
            for p in &topic.partitions {
                p.check_invariants();
            }
        }
        self.check_connections();
        self.check_produce_waits();
        self.check_operations();
        self.check_high_watermark_waits();
        assert!(!self.shutdown_reported || self.shutting_down, "shutdown reported without a shutdown");
        assert!(self.forwards.len() <= super::cluster::MAX_FORWARDS + 1, "forwards past their bound");
        let asking = self.forwards.values().filter(|f| matches!(f, super::cluster::Forwarded::ProducerIds)).count();
        assert_eq!(
            asking,
            usize::from(!self.producer_id_waiters.is_empty()),
            "producer id waiters without one request for a block, or the other way round"
        );
    }

    /// Runs `check_invariants` in builds with debug assertions (after every input).
    pub(crate) fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    fn check_connections(&self) {
        for (conn, c) in &self.conns {
            assert!(!self.closed_conns.contains(conn), "conn {conn} is both open and closed");
            assert!(c.next_to_send <= c.next_seq, "conn {conn} sent past what it received");
            assert!(
                c.ready.keys().all(|&seq| c.next_to_send < seq && seq < c.next_seq),
                "conn {conn}: a finished response is outside the unanswered window"
            );
        }
    }

    /// Every operation in flight belongs to something still waiting for it, and the other way
    /// round: one fsync per partition, one metadata write, one write per checkpoint.
    fn check_operations(&self) {
        let mut syncing = BTreeSet::new();
        for (id, purpose) in self.ops.in_flight_operations() {
            match purpose {
                Purpose::PartitionSync(tp) => {
                    assert!(syncing.insert(tp.clone()), "{tp}: two fsyncs in flight");
                }
                Purpose::Meta => {
                    assert_eq!(self.meta_in_flight.as_ref().map(|w| w.id), Some(*id), "a stray metadata write");
                }
                Purpose::LogStartCheckpoint => assert!(self.log_starts.in_flight(), "a stray log-start write"),
                Purpose::LeaderEpochCheckpoint => assert!(self.leader_epochs.in_flight(), "a stray leader-epoch write"),
                Purpose::RecoveryPointCheckpoint => {
                    assert!(self.recovery_points.write_in_flight(), "a stray recovery-point write")
                }
                Purpose::GroupLoadRead => assert!(self.group_load.is_some(), "a stray group-load read"),
                Purpose::FetchRead { fetch, .. } => {
                    assert!(self.fetches.contains_key(fetch), "a read for fetch {fetch}, which is gone")
                }
                Purpose::TimeSearchRead { request, .. } => {
                    assert!(self.time_searches.contains_key(request), "a read for time search {request}, which is gone")
                }
                Purpose::PartitionWrite(_) => {}
            }
        }
        for topic in self.topics.values() {
            for p in &topic.partitions {
                if let Some(id) = p.sync_in_flight() {
                    assert_eq!(
                        self.ops.purpose(id),
                        Some(&Purpose::PartitionSync(p.tp.clone())),
                        "{}: its fsync is not in flight",
                        p.tp
                    );
                }
            }
        }
        if let Some(write) = &self.meta_in_flight {
            assert_eq!(self.ops.purpose(write.id), Some(&Purpose::Meta), "the metadata write is not in flight");
        }
    }

    /// What waits for a high watermark waits only while the high watermark is below it: each
    /// move of the high watermark releases what it covers at once.
    fn check_high_watermark_waits(&self) {
        for (tp, offset, txn) in &self.marker_waits {
            if let Some(p) = self.partition(tp).filter(|p| p.failed.is_none()) {
                assert!(*offset >= p.high_watermark(), "{tp}: marker of {txn} at {offset} is durable yet waits");
            }
        }
        if let Some(p) = self.partition(&super::groups::offsets_tp()).filter(|p| p.failed.is_none()) {
            for (offset, _) in &self.group_persists {
                assert!(*offset >= p.high_watermark(), "group records at {offset} are durable yet wait");
            }
        }
    }
}
