//! `cargo xtask bench [--quick]`: hot-path micro-benchmarks, simulator speed, and Spool against a
//! peer broker under librdkafka's rdkafka_performance (bench/run.py), side by side.

use anyhow::Result;

use crate::{root, run_cmd};

pub fn run(quick: bool) -> Result<()> {
    // Micro-benchmarks of the hot path (criterion prints time and throughput per case).
    let criterion: &[&str] = if quick { &["--warm-up-time", "1", "--measurement-time", "2"] } else { &[] };
    let mut args = vec!["bench", "-p", "spool-core", "--bench", "hot_path", "--"];
    args.extend_from_slice(criterion);
    run_cmd("cargo", &args, &[])?;

    // Simulator speed: seeds per second and simulated-to-real time.
    let sim = crate::sim::build()?;
    run_cmd(&sim, &["--seed", "1", "--seeds", if quick { "300" } else { "2000" }], &[])?;

    // Whole-broker figures against the peer.
    run_cmd("cargo", &["build", "--release", "--bin", "spool"], &[])?;
    run_cmd("bash", &["tests/librdkafka/build.sh"], &[])?;
    let spool = root().join("target/release/spool").display().to_string();
    let perf = root().join("target/librdkafka/examples/rdkafka_performance").display().to_string();
    let mut args = vec!["bench/run.py", "--spool", spool.as_str(), "--perf", perf.as_str()];
    if quick {
        args.push("--quick");
    }
    run_cmd("python3", &args, &[])
}
