//! `cargo xtask sim mutants`: measures the simulator's checkers. Each mutation in
//! `sim/mutants.txt` is a small, realistic mistake in the core; it is applied alone, the
//! simulator (or, for `checker: raft`, the quorum harness in sim/tests/raft_cluster.rs) is
//! rebuilt, and seeds run until one fails (caught) or the budget ends (survived). The source is
//! restored after each, whatever happens.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::root;

pub struct Mutant {
    pub name: String,
    pub file: String,
    pub find: String,
    pub replace: String,
    pub why: String,
    pub checker: Checker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checker {
    /// The single-node simulator (`spool-sim`).
    Sim,
    /// The metadata quorum's in-process cluster harness.
    Raft,
}

/// Reads the list: blocks of `## name`, a line of why, then `file:`, `find:` and `replace:` lines.
pub fn parse(text: &str) -> Result<Vec<Mutant>> {
    let mut mutants: Vec<Mutant> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("## ") {
            mutants.push(Mutant {
                name: name.trim().to_string(),
                file: String::new(),
                find: String::new(),
                replace: String::new(),
                why: String::new(),
                checker: Checker::Sim,
            });
            continue;
        }
        let Some(m) = mutants.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("file: ") {
            m.file = v.to_string();
        } else if let Some(v) = line.strip_prefix("find: ") {
            m.find = v.to_string();
        } else if let Some(v) = line.strip_prefix("replace: ") {
            m.replace = v.to_string();
        } else if let Some(v) = line.strip_prefix("checker: ") {
            m.checker = match v.trim() {
                "sim" => Checker::Sim,
                "raft" => Checker::Raft,
                other => bail!("sim/mutants.txt line {}: unknown checker {other:?}", n + 1),
            };
        } else if !line.is_empty() && !line.starts_with('#') {
            if m.file.is_empty() {
                m.why.push_str(line.trim());
            } else {
                bail!("sim/mutants.txt line {}: unexpected {line:?}", n + 1);
            }
        }
    }
    for m in &mutants {
        if m.file.is_empty() || m.find.is_empty() {
            bail!("mutant {} needs file: and find:", m.name);
        }
    }
    Ok(mutants)
}

/// `--only NAME`, or `--only PREFIX*` for a family (`raft-*`).
fn selects(only: &str, name: &str) -> bool {
    match only.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == only,
    }
}

/// Puts a mutated file back as it was when dropped.
struct Restore {
    path: std::path::PathBuf,
    original: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!("xtask: COULD NOT RESTORE {}: {e}", self.path.display());
        }
    }
}

enum Outcome {
    Caught { seed: u64, seeds_run: u64, why: String },
    Survived,
    DoesNotBuild,
}

pub fn run(seeds: u64, only: Option<String>) -> Result<()> {
    let list = std::fs::read_to_string(root().join("sim/mutants.txt")).context("reading sim/mutants.txt")?;
    let mutants: Vec<Mutant> =
        parse(&list)?.into_iter().filter(|m| only.as_ref().is_none_or(|o| selects(o, &m.name))).collect();
    if mutants.is_empty() {
        bail!("no mutant to run");
    }
    let mut results = Vec::new();
    for m in &mutants {
        let path = root().join(&m.file);
        let original = std::fs::read_to_string(&path).with_context(|| format!("reading {}", m.file))?;
        let found = original.matches(&m.find).count();
        if found != 1 {
            bail!("mutant {}: `{}` occurs {found} times in {} (must be once)", m.name, m.find, m.file);
        }
        let started = Instant::now();
        let outcome = {
            let _restore = Restore { path: path.clone(), original: original.clone() };
            std::fs::write(&path, original.replacen(&m.find, &m.replace, 1))?;
            match m.checker {
                Checker::Sim => match crate::sim::build() {
                    Err(_) => Outcome::DoesNotBuild,
                    Ok(binary) => first_failure(&binary, seeds)?,
                },
                Checker::Raft => raft_failure(seeds)?,
            }
        };
        let verdict = match &outcome {
            Outcome::Caught { seeds_run: 0, why, .. } => format!("caught by {why}"),
            Outcome::Caught { seed, seeds_run, why } => format!("caught by seed {seed} ({seeds_run} run): {why}"),
            Outcome::Survived => format!("SURVIVED {seeds} seeds"),
            Outcome::DoesNotBuild => "does not build (fix the mutant)".to_string(),
        };
        eprintln!("xtask: mutant {}: {verdict} [{:.0?}]", m.name, started.elapsed());
        results.push((m.name.clone(), outcome, verdict));
    }
    // The restored source, built again, so the next command does not run a mutant.
    if mutants.iter().any(|m| m.checker == Checker::Sim) {
        crate::sim::build()?;
    }
    let caught = results.iter().filter(|(_, o, _)| matches!(o, Outcome::Caught { .. })).count();
    println!("mutants: {caught} of {} caught within {seeds} seeds", results.len());
    for (name, _, verdict) in &results {
        println!("  {name}: {verdict}");
    }
    if results.iter().any(|(_, o, _)| matches!(o, Outcome::DoesNotBuild)) {
        bail!("a mutant does not build");
    }
    Ok(())
}

/// Runs seeds 1..=seeds in one process until the first failure.
fn first_failure(binary: &str, seeds: u64) -> Result<Outcome> {
    let mut child = Command::new(binary)
        .args(["--seed", "1", "--seeds", &seeds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    let mut seeds_run = 0;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let Some((seed, rest)) = line.strip_prefix("seed ").and_then(|l| l.split_once(": ")) else { continue };
        let Ok(seed) = seed.parse::<u64>() else { continue };
        if rest.starts_with("params: ") {
            continue;
        }
        seeds_run += 1;
        if let Some(why) = rest.strip_prefix("FAILED: ") {
            let _ = child.kill();
            let _ = child.wait();
            let why: String = why.split("; trace").next().unwrap_or(why).chars().take(160).collect();
            return Ok(Outcome::Caught { seed, seeds_run, why });
        }
    }
    child.wait()?;
    Ok(Outcome::Survived)
}

/// Runs the Raft unit tests and the quorum harness over `seeds` seeds (which stops at the first
/// failing one).
fn raft_failure(seeds: u64) -> Result<Outcome> {
    let mut text = String::new();
    for (package, test) in [("spool-core", "raft_node"), ("spool-sim", "raft_cluster")] {
        let output = Command::new("cargo")
            .current_dir(root())
            .args(["test", "-q", "-p", package, "--profile", "checked", "--test", test])
            .env("RAFT_SEEDS", seeds.to_string())
            .output()?;
        if !output.status.success() {
            text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
            break;
        }
    }
    if text.is_empty() {
        return Ok(Outcome::Survived);
    }
    if text.contains("could not compile") {
        return Ok(Outcome::DoesNotBuild);
    }
    // The harness names the failing seed: "seed N: FAILED: why (replay: ...)"; a unit test of
    // core/tests/raft_node.rs names itself.
    let Some(failure) = text.lines().find_map(|l| l.strip_prefix("seed ").and_then(|r| r.split_once(": FAILED: ")))
    else {
        let test = text
            .lines()
            .find_map(|l| l.strip_prefix("---- ").map(|t| t.trim_end_matches(" stdout ----")))
            .unwrap_or("a raft test");
        return Ok(Outcome::Caught { seed: 0, seeds_run: 0, why: format!("unit test {test}") });
    };
    let seed: u64 = failure.0.parse().context("the failing seed")?;
    let why: String = failure.1.split(" (replay:").next().unwrap_or(failure.1).chars().take(160).collect();
    Ok(Outcome::Caught { seed, seeds_run: seed + 1, why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_list_parses_and_each_mutant_applies_once() {
        let text = std::fs::read_to_string(root().join("sim/mutants.txt")).unwrap();
        let mutants = parse(&text).unwrap();
        assert!(mutants.len() >= 10, "{} mutants", mutants.len());
        for m in mutants {
            let source = std::fs::read_to_string(root().join(&m.file)).unwrap();
            assert_eq!(source.matches(&m.find).count(), 1, "mutant {}: `{}` in {}", m.name, m.find, m.file);
            assert_ne!(m.find, m.replace, "mutant {} changes nothing", m.name);
            assert!(!m.why.is_empty(), "mutant {} says what bug it plants", m.name);
        }
    }
}
