//! Start-up: read the data directory, run the core's pure recovery over each partition, apply
//! its plan (truncate torn tails, drop segments after corruption), and hand the result to the
//! broker.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use spool_core::broker::decode_log_starts;
use spool_core::index::SegmentIndex;
use spool_core::meta::ClusterMeta;
use spool_core::producer_state::ProducerStates;
use spool_core::recovery::{recover_partition, SegmentOnDisk};
use spool_core::storage::{FileKind, MetaFile, SegmentFile, TopicPartition};
use spool_core::{LoadedPartition, LoadedState};

use crate::disk::{fsync_dir, write_atomic};

/// Present only after a clean shutdown; removed at start.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

fn parse_base(name: &str, ext: &str) -> Option<i64> {
    name.strip_suffix(ext)?.strip_suffix('.')?.parse().ok()
}

fn files_with(dir: &Path, ext: &str) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name();
        if let Some(base) = name.to_str().and_then(|n| parse_base(n, ext)) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Reads and recovers everything under `root`. `new_cluster_id` names a fresh cluster.
pub fn load(
    root: &Path,
    node_id: i32,
    index_interval: u64,
    new_cluster_id: impl FnOnce() -> String,
) -> Result<LoadedState> {
    fs::create_dir_all(root)
        .with_context(|| format!("creating data directory {}", root.display()))?;
    let meta_path = root.join(MetaFile::Cluster.file_name());
    let meta = if meta_path.exists() {
        let meta = ClusterMeta::decode(&fs::read(&meta_path)?).map_err(anyhow::Error::msg)?;
        if meta.node_id != node_id {
            bail!(
                "data directory {} belongs to node {}, not node {node_id}",
                root.display(),
                meta.node_id
            );
        }
        meta
    } else {
        ClusterMeta::new(new_cluster_id(), node_id)
    };
    let marker = root.join(CLEAN_SHUTDOWN_MARKER);
    let clean = marker.exists();
    let log_starts = fs::read(root.join(MetaFile::LogStartOffsets.file_name()))
        .map(|b| decode_log_starts(&b))
        .unwrap_or_default();
    tracing::info!(
        clean,
        topics = meta.topics.len(),
        "loading data directory {}",
        root.display()
    );

    let mut partitions = BTreeMap::new();
    for topic in &meta.topics {
        for p in 0..topic.partitions {
            let tp = TopicPartition::new(&topic.name, p);
            let dir = root.join(tp.dir_name());
            if !dir.exists() {
                continue;
            }
            let loaded = load_partition(
                root,
                &dir,
                &tp,
                clean,
                index_interval,
                log_starts.get(&tp.dir_name()).copied().unwrap_or(0),
            )?;
            partitions.insert(tp, loaded);
        }
    }
    if clean {
        // From here on a crash must trigger a full recovery scan.
        fs::remove_file(&marker)?;
        fsync_dir(root)?;
    }
    Ok(LoadedState { meta, partitions })
}

fn load_partition(
    root: &Path,
    dir: &Path,
    tp: &TopicPartition,
    clean: bool,
    index_interval: u64,
    log_start: i64,
) -> Result<LoadedPartition> {
    let path_of =
        |base: i64, kind: FileKind| root.join(SegmentFile::new(tp, base, kind).relative_path());
    let bases = files_with(dir, "log")?;
    let mut segments = Vec::new();
    for &base in &bases {
        let log_size = fs::metadata(path_of(base, FileKind::Log))?.len();
        let offsets = fs::read(path_of(base, FileKind::OffsetIndex)).unwrap_or_default();
        let times = fs::read(path_of(base, FileKind::TimeIndex)).unwrap_or_default();
        let index = if log_size == 0 {
            Some(SegmentIndex::new())
        } else {
            SegmentIndex::decode(&offsets, &times, log_size)
        };
        segments.push(SegmentOnDisk {
            base_offset: base,
            log_size,
            index,
        });
    }
    // Newest readable producer snapshot that recovery can replay forward from.
    let active_base = bases.last().copied().unwrap_or(0);
    let snapshot = files_with(dir, "snapshot")?
        .into_iter()
        .rev()
        .filter(|&at| clean || at <= active_base)
        .find_map(|at| {
            ProducerStates::decode_snapshot(
                &fs::read(path_of(at, FileKind::ProducerSnapshot)).ok()?,
            )
            .map(|s| (at, s))
        });
    let mut read_error = None;
    let recovery = recover_partition(segments, clean, index_interval, snapshot, &mut |base| {
        fs::read(path_of(base, FileKind::Log)).unwrap_or_else(|e| {
            read_error = Some(e);
            Vec::new()
        })
    });
    if let Some(e) = read_error {
        return Err(e).with_context(|| format!("reading a segment of {tp}"));
    }
    for note in &recovery.notes {
        tracing::warn!(partition = %tp, "recovery: {note}");
    }
    if let Some((base, len)) = recovery.truncate {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(path_of(base, FileKind::Log))?;
        f.set_len(len)?;
        f.sync_all()?;
    }
    for &base in &recovery.delete {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex] {
            let _ = fs::remove_file(path_of(base, kind));
        }
    }
    if recovery.truncate.is_some() || !recovery.delete.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(LoadedPartition {
        segments: recovery.segments,
        producers: recovery.producers,
        log_start_offset: log_start,
    })
}

/// Written last in a clean shutdown, after everything else is durable.
pub fn write_clean_shutdown_marker(root: &Path) -> Result<()> {
    write_atomic(&root.join(CLEAN_SHUTDOWN_MARKER), b"{\"version\":1}\n")?;
    Ok(())
}
