//! `spool-sim`: runs seeded simulations of Spool. Build it with `--cfg madsim` (cargo xtask sim
//! does); a normal build only explains that.

#[cfg(madsim)]
mod cluster_scenario;
#[cfg(madsim)]
mod disk;
#[cfg(madsim)]
mod draw;
#[cfg(madsim)]
mod faults;
#[cfg(madsim)]
mod group_scenario;
#[cfg(madsim)]
mod hostile;
#[cfg(madsim)]
mod quorum_disk;
#[cfg(madsim)]
mod quorum_scenario;
#[cfg(madsim)]
mod scenario;
#[cfg(madsim)]
mod seed;
#[cfg(madsim)]
mod txn_scenario;

#[cfg(not(madsim))]
fn main() {
    eprintln!("spool-sim runs only in a madsim build: use `cargo xtask sim run --seed N`");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut seed: u64 = 1;
    let mut seeds: u64 = 1;
    let mut canary = false;
    let mut only: Option<String> = None;
    let mut pins = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value =
            |name: &str| args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a number"));
        match arg.as_str() {
            "--seed" => seed = value("--seed"),
            "--seeds" => seeds = value("--seeds"),
            // A planted bug (fsyncs that make nothing durable) the checkers must catch.
            "--canary" => canary = true,
            // One scenario alone (single, groups, transactions, quorum, cluster), while working on it.
            "--only" => only = args.next(),
            // One line per broker event with the broker's state after it.
            "-v" | "--verbose" => spool_runtime::trace::set_verbose(true),
            // Pins a drawn parameter (as printed in a run's `params:` line), for replaying a
            // shrunk case.
            "--set" => pins.push(args.next().unwrap_or_default()),
            other => {
                eprintln!("unknown argument {other}; usage: spool-sim [--seed N] [--seeds K] [--canary] [--only SCENARIO] [-v] [--set name=value]...");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = draw::set_overrides(&pins) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let commit = std::env::var("SPOOL_COMMIT").unwrap_or_else(|_| "unknown".to_string());
    println!(
        "spool-sim: seeds {seed}..{} on commit {commit}{}",
        seed + seeds,
        if canary { " (canary planted)" } else { "" }
    );
    let mut failures = 0u64;
    let mut ran = 0u64;
    let started = std::time::Instant::now();
    for s in seed..seed + seeds {
        seed::start_trace();
        draw::reset();
        ran += 1;
        let seed_started = std::time::Instant::now();
        let outcome = match only.as_deref() {
            None => scenario::run_seed(s, canary).and_then(|a| {
                if canary {
                    return Ok(a);
                }
                let b = group_scenario::run_seed(s).map_err(|e| format!("groups: {e}"))?;
                let c = txn_scenario::run_seed(s).map_err(|e| format!("transactions: {e}"))?;
                let d = quorum_scenario::run_seed(s).map_err(|e| format!("quorum: {e}"))?;
                let e = cluster_scenario::run_seed(s).map_err(|e| format!("cluster: {e}"))?;
                Ok(format!("{a}; groups: {b}; transactions: {c}; {d}; {e}"))
            }),
            Some("single") => scenario::run_seed(s, canary),
            Some("groups") => group_scenario::run_seed(s),
            Some("transactions") => txn_scenario::run_seed(s),
            Some("quorum") => quorum_scenario::run_seed(s),
            Some("cluster") => cluster_scenario::run_seed(s),
            Some(other) => {
                eprintln!("unknown scenario {other}: single, groups, transactions, quorum or cluster");
                std::process::exit(2);
            }
        };
        let (events, hash) = seed::trace();
        let wall_ms = seed_started.elapsed().as_millis();
        println!("seed {s}: params: {}", draw::drawn());
        match outcome {
            Ok(report) => println!("seed {s}: ok: {report}; trace {events} events {hash:016x}; {wall_ms} ms"),
            Err(e) => {
                failures += 1;
                println!("seed {s}: FAILED: {e}; trace {events} events {hash:016x}; {wall_ms} ms");
                let pinned: String = pins.iter().map(|p| format!(" --set {p}")).collect();
                println!(
                    "replay with: cargo xtask sim run --seed {s}{}{pinned}",
                    if canary { " --canary" } else { "" }
                );
                if canary {
                    // The planted bug is caught; later seeds add nothing.
                    break;
                }
            }
        }
        if seeds == 1 {
            println!("trace-hash: {hash:016x}");
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let simulated = seed::SIMULATED_MS.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
    println!(
        "speed: {seeds} seeds in {wall:.2} s wall = {:.0} seeds/s; {simulated:.0} s simulated = {:.0}x real time",
        seeds as f64 / wall.max(1e-9),
        simulated / wall.max(1e-9)
    );
    println!("{} passed, {failures} failed", ran - failures);
    if failures > 0 {
        std::process::exit(1);
    }
}
