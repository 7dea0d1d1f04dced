//! The event trace of a node, for deterministic simulation: every input the event loop hands the
//! broker and every action it gets back is folded into one hash. Two runs of the same seed on the
//! same build must end with the same hash; any difference is non-determinism. Off (a no-op)
//! unless `enable()` was called, so production pays nothing.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
static VERBOSE: AtomicBool = AtomicBool::new(false);
/// The time of the first described event of the trace; lines show time since then.
static FIRST_MS: AtomicI64 = AtomicI64::new(i64::MIN);
static EVENTS: AtomicU64 = AtomicU64::new(0);
static HASHER: Mutex<Option<DefaultHasher>> = Mutex::new(None);

/// Starts a fresh trace (one per simulated seed).
pub fn enable() {
    *HASHER.lock().expect("trace lock") = Some(DefaultHasher::new());
    EVENTS.store(0, Ordering::Relaxed);
    FIRST_MS.store(i64::MIN, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Folds one event, tagged with its kind and the node-visible time, into the trace.
pub fn record(kind: &str, now_ms: i64, event: &impl Hash) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(h) = HASHER.lock().expect("trace lock").as_mut() {
        kind.hash(h);
        now_ms.hash(h);
        event.hash(h);
    }
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// The trace so far: (events, hash).
pub fn finish() -> (u64, u64) {
    let hash = HASHER.lock().expect("trace lock").as_ref().map_or(0, |h| h.clone().finish());
    (EVENTS.load(Ordering::Relaxed), hash)
}

/// Also print one line per event: the node's simulated time, the event, and the broker's state
/// after it (`spool-sim -v`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Prints an event line when verbose; `state` is only computed then.
pub fn describe(kind: &str, now_ms: i64, detail: impl FnOnce() -> String, state: impl FnOnce() -> String) {
    if VERBOSE.load(Ordering::Relaxed) {
        let first = match FIRST_MS.compare_exchange(i64::MIN, now_ms, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => now_ms,
            Err(first) => first,
        };
        let t = now_ms - first;
        println!("  {:>4}.{:03} {kind:<10} {:<28} | {}", t / 1000, t % 1000, detail(), state());
    }
}
