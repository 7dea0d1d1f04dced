//! Start-up on real files: a [`DataDir`] over the data directory for the core's loader, then the
//! repairs it asks for (truncate torn tails, drop segments after corruption).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use spool_core::loader::{self, DataDir, Repair};
use spool_core::storage::{FileKind, MetaFile, SegmentFile, TopicPartition};
use spool_core::LoadedState;

use crate::disk::{fsync_dir, write_atomic};

/// Present only after a clean shutdown; removed at start.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

struct FsDataDir {
    root: PathBuf,
}

impl DataDir for FsDataDir {
    fn read_meta(&mut self, file: MetaFile) -> Option<Vec<u8>> {
        fs::read(self.root.join(file.file_name())).ok()
    }
    fn clean_shutdown(&mut self) -> bool {
        self.root.join(CLEAN_SHUTDOWN_MARKER).exists()
    }
    fn list(&mut self, tp: &TopicPartition, kind: FileKind) -> Vec<i64> {
        let suffix = format!(".{}", kind.extension());
        let Ok(entries) = fs::read_dir(self.root.join(tp.dir_name())) else {
            return Vec::new();
        };
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(&suffix)?.parse().ok()).collect()
    }
    fn size(&mut self, file: &SegmentFile) -> u64 {
        fs::metadata(self.root.join(file.relative_path())).map_or(0, |m| m.len())
    }
    fn read(&mut self, file: &SegmentFile) -> Option<Vec<u8>> {
        fs::read(self.root.join(file.relative_path())).ok()
    }
}

/// Reads and recovers everything under `root`. `new_cluster_id` names a fresh cluster.
pub fn load(
    root: &Path,
    node_id: i32,
    index_interval: u64,
    new_cluster_id: impl FnOnce() -> String,
) -> Result<LoadedState> {
    fs::create_dir_all(root).with_context(|| format!("creating data directory {}", root.display()))?;
    let mut dir = FsDataDir { root: root.to_path_buf() };
    let (state, repairs) = loader::load(&mut dir, node_id, index_interval, new_cluster_id)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("loading {}", root.display()))?;
    let mut touched = std::collections::BTreeSet::new();
    for repair in &repairs {
        match repair {
            Repair::Truncate(file, len) => {
                let path = root.join(file.relative_path());
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                f.set_len(*len)?;
                f.sync_all()?;
                touched.insert(root.join(file.tp.dir_name()));
            }
            Repair::Delete(file) => {
                let _ = fs::remove_file(root.join(file.relative_path()));
                touched.insert(root.join(file.tp.dir_name()));
            }
            Repair::Sync(file) => {
                let path = root.join(file.relative_path());
                fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("syncing {}", path.display()))?;
                touched.insert(root.join(file.tp.dir_name()));
            }
            Repair::ForgetRecoveryPoints => {
                let path = root.join(MetaFile::RecoveryPoints.file_name());
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", path.display()))
                    }
                    _ => {}
                }
                touched.insert(root.to_path_buf());
            }
        }
    }
    for dir in touched {
        fsync_dir(&dir)?;
    }
    let marker = root.join(CLEAN_SHUTDOWN_MARKER);
    if marker.exists() {
        // From here on a crash must trigger a full recovery scan.
        fs::remove_file(&marker)?;
        fsync_dir(root)?;
    }
    Ok(state)
}

/// Written last in a clean shutdown, after everything else is durable.
pub fn write_clean_shutdown_marker(root: &Path) -> Result<()> {
    write_atomic(&root.join(CLEAN_SHUTDOWN_MARKER), b"{\"version\":1}\n")?;
    Ok(())
}
