//! Named draws from the seed's randomness. Every parameter a seed draws (workload shape, fault
//! rates) goes through here, so a run can print them all and a replay can pin any of them with
//! `--set name=value` without disturbing the others: the random number is always drawn, and an
//! override only replaces the value used. Shrinking works on these names.

use std::collections::BTreeMap;
use std::sync::Mutex;

use madsim::rand::{thread_rng, Rng};

struct Draws {
    overrides: BTreeMap<String, f64>,
    drawn: Vec<(String, f64)>,
}

static DRAWS: Mutex<Draws> = Mutex::new(Draws { overrides: BTreeMap::new(), drawn: Vec::new() });

/// Parses `name=value` pins; they apply to every seed of this process.
pub fn set_overrides(pins: &[String]) -> Result<(), String> {
    let mut draws = DRAWS.lock().expect("draws");
    for pin in pins {
        let (name, value) = pin.split_once('=').ok_or_else(|| format!("--set wants name=value, got {pin:?}"))?;
        let value: f64 = value.parse().map_err(|_| format!("--set {name}: {value:?} is not a number"))?;
        draws.overrides.insert(name.to_string(), value);
    }
    Ok(())
}

/// Starts a seed: forgets what the previous one drew.
pub fn reset() {
    DRAWS.lock().expect("draws").drawn.clear();
}

fn record(name: &str, drawn: f64) -> f64 {
    let mut draws = DRAWS.lock().expect("draws");
    let value = draws.overrides.get(name).copied().unwrap_or(drawn);
    assert!(!draws.drawn.iter().any(|(n, _)| n == name), "parameter {name} drawn twice in one seed");
    draws.drawn.push((name.to_string(), value));
    value
}

/// An integer in `range`.
/// An integer in `range`; a pin outside it is brought into it.
pub fn int(name: &str, range: std::ops::Range<u64>) -> u64 {
    let drawn = thread_rng().gen_range(range.clone());
    let value = record(name, drawn as f64) as u64;
    let clamped = value.clamp(range.start, range.end - 1);
    if clamped != value {
        fix_recorded(name, clamped as f64);
    }
    clamped
}

fn fix_recorded(name: &str, value: f64) {
    let mut draws = DRAWS.lock().expect("draws");
    if let Some(entry) = draws.drawn.iter_mut().find(|(n, _)| n == name) {
        entry.1 = value;
    }
}

/// A probability: zero with chance 1/2 (the fault is off for this seed), otherwise between
/// `low` and `high`, spread evenly on a log scale so rare and frequent both get seeds.
pub fn rate(name: &str, low: f64, high: f64) -> f64 {
    let mut rng = thread_rng();
    let on = rng.gen_bool(0.5);
    let exponent: f64 = rng.gen_range(low.ln()..high.ln());
    let drawn = if on { (exponent.exp() * 1e4).round() / 1e4 } else { 0.0 };
    record(name, drawn)
}

/// Whether something happens now, at probability `p` (not recorded: this is an event, not a
/// parameter).
pub fn happens(p: f64) -> bool {
    p > 0.0 && thread_rng().gen_bool(p.min(1.0))
}

/// Every parameter this seed drew, as `name=value` pairs in draw order.
pub fn drawn() -> String {
    let draws = DRAWS.lock().expect("draws");
    draws.drawn.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ")
}
