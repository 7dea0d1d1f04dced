//! Spool's sans-IO core. Everything here is a plain state machine or a pure function: requests,
//! storage completions and `now` go in; responses, storage operations and deadlines come out.
//! No sockets, files, clocks, threads or unseeded randomness (checked by xtask/tests/core_is_sans_io.rs).

pub mod api_versions;
pub mod batch;
pub mod broker;
pub mod buggify;
pub mod codec;
pub mod config;
pub mod config_changes;
pub mod group;
pub mod index;
pub mod leader_epochs;
pub mod loader;
pub mod mem_disk;
pub mod meta;
pub mod metadata;
pub mod ops;
pub mod partition;
pub mod producer_state;
pub mod quorum;
pub mod raft;
pub mod records;
pub mod recovery;
pub mod settings;
pub mod storage;
pub mod txn;
pub mod wire_guard;

pub use broker::{Broker, ClusterView, LoadedPartition, LoadedState, PartitionView, TopicView};
pub use ops::{Action, ConnId, Peer};
