//! PURE freshness arithmetic of RFC 9111 §4.2: how long a stored response stays fresh, how
//! old it is now, and what a request's own directives allow. Times are `SystemTime`s passed
//! in, so every rule is tested without a clock.

use std::time::{Duration, SystemTime};

use super::directives::{CacheControl, MaxStale};

/// Heuristic freshness (RFC 9111 §4.2.2) is this fraction of the time since `Last-Modified`,
/// and is used only for a response marked `public` without an explicit lifetime.
const HEURISTIC_FRACTION: u32 = 10;
/// ...and never more than a day, as browsers and Varnish cap it.
const MAX_HEURISTIC_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// What the freshness rules read from a stored response, parsed once when it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTimes {
    /// When the request that got this response was sent upstream.
    pub request_time: SystemTime,
    /// When its head arrived.
    pub response_time: SystemTime,
    /// The `Date` field; absent or malformed: the response time (RFC 9110 §6.6.1).
    pub date: SystemTime,
    /// The `Age` field (seconds); absent or malformed: 0.
    pub age: u64,
}

impl ResponseTimes {
    pub fn new(
        request_time: SystemTime,
        response_time: SystemTime,
        date: Option<&[u8]>,
        age: Option<&[u8]>,
    ) -> ResponseTimes {
        ResponseTimes {
            request_time,
            response_time,
            date: date.and_then(http_date).unwrap_or(response_time),
            age: age
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or(0),
        }
    }

    /// The response's current age (RFC 9111 §4.2.3).
    pub fn current_age(&self, now: SystemTime) -> Duration {
        let since = |later: SystemTime, earlier: SystemTime| {
            later.duration_since(earlier).unwrap_or(Duration::ZERO)
        };
        let apparent_age = since(self.response_time, self.date);
        let response_delay = since(self.response_time, self.request_time);
        let corrected_age_value = Duration::from_secs(self.age).saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = since(now, self.response_time);
        corrected_initial_age.saturating_add(resident_time)
    }
}

/// How long a response stays fresh (RFC 9111 §4.2.1): `s-maxage` over `max-age` over
/// `Expires` − `Date`; a malformed `Expires` (such as `0`) is in the past. Without any of
/// them, a `public` response with `Last-Modified` gets a tenth of its age since then, up to a
/// day; anything else gets none.
pub fn freshness_lifetime(
    cc: &CacheControl,
    times: &ResponseTimes,
    expires: Option<&[u8]>,
    last_modified: Option<&[u8]>,
) -> Duration {
    if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(u64::from(seconds));
    }
    if let Some(expires) = expires {
        return match http_date(expires) {
            Some(at) => at.duration_since(times.date).unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        };
    }
    match (cc.public, last_modified.and_then(http_date)) {
        (true, Some(modified)) => (times
            .date
            .duration_since(modified)
            .unwrap_or(Duration::ZERO)
            / HEURISTIC_FRACTION)
            .min(MAX_HEURISTIC_LIFETIME),
        _ => Duration::ZERO,
    }
}

/// Whether the response carries an explicit lifetime (so it may be stored without `public`).
pub fn has_explicit_lifetime(cc: &CacheControl, expires: Option<&[u8]>) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || expires.is_some()
}

/// How a stored response stands against a request, at `age` with `lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Serve it.
    Fresh,
    /// Stale, but the request accepts it (`max-stale`) and the response allows that.
    StaleAccepted,
    /// Stale within the response's `stale-while-revalidate` window: serve, refresh behind.
    StaleWhileRevalidate,
    /// Must be validated with the origin before use (stale, or `no-cache` on either side).
    MustRevalidate,
}

/// Decide how a stored response may be used (RFC 9111 §4.2, §4.2.4, RFC 5861 §3).
pub fn standing(
    stored: &CacheControl,
    request: &CacheControl,
    age: Duration,
    lifetime: Duration,
) -> Standing {
    // `no-cache` from either side (§5.2.1.4, §5.2.2.4), and the request's own `max-age`
    // (§5.2.1.1), which asks for a response no older than it.
    let too_old_for_request = request
        .max_age
        .is_some_and(|max| age > Duration::from_secs(u64::from(max)));
    if stored.no_cache || request.no_cache || too_old_for_request {
        return Standing::MustRevalidate;
    }
    let min_fresh = Duration::from_secs(u64::from(request.min_fresh.unwrap_or(0)));
    if age.saturating_add(min_fresh) < lifetime {
        return Standing::Fresh;
    }
    // A shared cache never serves stale what the origin said must be revalidated (§4.2.4).
    if stored.must_revalidate || stored.proxy_revalidate || stored.s_maxage.is_some() {
        return Standing::MustRevalidate;
    }
    let staleness = age.saturating_sub(lifetime);
    let accepted = match request.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Seconds(s)) => staleness <= Duration::from_secs(u64::from(s)),
        None => false,
    };
    if accepted {
        return Standing::StaleAccepted;
    }
    match stored.stale_while_revalidate {
        Some(window) if staleness < Duration::from_secs(u64::from(window)) => {
            Standing::StaleWhileRevalidate
        }
        _ => Standing::MustRevalidate,
    }
}

/// Whether a stale response may stand in for an origin that failed (RFC 5861 §4):
/// within the response's (or the request's) `stale-if-error` window, and never when the
/// response demands revalidation.
pub fn may_serve_on_error(
    stored: &CacheControl,
    request: &CacheControl,
    age: Duration,
    lifetime: Duration,
) -> bool {
    if stored.must_revalidate || stored.proxy_revalidate || stored.s_maxage.is_some() {
        return false;
    }
    let staleness = age.saturating_sub(lifetime);
    let window = match (stored.stale_if_error, request.stale_if_error) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return false,
    };
    staleness <= Duration::from_secs(u64::from(window))
}

/// An HTTP-date in any of the three forms RFC 9110 §5.6.7 requires recipients to accept.
pub fn http_date(bytes: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(bytes).ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn date(seconds: u64) -> String {
        httpdate::fmt_http_date(at(seconds))
    }

    fn cc(text: &str) -> CacheControl {
        CacheControl::parse([text.as_bytes()])
    }

    const T0: u64 = 1_700_000_000;

    fn times(date_s: u64) -> ResponseTimes {
        ResponseTimes::new(at(T0), at(T0), Some(date(date_s).as_bytes()), None)
    }

    #[test]
    fn s_maxage_wins_over_max_age_over_expires() {
        let expires = date(T0 + 500);
        let t = times(T0);
        let life = |c: &str| freshness_lifetime(&cc(c), &t, Some(expires.as_bytes()), None);
        assert_eq!(life("max-age=60, s-maxage=30"), Duration::from_secs(30));
        assert_eq!(life("max-age=60"), Duration::from_secs(60));
        assert_eq!(life(""), Duration::from_secs(500));
    }

    #[test]
    fn an_invalid_expires_is_in_the_past() {
        let t = times(T0);
        for bad in ["0", "-1", "tomorrow", ""] {
            assert_eq!(
                freshness_lifetime(&cc(""), &t, Some(bad.as_bytes()), None),
                Duration::ZERO,
                "{bad:?}"
            );
        }
        // Expires before Date: already stale.
        let past = date(T0 - 10);
        assert_eq!(
            freshness_lifetime(&cc(""), &t, Some(past.as_bytes()), None),
            Duration::ZERO
        );
    }

    #[test]
    fn heuristic_freshness_only_for_public_and_capped_at_a_day() {
        let t = times(T0);
        let hour_ago = date(T0 - 3600);
        let year_ago = date(T0 - 365 * 86_400);
        let lm = |c: &str, when: &str| freshness_lifetime(&cc(c), &t, None, Some(when.as_bytes()));
        assert_eq!(lm("", &hour_ago), Duration::ZERO);
        assert_eq!(lm("public", &hour_ago), Duration::from_secs(360));
        assert_eq!(lm("public", &year_ago), MAX_HEURISTIC_LIFETIME);
        assert_eq!(
            freshness_lifetime(&cc("public"), &t, None, None),
            Duration::ZERO
        );
    }

    #[test]
    fn current_age_follows_rfc_9111_section_4_2_3() {
        // Sent at T0, answered at T0+2 with Date T0-5 (origin clock behind) and Age 10.
        let date_text = date(T0 - 5);
        let t = ResponseTimes::new(at(T0), at(T0 + 2), Some(date_text.as_bytes()), Some(b"10"));
        // apparent 7, corrected age value 10 + 2 = 12: initial 12, then resident time.
        assert_eq!(t.current_age(at(T0 + 2)), Duration::from_secs(12));
        assert_eq!(t.current_age(at(T0 + 32)), Duration::from_secs(42));
        // A Date in the future does not make the age negative.
        let future = date(T0 + 100);
        let t = ResponseTimes::new(at(T0), at(T0), Some(future.as_bytes()), Some(b"junk"));
        assert_eq!(t.current_age(at(T0 + 1)), Duration::from_secs(1));
    }

    #[test]
    fn standing_of_a_stored_response() {
        let s = Duration::from_secs;
        let fresh_60 = cc("max-age=60");
        let none = cc("");
        assert_eq!(standing(&fresh_60, &none, s(10), s(60)), Standing::Fresh);
        assert_eq!(
            standing(&fresh_60, &none, s(60), s(60)),
            Standing::MustRevalidate
        );
        assert_eq!(
            standing(&cc("no-cache, max-age=60"), &none, s(1), s(60)),
            Standing::MustRevalidate
        );
        assert_eq!(
            standing(&fresh_60, &cc("no-cache"), s(1), s(60)),
            Standing::MustRevalidate
        );
        assert_eq!(
            standing(&fresh_60, &cc("max-age=5"), s(10), s(60)),
            Standing::MustRevalidate
        );
        assert_eq!(
            standing(&fresh_60, &cc("min-fresh=55"), s(10), s(60)),
            Standing::MustRevalidate
        );
        assert_eq!(
            standing(&fresh_60, &cc("max-stale=20"), s(70), s(60)),
            Standing::StaleAccepted
        );
        assert_eq!(
            standing(&fresh_60, &cc("max-stale=5"), s(70), s(60)),
            Standing::MustRevalidate
        );
        assert_eq!(
            standing(
                &cc("max-age=60, must-revalidate"),
                &cc("max-stale"),
                s(70),
                s(60)
            ),
            Standing::MustRevalidate
        );
        let swr = cc("max-age=60, stale-while-revalidate=30");
        assert_eq!(
            standing(&swr, &none, s(80), s(60)),
            Standing::StaleWhileRevalidate
        );
        assert_eq!(
            standing(&swr, &none, s(90), s(60)),
            Standing::MustRevalidate
        );
    }

    #[test]
    fn stale_if_error_windows() {
        let s = Duration::from_secs;
        let sie = cc("max-age=60, stale-if-error=100");
        assert!(may_serve_on_error(&sie, &cc(""), s(150), s(60)));
        assert!(!may_serve_on_error(&sie, &cc(""), s(161), s(60)));
        assert!(!may_serve_on_error(
            &sie,
            &cc("stale-if-error=10"),
            s(80),
            s(60)
        ));
        assert!(may_serve_on_error(
            &cc("max-age=60"),
            &cc("stale-if-error=30"),
            s(80),
            s(60)
        ));
        assert!(!may_serve_on_error(
            &cc("max-age=60"),
            &cc(""),
            s(61),
            s(60)
        ));
        assert!(!may_serve_on_error(
            &cc("max-age=60, stale-if-error=100, must-revalidate"),
            &cc(""),
            s(70),
            s(60)
        ));
    }
}
