//! The production driver of Spool's core: a tokio event loop that feeds the broker state machine
//! with connection frames, storage completions and time, and carries out what it asks for. The
//! same loop runs under madsim (`--cfg madsim`) with a simulated disk behind [`storage::Storage`].

pub mod broker_settings;
pub mod cli;
pub mod client;
mod connection;
pub mod disk;
mod forward;
pub mod io_times;
pub mod limits;
pub mod load;
mod peers;
pub mod quorum;
pub mod server;
pub mod storage;
pub mod trace;
