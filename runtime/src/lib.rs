//! The production driver of Spool's core: a tokio event loop that feeds the broker state machine
//! with connection frames, storage completions and time, and carries out what it asks for.

pub mod disk;
pub mod load;
pub mod server;
