//! An in-memory model of a disk with the durability rules real disks have: writes are volatile
//! until fsync, a crash loses them (or leaves a torn prefix). Used by tests and the simulator to
//! drive the broker through the same storage operations and the same start-up recovery.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::loader::{DataDir, Repair};
use crate::storage::{Completion, FileKind, MetaFile, SegmentFile, StorageError, StorageOp, TopicPartition};

#[derive(Clone, Debug, Default)]
struct FileState {
    /// What a crash leaves (fsynced contents).
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
}

/// Sector size for torn writes.
pub const SECTOR: usize = 512;

#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    files: BTreeMap<SegmentFile, FileState>,
    meta: BTreeMap<MetaFile, Vec<u8>>,
    clean_marker: bool,
    /// Test switch: pretend fsyncs succeed without making anything durable (the canary bug).
    pub fsync_lies: bool,
    /// Log files the loader read whole, in order (what recovery had to read).
    pub loader_log_reads: Vec<SegmentFile>,
}

impl MemDisk {
    pub fn new() -> Self {
        MemDisk::default()
    }

    /// Carries out one operation at once and returns its completion, if it has one.
    pub fn execute(&mut self, op: StorageOp) -> Option<Completion> {
        match op {
            StorageOp::Write { id, file, position, chunks } => {
                let f = self.files.entry(file.clone()).or_default();
                let mut position = position as usize;
                if position == 0 && file.kind != FileKind::Log {
                    f.current.clear();
                }
                if f.current.len() < position {
                    f.current.resize(position, 0);
                }
                for data in chunks {
                    let end = position + data.len();
                    if f.current.len() < end {
                        f.current.resize(end, 0);
                    }
                    f.current[position..end].copy_from_slice(&data);
                    position = end;
                }
                Some(Completion::Written { id, result: Ok(()) })
            }
            StorageOp::Sync { id, files } => {
                if !self.fsync_lies {
                    for file in files {
                        if let Some(f) = self.files.get_mut(&file) {
                            f.durable = f.current.clone();
                        }
                    }
                }
                Some(Completion::Synced { id, result: Ok(()) })
            }
            StorageOp::Read { id, file, position, len } => {
                let result = match self.files.get(&file) {
                    Some(f) => {
                        let start = (position as usize).min(f.current.len());
                        let end = (start + len).min(f.current.len());
                        Ok(Bytes::copy_from_slice(&f.current[start..end]))
                    }
                    None => Err(StorageError(format!("{} does not exist", file.relative_path()))),
                };
                Some(Completion::Read { id, result })
            }
            StorageOp::Truncate { file, len } => {
                if let Some(f) = self.files.get_mut(&file) {
                    f.current.truncate(len as usize);
                }
                None
            }
            StorageOp::Delete { file } => {
                self.files.remove(&file);
                None
            }
            StorageOp::DeletePartition { tp } => {
                self.files.retain(|f, _| f.tp != tp);
                None
            }
            StorageOp::WriteMeta { id, file, data } => {
                self.meta.insert(file, data.to_vec());
                Some(Completion::MetaWritten { id, result: Ok(()) })
            }
        }
    }

    /// A power loss: unsynced bytes vanish, except that the first `torn_sectors` sectors of each
    /// file's unsynced tail may survive (a torn write). Returns how many files lost data.
    pub fn crash(&mut self, torn_sectors: &mut dyn FnMut(&SegmentFile) -> usize) -> usize {
        let mut lost = 0;
        self.clean_marker = false;
        for (file, f) in self.files.iter_mut() {
            if f.current == f.durable {
                continue;
            }
            lost += 1;
            let keep = torn_sectors(file) * SECTOR;
            let mut survived = f.durable.clone();
            if f.current.len() > f.durable.len() && f.current.starts_with(&f.durable) && keep > 0 {
                let tail_end = (f.durable.len() + keep).min(f.current.len());
                survived.extend_from_slice(&f.current[f.durable.len()..tail_end]);
            }
            f.current = survived.clone();
            f.durable = survived;
        }
        // Files never synced at all disappear.
        self.files.retain(|_, f| !f.current.is_empty() || !f.durable.is_empty());
        lost
    }

    pub fn mark_clean_shutdown(&mut self) {
        self.clean_marker = true;
    }

    pub fn apply_repairs(&mut self, repairs: &[Repair]) {
        for repair in repairs {
            match repair {
                Repair::Truncate(file, len) => {
                    if let Some(f) = self.files.get_mut(file) {
                        f.current.truncate(*len as usize);
                        f.durable = f.current.clone();
                    }
                }
                Repair::Delete(file) => {
                    self.files.remove(file);
                }
                // The canary's lying fsync lies here too.
                Repair::Sync(file) if !self.fsync_lies => {
                    if let Some(f) = self.files.get_mut(file) {
                        f.durable = f.current.clone();
                    }
                }
                Repair::Sync(_) => {}
                Repair::ForgetRecoveryPoints => {
                    self.meta.remove(&MetaFile::RecoveryPoints);
                }
            }
        }
        self.clean_marker = false;
    }

    /// Flips one bit of a durable byte, as silent corruption would.
    pub fn corrupt(&mut self, file: &SegmentFile, at: usize, bit: u8) -> bool {
        match self.files.get_mut(file) {
            Some(f) if at < f.current.len() => {
                f.current[at] ^= 1 << (bit % 8);
                f.durable = f.current.clone();
                true
            }
            _ => false,
        }
    }

    /// Replaces durable bytes at `at` (a test forging what an older or other writer left).
    pub fn overwrite(&mut self, file: &SegmentFile, at: usize, bytes: &[u8]) -> bool {
        match self.files.get_mut(file) {
            Some(f) if at + bytes.len() <= f.current.len() => {
                f.current[at..at + bytes.len()].copy_from_slice(bytes);
                f.durable = f.current.clone();
                true
            }
            _ => false,
        }
    }

    /// Removes a metadata file, as a data directory from before it existed would lack it.
    pub fn remove_meta(&mut self, file: MetaFile) -> bool {
        self.meta.remove(&file).is_some()
    }

    pub fn log_files(&self) -> Vec<SegmentFile> {
        self.files.keys().filter(|f| f.kind == FileKind::Log).cloned().collect()
    }

    pub fn file_len(&self, file: &SegmentFile) -> usize {
        self.files.get(file).map_or(0, |f| f.current.len())
    }
}

impl DataDir for MemDisk {
    fn read_meta(&mut self, file: MetaFile) -> Option<Vec<u8>> {
        self.meta.get(&file).cloned()
    }
    fn clean_shutdown(&mut self) -> bool {
        self.clean_marker
    }
    fn list(&mut self, tp: &TopicPartition, kind: FileKind) -> Vec<i64> {
        self.files.keys().filter(|f| &f.tp == tp && f.kind == kind).map(|f| f.base_offset).collect()
    }
    fn size(&mut self, file: &SegmentFile) -> u64 {
        self.file_len(file) as u64
    }
    fn read(&mut self, file: &SegmentFile) -> Option<Vec<u8>> {
        if file.kind == FileKind::Log {
            self.loader_log_reads.push(file.clone());
        }
        self.files.get(file).map(|f| f.current.clone())
    }
}
