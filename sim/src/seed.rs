//! Runs one scenario of one seed in a fresh madsim runtime, folding its event trace into the
//! seed's trace and counting simulated time. A panic (in the broker or a client) or a run past the
//! simulated time limit is that seed's failure, not the end of a fuzz batch.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use madsim::runtime::Runtime;

/// Simulated milliseconds across all seeds of this process, for the speed report.
pub static SIMULATED_MS: AtomicU64 = AtomicU64::new(0);

/// The seed's trace: every scenario's (events, hash) folded together.
static TRACE: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Longest a scenario may run in simulated time; the scenarios' own liveness bounds are far
/// shorter, so reaching it means something hangs.
const TIME_LIMIT: Duration = Duration::from_secs(1800);

pub fn start_trace() {
    *TRACE.lock().expect("trace") = (0, 0);
}

/// The seed's (events, hash) so far.
pub fn trace() -> (u64, u64) {
    *TRACE.lock().expect("trace")
}

fn fold_trace((events, hash): (u64, u64)) {
    let mut t = TRACE.lock().expect("trace");
    let mut h = std::hash::DefaultHasher::new();
    (t.1, hash).hash(&mut h);
    *t = (t.0 + events, h.finish());
}

pub fn simulate<F, Fut>(seed: u64, scenario: F) -> Result<String, String>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(TIME_LIMIT);
    spool_runtime::trace::enable();
    let started = std::panic::AssertUnwindSafe(async {
        let start = tokio::time::Instant::now();
        let result = scenario().await;
        (result, start.elapsed())
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(started.0)));
    fold_trace(spool_runtime::trace::finish());
    match outcome {
        Ok((result, simulated)) => {
            SIMULATED_MS.fetch_add(simulated.as_millis() as u64, Ordering::Relaxed);
            // Every failure names when, in simulated time, the scenario gave up.
            result.map_err(|e| format!("{e} (scenario ended at {:.3}s simulated)", simulated.as_secs_f64()))
        }
        Err(panic) => {
            SIMULATED_MS.fetch_add(TIME_LIMIT.as_millis() as u64, Ordering::Relaxed);
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".to_string());
            Err(format!("the simulation panicked: {message}"))
        }
    }
}

/// Kills the scenario's nodes when dropped, at the end of the scenario however it ends. madsim
/// keeps a node's tasks when its runtime is dropped (see madsim-rs/madsim#242), so without this
/// every seed's broker, with its simulated disk, stayed in memory: about 2 MB per seed.
pub struct KillOnExit {
    handle: madsim::runtime::Handle,
    nodes: Vec<madsim::task::NodeId>,
}

impl KillOnExit {
    pub fn new(handle: &madsim::runtime::Handle) -> Self {
        KillOnExit { handle: handle.clone(), nodes: Vec::new() }
    }

    pub fn add(&mut self, node: &madsim::runtime::NodeHandle) {
        self.nodes.push(node.id());
    }
}

impl Drop for KillOnExit {
    fn drop(&mut self) {
        for &id in &self.nodes {
            self.handle.kill(id);
        }
    }
}
