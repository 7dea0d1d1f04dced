//! `cargo xtask test`: installs the test prerequisites and runs every suite in turn.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use crate::{root, run_cmd};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Suite {
    /// Unit, property and in-process integration tests (cargo test --workspace).
    Cargo,
    /// The real spool binary driven by real Kafka clients.
    E2e,
    /// Seeded simulation: the corpus, a batch of fresh seeds, and the canary.
    Sim,
    /// The coverage-guided fuzzer over request frames, a bounded run.
    Fuzz,
    /// librdkafka's own test suite against the broker (the allowlist in tests/librdkafka).
    Librdkafka,
    /// The FROM-scratch image in a Docker engine (installed and started if needed).
    Docker,
}

#[derive(Args)]
pub struct TestArgs {
    /// Run only these suites (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Suite>,
    /// Do not install prerequisites (they are already there).
    #[arg(long)]
    skip_install: bool,
}

pub fn run(args: TestArgs) -> Result<()> {
    let suites: Vec<Suite> = if args.only.is_empty() { Suite::value_variants().to_vec() } else { args.only.clone() };
    let wants = |s: Suite| suites.contains(&s);
    if !args.skip_install && wants(Suite::E2e) {
        run_cmd("bash", &["tests/e2e/install.sh"], &[])?;
    }
    let mut failed = Vec::new();
    let mut passed = 0;
    for suite in &suites {
        let started = Instant::now();
        let result = match suite {
            Suite::Cargo => {
                lint().and_then(|()| run_cmd("cargo", &["test", "--workspace", "--profile", "checked"], &[]))
            }
            Suite::E2e => e2e(),
            Suite::Sim => sim(),
            Suite::Fuzz => crate::fuzz_frames::run(crate::fuzz_frames::FuzzFramesArgs::bounded(FUZZ_FRAMES_PER_RUN)),
            Suite::Librdkafka => librdkafka(),
            Suite::Docker => run_cmd("bash", &["tests/docker/run.sh"], &[]),
        };
        eprintln!(
            "xtask: suite {suite:?} {} in {:.0?}",
            if result.is_ok() { "passed" } else { "FAILED" },
            started.elapsed()
        );
        match result {
            Ok(()) => passed += 1,
            Err(e) => {
                eprintln!("xtask: {e:#}");
                failed.push(*suite);
            }
        }
    }
    println!("suites: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        bail!("failed suites: {failed:?}");
    }
    Ok(())
}

/// Frames the fuzz suite runs on every change (about a minute); `cargo xtask fuzz-frames
/// --runs 0 --seconds N` runs longer campaigns.
const FUZZ_FRAMES_PER_RUN: u64 = 300_000;

fn e2e() -> Result<()> {
    let spool = checked_spool()?;
    let venv = std::env::var("E2E_VENV").unwrap_or_else(|_| root().join("target/e2e-venv").display().to_string());
    run_cmd(&format!("{venv}/bin/python"), &["-m", "pytest", "tests/e2e"], &[("SPOOL_BIN", spool)])
}

fn sim() -> Result<()> {
    use crate::sim::{run, FuzzArgs, SimCommand};
    run(SimCommand::Corpus)?;
    run(SimCommand::CheckDeterminism { seeds: 20, first: 1, step: 97 })?;
    run(SimCommand::Fuzz(FuzzArgs::new(1, 2000, false)))?;
    run(SimCommand::Fuzz(FuzzArgs::new(1, 50, true)))?;
    crate::sim::shrink_a_canary_seed()
}

/// Formatting and clippy, as the project requires of every commit.
fn lint() -> Result<()> {
    let has = |tool: &str| {
        std::process::Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|o| o.status.success())
    };
    if !has("clippy") || !has("fmt") {
        run_cmd("rustup", &["component", "add", "clippy", "rustfmt"], &[])?;
    }
    run_cmd("cargo", &["fmt", "--all", "--check"], &[])?;
    run_cmd("cargo", &["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"], &[])
}

fn librdkafka() -> Result<()> {
    let spool = checked_spool()?;
    run_cmd("bash", &["tests/librdkafka/build.sh"], &[])?;
    run_cmd("bash", &["tests/librdkafka/run.sh"], &[("SPOOL_BIN", spool)])
}

/// The broker as the suites run it: release speed, invariants asserted (`profile.checked`).
fn checked_spool() -> Result<String> {
    run_cmd("cargo", &["build", "--profile", "checked", "--bin", "spool"], &[])?;
    Ok(root().join("target/checked/spool").display().to_string())
}
