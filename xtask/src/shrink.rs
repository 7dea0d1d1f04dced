//! `cargo xtask sim shrink --seed N`: a failing seed draws many parameters (workload size, fault
//! rates, nemesis steps). This lowers them one at a time, pinned with `--set`, keeping each
//! change only if the seed still fails the same way, until no change helps. The result is a
//! replayable command with fewer faults and a smaller workload.

use std::process::Command;

use anyhow::{bail, Result};

struct Outcome {
    failure: Option<String>,
    params: Vec<(String, f64)>,
}

fn run(binary: &str, seed: u64, canary: bool, pins: &[(String, f64)]) -> Result<Outcome> {
    let mut cmd = Command::new(binary);
    cmd.args(["--seed", &seed.to_string()]);
    if canary {
        cmd.arg("--canary");
    }
    for (name, value) in pins {
        cmd.args(["--set", &format!("{name}={value}")]);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("seed {seed}: ");
    let mut outcome = Outcome { failure: None, params: Vec::new() };
    for line in text.lines().filter_map(|l| l.strip_prefix(&prefix)) {
        if let Some(p) = line.strip_prefix("params: ") {
            outcome.params = p
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect();
        } else if let Some(why) = line.strip_prefix("FAILED: ") {
            outcome.failure = Some(why.split("; trace").next().unwrap_or(why).to_string());
        }
    }
    Ok(outcome)
}

/// What kind of failure a message reports: its leading words without numbers, quotes or ids,
/// so "acknowledged "b5" at offset 20, ..." and "acknowledged "b1" at offset 3, ..." match.
fn kind(failure: &str) -> String {
    let failure = failure.split_once("simulated: ").map_or(failure, |(_, rest)| rest);
    let mut words: Vec<&str> = failure
        .split_whitespace()
        .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == ':' || c == ','))
        .take(3)
        .collect();
    // A Kafka error code tells failures apart that read alike.
    let tokens: Vec<&str> = failure.split_whitespace().collect();
    if let Some(code) = tokens.windows(2).find(|w| w[0] == "error").map(|w| w[1]) {
        words.push(code);
    }
    words.join(" ")
}

/// Smaller values to try for a parameter, most aggressive first.
fn candidates(value: f64) -> Vec<f64> {
    if value <= 0.0 {
        return Vec::new();
    }
    if value.fract() == 0.0 {
        let v = value as u64;
        let mut c = vec![0.0, (v / 2) as f64, (v * 3 / 4) as f64, (v * 7 / 8) as f64, v.saturating_sub(1) as f64];
        c.dedup();
        c.retain(|x| *x < value);
        c
    } else {
        vec![0.0, value / 2.0]
    }
}

/// Enough to shrink every parameter a few times over; a budget keeps a slow seed bounded.
const MAX_RUNS: usize = 400;

pub fn shrink(binary: &str, seed: u64, canary: bool, pins: Vec<String>) -> Result<()> {
    let mut pinned: Vec<(String, f64)> = Vec::new();
    for pin in &pins {
        let Some((k, v)) = pin.split_once('=') else { bail!("--set wants NAME=VALUE, got {pin}") };
        pinned.push((k.to_string(), v.parse()?));
    }
    let first = run(binary, seed, canary, &pinned)?;
    let Some(failure) = first.failure else {
        bail!("seed {seed} passes: nothing to shrink");
    };
    let wanted = kind(&failure);
    eprintln!("xtask: seed {seed} fails with: {failure}\nxtask: shrinking while it fails with \"{wanted} ...\"");
    let mut current = first.params;
    let mut tries = 0;
    while tries < MAX_RUNS {
        let mut improved = false;
        for i in 0..current.len() {
            for value in candidates(current[i].1) {
                if tries >= MAX_RUNS {
                    break;
                }
                let mut trial = current.clone();
                trial[i].1 = value;
                tries += 1;
                let outcome = run(binary, seed, canary, &trial)?;
                if outcome.failure.as_deref().is_some_and(|f| kind(f) == wanted) {
                    // The simulator reports what it used (a pin out of range is brought in).
                    let used = outcome.params.iter().find(|(n, _)| *n == trial[i].0).map_or(value, |p| p.1);
                    if used >= current[i].1 {
                        continue;
                    }
                    eprintln!("xtask: {}={} still fails", trial[i].0, used);
                    current[i].1 = used;
                    improved = true;
                    break;
                }
            }
        }
        if !improved {
            break;
        }
    }
    // Everything that differs from what the seed draws by itself, the caller's pins included.
    let original = run(binary, seed, canary, &[])?.params;
    let changed: Vec<String> = current
        .iter()
        .filter(|(name, value)| original.iter().find(|(n, _)| n == name).is_none_or(|(_, v)| v != value))
        .map(|(name, value)| format!("--set {name}={value}"))
        .collect();
    // Replay exactly what will be printed.
    let printed: Vec<(String, f64)> = current
        .iter()
        .filter(|(name, value)| original.iter().find(|(n, _)| n == name).is_none_or(|(_, v)| v != value))
        .cloned()
        .collect();
    let last = run(binary, seed, canary, &printed)?;
    let Some(why) = last.failure else { bail!("the shrunk case no longer fails: the simulator is not deterministic") };
    println!("shrink: {} runs; {} of {} parameters lowered", tries, changed.len(), current.len());
    println!("shrink: still fails with: {why}");
    let canary = if canary { " --canary" } else { "" };
    println!("replay with: cargo xtask sim run --seed {seed}{canary} {}", changed.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_one_kind_match_and_candidates_only_go_down() {
        assert_eq!(
            kind("at 23.359s simulated: acknowledged \"b52-r0\" at offset 260, but the log ends at 260"),
            kind("at 1.000s simulated: acknowledged \"b1-r3\" at offset 7, but the log ends at 2")
        );
        assert_ne!(kind("liveness: no record served"), kind("partition 0 owned by a and b"));
        assert_ne!(kind("batch 127 refused with error 45: x"), kind("batch 0 refused with error 2: y"));
        assert_eq!(candidates(10.0), vec![0.0, 5.0, 7.0, 8.0, 9.0]);
        assert_eq!(candidates(1.0), vec![0.0]);
        assert_eq!(candidates(0.25), vec![0.0, 0.125]);
        assert!(candidates(0.0).is_empty());
    }
}
