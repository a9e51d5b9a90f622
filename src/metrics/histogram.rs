//! Latency histograms with fixed buckets: a cell per shard that counts each observation
//! in one bucket, and the merged totals a scrape encodes.

use std::time::Duration;

use super::shards::Counter;

/// Upper bounds of the buckets, in seconds. Finer than Prometheus's default set below
/// 5 ms: a proxied request on a local network takes well under a millisecond, and the
/// default set would put nearly all of them in its first bucket.
pub const BOUNDS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, the unit observations are compared in.
const BOUNDS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets including the last one, `+Inf`.
const BUCKETS: usize = BOUNDS_NANOS.len() + 1;

/// One shard's observations of one series.
#[derive(Debug, Default)]
pub struct HistogramCell {
    /// Observations per bucket (not cumulative: one add per observation).
    buckets: [Counter; BUCKETS],
    sum_nanos: Counter,
}

impl HistogramCell {
    #[inline]
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // The first bound at or above the value: Prometheus buckets are `le`.
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        if let Some(counter) = self.buckets.get(bucket) {
            counter.add(1);
        }
        self.sum_nanos.add(nanos);
    }
}

/// Observations of one series summed over every shard.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HistogramTotals {
    buckets: [u64; BUCKETS],
    sum_nanos: u64,
}

impl HistogramTotals {
    pub fn add(&mut self, cell: &HistogramCell) {
        for (total, counter) in self.buckets.iter_mut().zip(&cell.buckets) {
            *total = total.wrapping_add(counter.get());
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(cell.sum_nanos.get());
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |sum, n| sum.wrapping_add(*n))
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound, observations in that bucket alone)`, the last bound `+Inf`: the
    /// form the encoder takes (it makes them cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_in_both_units() {
        for (seconds, nanos) in BOUNDS_SECONDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
    }

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let cell = HistogramCell::default();
        cell.observe(Duration::from_micros(500)); // exactly the first bound: le 0.0005
        cell.observe(Duration::from_micros(501));
        cell.observe(Duration::from_secs(11));
        let mut totals = HistogramTotals::default();
        totals.add(&cell);
        let buckets = totals.buckets();
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[1], (0.001, 1));
        assert_eq!(buckets[14], (f64::INFINITY, 1));
        assert_eq!(totals.count(), 3);
        assert!((totals.sum_seconds() - 11.001001).abs() < 1e-9);
    }
}
