//! `cargo xtask sim fuzz`: runs a range of seeds split over several simulator processes, with a
//! progress bar and a summary (seeds per second, simulated-to-real time, failures, the slowest
//! seed). Every failing seed is appended to the corpus with its reason, so CI replays it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::root;

struct Failure {
    seed: u64,
    why: String,
    params: String,
}

/// Seeds one simulator process runs before a fresh process takes over, so a process that dies
/// (or a leak like the one madsim-rs/madsim#242 caused, now worked around) costs at most these.
const SEEDS_PER_PROCESS: u64 = 500;

pub fn fuzz(binary: &str, first: u64, seeds: u64, jobs: usize, commit: &str) -> Result<()> {
    let started = Instant::now();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let end = first + seeds;
    let next_seed = Arc::new(Mutex::new(first));
    let crashed = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..jobs.max(1) {
        let (next_seed, crashed, tx, binary) =
            (next_seed.clone(), crashed.clone(), lines_tx.clone(), binary.to_string());
        workers.push(std::thread::spawn(move || -> Result<()> {
            loop {
                let (start, count) = {
                    let mut next = next_seed.lock().expect("seed counter");
                    if *next >= end {
                        return Ok(());
                    }
                    let count = SEEDS_PER_PROCESS.min(end - *next);
                    *next += count;
                    (*next - count, count)
                };
                let mut child = Command::new(&binary)
                    .args(["--seed", &start.to_string(), "--seeds", &count.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?;
                let out = child.stdout.take().expect("piped");
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        let _ = child.kill();
                        return Ok(());
                    }
                }
                let status = child.wait()?;
                // Exit 1 is "some seed failed", counted from its lines; anything else is a broken simulator.
                if !status.success() && status.code() != Some(1) {
                    crashed.lock().expect("crashed").push(status.to_string());
                }
            }
        }));
    }
    drop(lines_tx);
    let bar = ProgressBar::new(seeds).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {per_sec}, {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message("0 failed");
    let mut failures: Vec<Failure> = Vec::new();
    let mut params = std::collections::BTreeMap::new();
    let mut slowest = (0u64, 0u64);
    let mut simulated_s = 0f64;
    let mut finished = 0u64;
    for line in lines {
        if let Some(rest) = line.strip_prefix("speed: ") {
            simulated_s += rest
                .split("; ")
                .nth(1)
                .and_then(|s| s.split(" s simulated").next())
                .and_then(|n| n.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            continue;
        }
        let Some((seed, rest)) = line.strip_prefix("seed ").and_then(|l| l.split_once(": ")) else {
            continue;
        };
        let Ok(seed) = seed.parse::<u64>() else {
            continue;
        };
        if let Some(p) = rest.strip_prefix("params: ") {
            params.insert(seed, p.to_string());
            continue;
        }
        let ms = rest.rsplit("; ").next().and_then(|t| t.strip_suffix(" ms")).and_then(|t| t.parse().ok());
        if let Some(ms) = ms {
            if ms > slowest.1 {
                slowest = (seed, ms);
            }
        }
        if let Some(why) = rest.strip_prefix("FAILED: ") {
            let why = why.split("; trace").next().unwrap_or(why).to_string();
            let line = format!("seed {seed}: FAILED: {why}\n  replay with: cargo xtask sim run --seed {seed}");
            // A hidden bar (no terminal, as in CI) drops its printed lines.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
            failures.push(Failure { seed, why, params: params.remove(&seed).unwrap_or_default() });
            bar.set_message(format!("{} failed", failures.len()));
        } else {
            params.remove(&seed);
        }
        finished += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for worker in workers {
        worker.join().expect("fuzz worker")?;
    }
    let crashed = std::mem::take(&mut *crashed.lock().expect("crashed"));
    let wall = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {finished} seeds in {wall:.1} s with {jobs} jobs = {:.0} seeds/s; {simulated_s:.0} s simulated = {:.0}x real time",
        finished as f64 / wall.max(1e-9),
        simulated_s / wall.max(1e-9)
    );
    println!("fuzz: {} failed; slowest seed {} ({} ms wall)", failures.len(), slowest.0, slowest.1);
    if !failures.is_empty() {
        let path = root().join("corpus/sim-seeds.txt");
        let mut corpus = std::fs::OpenOptions::new().append(true).open(&path)?;
        for f in &failures {
            // A failure is only useful if it replays: check it does, bit for bit.
            let (a, b) = (crate::sim::trace_hash(binary, f.seed)?, crate::sim::trace_hash(binary, f.seed)?);
            let replays =
                if a == b { format!("replays with trace {a}") } else { format!("NOT DETERMINISTIC: {a} vs {b}") };
            println!("seed {}: {}\n  params: {}\n  {replays}", f.seed, f.why, f.params);
            writeln!(corpus, "{}  # found by fuzz at {commit}: {}", f.seed, f.why.replace('\n', " "))?;
        }
        bail!("{} seed(s) failed; added to {}", failures.len(), path.display());
    }
    if !crashed.is_empty() {
        bail!("a simulator process ended abnormally: {}", crashed.join(", "));
    }
    if finished != seeds {
        bail!("only {finished} of {seeds} seeds reported a result");
    }
    Ok(())
}
