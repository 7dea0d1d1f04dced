//! The recovery-point checkpoint: per partition, the base of the first segment a restart after a
//! crash must read; the segments below it are sealed and fsynced, so recovery trusts them as a
//! clean shutdown would. Written every `recovery_point_interval_ms` when it changed, so recovery
//! reads what was written since, not the whole log.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Broker;
use crate::ops::Purpose;
use crate::storage::{MetaFile, StorageError, TopicPartition};

#[derive(Debug)]
pub(crate) struct RecoveryPoints {
    /// What the file holds, as far as this process knows.
    written: BTreeMap<String, i64>,
    in_flight: Option<BTreeMap<String, i64>>,
    next_due_ms: i64,
}

impl RecoveryPoints {
    pub(crate) fn new(first_due_ms: i64) -> Self {
        RecoveryPoints { written: BTreeMap::new(), in_flight: None, next_due_ms: first_due_ms }
    }

    pub(crate) fn next_due_ms(&self) -> i64 {
        self.next_due_ms
    }

    pub(crate) fn write_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }
}

/// A partition's entry: named with its topic's id, so a deleted and recreated topic of the same
/// name never inherits the old one's point.
pub fn recovery_point_key(tp: &TopicPartition, topic_id: &str) -> String {
    format!("{}@{topic_id}", tp.dir_name())
}

/// An unreadable file trusts nothing: recovery then reads every segment.
pub fn decode_recovery_points(bytes: &[u8]) -> BTreeMap<String, i64> {
    serde_json::from_slice(bytes).unwrap_or_default()
}

impl Broker {
    pub(crate) fn maybe_write_recovery_points(&mut self, now_ms: i64) {
        let due = now_ms >= self.recovery_points.next_due_ms;
        if !due || self.recovery_points.in_flight.is_some() || self.shutting_down {
            return;
        }
        self.recovery_points.next_due_ms = now_ms + self.config.recovery_point_interval_ms;
        // Recovery reads the batches above a recovery point, and rebuilds from them the epochs a
        // lost leader-epoch checkpoint would miss: no point may pass epochs not yet on disk.
        if !self.leader_epochs.settled() {
            return;
        }
        let mut points = BTreeMap::new();
        for topic in self.topics.values() {
            let id = topic.id.to_string();
            // An offline partition's entry is left out: recovery then reads all of it.
            for p in topic.partitions.iter().filter(|p| p.failed.is_none() && p.recovery_point() > 0) {
                points.insert(recovery_point_key(&p.tp, &id), p.recovery_point());
            }
        }
        if points == self.recovery_points.written {
            return;
        }
        let data = serde_json::to_vec(&points).expect("recovery points serialize");
        self.ops.write_meta(Purpose::RecoveryPointCheckpoint, MetaFile::RecoveryPoints, Bytes::from(data));
        self.recovery_points.in_flight = Some(points);
    }

    pub(crate) fn on_recovery_points_written(&mut self, result: Result<(), StorageError>) {
        let points = self.recovery_points.in_flight.take().expect("a recovery-point write was in flight");
        match result {
            Ok(()) => self.recovery_points.written = points,
            // The previous file stays in place (replaced atomically), older but still true.
            Err(e) => tracing::error!("recovery-point checkpoint failed: {e}; trying again at the next interval"),
        }
    }
}
