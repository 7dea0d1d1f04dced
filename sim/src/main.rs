//! `spool-sim`: runs seeded simulations of Spool. Build it with `--cfg madsim` (cargo xtask sim
//! does); a normal build only explains that.

#[cfg(madsim)]
mod disk;
#[cfg(madsim)]
mod group_scenario;
#[cfg(madsim)]
mod scenario;

#[cfg(not(madsim))]
fn main() {
    eprintln!("spool-sim runs only in a madsim build: use `cargo xtask sim run --seed N`");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,madsim=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut seed: u64 = 1;
    let mut seeds: u64 = 1;
    let mut canary = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value =
            |name: &str| args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a number"));
        match arg.as_str() {
            "--seed" => seed = value("--seed"),
            "--seeds" => seeds = value("--seeds"),
            // A planted bug (fsyncs that make nothing durable) the checkers must catch.
            "--canary" => canary = true,
            other => {
                eprintln!("unknown argument {other}; usage: spool-sim [--seed N] [--seeds K] [--canary]");
                std::process::exit(2);
            }
        }
    }
    let mut failures = 0u64;
    for s in seed..seed + seeds {
        let outcome = scenario::run_seed(s, canary).and_then(|a| {
            if canary {
                return Ok(a);
            }
            group_scenario::run_seed(s).map(|b| format!("{a}; groups: {b}"))
        });
        match outcome {
            Ok(report) => println!("seed {s}: ok: {report}"),
            Err(e) => {
                failures += 1;
                println!("seed {s}: FAILED: {e}");
                println!("replay with: cargo xtask sim run --seed {s}");
            }
        }
    }
    println!("{} passed, {failures} failed", seeds - failures);
    if failures > 0 {
        std::process::exit(1);
    }
}
