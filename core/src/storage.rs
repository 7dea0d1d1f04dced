//! The storage interface seen from the core: operations the core asks the driver to perform, and
//! the completions the driver hands back. "Written" and "durable" are separate: a `Write` only
//! reaches the page cache, a `Sync` makes every earlier write to the named files durable.

use bytes::Bytes;
use std::sync::Arc;

/// Identifies one storage operation so its completion can find its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition { topic: Arc::from(topic), partition }
    }
    /// Directory name of the partition, as Kafka names it.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    Log,
    OffsetIndex,
    TimeIndex,
    ProducerSnapshot,
}

impl FileKind {
    pub fn extension(self) -> &'static str {
        match self {
            FileKind::Log => "log",
            FileKind::OffsetIndex => "index",
            FileKind::TimeIndex => "timeindex",
            FileKind::ProducerSnapshot => "snapshot",
        }
    }
}

/// A file that belongs to one segment of one partition: `<topic>-<p>/<base:020>.<ext>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentFile {
    pub tp: TopicPartition,
    pub base_offset: i64,
    pub kind: FileKind,
}

impl SegmentFile {
    pub fn new(tp: &TopicPartition, base_offset: i64, kind: FileKind) -> Self {
        SegmentFile { tp: tp.clone(), base_offset, kind }
    }
    /// Path relative to the data directory.
    pub fn relative_path(&self) -> String {
        format!("{}/{:020}.{}", self.tp.dir_name(), self.base_offset, self.kind.extension())
    }
}

/// Small whole-file metadata, replaced atomically (temp file, fsync, rename, fsync dir).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetaFile {
    /// Cluster identity, topics and their configs, producer id allocation.
    Cluster,
    /// Per-partition log start offsets (after retention and DeleteRecords).
    LogStartOffsets,
    /// Per-partition recovery points: segments below one are sealed and fsynced.
    RecoveryPoints,
    /// Per-partition leader-epoch caches (epoch -> start offset).
    LeaderEpochs,
}

impl MetaFile {
    pub fn file_name(self) -> &'static str {
        match self {
            MetaFile::Cluster => "cluster.json",
            MetaFile::LogStartOffsets => "log-start-offsets.json",
            MetaFile::RecoveryPoints => "recovery-points.json",
            MetaFile::LeaderEpochs => "leader-epochs.json",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StorageOp {
    /// Write `chunks`, back to back, at `position`, creating the file if needed. Not durable until
    /// a `Sync`. Several chunks are log appends of one turn joined into one write.
    Write { id: OpId, file: SegmentFile, position: u64, chunks: Vec<Bytes> },
    /// Make every earlier write to these files durable, in order.
    Sync { id: OpId, files: Vec<SegmentFile> },
    /// Read up to `len` bytes at `position` (fewer at end of file).
    Read { id: OpId, file: SegmentFile, position: u64, len: usize },
    /// Cut a segment file to `len` bytes (a replica dropping a tail its leader does not hold).
    /// Not durable until a `Sync` of the file.
    Truncate { file: SegmentFile, len: u64 },
    /// Remove one segment file; its absence is not an error.
    Delete { file: SegmentFile },
    /// Remove a partition's directory and everything in it.
    DeletePartition { tp: TopicPartition },
    /// Replace a metadata file atomically and durably.
    WriteMeta { id: OpId, file: MetaFile, data: Bytes },
}

/// Bytes a write's chunks hold together.
pub fn chunks_len(chunks: &[Bytes]) -> usize {
    chunks.iter().map(Bytes::len).sum()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Completion {
    Written { id: OpId, result: Result<(), StorageError> },
    Synced { id: OpId, result: Result<(), StorageError> },
    Read { id: OpId, result: Result<Bytes, StorageError> },
    MetaWritten { id: OpId, result: Result<(), StorageError> },
}

impl Completion {
    pub fn id(&self) -> OpId {
        match self {
            Completion::Written { id, .. }
            | Completion::Synced { id, .. }
            | Completion::Read { id, .. }
            | Completion::MetaWritten { id, .. } => *id,
        }
    }
}
