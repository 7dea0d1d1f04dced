//! Buggify sites (after FoundationDB): places in the logic that, in simulation only, take a rare
//! but legal path (roll a segment early, answer a fetch with less than it could) so seeds reach
//! corners that normal workloads almost never do. Two levels: a site is enabled for a run with
//! probability 1/4, decided by the site's name and the run's seed; an enabled site then fires
//! with the run's probability each time it is reached. Off in production (`BrokerConfig::buggify`
//! is `None`), so this is the core's only randomness and it is seeded by the driver.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the driver passes in to turn buggify on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BuggifyConfig {
    /// Decides which sites are enabled; keep it across restarts of a node so they stay so.
    pub sites_seed: u64,
    /// Seeds the firing draws of this incarnation.
    pub fire_seed: u64,
    /// How often an enabled site fires.
    pub fire_probability: f64,
}

/// The sites, named so a trace or a log line can say which fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Roll the active segment at the next append though it is not full.
    RollSegmentEarly,
    /// Serve one batch per partition where more would fit.
    FetchOneBatch,
    /// Answer a long-poll fetch at once instead of parking it.
    FetchNoWait,
}

impl Site {
    fn name(self) -> &'static str {
        match self {
            Site::RollSegmentEarly => "roll-segment-early",
            Site::FetchOneBatch => "fetch-one-batch",
            Site::FetchNoWait => "fetch-no-wait",
        }
    }
}

pub struct Buggify {
    config: Option<BuggifyConfig>,
    rng: ChaCha8Rng,
}

impl Buggify {
    pub fn new(config: Option<BuggifyConfig>) -> Self {
        let seed = config.map_or(0, |c| c.fire_seed);
        Buggify { config, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Whether `site` takes its rare path this time.
    pub fn fires(&mut self, site: Site) -> bool {
        let Some(config) = self.config else {
            return false;
        };
        if !enabled(config.sites_seed, site.name()) {
            return false;
        }
        let fires = unit(&mut self.rng) < config.fire_probability;
        if fires {
            tracing::debug!(site = site.name(), "buggify fired");
        }
        fires
    }
}

/// One site in four is enabled per run, by a hash of the seed and the site's name (stable across
/// restarts and independent of the order sites are reached).
fn enabled(sites_seed: u64, name: &str) -> bool {
    let mut h = sites_seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(h).next_u64() % 4 == 0
}

/// A uniform draw in [0, 1).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_a_config_and_about_a_quarter_of_runs_enable_a_site() {
        let mut off = Buggify::new(None);
        assert!((0..1000).all(|_| !off.fires(Site::FetchOneBatch)));
        let enabled_runs = (0..4000u64).filter(|&seed| enabled(seed, Site::FetchOneBatch.name())).count();
        assert!((800..1200).contains(&enabled_runs), "{enabled_runs} of 4000 runs enabled the site");
        let seed = (0..).find(|&s| enabled(s, Site::FetchOneBatch.name())).expect("some run enables it");
        let mut on = Buggify::new(Some(BuggifyConfig { sites_seed: seed, fire_seed: 7, fire_probability: 0.5 }));
        let fired = (0..1000).filter(|_| on.fires(Site::FetchOneBatch)).count();
        assert!((400..600).contains(&fired), "fired {fired} of 1000");
    }
}
