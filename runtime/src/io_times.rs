//! How long the disk took: fsync and inline write durations, logged at shutdown and warned about
//! when one is slow, so an operator can tell a slow disk from a slow broker.

use std::time::Duration;

use hdrhistogram::Histogram;

/// An fsync slower than this is logged as a warning: acknowledgements wait on it.
pub const SLOW_FSYNC: Duration = Duration::from_secs(1);
/// An inline write slower than this is logged as a warning: the whole event loop waits on it.
pub const SLOW_WRITE: Duration = Duration::from_millis(200);

/// Microsecond histograms, up to an hour, three significant digits.
pub struct IoTimes {
    fsync: Histogram<u64>,
    write: Histogram<u64>,
}

impl Default for IoTimes {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        IoTimes { fsync: histogram(), write: histogram() }
    }
}

impl IoTimes {
    pub fn record_fsync(&mut self, took: Duration, files: usize) {
        self.fsync.saturating_record(micros(took));
        if took >= SLOW_FSYNC {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                files,
                "slow fsync: produce acknowledgements waited on it"
            );
        }
    }

    pub fn record_write(&mut self, took: Duration, bytes: usize) {
        self.write.saturating_record(micros(took));
        if took >= SLOW_WRITE {
            tracing::warn!(took_ms = took.as_millis() as u64, bytes, "slow write: every request waited on it");
        }
    }

    /// `fsyncs 1200: p50 0.31 ms, p99 2.10 ms, max 9.80 ms; writes ...` for the shutdown log.
    pub fn summary(&self) -> String {
        format!("fsyncs {}; writes {}", describe(&self.fsync), describe(&self.write))
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

fn describe(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "0".to_string();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_counts_and_percentiles() {
        let mut times = IoTimes::default();
        assert_eq!(times.summary(), "fsyncs 0; writes 0");
        for _ in 0..99 {
            times.record_fsync(Duration::from_micros(300), 1);
        }
        times.record_fsync(Duration::from_millis(40), 2);
        times.record_write(Duration::from_micros(20), 4096);
        let s = times.summary();
        assert!(s.starts_with("fsyncs 100: p50 0.30 ms, p99 0.30 ms, p99.9 40."), "{s}");
        assert!(s.contains("max 40."), "{s}");
        assert!(s.ends_with("writes 1: p50 0.02 ms, p99 0.02 ms, p99.9 0.02 ms, max 0.02 ms"), "{s}");
    }
}
