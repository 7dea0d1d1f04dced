//! The simulated disk behind the runtime's Storage interface: the core's MemDisk model, shared
//! with the fault injector so it outlives a killed node. fsyncs take simulated time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use spool_core::loader;
use spool_core::mem_disk::MemDisk;
use spool_core::storage::{Completion, StorageOp};
use spool_core::LoadedState;
use spool_runtime::storage::Storage;
use tokio::sync::mpsc::UnboundedSender;

pub type SharedDisk = Arc<Mutex<MemDisk>>;

pub struct SimStorage {
    pub disk: SharedDisk,
    pub fsync_latency: Duration,
}

impl Storage for SimStorage {
    fn load(&mut self, node_id: i32, index_interval: u64) -> Result<LoadedState> {
        let mut disk = self.disk.lock().expect("disk lock");
        let (state, repairs) = loader::load(&mut *disk, node_id, index_interval, || "sim-cluster".to_string())
            .map_err(anyhow::Error::msg)?;
        disk.apply_repairs(&repairs);
        Ok(state)
    }

    fn execute(&mut self, op: StorageOp, completions: &UnboundedSender<Completion>) -> Option<Completion> {
        if let StorageOp::Sync { .. } = op {
            // A sync completes later; if the node is killed first, it never does.
            let disk = self.disk.clone();
            let tx = completions.clone();
            let latency = self.fsync_latency;
            tokio::spawn(async move {
                tokio::time::sleep(latency).await;
                let done = disk.lock().expect("disk lock").execute(op);
                if let Some(c) = done {
                    let _ = tx.send(c);
                }
            });
            return None;
        }
        self.disk.lock().expect("disk lock").execute(op)
    }

    fn mark_clean_shutdown(&mut self) -> Result<()> {
        self.disk.lock().expect("disk lock").mark_clean_shutdown();
        Ok(())
    }
}
