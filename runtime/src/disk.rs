//! Carries out the core's storage operations on real files. Writes go to the page cache inline;
//! fsyncs and metadata replacements run on the blocking pool and report back as completions.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use spool_core::storage::{chunks_len, Completion, SegmentFile, StorageError, StorageOp};
use spool_core::LoadedState;
use tokio::sync::mpsc;

use crate::io_times::IoTimes;
use crate::storage::Storage;

/// Handles kept open at most; beyond this the cache is emptied (reopening is cheap).
const MAX_OPEN_FILES: usize = 1024;

/// The data directory on real files.
pub struct FileStorage {
    root: PathBuf,
    files: HashMap<PathBuf, File>,
    /// Directories that gained a file since their last fsync.
    dirty_dirs: BTreeSet<PathBuf>,
    /// Files a `Truncate` failed on: their next sync fails.
    failed_truncates: HashMap<PathBuf, StorageError>,
    /// Shared with the blocking threads that run fsyncs.
    io_times: Arc<Mutex<IoTimes>>,
}

fn storage_error(what: &str, path: &Path, e: io::Error) -> StorageError {
    StorageError(format!("{what} {}: {e}", path.display()))
}

/// Timings stay usable even if a thread panicked while holding them.
fn lock(times: &Mutex<IoTimes>) -> std::sync::MutexGuard<'_, IoTimes> {
    times.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` atomically and durably: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let f = File::create(&tmp)?;
        f.write_all_at(data, 0)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl Storage for FileStorage {
    fn load(&mut self, node_id: i32, index_interval: u64) -> anyhow::Result<LoadedState> {
        crate::load::load(&self.root, node_id, index_interval, || format!("spool-{:016x}", rand::random::<u64>()))
    }

    fn execute(&mut self, op: StorageOp, completions: &mpsc::UnboundedSender<Completion>) -> Option<Completion> {
        self.execute_op(op, completions)
    }

    fn mark_clean_shutdown(&mut self) -> anyhow::Result<()> {
        tracing::info!("disk times: {}", lock(&self.io_times).summary());
        crate::load::write_clean_shutdown_marker(&self.root)
    }
}

impl FileStorage {
    pub fn new(root: PathBuf) -> Self {
        FileStorage {
            root,
            files: HashMap::new(),
            dirty_dirs: BTreeSet::new(),
            failed_truncates: HashMap::new(),
            io_times: Arc::default(),
        }
    }

    fn path(&self, file: &SegmentFile) -> PathBuf {
        self.root.join(file.relative_path())
    }

    fn open(&mut self, path: &Path, create: bool) -> io::Result<&File> {
        if !self.files.contains_key(path) {
            if self.files.len() >= MAX_OPEN_FILES {
                self.files.clear();
            }
            let dir = path.parent().expect("segment files live in a partition directory");
            let existed = path.exists();
            if create && !existed {
                fs::create_dir_all(dir)?;
                self.dirty_dirs.insert(dir.to_path_buf());
                self.dirty_dirs.insert(self.root.clone());
            }
            let f = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
            self.files.insert(path.to_path_buf(), f);
        }
        Ok(&self.files[path])
    }

    /// Carries out one operation. Inline results are returned; the rest arrive on the channel.
    #[cfg_attr(madsim, allow(deprecated))]
    fn execute_op(&mut self, op: StorageOp, completions: &mpsc::UnboundedSender<Completion>) -> Option<Completion> {
        match op {
            StorageOp::Write { id, file, position, chunks } => {
                let path = self.path(&file);
                let started = Instant::now();
                let result = self
                    .open(&path, true)
                    .and_then(|f| {
                        // Whole-file rewrites (indexes, snapshots) must not leave an older, longer tail.
                        if position == 0 && file.kind != spool_core::storage::FileKind::Log {
                            f.set_len(0)?;
                        }
                        write_all_chunks_at(f, &chunks, position)
                    })
                    .map_err(|e| storage_error("write", &path, e));
                lock(&self.io_times).record_write(started.elapsed(), chunks_len(&chunks));
                Some(Completion::Written { id, result })
            }
            StorageOp::Read { id, file, position, len } => {
                let path = self.path(&file);
                let result = self
                    .open(&path, false)
                    .and_then(|f| read_at(f, position, len))
                    .map_err(|e| storage_error("read", &path, e));
                Some(Completion::Read { id, result })
            }
            StorageOp::Sync { id, files } => {
                let mut handles = Vec::new();
                for file in &files {
                    let path = self.path(file);
                    if let Some(error) = self.failed_truncates.remove(&path) {
                        return Some(Completion::Synced { id, result: Err(error) });
                    }
                    match self.open(&path, false).and_then(|f| f.try_clone()) {
                        Ok(f) => handles.push((path, f)),
                        Err(e) => {
                            return Some(Completion::Synced {
                                id,
                                result: Err(storage_error("open for fsync", &path, e)),
                            })
                        }
                    }
                }
                let dirs: Vec<PathBuf> = std::mem::take(&mut self.dirty_dirs).into_iter().collect();
                let tx = completions.clone();
                let io_times = self.io_times.clone();
                tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let result = handles
                        .iter()
                        .try_for_each(|(path, f)| f.sync_data().map_err(|e| storage_error("fsync", path, e)))
                        .and_then(|_| {
                            dirs.iter().try_for_each(|d| fsync_dir(d).map_err(|e| storage_error("fsync dir", d, e)))
                        });
                    lock(&io_times).record_fsync(started.elapsed(), handles.len() + dirs.len());
                    let _ = tx.send(Completion::Synced { id, result });
                });
                None
            }
            StorageOp::Truncate { file, len } => {
                let path = self.path(&file);
                // A failed cut fails the file's next sync, which takes the partition offline
                // (and recovery repairs it), as a failed write does.
                if let Err(e) = self.open(&path, false).and_then(|f| f.set_len(len)) {
                    self.failed_truncates.insert(path.clone(), storage_error("truncate", &path, e));
                }
                None
            }
            StorageOp::Delete { file } => {
                let path = self.path(&file);
                self.files.remove(&path);
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!("could not delete {}: {e}", path.display());
                    }
                }
                None
            }
            StorageOp::DeletePartition { tp } => {
                let dir = self.root.join(tp.dir_name());
                self.files.retain(|p, _| !p.starts_with(&dir));
                if let Err(e) = fs::remove_dir_all(&dir) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!("could not delete {}: {e}", dir.display());
                    }
                }
                None
            }
            StorageOp::WriteMeta { id, file, data } => {
                let path = self.root.join(file.file_name());
                let tx = completions.clone();
                tokio::task::spawn_blocking(move || {
                    let result = write_atomic(&path, &data).map_err(|e| storage_error("write", &path, e));
                    let _ = tx.send(Completion::MetaWritten { id, result });
                });
                None
            }
        }
    }
}

/// Writes the chunks back to back from `position` with as few `pwritev` calls as the kernel allows.
fn write_all_chunks_at(f: &File, chunks: &[Bytes], mut position: u64) -> io::Result<()> {
    let mut first = 0;
    let mut skip = 0;
    while first < chunks.len() {
        let slices: Vec<io::IoSlice<'_>> = std::iter::once(&chunks[first][skip..])
            .chain(chunks[first + 1..].iter().map(|c| &c[..]))
            .map(io::IoSlice::new)
            .collect();
        let mut written = rustix::io::pwritev(f, &slices, position)?;
        if written == 0 && slices.iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        position += written as u64;
        // Step past what the kernel took: whole chunks, then part of the next.
        while first < chunks.len() && written >= chunks[first].len() - skip {
            written -= chunks[first].len() - skip;
            first += 1;
            skip = 0;
        }
        skip += written;
    }
    Ok(())
}

fn read_at(f: &File, position: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = f.read_at(&mut buf[filled..], position + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_land_back_to_back_at_the_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.path().join("x")).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        let chunks = [Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"cde")];
        write_all_chunks_at(&f, &chunks, 3).unwrap();
        assert_eq!(read_at(&f, 0, 100).unwrap(), Bytes::from_static(b"012abcde89"));
        write_all_chunks_at(&f, &[Bytes::from_static(b"zz")], 12).unwrap();
        assert_eq!(read_at(&f, 8, 100).unwrap(), Bytes::from_static(b"89\0\0zz"));
    }
}
