//! `admin.token`: a bearer token (RFC 6750) that every admin endpoint but the probes
//! requires, compared in constant time so that the time an answer takes says nothing about
//! how much of a guess was right.

use subtle::ConstantTimeEq;

use crate::config::AdminToken;
use crate::http::request::RequestHead;

/// Whether `head` may use the protected endpoints: always without a token, else only with
/// `Authorization: Bearer <token>`.
pub fn is_authorized(head: &RequestHead, token: Option<&AdminToken>) -> bool {
    let Some(token) = token else {
        return true;
    };
    // More than one Authorization field is no credential at all.
    let fields = head
        .fields()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"authorization"))
        .count();
    if fields != 1 {
        return false;
    }
    head.header("authorization")
        .and_then(bearer_credentials)
        .is_some_and(|given| tokens_match(given, token.as_bytes()))
}

/// The credentials of a `Bearer` authorization value (the scheme is case-insensitive).
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value.get(7..)?.trim_ascii())
}

/// Whether `given` is `expected`, in a time that depends only on their lengths: a token's
/// length is no secret worth the trouble, its bytes are.
pub fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tokens_match() {
        assert!(tokens_match(b"s3cret-token", b"s3cret-token"));
        assert!(tokens_match(b"", b""));
    }

    #[test]
    fn unequal_tokens_do_not() {
        assert!(!tokens_match(b"s3cret-tokex", b"s3cret-token"));
        assert!(!tokens_match(b"x3cret-token", b"s3cret-token"));
    }

    #[test]
    fn tokens_of_different_lengths_do_not() {
        assert!(!tokens_match(b"s3cret", b"s3cret-token"));
        assert!(!tokens_match(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!tokens_match(b"", b"s3cret-token"));
    }

    #[test]
    fn only_the_bearer_scheme_carries_credentials() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Basic abc"), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
    }
}
