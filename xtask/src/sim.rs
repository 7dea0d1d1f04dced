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
    /// Replay every seed listed in corpus/sim-seeds.txt.
    Corpus,
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

pub fn run(command: SimCommand) -> Result<()> {
    let binary = build()?;
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
            run_cmd(&binary, &args, &[])
        }
        SimCommand::Corpus => {
            let list = std::fs::read_to_string(root().join("corpus/sim-seeds.txt"))?;
            for seed in list.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
                run_cmd(&binary, &["--seed", seed], &[])?;
            }
            Ok(())
        }
    }
}
