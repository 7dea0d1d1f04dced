//! A model of one controller's quorum disk that outlives the node's incarnations: the election
//! state and snapshots are durable when written (the real store fsyncs them), log appends and
//! truncations only once synced. A power loss takes back what was not synced; a kill keeps it
//! (the page cache survives the process).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::Bytes;
use madsim::rand::{thread_rng, Rng};
use spool_core::raft::{ElectionState, Entry, Restored, SnapshotId};
use spool_runtime::quorum::store::{DiskOpKind, QuorumDisk};

#[derive(Default)]
pub struct QuorumDiskState {
    election: Option<ElectionState>,
    snapshot: Option<(SnapshotId, Bytes)>,
    /// The log as the process sees it, and as a power loss would leave it; both start at `first`.
    current: Vec<Entry>,
    durable: Vec<Entry>,
    first: u64,
    pub power_losses: u64,
    /// Snapshots written: taken by the node itself, and installed from the leader's.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// The faults are over: slow fsyncs go on, stalls do not.
    pub healed: bool,
}

impl QuorumDiskState {
    pub fn power_loss(&mut self) {
        self.current = self.durable.clone();
        self.power_losses += 1;
    }

    /// The durable election epoch (never decreases: checked on every write).
    pub fn epoch(&self) -> i32 {
        self.election.map_or(0, |e| e.epoch)
    }
}

pub type SharedQuorumDisk = Arc<Mutex<QuorumDiskState>>;

/// How slow a seed's disks are: what the crash windows between a write and its fsync hang on.
#[derive(Clone, Copy, Debug)]
pub struct DiskSpeed {
    /// Each durable write (fsync, election state, snapshot) takes up to this long.
    pub fsync_ms: u64,
    /// The chance that one stalls for seconds instead.
    pub stall: f64,
}

/// One incarnation's handle on the shared state.
pub struct SimQuorumDisk {
    pub shared: SharedQuorumDisk,
    pub speed: DiskSpeed,
}

impl SimQuorumDisk {
    fn state(&self) -> std::sync::MutexGuard<'_, QuorumDiskState> {
        self.shared.lock().expect("quorum disk")
    }
}

impl QuorumDisk for SimQuorumDisk {
    fn latency(&mut self, kind: DiskOpKind) -> std::time::Duration {
        let durable = matches!(kind, DiskOpKind::Sync | DiskOpKind::Election | DiskOpKind::Snapshot);
        let ms = match () {
            _ if !durable => 0,
            _ if !self.state().healed && crate::draw::happens(self.speed.stall) => thread_rng().gen_range(1_000..5_000),
            _ => thread_rng().gen_range(0..=self.speed.fsync_ms),
        };
        std::time::Duration::from_millis(ms)
    }

    fn restore(&mut self) -> Result<Restored> {
        let mut state = self.state();
        // The driver fsyncs what it reads before the node takes it as durable.
        state.durable = state.current.clone();
        Ok(Restored { election: state.election, snapshot: state.snapshot.clone(), entries: state.current.clone() })
    }

    fn persist_election(&mut self, election: &ElectionState) -> Result<()> {
        let mut state = self.state();
        let before = state.epoch();
        assert!(election.epoch >= before, "the persisted epoch went back from {before} to {}", election.epoch);
        if election.epoch == before {
            if let (Some(had), Some(now)) = (state.election.and_then(|e| e.voted_for), election.voted_for) {
                assert_eq!(had, now, "a second vote in epoch {before}");
            }
        }
        state.election = Some(*election);
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let mut state = self.state();
        for entry in entries {
            let expected = state.first + state.current.len() as u64;
            assert_eq!(entry.offset, expected, "an append that does not follow the log's end");
            state.current.push(entry.clone());
        }
        Ok(())
    }

    fn truncate(&mut self, end: u64) -> Result<()> {
        let mut state = self.state();
        assert!(end >= state.first, "truncation below the log's start");
        let keep = (end - state.first) as usize;
        state.current.truncate(keep);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let mut state = self.state();
        state.durable = state.current.clone();
        Ok(())
    }

    fn write_snapshot(&mut self, id: SnapshotId, data: &[u8], replaces_log: bool) -> Result<()> {
        let mut state = self.state();
        state.snapshot = Some((id, Bytes::copy_from_slice(data)));
        if replaces_log {
            state.snapshots_installed += 1;
        } else {
            state.snapshots_taken += 1;
        }
        let end = state.first + state.current.len() as u64;
        if replaces_log || id.end_offset >= end {
            state.current.clear();
            state.durable.clear();
        } else {
            let drop = id.end_offset.saturating_sub(state.first) as usize;
            state.current.drain(..drop);
            let durable_drop = drop.min(state.durable.len());
            state.durable.drain(..durable_drop);
        }
        state.first = state.first.max(id.end_offset);
        Ok(())
    }
}
