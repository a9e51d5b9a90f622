//! Whether a connection carries another request after the current response (RFC 9112 §9.3),
//! and, when it does not, how it ends. Every reason to close is folded into one value with
//! [`Persistence::and`], so the connection decides in one place.

/// What happens to a client connection once the current response is out. Ordered from the
/// most to the least permissive: combining two reasons keeps the stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Persistence {
    /// Read the next request.
    KeepAlive,
    /// Close: the client asked to, a limit was reached, or the response could not be
    /// completed. Every byte the client sent was read, so a plain close loses nothing.
    Close,
    /// Close, but first keep reading and discarding for a moment: the client may still be
    /// sending (a body we did not read, a request refused mid-way), and closing a socket with
    /// unread input makes the kernel send a reset that can destroy the response before the
    /// client reads it (nginx's lingering close).
    LingeringClose,
}

impl Persistence {
    /// The stricter of `self` and `other`.
    #[must_use]
    pub fn and(self, other: Persistence) -> Persistence {
        self.max(other)
    }

    /// `KeepAlive` when `keep` holds, `Close` otherwise.
    pub fn keep_if(keep: bool) -> Persistence {
        if keep {
            Persistence::KeepAlive
        } else {
            Persistence::Close
        }
    }

    /// After a request whose body was (`true`) or was not (`false`) read to its end: a body
    /// left unread means the client may still be sending it.
    pub fn after_body(body_read: bool) -> Persistence {
        if body_read {
            Persistence::KeepAlive
        } else {
            Persistence::LingeringClose
        }
    }

    pub fn is_keep_alive(self) -> bool {
        self == Persistence::KeepAlive
    }
}

#[cfg(test)]
mod tests {
    use super::Persistence::{self, *};

    #[test]
    fn the_stricter_reason_wins_in_either_order() {
        let all = [KeepAlive, Close, LingeringClose];
        for a in all {
            for b in all {
                let combined = a.and(b);
                assert_eq!(combined, b.and(a));
                assert!(combined >= a && combined >= b);
                assert!(combined == a || combined == b);
            }
        }
        assert_eq!(KeepAlive.and(Close), Close);
        assert_eq!(Close.and(LingeringClose), LingeringClose);
    }

    #[test]
    fn helpers_map_their_conditions() {
        assert_eq!(Persistence::keep_if(true), KeepAlive);
        assert_eq!(Persistence::keep_if(false), Close);
        assert_eq!(Persistence::after_body(true), KeepAlive);
        assert_eq!(Persistence::after_body(false), LingeringClose);
        assert!(KeepAlive.is_keep_alive() && !Close.is_keep_alive());
    }
}
