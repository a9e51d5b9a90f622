//! PURE: which backends of an adaptive group are latency outliers, and how often a backend
//! out of the race may be probed.
//!
//! The cost race alone keeps sending a slow backend requests whenever its peers are busy
//! enough: a backend 20× slower wins every pick in which its peers have 20 requests in
//! flight between them, and each of those requests lands in the group's tail (issue 16,
//! phase B: 1.8 % of the requests went to the slow backend and p99 rose 6.3×). So a backend
//! whose typical latency is far above its peers' leaves the race and gets probes only: few
//! enough that they stay out of the p99, often enough to see it recover within a second.
//!
//! The verdict is a function of typical latencies (`ewma::MeanEwma`), which move only on
//! samples, so an outlier stays one until a probe's answer says otherwise; it never drifts
//! back into the race on the passage of time alone.

use std::time::{Duration, Instant};

/// When a typical latency makes a backend an outlier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierRule {
    /// A backend in the race becomes an outlier above this many times the median of what
    /// the others are expected to cost.
    pub ratio: f64,
    /// An outlier stays one until it is under this many times that median: apart from the
    /// entry bar, so that a backend near it does not flap in and out. Each time in, the race
    /// may queue several requests on it at once, which is the tail the rule is there to
    /// avoid (issue 16's phase B on the asyncio backends: the peers' queueing brought the
    /// 20× slower backend within 4× of them, and one second's p99 reached 502 ms).
    pub exit_ratio: f64,
    /// ...and above this, so that tiny latencies (0.2 ms against 0.04 ms) never count.
    pub floor: Duration,
}

/// A backend judged an outlier, with the numbers that made it one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlier {
    pub latency_ns: f64,
    /// Median of the other backends' typical latencies.
    pub median_ns: f64,
}

impl Outlier {
    /// How many times the median it is.
    pub fn ratio(&self) -> f64 {
        self.latency_ns / self.median_ns.max(1.0)
    }
}

/// What the outlier rule knows of one backend in the race.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Racer {
    /// Its typical latency, in nanoseconds: what it is judged by.
    pub latency_ns: f64,
    /// What a request sent to it is expected to cost instead, in nanoseconds: its typical
    /// latency plus its failure rate times the failure penalty. The others are compared
    /// with the median of these: a peer failing half its requests is no yardstick of what
    /// the group delivers, and a slow backend's answers beat its errors (issue 16: when one
    /// backend recovered from being slow just as another began to fail, the slow one
    /// waited for its next probe while the last healthy backend drowned).
    pub expected_ns: f64,
    /// Whether it is an outlier already (kept out of the race by the last verdict), which
    /// sets the bar it is judged by: `exit_ratio` rather than `ratio`.
    pub is_out: bool,
}

/// The verdict on each of `racers` (the backends in the race), in order. With fewer than
/// two there is nothing to compare, and a verdict that would leave no backend in the race is
/// withdrawn: then every backend races, as without the rule.
pub fn judge(racers: &[Racer], rule: OutlierRule) -> Vec<Option<Outlier>> {
    let mut verdicts = vec![None; racers.len()];
    if racers.len() < 2 {
        return verdicts;
    }
    let floor_ns = rule.floor.as_nanos() as f64;
    // Sorted once: the median of all but one is then two lookups, so a pick costs
    // O(n log n) for n backends, not O(n² log n).
    let mut sorted: Vec<f64> = racers.iter().map(|r| r.expected_ns).collect();
    sorted.sort_by(f64::total_cmp);
    for (i, racer) in racers.iter().enumerate() {
        let latency_ns = racer.latency_ns;
        if latency_ns <= floor_ns {
            continue;
        }
        let median_ns = median_without(&sorted, racer.expected_ns);
        let ratio = if racer.is_out {
            rule.exit_ratio
        } else {
            rule.ratio
        };
        if latency_ns > ratio * median_ns {
            verdicts[i] = Some(Outlier {
                latency_ns,
                median_ns,
            });
        }
    }
    if verdicts.iter().all(Option::is_some) {
        verdicts.fill(None);
    }
    verdicts
}

/// The median of `sorted` (two or more values, in order) without one occurrence of
/// `removed`, which it holds: the mean of the middle two for an even count.
fn median_without(sorted: &[f64], removed: f64) -> f64 {
    let at = sorted.partition_point(|&v| v < removed);
    // The remaining list, by position: skip `at`.
    let remaining = |j: usize| if j < at { sorted[j] } else { sorted[j + 1] };
    let count = sorted.len() - 1;
    let middle = count / 2;
    if count.is_multiple_of(2) {
        (remaining(middle - 1) + remaining(middle)) / 2.0
    } else {
        remaining(middle)
    }
}

/// How often a backend out of the race may be probed: a bucket of one token, refilled after
/// `interval` or after `every_picks` picks of the group, whichever comes first. So the rate is
/// one probe per `interval` or one per `every_picks` of the group's requests, whichever is
/// more, and never more than one probe in flight: a backend that hangs gets one request at a
/// time, not a pile. Nor more than an equal share: at least as many group picks as the group
/// has backends pass between two probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeAllowance {
    last_probe: Option<Instant>,
    /// The group's pick count at the last probe.
    last_pick: u64,
    in_flight: bool,
    /// The group's picks per second between the last two probes, when known.
    group_rate: Option<f64>,
}

/// The probe rate's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeRule {
    pub interval: Duration,
    pub every_picks: u64,
}

impl ProbeAllowance {
    pub const fn new() -> ProbeAllowance {
        ProbeAllowance {
            last_probe: None,
            last_pick: 0,
            in_flight: false,
            group_rate: None,
        }
    }

    /// Whether a probe may be sent at `now`, the group's `pick`-th pick, in a group of
    /// `group_size` backends.
    pub fn is_due(&self, rule: ProbeRule, now: Instant, pick: u64, group_size: usize) -> bool {
        if self.in_flight {
            return false;
        }
        let Some(last) = self.last_probe else {
            return true;
        };
        let picks = pick.saturating_sub(self.last_pick);
        let refilled =
            now.saturating_duration_since(last) >= rule.interval || picks >= rule.every_picks;
        refilled && picks >= group_size as u64
    }

    /// Take the token: a probe is sent at `now` as the group's `pick`-th pick.
    pub fn take(&mut self, now: Instant, pick: u64) {
        if let Some(last) = self.last_probe {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            if elapsed > 0.0 {
                self.group_rate = Some(pick.saturating_sub(self.last_pick) as f64 / elapsed);
            }
        }
        self.last_probe = Some(now);
        self.last_pick = pick;
        self.in_flight = true;
    }

    /// The probe ended (answered, failed, or abandoned).
    pub fn finish(&mut self) {
        self.in_flight = false;
    }

    /// The most probes per second the rule allows at the group's request rate last seen
    /// between two probes (before the second probe: the floor, one per `interval`).
    pub fn rate_per_sec(&self, rule: ProbeRule) -> f64 {
        let floor = 1.0 / rule.interval.as_secs_f64().max(f64::MIN_POSITIVE);
        let by_share = self
            .group_rate
            .map_or(0.0, |rate| rate / rule.every_picks.max(1) as f64);
        floor.max(by_share)
    }
}

impl Default for ProbeAllowance {
    fn default() -> ProbeAllowance {
        ProbeAllowance::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1_000_000.0;
    const RULE: OutlierRule = OutlierRule {
        ratio: 4.0,
        exit_ratio: 2.0,
        floor: Duration::from_millis(20),
    };
    /// The defaults, so these tests say what a group gets.
    const PROBES: ProbeRule = ProbeRule {
        interval: crate::limits::PROBE_INTERVAL,
        every_picks: crate::limits::PROBE_EVERY_PICKS,
    };

    /// Racers without failures, by typical latency in ms.
    fn racers(latencies_ms: &[f64]) -> Vec<Racer> {
        latencies_ms
            .iter()
            .map(|l| Racer {
                latency_ns: l * MS,
                expected_ns: l * MS,
                is_out: false,
            })
            .collect()
    }

    fn outliers(latencies_ms: &[f64]) -> Vec<bool> {
        judge(&racers(latencies_ms), RULE)
            .iter()
            .map(Option::is_some)
            .collect()
    }

    #[test]
    fn far_above_the_median_of_the_others_and_above_the_floor_is_an_outlier() {
        assert_eq!(outliers(&[5.0, 6.0, 100.0]), [false, false, true]);
        let verdict = judge(&racers(&[5.0, 6.0, 100.0]), RULE)[2].unwrap();
        assert_eq!(verdict.median_ns, 5.5 * MS);
        assert!((verdict.ratio() - 100.0 / 5.5).abs() < 1e-9);
        // 3.6 times: slow, but the cost race handles it.
        assert_eq!(outliers(&[5.0, 5.0, 18.0]), [false; 3]);
        assert_eq!(outliers(&[10.0, 10.0, 41.0]), [false, false, true]);
        // Twenty times, but 4 ms: under the floor.
        assert_eq!(outliers(&[0.2, 0.2, 4.0]), [false; 3]);
        // The median, not the mean: one slow peer does not hide another.
        assert_eq!(
            outliers(&[5.0, 5.0, 5.0, 90.0, 100.0]),
            [false, false, false, true, true]
        );
    }

    #[test]
    fn an_outlier_stays_out_until_it_is_under_the_lower_exit_bar() {
        // 3× its peers: not enough to leave the race, not enough to come back to it.
        let mut group = racers(&[10.0, 10.0, 30.0]);
        assert!(judge(&group, RULE).iter().all(Option::is_none));
        group[2].is_out = true;
        assert!(judge(&group, RULE)[2].is_some());
        group[2].latency_ns = 19.0 * MS;
        group[2].expected_ns = 19.0 * MS;
        assert!(judge(&group, RULE)[2].is_none(), "under 2×");
    }

    #[test]
    fn a_failing_peer_is_no_yardstick() {
        // The 100 ms backend next to a 5 ms one and one failing half its requests (5 ms
        // answers, 500 ms expected with a 1 s penalty): its answers beat the failing one's
        // errors, so it races.
        let mut group = racers(&[5.0, 5.0, 100.0]);
        group[1].expected_ns = 505.0 * MS;
        assert_eq!(
            judge(&group, RULE)
                .iter()
                .map(Option::is_some)
                .collect::<Vec<_>>(),
            [false; 3]
        );
        // Judged by its own typical latency, not its failures: the cost deals with those.
        let mut failing = racers(&[5.0, 5.0, 5.0]);
        failing[2].expected_ns = 505.0 * MS;
        assert!(judge(&failing, RULE).iter().all(Option::is_none));
    }

    #[test]
    fn the_median_of_the_others_is_the_median_without_one_occurrence() {
        let sorted = [1.0, 2.0, 2.0, 5.0, 9.0];
        assert_eq!(median_without(&sorted, 1.0), 3.5);
        assert_eq!(median_without(&sorted, 2.0), 3.5);
        assert_eq!(median_without(&sorted, 9.0), 2.0);
        assert_eq!(median_without(&[3.0, 7.0], 7.0), 3.0);
        assert_eq!(median_without(&[3.0, 7.0, 8.0], 3.0), 7.5);
    }

    #[test]
    fn a_lone_backend_or_a_verdict_against_all_is_no_verdict() {
        assert_eq!(outliers(&[500.0]), [false]);
        assert_eq!(outliers(&[]), Vec::<bool>::new());
        // Two backends: the slow one is an outlier, the fast one cannot be.
        assert_eq!(outliers(&[5.0, 100.0]), [false, true]);
        // Everyone slow alike: nobody stands out.
        assert_eq!(outliers(&[300.0, 310.0, 290.0]), [false; 3]);
    }

    /// Picks at `per_sec` a second for `span` from `start`, probing whenever allowed;
    /// returns the number of probes.
    fn probes_over(per_sec: u64, span: Duration, group_size: usize) -> u64 {
        let start = Instant::now();
        let mut allowance = ProbeAllowance::new();
        let mut probes = 0;
        let picks = per_sec * span.as_secs();
        for pick in 0..picks {
            let now = start + Duration::from_nanos(pick * 1_000_000_000 / per_sec);
            if allowance.is_due(PROBES, now, pick, group_size) {
                allowance.take(now, pick);
                probes += 1;
                // Answered before the next pick.
                allowance.finish();
            }
        }
        probes
    }

    #[test]
    fn the_probe_rate_is_one_a_second_or_a_tenth_of_a_percent_whichever_is_more() {
        let minute = Duration::from_secs(60);
        // 3000 picks a second: 0.1 % is 3 a second, 180 a minute (plus the first at once).
        let busy = probes_over(3000, minute, 3);
        assert!((179..=181).contains(&busy), "{busy}");
        // 300 a second: 0.1 % is 0.3 a second, so the floor of one a second decides.
        let quiet = probes_over(300, minute, 3);
        assert!((60..=61).contains(&quiet), "{quiet}");
        // 2 a second in a group of 3: never more than one pick in three.
        let idle = probes_over(2, minute, 3);
        assert!(idle <= 41, "{idle}");
    }

    #[test]
    fn one_probe_at_a_time() {
        let t0 = Instant::now();
        let mut allowance = ProbeAllowance::new();
        assert!(allowance.is_due(PROBES, t0, 1000, 3));
        allowance.take(t0, 1000);
        // Long after, and many picks later, but the first probe has not come back.
        let later = t0 + Duration::from_secs(30);
        assert!(!allowance.is_due(PROBES, later, 100_000, 3));
        allowance.finish();
        assert!(allowance.is_due(PROBES, later, 100_000, 3));
        allowance.take(later, 100_000);
        // 99 000 picks in 30 s: 3300 a second, of which 0.1 % is 3.3 probes a second.
        assert!((allowance.rate_per_sec(PROBES) - 3.3).abs() < 1e-9);
        assert_eq!(ProbeAllowance::new().rate_per_sec(PROBES), 1.0);
    }
}
