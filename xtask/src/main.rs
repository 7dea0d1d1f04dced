//! `cargo xtask <command>`: the project's automation, in Rust so it runs wherever cargo does.

mod bench;
mod cluster;
mod fuzz;
mod fuzz_frames;
mod gen_wire_schema;
mod image;
mod mutants;
mod shrink;
mod sim;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Spool project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the test suites need (apt, pip, npm; idempotent) and run every suite.
    Test(test::TestArgs),
    /// Deterministic simulation: replay a seed, fuzz many, replay the corpus.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Benchmarks: hot path, simulator speed, and the broker against a peer.
    Bench {
        /// A short run (a couple of minutes).
        #[arg(long)]
        quick: bool,
    },
    /// Build the static binary and the Docker image (FROM scratch).
    Image {
        #[arg(long, default_value = "spool:latest")]
        tag: String,
    },
    /// Regenerate core/src/wire_guard/schema.rs from kafka-protocol's request decoders.
    GenWireSchema,
    /// The coverage-guided fuzzer (libFuzzer) over request frames into the broker core.
    FuzzFrames(fuzz_frames::FuzzFramesArgs),
    /// A cluster of spool nodes on this machine: `up --nodes 3`, `down`.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Test(args) => test::run(args),
        Command::Sim(command) => sim::run(command),
        Command::Image { tag } => image::run(&tag),
        Command::Bench { quick } => bench::run(quick),
        Command::GenWireSchema => gen_wire_schema::run(&root()),
        Command::FuzzFrames(args) => fuzz_frames::run(args),
        Command::Cluster(command) => cluster::run(command),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// Runs a command from the workspace root, failing with its name if it fails.
pub fn run_cmd(program: &str, args: &[&str], envs: &[(&str, String)]) -> Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v)))
        .current_dir(root())
        .status()?;
    anyhow::ensure!(status.success(), "`{program} {}` failed with {status}", args.join(" "));
    Ok(())
}
