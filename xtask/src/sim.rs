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
    },
    /// Run many seeds; exits non-zero on any failure (or, with --canary, if none is caught).
    Fuzz(FuzzArgs),
    /// Replay every seed in corpus/sim-seeds.txt (each must pass) and corpus/canary-seeds.txt
    /// (each must be caught with the canary planted).
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
    /// Plant the canary bug; succeed only if the checkers catch it.
    #[arg(long)]
    canary: bool,
}

impl FuzzArgs {
    pub fn new(first: u64, seeds: u64, canary: bool) -> Self {
        FuzzArgs { seeds, first, canary }
    }
}

pub fn build() -> Result<String> {
    let target = root().join("target/sim");
    let rustflags = format!("{} --cfg madsim", std::env::var("RUSTFLAGS").unwrap_or_default()).trim().to_string();
    run_cmd(
        "cargo",
        &["build", "--release", "-p", "spool-sim", "--target-dir", &target.display().to_string()],
        &[("RUSTFLAGS", rustflags)],
    )?;
    Ok(target.join("release/spool-sim").display().to_string())
}

fn commit() -> String {
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
fn trace_hash(binary: &str, seed: u64) -> Result<String> {
    let out = std::process::Command::new(binary).args(["--seed", &seed.to_string()]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("trace-hash: ").map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("seed {seed} printed no trace hash:\n{text}"))
}

pub fn run(command: SimCommand) -> Result<()> {
    let binary = build()?;
    // SAFETY of the run: a single-threaded xtask sets this before spawning anything.
    unsafe { std::env::set_var("SPOOL_COMMIT", commit()) };
    match command {
        SimCommand::Run { seed, canary } => {
            let seed = seed.to_string();
            let mut args = vec!["--seed", seed.as_str()];
            if canary {
                args.push("--canary");
            }
            run_cmd(&binary, &args, &[])
        }
        SimCommand::Fuzz(f) => {
            let (first, seeds) = (f.first.to_string(), f.seeds.to_string());
            let mut args = vec!["--seed", first.as_str(), "--seeds", seeds.as_str()];
            if f.canary {
                args.push("--canary");
                return match run_cmd(&binary, &args, &[]) {
                    Err(_) => {
                        eprintln!("xtask: the canary bug was caught");
                        Ok(())
                    }
                    Ok(()) => bail!("the canary bug survived {} seeds: the checkers are blind", f.seeds),
                };
            }
            fuzz_recording_failures(&binary, &args)
        }
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
        SimCommand::Corpus => {
            for seed in corpus_seeds("corpus/sim-seeds.txt")? {
                run_cmd(&binary, &["--seed", &seed], &[])?;
            }
            // Seeds on which the canary once hung the simulator instead of being caught.
            for seed in corpus_seeds("corpus/canary-seeds.txt")? {
                expect_canary_caught(&binary, &seed)?;
            }
            Ok(())
        }
    }
}

fn corpus_seeds(path: &str) -> Result<Vec<String>> {
    let list = std::fs::read_to_string(root().join(path))?;
    Ok(list.lines().map(|l| l.split('#').next().unwrap_or("").trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// Runs one canary seed with a wall-clock limit: the checkers must report the planted bug
/// (exit status 1), not hang or crash.
fn expect_canary_caught(binary: &str, seed: &str) -> Result<()> {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
    eprintln!("xtask: $ {binary} --seed {seed} --canary (must be caught within {}s)", LIMIT.as_secs());
    let mut child = std::process::Command::new(binary)
        .args(["--seed", seed, "--canary"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.code() == Some(1) {
                eprintln!("xtask: canary seed {seed} caught");
                return Ok(());
            }
            bail!("canary seed {seed} ended with {status} instead of a reported failure");
        }
        if started.elapsed() > LIMIT {
            child.kill()?;
            bail!("canary seed {seed} did not finish within {}s: the simulator hangs", LIMIT.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs a fuzz batch, echoing its output; every failing seed is appended to the corpus with its
/// reason, so CI replays it from then on.
fn fuzz_recording_failures(binary: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: $ {binary} {}", args.join(" "));
    let out = std::process::Command::new(binary).args(args).stderr(std::process::Stdio::inherit()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let failed: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("seed ")?.split_once(": FAILED: "))
        .map(|(seed, why)| (seed, why.split("; trace").next().unwrap_or(why)))
        .collect();
    if !failed.is_empty() {
        use std::io::Write;
        let path = root().join("corpus/sim-seeds.txt");
        let mut corpus = std::fs::OpenOptions::new().append(true).open(&path)?;
        for (seed, why) in &failed {
            writeln!(corpus, "{seed}  # found by fuzz at {}: {}", commit(), why.replace('\n', " "))?;
        }
        bail!("{} seed(s) failed; added to {}", failed.len(), path.display());
    }
    anyhow::ensure!(out.status.success(), "the simulator exited with {}", out.status);
    Ok(())
}
