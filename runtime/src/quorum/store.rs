//! The metadata quorum's disk: what the loop needs of it ([`QuorumDisk`]), and its files in
//! `<data dir>/__cluster_metadata-0/` as Kafka lays them out:
//! `quorum-state` (the election state, replaced atomically), `log` (one checksummed frame per
//! entry, each a Kafka record batch) and `<end offset>-<epoch>.checkpoint` snapshots. Every call
//! returns once its effect is on disk as `RaftNode`'s contract asks; a failure is fatal to the
//! quorum, as a metadata log failure is to a Kafka controller.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use spool_core::raft::{wire, ElectionState, Entry, Restored, SnapshotId};

use crate::disk::fsync_dir;

const STATE_FILE: &str = "quorum-state";
const LOG_FILE: &str = "log";
const SNAPSHOT_SUFFIX: &str = ".checkpoint";
/// Length and CRC32C before each entry's bytes.
const FRAME_HEADER: usize = 8;

/// The kinds of disk operation, for a disk that takes its time over some (the simulator's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOpKind {
    Election,
    Append,
    Truncate,
    Sync,
    Snapshot,
}

/// What the quorum's loop needs from a disk. Every call returns once its effect is durable, except
/// `append` and `truncate`, which `sync` makes durable. Files in production, a model in simulation.
/// The loop calls it from one task, one operation at a time, in the order the node asked.
pub trait QuorumDisk: Send + 'static {
    /// How long an operation waits before it is carried out: zero for files (the time is spent
    /// in the call); the simulator's disks are slow and stall.
    fn latency(&mut self, _kind: DiskOpKind) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// What the disk holds, made durable first (a restarting node takes all of it as durable).
    fn restore(&mut self) -> Result<Restored>;
    fn persist_election(&mut self, state: &ElectionState) -> Result<()>;
    fn append(&mut self, entries: &[Entry]) -> Result<()>;
    /// Drops the entries at and above `end`.
    fn truncate(&mut self, end: u64) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
    /// Writes the snapshot durably, then drops the log below its end (all of it if it replaces it).
    fn write_snapshot(&mut self, id: SnapshotId, data: &[u8], replaces_log: bool) -> Result<()>;
}

/// The quorum's files; opened by [`QuorumDisk::restore`].
pub struct FileQuorumDisk {
    dir: PathBuf,
    open: Option<QuorumStore>,
}

impl FileQuorumDisk {
    pub fn new(dir: PathBuf) -> Self {
        FileQuorumDisk { dir, open: None }
    }

    fn store(&mut self) -> &mut QuorumStore {
        self.open.as_mut().expect("the quorum's files are read before they are written")
    }
}

impl QuorumDisk for FileQuorumDisk {
    fn restore(&mut self) -> Result<Restored> {
        let (store, restored) = QuorumStore::open(&self.dir)?;
        self.open = Some(store);
        Ok(restored)
    }

    fn persist_election(&mut self, state: &ElectionState) -> Result<()> {
        self.store().persist_election(state)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.store().append(entries)
    }

    fn truncate(&mut self, end: u64) -> Result<()> {
        self.store().truncate(end)
    }

    fn sync(&mut self) -> Result<()> {
        self.store().sync()
    }

    fn write_snapshot(&mut self, id: SnapshotId, data: &[u8], replaces_log: bool) -> Result<()> {
        self.store().write_snapshot(id, data, replaces_log)
    }
}

struct QuorumStore {
    dir: PathBuf,
    log: File,
    /// The offset of the first entry in the log file.
    first: u64,
    /// Where each entry's frame starts, from `first` on, and where the file ends.
    positions: VecDeque<u64>,
    end_position: u64,
}

fn snapshot_name(id: SnapshotId) -> String {
    format!("{:020}-{:010}{SNAPSHOT_SUFFIX}", id.end_offset, id.epoch)
}

fn parse_snapshot_name(name: &str) -> Option<SnapshotId> {
    let (offset, epoch) = name.strip_suffix(SNAPSHOT_SUFFIX)?.split_once('-')?;
    Some(SnapshotId { end_offset: offset.parse().ok()?, epoch: epoch.parse().ok()? })
}

/// Writes `data` to `name` in `dir` so that it is either wholly there or not at all.
fn replace_file(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary).with_context(|| format!("create {}", temporary.display()))?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(name))?;
    fsync_dir(dir)?;
    Ok(())
}

fn frame(entry: &Entry) -> Vec<u8> {
    let bytes = wire::encode_entries(std::slice::from_ref(entry));
    let mut framed = Vec::with_capacity(FRAME_HEADER + bytes.len());
    framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    framed.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    framed.extend_from_slice(&bytes);
    framed
}

/// The entries of a log file, with where each starts, up to the first torn or corrupt frame.
fn read_frames(bytes: &[u8]) -> Result<(Vec<Entry>, Vec<u64>, u64)> {
    let (mut entries, mut positions, mut at) = (Vec::new(), Vec::new(), 0usize);
    while bytes.len() - at >= FRAME_HEADER {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else { break };
        if crc32c::crc32c(body) != crc {
            break;
        }
        let decoded = wire::decode_entries(Bytes::copy_from_slice(body)).map_err(anyhow::Error::msg)?;
        ensure!(decoded.len() == 1, "a metadata log frame at {at} holds {} entries", decoded.len());
        if let Some(last) = entries.last() {
            let last: &Entry = last;
            ensure!(
                decoded[0].offset == last.offset + 1,
                "the metadata log skips from {} to {}",
                last.offset,
                decoded[0].offset
            );
        }
        positions.push(at as u64);
        entries.extend(decoded);
        at += FRAME_HEADER + len;
    }
    Ok((entries, positions, at as u64))
}

impl QuorumStore {
    /// Reads what the directory holds, repairs a torn log tail, fsyncs it all, and returns it.
    fn open(dir: &Path) -> Result<(QuorumStore, Restored)> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let election = match fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => Some(
                serde_json::from_slice::<ElectionState>(&bytes)
                    .with_context(|| format!("{} is not an election state", dir.join(STATE_FILE).display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context("read the quorum state"),
        };
        let mut snapshots = Vec::new();
        for item in fs::read_dir(dir)? {
            let name = item?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                fs::remove_file(dir.join(&name))?;
            } else if let Some(id) = parse_snapshot_name(&name) {
                snapshots.push(id);
            }
        }
        snapshots.sort();
        let snapshot = match snapshots.last() {
            Some(&id) => Some((id, Self::read_snapshot(dir, id)?)),
            None => None,
        };
        let mut log =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(LOG_FILE))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let (mut entries, mut positions, valid_end) = read_frames(&bytes)?;
        if valid_end < bytes.len() as u64 {
            tracing::warn!(dropped = bytes.len() as u64 - valid_end, "the metadata log ends in a torn write; cut");
            log.set_len(valid_end)?;
        }
        let mut store =
            QuorumStore { dir: dir.to_path_buf(), log, first: 0, positions: VecDeque::new(), end_position: 0 };
        if let Some((id, _)) = &snapshot {
            // Raft's rule: keep the entries after the snapshot only if the log agrees with it there.
            // A log that starts at the snapshot's end was compacted below it, so agrees.
            let agrees = match entries.iter().find(|e| e.offset + 1 == id.end_offset) {
                Some(last_in_snapshot) => last_in_snapshot.epoch == id.epoch,
                None => entries.first().is_some_and(|e| e.offset == id.end_offset),
            };
            let keep_from = if agrees { entries.iter().position(|e| e.offset >= id.end_offset) } else { None };
            match keep_from {
                Some(i) => {
                    entries.drain(..i);
                    positions.drain(..i);
                }
                None => {
                    entries.clear();
                    positions.clear();
                }
            }
            store.first = id.end_offset;
        } else if let Some(first) = entries.first() {
            ensure!(first.offset == 0, "the metadata log starts at {} with no snapshot below it", first.offset);
        }
        store.positions = positions.into();
        store.end_position = valid_end;
        if store.positions.is_empty() && valid_end > 0 {
            store.log.set_len(0)?;
            store.end_position = 0;
        } else if let Some(&start) = store.positions.front() {
            if start > 0 {
                store.compact_below(start)?;
            }
        }
        store.log.sync_all()?;
        fsync_dir(dir)?;
        Ok((store, Restored { election, snapshot, entries }))
    }

    fn read_snapshot(dir: &Path, id: SnapshotId) -> Result<Bytes> {
        let bytes = fs::read(dir.join(snapshot_name(id)))?;
        ensure!(bytes.len() >= 4, "snapshot {} is truncated", snapshot_name(id));
        let crc = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        ensure!(crc32c::crc32c(&bytes[4..]) == crc, "snapshot {} fails its checksum", snapshot_name(id));
        Ok(Bytes::copy_from_slice(&bytes[4..]))
    }

    fn persist_election(&mut self, state: &ElectionState) -> Result<()> {
        replace_file(&self.dir, STATE_FILE, &serde_json::to_vec(state)?)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            assert_eq!(entry.offset, self.first + self.positions.len() as u64, "appends follow the log's end");
            self.positions.push_back(self.end_position + bytes.len() as u64);
            bytes.extend(frame(entry));
        }
        self.log.seek(SeekFrom::Start(self.end_position))?;
        self.log.write_all(&bytes)?;
        self.end_position += bytes.len() as u64;
        Ok(())
    }

    /// Drops the entries at and above `end`.
    fn truncate(&mut self, end: u64) -> Result<()> {
        assert!(end >= self.first, "truncation below the log's start");
        let keep = (end - self.first) as usize;
        if keep >= self.positions.len() {
            return Ok(());
        }
        self.end_position = self.positions[keep];
        self.positions.truncate(keep);
        self.log.set_len(self.end_position)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.log.sync_data()?;
        Ok(())
    }

    /// Writes the snapshot durably, then drops the log below its end (all of it if it replaces it).
    fn write_snapshot(&mut self, id: SnapshotId, data: &[u8], replaces_log: bool) -> Result<()> {
        let mut bytes = crc32c::crc32c(data).to_be_bytes().to_vec();
        bytes.extend_from_slice(data);
        replace_file(&self.dir, &snapshot_name(id), &bytes)?;
        if replaces_log || id.end_offset >= self.first + self.positions.len() as u64 {
            self.log.set_len(0)?;
            self.log.sync_all()?;
            self.positions.clear();
            self.end_position = 0;
            self.first = id.end_offset;
        } else if id.end_offset > self.first {
            let drop = (id.end_offset - self.first) as usize;
            let start = self.positions[drop];
            self.positions.drain(..drop);
            self.first = id.end_offset;
            self.compact_below(start)?;
        }
        for item in fs::read_dir(&self.dir)? {
            let name = item?.file_name().to_string_lossy().into_owned();
            if parse_snapshot_name(&name).is_some_and(|older| older < id) {
                fs::remove_file(self.dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Rewrites the log without its first `start` bytes (the frames `positions` no longer lists).
    fn compact_below(&mut self, start: u64) -> Result<()> {
        if start == 0 {
            return Ok(());
        }
        let mut tail = Vec::new();
        self.log.seek(SeekFrom::Start(start))?;
        self.log.read_to_end(&mut tail)?;
        tail.truncate((self.end_position - start) as usize);
        replace_file(&self.dir, LOG_FILE, &tail)?;
        self.log = OpenOptions::new().read(true).write(true).open(self.dir.join(LOG_FILE))?;
        for position in self.positions.iter_mut() {
            *position -= start;
        }
        self.end_position -= start;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_core::raft::Payload;

    fn entry(offset: u64, epoch: i32) -> Entry {
        Entry { offset, epoch, payload: Payload::Data(Bytes::from(format!("record {offset}"))) }
    }

    #[test]
    fn what_was_written_and_synced_comes_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, restored) = QuorumStore::open(dir.path()).unwrap();
        assert!(restored.election.is_none() && restored.entries.is_empty());
        let state = ElectionState { epoch: 3, voted_for: Some(2), leader: None };
        store.persist_election(&state).unwrap();
        store.append(&[entry(0, 1), entry(1, 1), entry(2, 3)]).unwrap();
        store.truncate(2).unwrap();
        store.append(&[entry(2, 3)]).unwrap();
        store.sync().unwrap();
        drop(store);
        // Half a frame more, as a crash in the middle of a write leaves it.
        let mut log = OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).unwrap();
        log.write_all(&frame(&entry(3, 3))[..10]).unwrap();
        let (mut store, restored) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(restored.election, Some(state));
        assert_eq!(restored.entries, vec![entry(0, 1), entry(1, 1), entry(2, 3)]);
        store.append(&[entry(3, 3)]).unwrap();
        let (_, restored) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(restored.entries.len(), 4);
    }

    #[test]
    fn a_snapshot_replaces_the_log_below_it_and_a_disagreeing_log_entirely() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = QuorumStore::open(dir.path()).unwrap();
        store.append(&(0..5).map(|o| entry(o, 1)).collect::<Vec<_>>()).unwrap();
        let id = SnapshotId { end_offset: 3, epoch: 1 };
        store.write_snapshot(id, b"state through 2", false).unwrap();
        let (mut store, restored) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(restored.snapshot, Some((id, Bytes::from_static(b"state through 2"))));
        assert_eq!(restored.entries, vec![entry(3, 1), entry(4, 1)]);
        // A snapshot fetched from a leader whose history differs: the log goes with it.
        let theirs = SnapshotId { end_offset: 4, epoch: 2 };
        store.write_snapshot(theirs, b"their state", true).unwrap();
        store.append(&[entry(4, 2)]).unwrap();
        let (_, restored) = QuorumStore::open(dir.path()).unwrap();
        assert_eq!(restored.snapshot.unwrap().0, theirs);
        assert_eq!(restored.entries, vec![entry(4, 2)]);
        let names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.iter().filter(|n| n.ends_with(SNAPSHOT_SUFFIX)).count(), 1, "{names:?}");
    }
}
