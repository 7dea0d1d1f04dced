//! What the event loop needs from a disk: start-up loading with recovery, carrying out storage
//! operations, and the clean-shutdown marker. Real files in production, a model in simulation.

use anyhow::Result;
use spool_core::storage::{Completion, StorageOp};
use spool_core::LoadedState;
use tokio::sync::mpsc::UnboundedSender;

pub trait Storage: Send + 'static {
    /// Reads the data directory, runs recovery and applies its repairs.
    fn load(&mut self, node_id: i32, index_interval: u64) -> Result<LoadedState>;
    /// Carries out one operation; returns its completion now, or sends it on `completions` later.
    fn execute(&mut self, op: StorageOp, completions: &UnboundedSender<Completion>) -> Option<Completion>;
    /// Written last in a clean shutdown, after everything else is durable.
    fn mark_clean_shutdown(&mut self) -> Result<()>;
}
