//! The `Date` header value (RFC 9110 §6.6.1), formatted once per second per thread instead
//! of once per response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// "Sun, 06 Nov 1994 08:49:37 GMT" is always 29 bytes.
const HTTP_DATE_LEN: usize = 29;

struct CachedDate {
    second: u64,
    text: [u8; HTTP_DATE_LEN],
}

thread_local! {
    static CACHE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate { second: u64::MAX, text: [b' '; HTTP_DATE_LEN] })
    };
}

/// Call `f` with the current date in IMF-fixdate form.
pub fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.second != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == HTTP_DATE_LEN {
                cache.text.copy_from_slice(formatted.as_bytes());
                cache.second = second;
            }
        }
        f(&cache.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_a_valid_http_date_near_now() {
        let text = with_http_date(|d| String::from_utf8(d.to_vec()).unwrap());
        let parsed = httpdate::parse_http_date(&text).unwrap();
        let skew = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(skew.as_secs() <= 1, "{text} is {skew:?} behind now");
    }
}
