//! PURE storage decision of a shared cache (RFC 9111 §3, §3.5): may this response to this
//! request be stored, and if not, why (the reason is logged and counted).

use super::directives::CacheControl;
use super::freshness::has_explicit_lifetime;

/// What the decision reads from the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Only `GET` fills the cache; a `HEAD` answer has no body to store.
    pub is_get: bool,
    pub has_authorization: bool,
    pub cache_control: &'a CacheControl,
}

/// What the decision reads from the response head.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub cache_control: &'a CacheControl,
    pub expires: Option<&'a [u8]>,
    pub has_validator: bool,
    pub has_set_cookie: bool,
    pub vary_star: bool,
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotStored {
    #[error("method is not GET")]
    Method,
    #[error("status {0} is not stored")]
    Status(u16),
    #[error("no-store")]
    NoStore,
    #[error("private")]
    Private,
    #[error("request had Authorization and the response did not allow sharing it")]
    Authorization,
    #[error("Set-Cookie without public")]
    SetCookie,
    #[error("Vary: *")]
    VaryStar,
    #[error("no explicit freshness, not public, no validator to revalidate with")]
    NotExplicitlyCacheable,
}

/// Final statuses this cache understands (RFC 9110 §15): what `must-understand` accepts.
/// 206 (partial) and 304 are never stored as entries of their own: a partial body is not the
/// resource, and a 304 only refreshes an entry.
fn understood(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 400..=417 | 421..=426 | 428
            | 429 | 431 | 451 | 500..=505 | 511
    )
}

/// Decide whether to store. `Set-Cookie` policy (the issue leaves it to us): stored only
/// when the origin marks the response `public`, and the stored copy never carries the
/// `Set-Cookie` field, so one client's cookie is never handed to another.
pub fn decide(request: RequestFacts<'_>, response: ResponseFacts<'_>) -> Result<(), NotStored> {
    let cc = response.cache_control;
    if !request.is_get {
        return Err(NotStored::Method);
    }
    if !understood(response.status) {
        return Err(NotStored::Status(response.status));
    }
    // `must-understand` with a status we understand overrides `no-store` (§5.2.2.3).
    if request.cache_control.no_store || (cc.no_store && !cc.must_understand) {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if request.has_authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if response.has_set_cookie && !cc.public {
        return Err(NotStored::SetCookie);
    }
    if response.vary_star {
        return Err(NotStored::VaryStar);
    }
    let revalidatable = cc.no_cache && response.has_validator;
    if !(has_explicit_lifetime(cc, response.expires) || cc.public || revalidatable) {
        return Err(NotStored::NotExplicitlyCacheable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide_with(
        request_cc: &str,
        authorization: bool,
        status: u16,
        response_cc: &str,
        tweak: impl FnOnce(&mut ResponseFacts<'_>),
    ) -> Result<(), NotStored> {
        let req_cc = CacheControl::parse([request_cc.as_bytes()]);
        let resp_cc = CacheControl::parse([response_cc.as_bytes()]);
        let mut response = ResponseFacts {
            status,
            cache_control: &resp_cc,
            expires: None,
            has_validator: false,
            has_set_cookie: false,
            vary_star: false,
        };
        tweak(&mut response);
        decide(
            RequestFacts {
                is_get: true,
                has_authorization: authorization,
                cache_control: &req_cc,
            },
            response,
        )
    }

    fn plain(status: u16, cc: &str) -> Result<(), NotStored> {
        decide_with("", false, status, cc, |_| {})
    }

    #[test]
    fn only_explicitly_cacheable_responses_are_stored() {
        assert_eq!(plain(200, "max-age=60"), Ok(()));
        assert_eq!(plain(404, "max-age=60"), Ok(()));
        assert_eq!(plain(200, ""), Err(NotStored::NotExplicitlyCacheable));
        assert_eq!(plain(200, "public"), Ok(()));
        assert_eq!(
            decide_with("", false, 200, "", |r| r.expires = Some(b"0")),
            Ok(()),
            "an invalid Expires is stored, already stale"
        );
        assert_eq!(
            plain(200, "no-cache"),
            Err(NotStored::NotExplicitlyCacheable)
        );
        assert_eq!(
            decide_with("", false, 200, "no-cache", |r| r.has_validator = true),
            Ok(())
        );
    }

    #[test]
    fn no_store_private_partial_and_unknown_statuses_are_not_stored() {
        assert_eq!(plain(200, "no-store, max-age=60"), Err(NotStored::NoStore));
        assert_eq!(
            decide_with("no-store", false, 200, "max-age=60", |_| {}),
            Err(NotStored::NoStore)
        );
        assert_eq!(plain(200, "private, max-age=60"), Err(NotStored::Private));
        assert_eq!(
            plain(200, "private=\"x\", max-age=60"),
            Err(NotStored::Private)
        );
        assert_eq!(plain(206, "max-age=60"), Err(NotStored::Status(206)));
        assert_eq!(plain(304, "max-age=60"), Err(NotStored::Status(304)));
        assert_eq!(plain(599, "max-age=60"), Err(NotStored::Status(599)));
        assert_eq!(plain(200, "no-store, must-understand, max-age=60"), Ok(()));
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let auth = |cc: &str| decide_with("", true, 200, cc, |_| {});
        assert_eq!(auth("max-age=60"), Err(NotStored::Authorization));
        assert_eq!(auth("public, max-age=60"), Ok(()));
        assert_eq!(auth("s-maxage=60"), Ok(()));
        assert_eq!(auth("must-revalidate, max-age=60"), Ok(()));
    }

    #[test]
    fn set_cookie_needs_public_and_vary_star_is_never_stored() {
        let cookie = |cc: &str| decide_with("", false, 200, cc, |r| r.has_set_cookie = true);
        assert_eq!(cookie("max-age=60"), Err(NotStored::SetCookie));
        assert_eq!(cookie("public, max-age=60"), Ok(()));
        assert_eq!(
            decide_with("", false, 200, "max-age=60", |r| r.vary_star = true),
            Err(NotStored::VaryStar)
        );
    }

    #[test]
    fn only_get_fills_the_cache() {
        let cc = CacheControl::parse([b"max-age=60".as_slice()]);
        let none = CacheControl::default();
        let result = decide(
            RequestFacts {
                is_get: false,
                has_authorization: false,
                cache_control: &none,
            },
            ResponseFacts {
                status: 200,
                cache_control: &cc,
                expires: None,
                has_validator: true,
                has_set_cookie: false,
                vary_star: false,
            },
        );
        assert_eq!(result, Err(NotStored::Method));
    }
}
