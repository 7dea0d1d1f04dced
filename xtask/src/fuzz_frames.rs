//! `cargo xtask fuzz-frames`: the coverage-guided fuzzer (libFuzzer, through libfuzzer-sys)
//! over request frames into the broker core (`fuzz/fuzz_targets/handle_frame.rs`). It starts
//! from the committed seed corpus of real client frames (`fuzz/corpus/handle_frame`) and keeps
//! what it learns under `target/fuzz/corpus`. A crash, an abort, a hang or an allocation over
//! the malloc limit fails the run and leaves its input under `target/fuzz/artifacts`.

use anyhow::{ensure, Result};
use clap::Args;

use crate::{root, run_cmd};

#[derive(Args)]
pub struct FuzzFramesArgs {
    /// Frames to run (libFuzzer's -runs); 0 runs until --seconds or forever.
    #[arg(long, default_value_t = 300_000)]
    runs: u64,
    /// Stop after this many seconds (libFuzzer's -max_total_time).
    #[arg(long)]
    seconds: Option<u64>,
    /// Only write the seeds built from the wire schema (three per served API and version) into
    /// the seed corpus, beside the frames recorded from real clients (fuzz/record_corpus.py).
    #[arg(long)]
    write_seeds: bool,
}

impl FuzzFramesArgs {
    pub fn bounded(runs: u64) -> Self {
        FuzzFramesArgs { runs, seconds: None, write_seeds: false }
    }
}

/// Instrumentation libFuzzer needs, all stable rustc flags (what cargo-fuzz passes).
const COVERAGE_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    // The broker's invariants are asserted after every frame.
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

pub fn run(args: FuzzFramesArgs) -> Result<()> {
    let root = root();
    if args.write_seeds {
        return write_seeds(&root.join("fuzz/corpus/handle_frame"));
    }
    let target = root.join("target/fuzz");
    // An explicit target keeps the instrumentation off build scripts and proc macros.
    let triple = host_triple()?;
    run_cmd(
        "cargo",
        &[
            "build",
            "--release",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--target-dir",
            &target.display().to_string(),
            "--target",
            &triple,
            "--bin",
            "handle_frame",
        ],
        &[("RUSTFLAGS", COVERAGE_FLAGS.join(" "))],
    )?;
    let work = target.join("corpus/handle_frame");
    let artifacts = target.join("artifacts");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&artifacts)?;
    let seeds = root.join("fuzz/corpus/handle_frame");
    let mut flags = vec![
        format!("-runs={}", if args.runs == 0 { -1 } else { args.runs as i64 }),
        "-max_len=65536".to_string(),
        // A frame is at most 64 KiB here: anything near these limits is a forged length at work.
        "-malloc_limit_mb=256".to_string(),
        "-rss_limit_mb=2048".to_string(),
        "-timeout=10".to_string(),
        "-print_final_stats=1".to_string(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ];
    if let Some(seconds) = args.seconds {
        flags.push(format!("-max_total_time={seconds}"));
    }
    flags.push(work.display().to_string());
    flags.push(seeds.display().to_string());
    let binary = target.join(&triple).join("release/handle_frame");
    eprintln!("xtask: $ {} {}", binary.display(), flags.join(" "));
    let output = std::process::Command::new(&binary).args(&flags).current_dir(&root).output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    let executed = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .map(|n| n.trim().to_string())
        .unwrap_or_else(|| "?".into());
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    ensure!(
        output.status.success(),
        "the frame fuzzer found a crash after {executed} frames; its input is in {}",
        artifacts.display()
    );
    // libFuzzer's last status line: coverage reached and corpus size.
    let status = log.lines().rev().find(|l| l.contains(" cov: ")).map(|l| l.trim().to_string()).unwrap_or_default();
    println!("fuzz-frames: {executed} frames executed, no crash, no hang, no allocation over 256 MiB ({status})");
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = std::process::Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("rustc -vV names no host"))
}

/// Frames (header and body) for every served API and version, bodies built from the wire schema.
fn write_seeds(dir: &std::path::Path) -> Result<()> {
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use spool_core::wire_guard::{request_schema, sample};
    std::fs::create_dir_all(dir)?;
    let mut rng = sample::Rng(0x5eed);
    let mut written = 0;
    for api in spool_core::api_versions::SERVED_APIS {
        let message = request_schema(api.key).expect("every served API has a schema");
        for version in api.served_min..=api.max {
            for n in 0..3 {
                let header = RequestHeader::default()
                    .with_request_api_key(api.key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(n)
                    .with_client_id(Some(StrBytes::from_static_str("seed")));
                let mut frame = bytes::BytesMut::new();
                header.encode(&mut frame, api.key.request_header_version(version))?;
                frame.extend_from_slice(&sample::build(message, version, &mut rng).0);
                std::fs::write(dir.join(format!("{:02}-v{version:02}-table-{n}", api.key as i16)), &frame)?;
                written += 1;
            }
        }
    }
    println!("fuzz-frames: wrote {written} seeds into {}", dir.display());
    Ok(())
}
