//! Start-up loading as logic over a read-only view of the data directory. The driver supplies
//! the view ([`DataDir`]: real files, or the simulator's disk), then applies the returned repairs.

use std::collections::BTreeMap;

use crate::batch::Batches;
use crate::broker::{decode_log_starts, decode_recovery_points, recovery_point_key};
use crate::index::SegmentIndex;
use crate::leader_epochs::LeaderEpochs;
use crate::meta::ClusterMeta;
use crate::producer_state::ProducerStates;
use crate::recovery::{recover_partition, SegmentOnDisk};
use crate::storage::{FileKind, MetaFile, SegmentFile, TopicPartition};
use crate::{LoadedPartition, LoadedState};

/// What the loader may ask of the data directory.
pub trait DataDir {
    fn read_meta(&mut self, file: MetaFile) -> Option<Vec<u8>>;
    /// Whether the clean-shutdown marker is present.
    fn clean_shutdown(&mut self) -> bool;
    /// Base offsets of the partition's files of one kind, in any order.
    fn list(&mut self, tp: &TopicPartition, kind: FileKind) -> Vec<i64>;
    fn size(&mut self, file: &SegmentFile) -> u64;
    /// Whole file contents; None if missing or unreadable.
    fn read(&mut self, file: &SegmentFile) -> Option<Vec<u8>>;
}

/// A change recovery needs made to the directory before the broker starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    Truncate(SegmentFile, u64),
    Delete(SegmentFile),
    /// Make the file durable: after a crash, what recovery kept may still sit only in the page
    /// cache (the process died, the machine did not), and it is served as durable from now on.
    Sync(SegmentFile),
    /// Remove the recovery-point checkpoint: recovery cut a log below its recovery point, so
    /// segments written there from now on would be trusted though never fsynced. The broker
    /// writes a new one at its next interval.
    ForgetRecoveryPoints,
}

pub fn load(
    dir: &mut dyn DataDir,
    node_id: i32,
    index_interval: u64,
    new_cluster_id: impl FnOnce() -> String,
) -> Result<(LoadedState, Vec<Repair>), String> {
    let stored = dir.read_meta(MetaFile::Cluster);
    let fresh = stored.is_none();
    let meta = match stored {
        Some(bytes) => {
            let meta = ClusterMeta::decode(&bytes)?;
            if meta.node_id != node_id {
                return Err(format!("the data directory belongs to node {}, not node {node_id}", meta.node_id));
            }
            meta
        }
        None => ClusterMeta::new(new_cluster_id(), node_id),
    };
    let clean = dir.clean_shutdown();
    let log_starts = dir.read_meta(MetaFile::LogStartOffsets).map(|b| decode_log_starts(&b)).unwrap_or_default();
    let recovery_points =
        dir.read_meta(MetaFile::RecoveryPoints).map(|b| decode_recovery_points(&b)).unwrap_or_default();
    let leader_epochs = dir.read_meta(MetaFile::LeaderEpochs).map(|b| decode_leader_epochs(&b)).unwrap_or_default();
    if fresh {
        tracing::info!(cluster = %meta.cluster_id, "a new data directory: starting empty");
    } else {
        tracing::info!(clean, topics = meta.topics.len(), "loading the data directory");
    }
    let mut partitions = BTreeMap::new();
    let mut repairs = Vec::new();
    for topic in &meta.topics {
        for p in 0..topic.partitions {
            let tp = TopicPartition::new(&topic.name, p);
            let log_start = log_starts.get(&tp.dir_name()).copied().unwrap_or(0);
            let key = recovery_point_key(&tp, &topic.id);
            let recovery_point = recovery_points.get(&key).copied().unwrap_or(0);
            let epochs = leader_epochs.get(&key).filter(|e| e.is_valid()).cloned();
            let found = Found { log_start, recovery_point, epochs };
            if let Some(loaded) = load_partition(dir, &tp, clean, index_interval, found, &mut repairs) {
                partitions.insert(tp, loaded);
            }
        }
    }
    Ok((LoadedState { meta, partitions }, repairs))
}

/// What the checkpoints say about a partition.
struct Found {
    log_start: i64,
    /// Segments below this base are sealed and were fsynced: a crash cannot have torn them.
    recovery_point: i64,
    /// The leader-epoch cache as last checkpointed; None: rebuild it from the batches.
    epochs: Option<LeaderEpochs>,
}

fn load_partition(
    dir: &mut dyn DataDir,
    tp: &TopicPartition,
    clean: bool,
    index_interval: u64,
    found: Found,
    repairs: &mut Vec<Repair>,
) -> Option<LoadedPartition> {
    let Found { log_start, recovery_point, epochs } = found;
    let mut bases = dir.list(tp, FileKind::Log);
    if bases.is_empty() {
        return None;
    }
    bases.sort_unstable();
    let file = |base, kind| SegmentFile::new(tp, base, kind);
    let mut segments = Vec::new();
    for &base in &bases {
        let log_size = dir.size(&file(base, FileKind::Log));
        let index = if log_size == 0 {
            Some(SegmentIndex::new())
        } else {
            let offsets = dir.read(&file(base, FileKind::OffsetIndex)).unwrap_or_default();
            let times = dir.read(&file(base, FileKind::TimeIndex)).unwrap_or_default();
            SegmentIndex::decode(&offsets, &times, log_size)
        };
        segments.push(SegmentOnDisk { base_offset: base, log_size, index });
    }
    // The newest readable producer snapshot recovery can replay forward from. After a crash only
    // snapshots up to the active segment's base are trusted: later ones describe lost data.
    let active_base = *bases.last().expect("not empty");
    let mut snapshots = dir.list(tp, FileKind::ProducerSnapshot);
    snapshots.sort_unstable();
    let mut trusted_up_to = if clean { i64::MAX } else { active_base };
    let trusted_below = if clean { i64::MAX } else { recovery_point };
    if !clean && recovery_point > 0 {
        tracing::info!(partition = %tp, recovery_point, "recovery: segments below the recovery point are trusted");
    }
    let mut recovery = loop {
        let snapshot = snapshots.iter().rev().filter(|&&at| at <= trusted_up_to).find_map(|&at| {
            ProducerStates::decode_snapshot(&dir.read(&file(at, FileKind::ProducerSnapshot))?).map(|s| (at, s))
        });
        let from = snapshot.as_ref().map(|s| s.0);
        let recovery = recover_partition(segments.clone(), trusted_below, index_interval, snapshot, &mut |base| {
            dir.read(&file(base, FileKind::Log)).unwrap_or_default()
        });
        // A snapshot taken past where the log now ends describes data that is gone (its open
        // transactions, its sequences): start again from one at or below the end.
        match from {
            Some(at) if at > recovery.log_end_offset => trusted_up_to = recovery.log_end_offset,
            _ => break recovery,
        }
    };
    for note in &recovery.notes {
        tracing::warn!(partition = %tp, "recovery: {note}");
    }
    // The log now begins past where it should: its first segments were lost whole (never
    // synced, so never acknowledged). What a snapshot says about them no longer holds.
    if let Some(first) = recovery.segments.first().map(|s| s.base_offset).filter(|&first| first > log_start) {
        tracing::warn!(partition = %tp, "recovery: offsets {log_start}..{first} are gone; the log starts at {first}");
        recovery.producers.forget_lost(log_start, first);
    }
    if let Some((base, len)) = recovery.truncate {
        repairs.push(Repair::Truncate(file(base, FileKind::Log), len));
    }
    let cut_below_point = recovery.truncate.is_some_and(|(base, _)| base < recovery_point)
        || recovery.delete.iter().any(|&base| base < recovery_point);
    if cut_below_point && !repairs.contains(&Repair::ForgetRecoveryPoints) {
        tracing::warn!(partition = %tp, recovery_point, "recovery cut the log below its recovery point; forgetting recovery points");
        repairs.push(Repair::ForgetRecoveryPoints);
    }
    for &base in &recovery.delete {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex, FileKind::ProducerSnapshot] {
            repairs.push(Repair::Delete(file(base, kind)));
        }
    }
    // A snapshot past the recovered end describes data that is gone.
    for at in dir.list(tp, FileKind::ProducerSnapshot) {
        if at > recovery.log_end_offset && !recovery.delete.contains(&at) {
            repairs.push(Repair::Delete(file(at, FileKind::ProducerSnapshot)));
        }
    }
    if !clean {
        for segment in &recovery.segments {
            repairs.push(Repair::Sync(file(segment.base_offset, FileKind::Log)));
        }
    }
    let checkpointed = epochs.clone();
    let mut epochs = match epochs {
        // Recovery read every batch past what the checkpoint can have missed; what it holds past
        // the recovered end is gone first.
        Some(mut epochs) => {
            epochs.truncate_from_end(recovery.log_end_offset);
            epochs.extend_from_batches(recovery.epoch_starts.iter().copied());
            epochs
        }
        None => {
            tracing::info!(partition = %tp, "rebuilding the leader-epoch cache from the batches");
            LeaderEpochs::rebuild(recovery.segments.iter().flat_map(|s| {
                let bytes = dir.read(&file(s.base_offset, FileKind::Log)).unwrap_or_default();
                let valid = &bytes[..(s.size as usize).min(bytes.len())];
                Batches::new(valid, false)
                    .map(|(_, b)| (b.partition_leader_epoch(), b.base_offset()))
                    .collect::<Vec<_>>()
            }))
        }
    };
    epochs.truncate_from_end(recovery.log_end_offset);
    epochs.truncate_from_start(log_start);
    let leader_epochs_changed = checkpointed.as_ref() != Some(&epochs);
    Some(LoadedPartition {
        segments: recovery.segments,
        producers: recovery.producers,
        log_start_offset: log_start,
        leader_epochs: epochs,
        leader_epochs_changed,
    })
}

/// Reads `leader-epochs.json`, keyed as the recovery points are (partition and topic id). An
/// unreadable file is rebuilt from the batches.
pub fn decode_leader_epochs(bytes: &[u8]) -> BTreeMap<String, LeaderEpochs> {
    serde_json::from_slice(bytes).unwrap_or_default()
}
