//! The simulated disk behind the runtime's Storage interface: the core's MemDisk model, shared
//! with the fault injector so it outlives a killed node. fsyncs and reads take simulated time;
//! while faults are on, fsyncs fail (EIO), writes fail (ENOSPC), metadata replacements fail,
//! reads come back with a flipped bit, log writes land with a flipped bit, and some operations
//! are slow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use madsim::rand::{thread_rng, Rng};
use spool_core::batch::Batches;
use spool_core::loader;
use spool_core::mem_disk::MemDisk;
use spool_core::storage::{Completion, FileKind, StorageError, StorageOp, TopicPartition};
use spool_core::LoadedState;
use spool_runtime::storage::Storage;
use tokio::sync::mpsc::UnboundedSender;

use crate::draw;

/// Per-operation fault probabilities, drawn per seed.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults {
    pub fsync_error: f64,
    pub write_error: f64,
    pub meta_error: f64,
    pub read_flip: f64,
    pub slow_io: f64,
    /// Normal fsync latency.
    pub fsync_ms: u64,
    /// Sectors of an unsynced tail a power loss may keep (torn writes).
    pub max_torn_sectors: u64,
    /// A bit of a log write flipped on its way to the disk, silently (the write succeeds).
    pub write_flip: f64,
}

impl DiskFaults {
    /// Draws the seed's disk faults, naming the parameters `<scenario>.<field>`.
    /// Write corruption only where the scenario's checker knows what it may cost (on one node,
    /// acknowledged records from the corrupted batch on).
    pub fn draw(scenario: &str, write_corruption: bool) -> DiskFaults {
        let name = |field: &str| format!("{scenario}.{field}");
        DiskFaults {
            fsync_error: draw::rate(&name("fsync_error"), 0.0005, 0.02),
            write_error: draw::rate(&name("write_error"), 0.0005, 0.02),
            meta_error: draw::rate(&name("meta_error"), 0.001, 0.05),
            read_flip: draw::rate(&name("read_flip"), 0.001, 0.1),
            slow_io: draw::rate(&name("slow_io"), 0.001, 0.05),
            fsync_ms: draw::int(&name("fsync_ms"), 1..20),
            max_torn_sectors: draw::int(&name("max_torn_sectors"), 0..4),
            write_flip: if write_corruption { draw::rate(&name("write_flip"), 0.0005, 0.01) } else { 0.0 },
        }
    }
}

pub struct SimDisk {
    pub mem: MemDisk,
    pub faults: DiskFaults,
    /// Faults fire only while this is set (the fault phase).
    pub faulty: bool,
    /// Errors injected since the node last started: an operator restarts a node whose disk
    /// reported errors.
    pub errors_since_start: u64,
    /// All faults injected, for the report.
    pub injected: u64,
    /// Log writes that carried the appends of more than one request, for the report.
    pub joined_writes: u64,
    /// Batches a write corruption hit: partition and the batch's first offset.
    pub corrupted: Vec<(TopicPartition, i64)>,
}

impl SimDisk {
    pub fn new(mem: MemDisk, faults: DiskFaults) -> SharedDisk {
        Arc::new(Mutex::new(SimDisk {
            mem,
            faults,
            faulty: true,
            errors_since_start: 0,
            injected: 0,
            joined_writes: 0,
            corrupted: Vec::new(),
        }))
    }

    /// A power loss: unsynced writes are lost, torn at a drawn sector.
    pub fn power_loss(&mut self) {
        let max_torn = self.faults.max_torn_sectors as usize;
        self.mem.crash(&mut |_| thread_rng().gen_range(0..=max_torn));
    }

    fn fires(&mut self, p: f64) -> bool {
        let fires = self.faulty && draw::happens(p);
        if fires {
            self.injected += 1;
        }
        fires
    }

    fn slow(&mut self) -> Duration {
        if self.fires(self.faults.slow_io) {
            Duration::from_millis(thread_rng().gen_range(200..3000))
        } else {
            Duration::ZERO
        }
    }
}

pub type SharedDisk = Arc<Mutex<SimDisk>>;

pub struct SimStorage {
    pub disk: SharedDisk,
}

impl Storage for SimStorage {
    fn load(&mut self, node_id: i32, index_interval: u64) -> Result<LoadedState> {
        let mut disk = self.disk.lock().expect("disk lock");
        disk.errors_since_start = 0;
        let (state, repairs) = loader::load(&mut disk.mem, node_id, index_interval, || "sim-cluster".to_string())
            .map_err(anyhow::Error::msg)?;
        disk.mem.apply_repairs(&repairs);
        Ok(state)
    }

    fn execute(&mut self, op: StorageOp, completions: &UnboundedSender<Completion>) -> Option<Completion> {
        let mut guard = self.disk.lock().expect("disk lock");
        let disk: &mut SimDisk = &mut guard;
        if matches!(&op, StorageOp::Write { chunks, .. } if chunks.len() > 1) {
            disk.joined_writes += 1;
        }
        match op {
            StorageOp::Write { id, .. } if disk.fires(disk.faults.write_error) => {
                disk.errors_since_start += 1;
                Some(Completion::Written { id, result: Err(StorageError("no space left on device".into())) })
            }
            StorageOp::Write { id, file, position, chunks }
                if file.kind == FileKind::Log && disk.fires(disk.faults.write_flip) =>
            {
                let data = chunks.concat();
                let mut flipped = data.clone();
                let at = thread_rng().gen_range(0..flipped.len().max(1));
                if let Some(byte) = flipped.get_mut(at) {
                    *byte ^= 1 << thread_rng().gen_range(0..8);
                }
                // Which batch the flip hit, read from the bytes as they were meant to be.
                let hit = Batches::new(&data, false)
                    .find(|(start, b)| (*start..start + b.len()).contains(&at))
                    .map(|(_, b)| b.base_offset());
                if let Some(first) = hit {
                    disk.corrupted.push((file.tp.clone(), first));
                }
                disk.mem.execute(StorageOp::Write { id, file, position, chunks: vec![Bytes::from(flipped)] })
            }
            StorageOp::WriteMeta { id, .. } if disk.fires(disk.faults.meta_error) => {
                disk.errors_since_start += 1;
                Some(Completion::MetaWritten { id, result: Err(StorageError("no space left on device".into())) })
            }
            StorageOp::Sync { id, .. } => {
                // A sync completes later; if the node is killed first, it never does. A failed
                // one makes nothing durable.
                let latency = Duration::from_millis(disk.faults.fsync_ms) + disk.slow();
                let fail = disk.fires(disk.faults.fsync_error);
                drop(guard);
                let disk = self.disk.clone();
                let tx = completions.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(latency).await;
                    let mut d = disk.lock().expect("disk lock");
                    // Decided when issued, but faults that stopped meanwhile stay stopped.
                    let done = if fail && d.faulty {
                        d.errors_since_start += 1;
                        Some(Completion::Synced { id, result: Err(StorageError("input/output error".into())) })
                    } else {
                        d.mem.execute(op)
                    };
                    drop(d);
                    if let Some(c) = done {
                        let _ = tx.send(c);
                    }
                });
                None
            }
            StorageOp::Read { .. } => {
                let latency = disk.slow();
                let flip = disk.fires(disk.faults.read_flip);
                let mut done = disk.mem.execute(op);
                if let Some(Completion::Read { result: Ok(bytes), .. }) = &mut done {
                    if flip && !bytes.is_empty() {
                        let mut flipped = bytes.to_vec();
                        let at = thread_rng().gen_range(0..flipped.len());
                        flipped[at] ^= 1 << thread_rng().gen_range(0..8);
                        *bytes = Bytes::from(flipped);
                    }
                }
                if latency.is_zero() {
                    return done;
                }
                let tx = completions.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(latency).await;
                    if let Some(c) = done {
                        let _ = tx.send(c);
                    }
                });
                None
            }
            op => disk.mem.execute(op),
        }
    }

    fn mark_clean_shutdown(&mut self) -> Result<()> {
        self.disk.lock().expect("disk lock").mem.mark_clean_shutdown();
        Ok(())
    }
}
