//! The scheme a client used to reach us (RFC 9110 §4.2): what `X-Forwarded-Proto` tells a
//! backend and what a redirect to HTTPS changes.

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URI of this scheme means when it names none (RFC 9110 §4.2.1, §4.2.2).
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}
