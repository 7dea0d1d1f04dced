//! The per-partition checkpoint files the broker writes in the background: log start offsets and
//! leader epochs. Each has at most one write in flight; a change made meanwhile rides the next
//! write, and a failed write (a full disk) is tried again after a backoff.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{retry_backoff_ms, Broker};
use crate::leader_epochs::LeaderEpochs;
use crate::ops::{Ops, Purpose};
use crate::storage::{MetaFile, StorageError};

pub(crate) struct CheckpointFile {
    file: MetaFile,
    purpose: Purpose,
    /// What a checkpoint lost at shutdown costs, for the log.
    lost_means: &'static str,
    dirty: bool,
    in_flight: bool,
    retry_at_ms: Option<i64>,
    /// Failed writes in a row: retries back off, and only powers of two of them are logged.
    failures: u32,
}

impl CheckpointFile {
    pub(crate) fn new(file: MetaFile, purpose: Purpose, lost_means: &'static str) -> Self {
        CheckpointFile { file, purpose, lost_means, dirty: false, in_flight: false, retry_at_ms: None, failures: 0 }
    }

    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    fn wants_write(&self) -> bool {
        self.dirty && !self.in_flight && self.retry_at_ms.is_none()
    }

    fn start(&mut self, ops: &mut Ops, data: Bytes) {
        assert!(self.wants_write());
        ops.write_meta(self.purpose.clone(), self.file, data);
        self.dirty = false;
        self.in_flight = true;
    }

    fn on_written(&mut self, now_ms: i64, result: Result<(), StorageError>, shutting_down: bool) {
        assert!(self.in_flight, "{:?} completed with no write in flight", self.file);
        self.in_flight = false;
        let name = self.file.file_name();
        match result {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "{name} written again");
                }
                self.failures = 0;
            }
            // Stopping: give up rather than hold the shutdown on a full disk.
            Err(e) if shutting_down => tracing::error!("{name} failed at shutdown: {e}; {}", self.lost_means),
            Err(e) => {
                self.failures += 1;
                let backoff_ms = retry_backoff_ms(self.failures);
                if self.failures.is_power_of_two() {
                    tracing::error!(failures = self.failures, "{name} failed: {e}; trying again in {backoff_ms} ms");
                }
                self.dirty = true;
                self.retry_at_ms = Some(now_ms + backoff_ms);
            }
        }
    }

    /// Whether a backed-off retry is due (at once when stopping).
    fn retry_due(&mut self, now_ms: i64, shutting_down: bool) -> bool {
        let due = self.retry_at_ms.is_some_and(|at| now_ms >= at || shutting_down);
        if due {
            self.retry_at_ms = None;
        }
        due
    }

    /// Nothing to write and nothing in flight: the file holds the latest state.
    pub(crate) fn settled(&self) -> bool {
        !self.dirty && !self.in_flight
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub(crate) fn retry_at_ms(&self) -> Option<i64> {
        self.retry_at_ms
    }

    /// At shutdown: one last try, now.
    fn retry_now(&mut self) {
        self.retry_at_ms = None;
    }
}

impl Broker {
    pub(crate) fn mark_log_starts_dirty(&mut self) {
        self.log_starts.mark_dirty();
        self.write_checkpoints();
    }

    pub(crate) fn mark_leader_epochs_dirty(&mut self) {
        self.leader_epochs.mark_dirty();
        self.write_checkpoints();
    }

    pub(crate) fn write_checkpoints(&mut self) {
        if self.log_starts.wants_write() {
            let mut starts: BTreeMap<String, i64> = BTreeMap::new();
            for p in self.topics.values().flat_map(|t| t.partitions.iter()) {
                if p.log_start_offset > 0 {
                    starts.insert(p.tp.dir_name(), p.log_start_offset);
                }
            }
            let data = serde_json::to_vec(&starts).expect("offsets serialize");
            self.log_starts.start(&mut self.ops, Bytes::from(data));
        }
        if self.leader_epochs.wants_write() {
            let mut epochs: BTreeMap<String, &LeaderEpochs> = BTreeMap::new();
            for topic in self.topics.values() {
                let id = topic.id.to_string();
                for p in &topic.partitions {
                    epochs.insert(super::recovery_point_key(&p.tp, &id), p.leader_epochs());
                }
            }
            let data = serde_json::to_vec(&epochs).expect("epochs serialize");
            self.leader_epochs.start(&mut self.ops, Bytes::from(data));
        }
    }

    pub(crate) fn on_checkpoint_written(&mut self, now_ms: i64, purpose: &Purpose, result: Result<(), StorageError>) {
        let shutting_down = self.shutting_down;
        match purpose {
            Purpose::LogStartCheckpoint => self.log_starts.on_written(now_ms, result, shutting_down),
            Purpose::LeaderEpochCheckpoint => self.leader_epochs.on_written(now_ms, result, shutting_down),
            other => unreachable!("not a checkpoint: {other:?}"),
        }
        self.write_checkpoints();
    }

    pub(crate) fn retry_checkpoints(&mut self, now_ms: i64) {
        let shutting_down = self.shutting_down;
        let log_starts = self.log_starts.retry_due(now_ms, shutting_down);
        if self.leader_epochs.retry_due(now_ms, shutting_down) || log_starts {
            self.write_checkpoints();
        }
    }

    /// At shutdown: write the log starts once more, and whatever waits on a retry.
    pub(crate) fn flush_checkpoints(&mut self) {
        self.log_starts.mark_dirty();
        self.log_starts.retry_now();
        self.leader_epochs.retry_now();
        self.write_checkpoints();
    }
}
