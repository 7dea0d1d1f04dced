//! `cargo xtask sim`: builds the simulator with `--cfg madsim` in its own target directory and
//! runs seeds: one (`run`), many (`fuzz`), or the regression corpus.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::{root, run_cmd};

#[derive(Subcommand)]
pub enum SimCommand {
    /// Replay one seed.
    Run {
        #[arg(long)]
        seed: u64,
        /// Plant the canary bug (fsyncs that make nothing durable).
        #[arg(long)]
        canary: bool,
        /// One line per broker event: time, event, and the broker's state after it.
        #[arg(short, long)]
        verbose: bool,
        /// Pin a drawn parameter, as printed in the run's `params:` line (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        pins: Vec<String>,
    },
    /// Run many seeds; exits non-zero on any failure (or, with --canary, if none is caught).
    Fuzz(FuzzArgs),
    /// Search for smaller parameters (fewer faults, a smaller workload) with which a failing
    /// seed still fails the same way, and print them as a replayable command.
    Shrink {
        #[arg(long)]
        seed: u64,
        /// Shrink a seed that catches the canary bug (shows the shrinker at work).
        #[arg(long)]
        canary: bool,
        /// Start from these pins (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        pins: Vec<String>,
    },
    /// Apply each mutation in sim/mutants.txt alone and run seeds until one fails: how many of
    /// these planted bugs the checkers catch (see docs/simulation.md).
    Mutants {
        #[arg(long, default_value_t = 2000)]
        seeds: u64,
        /// Only the mutant of this name, or a family by prefix (`raft-*`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Replay every seed in corpus/sim-seeds.txt (each must pass) and corpus/canary-seeds.txt
    /// (each must finish with the canary planted: no hang, no crash).
    Corpus,
    /// Run seeds twice, each in its own process, and require identical trace hashes.
    CheckDeterminism {
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first: u64,
        /// Take every STEP-th seed from FIRST.
        #[arg(long, default_value_t = 97)]
        step: u64,
    },
}

#[derive(Args)]
pub struct FuzzArgs {
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Simulator processes to run at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Plant the canary bug; succeed only if the checkers catch it.
    #[arg(long)]
    canary: bool,
}

impl FuzzArgs {
    pub fn new(first: u64, seeds: u64, canary: bool) -> Self {
        FuzzArgs { seeds, first, jobs: None, canary }
    }
}

pub fn build() -> Result<String> {
    let target = root().join("target/sim");
    let rustflags = format!("{} --cfg madsim", std::env::var("RUSTFLAGS").unwrap_or_default()).trim().to_string();
    run_cmd(
        "cargo",
        &["build", "--profile", "checked", "-p", "spool-sim", "--target-dir", &target.display().to_string()],
        &[("RUSTFLAGS", rustflags)],
    )?;
    Ok(target.join("checked/spool-sim").display().to_string())
}

pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The `trace-hash:` line of one seed run in a fresh process.
pub fn trace_hash(binary: &str, seed: u64) -> Result<String> {
    let out = std::process::Command::new(binary).args(["--seed", &seed.to_string()]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("trace-hash: ").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("seed {seed} printed no trace hash:\n{text}"))
}

pub fn run(command: SimCommand) -> Result<()> {
    if let SimCommand::Mutants { seeds, only } = command {
        return crate::mutants::run(seeds, only);
    }
    let binary = build()?;
    // SAFETY of the run: a single-threaded xtask sets this before spawning anything.
    unsafe { std::env::set_var("SPOOL_COMMIT", commit()) };
    match command {
        SimCommand::Run { seed, canary, verbose, pins } => {
            let seed = seed.to_string();
            let mut args = vec!["--seed".to_string(), seed];
            if canary {
                args.push("--canary".into());
            }
            if verbose {
                args.push("-v".into());
            }
            for pin in pins {
                args.extend(["--set".to_string(), pin]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cmd(&binary, &args, &[])
        }
        SimCommand::Fuzz(f) => {
            if f.canary {
                let (first, seeds) = (f.first.to_string(), f.seeds.to_string());
                let args = ["--seed", first.as_str(), "--seeds", seeds.as_str(), "--canary"];
                return match run_cmd(&binary, &args, &[]) {
                    Err(_) => {
                        eprintln!("xtask: the canary bug was caught");
                        Ok(())
                    }
                    Ok(()) => bail!("the canary bug survived {} seeds: the checkers are blind", f.seeds),
                };
            }
            let jobs = f.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            crate::fuzz::fuzz(&binary, f.first, f.seeds, jobs.max(1), &commit())
        }
        SimCommand::Shrink { seed, canary, pins } => crate::shrink::shrink(&binary, seed, canary, pins),
        SimCommand::CheckDeterminism { seeds, first, step } => {
            for i in 0..seeds {
                let seed = first + i * step;
                let (a, b) = (trace_hash(&binary, seed)?, trace_hash(&binary, seed)?);
                if a != b {
                    bail!("seed {seed} is not deterministic: trace hashes {a} and {b}");
                }
                eprintln!("xtask: seed {seed}: trace {a} twice");
            }
            println!("determinism: {seeds} seeds replayed with identical traces");
            Ok(())
        }
        SimCommand::Mutants { .. } => unreachable!("handled above"),
        SimCommand::Corpus => {
            for seed in corpus_seeds("corpus/sim-seeds.txt")? {
                run_cmd(&binary, &["--seed", &seed], &[])?;
            }
            // Seeds on which the canary once hung the simulator instead of being caught.
            for seed in corpus_seeds("corpus/canary-seeds.txt")? {
                expect_canary_finishes(&binary, &seed)?;
            }
            Ok(())
        }
    }
}

fn corpus_seeds(path: &str) -> Result<Vec<String>> {
    let list = std::fs::read_to_string(root().join(path))?;
    Ok(list.lines().map(|l| l.split('#').next().unwrap_or("").trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// Runs one canary seed with a wall-clock limit: it must finish, caught (exit 1) or not (exit
/// 0; whether a seed's faults expose the planted bug changes as the scenarios grow), and never
/// hang or crash, as seed 13 once did.
fn expect_canary_finishes(binary: &str, seed: &str) -> Result<()> {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
    eprintln!("xtask: $ {binary} --seed {seed} --canary (must finish within {}s)", LIMIT.as_secs());
    let mut child = std::process::Command::new(binary)
        .args(["--seed", seed, "--canary"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            match status.code() {
                Some(1) => eprintln!("xtask: canary seed {seed} finished; the canary was caught"),
                Some(0) => eprintln!("xtask: canary seed {seed} finished; its faults did not expose the canary"),
                _ => bail!("canary seed {seed} ended with {status}: the simulator broke"),
            }
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            child.kill()?;
            bail!("canary seed {seed} did not finish within {}s: the simulator hangs", LIMIT.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Finds a seed that catches the canary and shrinks it: the shrinker must end with a smaller
/// case that still fails (it re-runs its result and errs otherwise).
pub fn shrink_a_canary_seed() -> Result<()> {
    let binary = build()?;
    let out = std::process::Command::new(&binary).args(["--seed", "1", "--seeds", "50", "--canary"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let seed = text
        .lines()
        .find_map(|l| l.strip_prefix("seed ")?.split_once(": FAILED")?.0.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no seed in 1..51 caught the canary"))?;
    crate::shrink::shrink(&binary, seed, true, Vec::new())
}
