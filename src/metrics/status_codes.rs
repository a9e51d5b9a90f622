//! Status codes as a small dense index, so a route's per-code counters are a short array
//! rather than one counter per number from 100 to 999. Every code in the IANA registry (and
//! 499, which the access log uses for a client that left) has a slot of its own; any other
//! code a backend may send counts under its class (`5xx`), which keeps the label set
//! bounded whatever a backend answers.

/// Codes with a slot of their own, in order.
const KNOWN: [u16; 64] = [
    100, 101, 102, 103, //
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, //
    300, 301, 302, 303, 304, 305, 306, 307, 308, //
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418,
    421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 499, //
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// Class slots follow the known codes: `1xx` .. `9xx` (the parser takes three digits).
const CLASSES: usize = 9;

/// Slots per route: every known code and every class.
pub const SLOTS: usize = KNOWN.len() + CLASSES;

/// The slot that counts `code`.
#[inline]
pub fn slot(code: u16) -> usize {
    match KNOWN.binary_search(&code) {
        Ok(index) => index,
        Err(_) => KNOWN.len() + usize::from((code / 100).clamp(1, 9) - 1),
    }
}

/// The `code` label of a slot: the code itself, or its class.
pub fn label(slot: usize) -> String {
    match KNOWN.get(slot) {
        Some(code) => code.to_string(),
        None => format!("{}xx", slot.saturating_sub(KNOWN.len()) + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_are_sorted_and_unique() {
        assert!(KNOWN.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn known_codes_keep_their_number_and_others_their_class() {
        for code in [200, 404, 499, 502] {
            assert_eq!(label(slot(code)), code.to_string());
        }
        assert_eq!(label(slot(299)), "2xx");
        assert_eq!(label(slot(599)), "5xx");
        assert_eq!(label(slot(999)), "9xx");
        assert_eq!(label(slot(0)), "1xx", "out of range: still a bounded label");
        assert!((0..=999).all(|code| slot(code) < SLOTS));
    }
}
