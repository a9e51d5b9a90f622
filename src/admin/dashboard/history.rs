//! The dashboard's memory: a bounded ring of samples per backend (requests and errors per
//! second, mean latency, EWMA, in-flight), built from the cumulative counters the sampler
//! reads once per interval. Pure: readings and times come in, nothing is read here.
//!
//! Rates are differences of counters between two readings, so a counter that went back
//! (a reload rebuilt the backend's state) counts from zero instead of going negative, and a
//! backend seen for the first time gets its first point at the next sample.

use std::collections::{HashMap, VecDeque};

/// Identifies a backend across reloads: (upstream group, backend name).
pub type BackendKey = (String, String);

/// One backend's cumulative counters and gauges at one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Attempts started on it, ever.
    pub requests: u64,
    /// Attempts that failed, ever.
    pub errors: u64,
    pub in_flight: u64,
    /// The balancer's latency estimate now, in milliseconds.
    pub latency_ewma_ms: f64,
    /// Attempts timed by the metrics histogram, ever (0 when metrics are off).
    pub timed: u64,
    /// Their summed duration, in seconds.
    pub timed_seconds: f64,
}

/// One point of a backend's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The sample's number: each sample of the whole process gets the next one.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    /// Mean duration of the attempts timed since the previous sample; `None` without any.
    pub mean_latency_ms: Option<f64>,
    pub latency_ewma_ms: f64,
    pub in_flight: u64,
}

#[derive(Debug)]
struct Series {
    last: Reading,
    points: VecDeque<Point>,
}

/// Every backend's ring, and the number of the last sample.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    seq: u64,
    series: HashMap<BackendKey, Series>,
}

impl History {
    /// A history keeping `capacity` points per backend (at least one).
    pub fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(1),
            seq: 0,
            series: HashMap::new(),
        }
    }

    /// The number of the last sample (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Keep `capacity` points per backend from now on, dropping the oldest if it shrank.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        for series in self.series.values_mut() {
            while series.points.len() > self.capacity {
                series.points.pop_front();
            }
        }
    }

    /// One sample of every backend that exists now, taken at `at_ms`, `elapsed_seconds`
    /// after the previous one. Backends missing from `readings` are forgotten.
    pub fn record(
        &mut self,
        at_ms: u64,
        elapsed_seconds: f64,
        readings: impl IntoIterator<Item = (BackendKey, Reading)>,
    ) {
        self.seq += 1;
        let seq = self.seq;
        let capacity = self.capacity;
        let mut seen = HashMap::with_capacity(self.series.len());
        for (key, now) in readings {
            match self.series.get_mut(&key) {
                Some(series) => {
                    let point = point(seq, at_ms, elapsed_seconds, &series.last, &now);
                    series.last = now;
                    if series.points.len() >= capacity {
                        series.points.pop_front();
                    }
                    series.points.push_back(point);
                }
                None => {
                    let series = Series {
                        last: now,
                        points: VecDeque::with_capacity(capacity.min(64)),
                    };
                    self.series.insert(key.clone(), series);
                }
            }
            seen.insert(key, ());
        }
        self.series.retain(|key, _| seen.contains_key(key));
    }

    /// The points of `key` after sample `since`, oldest first.
    pub fn points_after(&self, key: &BackendKey, since: u64) -> Vec<Point> {
        self.series.get(key).map_or_else(Vec::new, |series| {
            series
                .points
                .iter()
                .filter(|p| p.seq > since)
                .copied()
                .collect()
        })
    }

    /// The newest point of `key`, if it has one.
    pub fn latest(&self, key: &BackendKey) -> Option<Point> {
        self.series.get(key).and_then(|s| s.points.back().copied())
    }
}

/// The increase of a counter from `was` to `now`; a counter that went back was rebuilt
/// (a reload) and counts from zero.
fn increase(was: u64, now: u64) -> u64 {
    if now >= was {
        now - was
    } else {
        now
    }
}

fn point(seq: u64, at_ms: u64, elapsed: f64, was: &Reading, now: &Reading) -> Point {
    let per_sec = |count: u64| {
        if elapsed > 0.0 {
            count as f64 / elapsed
        } else {
            0.0
        }
    };
    let timed = increase(was.timed, now.timed);
    let timed_seconds = if now.timed >= was.timed {
        (now.timed_seconds - was.timed_seconds).max(0.0)
    } else {
        now.timed_seconds
    };
    Point {
        seq,
        at_ms,
        requests_per_sec: per_sec(increase(was.requests, now.requests)),
        errors_per_sec: per_sec(increase(was.errors, now.errors)),
        mean_latency_ms: (timed > 0).then(|| timed_seconds * 1e3 / timed as f64),
        latency_ewma_ms: now.latency_ewma_ms,
        in_flight: now.in_flight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> BackendKey {
        ("default".to_string(), name.to_string())
    }

    fn reading(requests: u64, errors: u64, timed: u64, timed_seconds: f64) -> Reading {
        Reading {
            requests,
            errors,
            in_flight: 1,
            latency_ewma_ms: 2.5,
            timed,
            timed_seconds,
        }
    }

    #[test]
    fn rates_are_counter_differences_over_the_elapsed_time() {
        let mut history = History::new(10);
        history.record(1_000, 1.0, [(key("a"), reading(100, 1, 100, 1.0))]);
        assert!(
            history.latest(&key("a")).is_none(),
            "a first sight is a baseline"
        );
        history.record(3_000, 2.0, [(key("a"), reading(140, 5, 120, 1.5))]);
        let point = history.latest(&key("a")).unwrap();
        assert_eq!(point.seq, 2);
        assert_eq!(point.at_ms, 3_000);
        assert!((point.requests_per_sec - 20.0).abs() < 1e-9);
        assert!((point.errors_per_sec - 2.0).abs() < 1e-9);
        assert!((point.mean_latency_ms.unwrap() - 25.0).abs() < 1e-9);
        assert_eq!(point.in_flight, 1);
    }

    #[test]
    fn no_timed_attempt_means_no_mean_latency() {
        let mut history = History::new(10);
        history.record(0, 1.0, [(key("a"), reading(0, 0, 0, 0.0))]);
        history.record(1_000, 1.0, [(key("a"), reading(0, 0, 0, 0.0))]);
        assert_eq!(history.latest(&key("a")).unwrap().mean_latency_ms, None);
    }

    #[test]
    fn a_counter_that_went_back_counts_from_zero() {
        let mut history = History::new(10);
        history.record(0, 1.0, [(key("a"), reading(500, 50, 500, 5.0))]);
        history.record(1_000, 1.0, [(key("a"), reading(3, 1, 3, 0.03))]);
        let point = history.latest(&key("a")).unwrap();
        assert!((point.requests_per_sec - 3.0).abs() < 1e-9);
        assert!((point.errors_per_sec - 1.0).abs() < 1e-9);
        assert!((point.mean_latency_ms.unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn the_ring_keeps_the_newest_points_and_since_filters() {
        let mut history = History::new(3);
        for n in 0..10u64 {
            history.record(n * 1_000, 1.0, [(key("a"), reading(n * 10, 0, 0, 0.0))]);
        }
        let all = history.points_after(&key("a"), 0);
        assert_eq!(
            all.iter().map(|p| p.seq).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert_eq!(history.points_after(&key("a"), 9).len(), 1);
        assert!(history.points_after(&key("a"), 10).is_empty());
        history.set_capacity(1);
        assert_eq!(history.points_after(&key("a"), 0).len(), 1);
    }

    #[test]
    fn removed_backends_are_forgotten() {
        let mut history = History::new(3);
        history.record(0, 1.0, [(key("a"), reading(0, 0, 0, 0.0))]);
        history.record(
            1_000,
            1.0,
            [
                (key("a"), reading(1, 0, 0, 0.0)),
                (key("b"), reading(0, 0, 0, 0.0)),
            ],
        );
        history.record(2_000, 1.0, [(key("b"), reading(1, 0, 0, 0.0))]);
        assert!(history.latest(&key("a")).is_none());
        assert_eq!(history.latest(&key("b")).unwrap().seq, 3);
        assert_eq!(history.seq(), 3);
    }
}
