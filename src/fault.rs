//! The one error table: every way a request ends in an error response instead of what was
//! asked for, with the status the client gets, the extra fields that status calls for, and
//! the log level and reason. Each layer reports its own typed error (`ParseError` and
//! `BodyError` from the HTTP engine, `StaticError` from the file handler, `ForwardError` from
//! the proxy); only this table turns them into statuses, and the connection answers with the
//! operator's page for that status (`pages.rs`).

use std::fmt;
use std::io;

use crate::config::ErrorPages;
use crate::http::error::{BodyError, ParseError};
use crate::http::response::{Response, StatusCode};
use crate::pages::error_response;
use crate::proxy::exchange::{ForwardError, UpstreamError};
use crate::proxy::stream::ConnectError;
use crate::ratelimit::Refusal;
use crate::static_files::{PathError, StaticError};

/// Why a request gets an error response.
#[derive(Debug)]
pub enum Fault {
    /// The request head was malformed or over a limit.
    Head(ParseError),
    /// The request head did not arrive within `server.header_read_timeout_ms`.
    HeadTimeout,
    /// The request body was malformed or over a limit.
    Body(BodyError),
    /// The request body stalled past `server.body_read_timeout_ms`.
    BodyTimeout,
    /// No route takes the request.
    NoRoute,
    /// A method no handler serves (CONNECT: this is not a forward proxy).
    MethodNotAllowed,
    /// `tls.redirect_http` is on, and the request names no host to redirect to (an
    /// HTTP/1.0 request without `Host`).
    NoHostToRedirect,
    /// The static file handler could not serve the file.
    Static(StaticError),
    /// The proxy got no response to relay.
    Forward(ForwardError),
    /// The client is over its rate limit.
    RateLimited(Refusal),
    /// A plugin failed under `on_error: fail_closed`, or left a request head that cannot
    /// be sent; `status` is the plugin's `failure_status`.
    Plugin {
        plugin: std::sync::Arc<str>,
        status: StatusCode,
        reason: &'static str,
    },
    /// A bug: a state the validated config rules out.
    Internal(&'static str),
}

/// Who is at fault, which decides the log level: a client's mistakes are routine (info), an
/// upstream's need watching (warn, logged per attempt by the proxy), ours need fixing (error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Server,
}

impl Fault {
    /// The status the client gets. RFC sections in the arms that are not obvious.
    pub fn status(&self) -> StatusCode {
        match self {
            Fault::Head(error) => head_status(*error),
            Fault::HeadTimeout | Fault::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Fault::Body(error) => body_status(*error),
            Fault::NoRoute => StatusCode::NOT_FOUND,
            Fault::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Fault::NoHostToRedirect => StatusCode::BAD_REQUEST,
            Fault::Static(error) => static_status(error),
            Fault::Forward(error) => forward_status(error),
            // RFC 6585 §4.
            Fault::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Fault::Plugin { status, .. } => *status,
            Fault::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            Fault::Head(_)
            | Fault::HeadTimeout
            | Fault::Body(_)
            | Fault::BodyTimeout
            | Fault::NoRoute
            | Fault::MethodNotAllowed
            | Fault::NoHostToRedirect
            | Fault::RateLimited(_) => Blame::Client,
            Fault::Static(StaticError::FileSystem(error)) if !is_missing_or_denied(error) => {
                Blame::Server
            }
            Fault::Static(StaticError::Unreadable(_)) => Blame::Server,
            Fault::Static(_) => Blame::Client,
            Fault::Forward(ForwardError::ClientBody(_) | ForwardError::ClientBodyTimeout) => {
                Blame::Client
            }
            Fault::Forward(_) => Blame::Upstream,
            // Logged with its cause by the plugin host already; an operator must act.
            Fault::Plugin { .. } | Fault::Internal(_) => Blame::Server,
        }
    }

    /// Log the fault once, at the level its blame calls for. Upstream faults were logged at
    /// warn by the proxy attempt by attempt, so their summary here is debug. `target` is the
    /// request target when a head was read (it names the file behind a file-system error).
    pub fn log(&self, client: std::net::SocketAddr, target: Option<&str>) {
        let status = self.status().as_u16();
        let target = target.unwrap_or("-");
        match (self.blame(), self) {
            (Blame::Server, _) => {
                tracing::error!(%client, target, fault = %self, status, "request failed");
            }
            (
                Blame::Client,
                Fault::Head(_)
                | Fault::HeadTimeout
                | Fault::Body(_)
                | Fault::BodyTimeout
                | Fault::Forward(_),
            ) => {
                tracing::info!(%client, target, fault = %self, status, "request refused");
            }
            // 404s and the like are routine: the access log has them.
            (Blame::Client | Blame::Upstream, _) => {
                tracing::debug!(%client, target, fault = %self, status, "request refused");
            }
        }
    }

    /// The error response: the page for the status, and the fields the status calls for.
    pub fn response(&self, pages: &ErrorPages) -> Response {
        let response = error_response(self.status(), pages);
        match self {
            // RFC 9110 §15.5.6: a 405 lists the methods that would work.
            Fault::Static(StaticError::MethodNotAllowed) => {
                response.with_header("Allow", "GET, HEAD")
            }
            // RFC 9110 §15.5.17: the current length, so the client can ask again.
            Fault::Static(StaticError::RangeNotSatisfiable { size }) => response
                .with_header("Content-Range", format!("bytes */{size}"))
                .with_header("Accept-Ranges", "bytes"),
            // Every backend is at its concurrency cap: a moment later may do.
            Fault::Forward(ForwardError::Saturated) => response.with_header("Retry-After", "1"),
            Fault::RateLimited(refusal) => refusal
                .headers()
                .into_iter()
                .fold(response, |response, (name, value)| {
                    response.with_header(name, value)
                }),
            _ => response,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Head(error) => write!(f, "request head: {error}"),
            Fault::HeadTimeout => f.write_str("request head timed out"),
            Fault::Body(error) => write!(f, "request body: {error}"),
            Fault::BodyTimeout => f.write_str("request body timed out"),
            Fault::NoRoute => f.write_str("no route matches"),
            Fault::MethodNotAllowed => f.write_str("method not allowed"),
            Fault::NoHostToRedirect => f.write_str("no host to redirect to HTTPS"),
            Fault::Static(error) => write!(f, "static file: {error}"),
            Fault::Forward(error) => write!(f, "proxy: {error}"),
            Fault::RateLimited(refusal) => write!(
                f,
                "rate limited by {:?}, retry after {}s",
                refusal.policy(),
                refusal.retry_after_secs
            ),
            Fault::Plugin { plugin, reason, .. } => write!(f, "plugin {plugin:?}: {reason}"),
            Fault::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

fn head_status(error: ParseError) -> StatusCode {
    match error {
        ParseError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
        ParseError::HeadTooLarge | ParseError::TooManyHeaders => {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        }
        // RFC 9112 §6.1: a transfer coding the server does not understand.
        ParseError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
        ParseError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        // RFC 9110 §10.1.1: an expectation we cannot meet.
        ParseError::UnsupportedExpectation => StatusCode::EXPECTATION_FAILED,
        ParseError::InvalidRequestLine
        | ParseError::InvalidMethod
        | ParseError::InvalidTarget
        | ParseError::InvalidVersion
        | ParseError::BareLineFeed
        | ParseError::BareCarriageReturn
        | ParseError::ObsoleteLineFolding
        | ParseError::WhitespaceBeforeColon
        | ParseError::InvalidHeaderName
        | ParseError::InvalidHeaderValue
        | ParseError::InvalidContentLength
        | ParseError::ConflictingContentLength
        | ParseError::TransferEncodingWithContentLength
        | ParseError::TransferEncodingInHttp10
        | ParseError::InvalidTransferEncoding
        | ParseError::MissingHost
        | ParseError::DuplicateHost
        | ParseError::InvalidHost
        // A status line is never part of a request: a request that reads as one is malformed.
        | ParseError::InvalidStatusLine => StatusCode::BAD_REQUEST,
    }
}

fn body_status(error: BodyError) -> StatusCode {
    match error {
        BodyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::TrailersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        BodyError::InvalidChunkSize
        | BodyError::ChunkSizeOverflow
        | BodyError::ChunkExtensionTooLong
        | BodyError::InvalidChunkExtension
        | BodyError::InvalidChunkTerminator
        | BodyError::InvalidTrailer => StatusCode::BAD_REQUEST,
    }
}

fn static_status(error: &StaticError) -> StatusCode {
    match error {
        StaticError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        // Hidden files are treated as absent, not as forbidden: no hint they exist.
        StaticError::Path(PathError::Hidden) => StatusCode::NOT_FOUND,
        StaticError::Path(
            PathError::BadEncoding
            | PathError::NulByte
            | PathError::Backslash
            | PathError::EscapesRoot
            | PathError::NotUtf8,
        ) => StatusCode::BAD_REQUEST,
        StaticError::NotFound => StatusCode::NOT_FOUND,
        StaticError::SymlinkLeavesRoot | StaticError::DirectoryWithoutIndex => {
            StatusCode::FORBIDDEN
        }
        StaticError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        StaticError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        StaticError::FileSystem(error) => match error.kind() {
            kind if is_missing(kind) => StatusCode::NOT_FOUND,
            io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        StaticError::Unreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A name the file system does not have. Too long a name is one too: the client chose it,
/// so it must not produce a 500 and an error-level log line.
fn is_missing(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename
    )
}

fn is_missing_or_denied(error: &io::Error) -> bool {
    is_missing(error.kind()) || error.kind() == io::ErrorKind::PermissionDenied
}

fn forward_status(error: &ForwardError) -> StatusCode {
    match error {
        ForwardError::Saturated => StatusCode::SERVICE_UNAVAILABLE,
        // However the last backend failed to connect (refused, timed out, its TLS
        // certificate refused): the gateway found no one to ask, which is a 502 as nginx
        // gives for an upstream handshake failure, not a 503 that would promise a retry.
        ForwardError::NoBackend {
            last: None | Some(ConnectError::Tcp(_) | ConnectError::TimedOut | ConnectError::Tls(_)),
            ..
        } => StatusCode::BAD_GATEWAY,
        ForwardError::Upstream(UpstreamError::Timeout | UpstreamError::SendTimeout) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ForwardError::Upstream(
            UpstreamError::NoResponse(_)
            | UpstreamError::MalformedHead(_)
            | UpstreamError::ClosedMidHead
            | UpstreamError::FailedMidHead(_)
            | UpstreamError::UnrequestedUpgrade,
        ) => StatusCode::BAD_GATEWAY,
        ForwardError::ClientBody(error) => body_status(*error),
        ForwardError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        ForwardError::RefusedByPlugin(status) => *status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(fault: Fault) -> u16 {
        fault.status().as_u16()
    }

    #[test]
    fn request_head_faults_map_to_their_rfc_statuses() {
        assert_eq!(status(Fault::Head(ParseError::RequestLineTooLong)), 414);
        assert_eq!(status(Fault::Head(ParseError::HeadTooLarge)), 431);
        assert_eq!(status(Fault::Head(ParseError::TooManyHeaders)), 431);
        assert_eq!(
            status(Fault::Head(ParseError::UnsupportedTransferCoding)),
            501
        );
        assert_eq!(status(Fault::Head(ParseError::UnsupportedVersion)), 505);
        assert_eq!(status(Fault::Head(ParseError::UnsupportedExpectation)), 417);
        assert_eq!(status(Fault::Head(ParseError::BareLineFeed)), 400);
        assert_eq!(
            status(Fault::Head(ParseError::TransferEncodingWithContentLength)),
            400
        );
        assert_eq!(status(Fault::HeadTimeout), 408);
    }

    #[test]
    fn body_faults_are_the_clients_whether_read_here_or_by_the_proxy() {
        for (error, code) in [
            (BodyError::BodyTooLarge, 413),
            (BodyError::TrailersTooLarge, 431),
            (BodyError::InvalidChunkSize, 400),
        ] {
            assert_eq!(status(Fault::Body(error)), code);
            assert_eq!(
                status(Fault::Forward(ForwardError::ClientBody(error))),
                code
            );
            assert_eq!(
                Fault::Forward(ForwardError::ClientBody(error)).blame(),
                Blame::Client
            );
        }
        assert_eq!(status(Fault::BodyTimeout), 408);
        assert_eq!(status(Fault::Forward(ForwardError::ClientBodyTimeout)), 408);
    }

    #[test]
    fn upstream_faults_are_502_but_a_timeout_is_504_and_a_full_group_503() {
        let upstream = |error| Fault::Forward(ForwardError::Upstream(error));
        assert_eq!(status(upstream(UpstreamError::Timeout)), 504);
        assert_eq!(status(upstream(UpstreamError::SendTimeout)), 504);
        assert_eq!(status(upstream(UpstreamError::ClosedMidHead)), 502);
        assert_eq!(status(upstream(UpstreamError::UnrequestedUpgrade)), 502);
        assert_eq!(
            status(upstream(UpstreamError::MalformedHead(
                ParseError::InvalidStatusLine
            ))),
            502
        );
        assert_eq!(upstream(UpstreamError::Timeout).blame(), Blame::Upstream);
        assert_eq!(
            status(Fault::Forward(ForwardError::NoBackend {
                tried: 3,
                last: None
            })),
            502
        );
        let saturated = Fault::Forward(ForwardError::Saturated);
        assert_eq!(status(Fault::Forward(ForwardError::Saturated)), 503);
        let response = saturated.response(&ErrorPages::default());
        assert!(response
            .headers
            .iter()
            .any(|(name, _)| *name == "Retry-After"));
    }

    #[test]
    fn a_refused_backend_certificate_is_a_502_blamed_on_the_upstream_with_its_reason() {
        let refused =
            crate::proxy::tls::TlsFailure::Certificate(rustls::CertificateError::NotValidForName);
        let fault = Fault::Forward(ForwardError::NoBackend {
            tried: 2,
            last: Some(ConnectError::Tls(refused)),
        });
        assert_eq!((status_of(&fault), fault.blame()), (502, Blame::Upstream));
        assert_eq!(
            fault.to_string(),
            "proxy: no backend could take the request (tried 2); last: TLS certificate \
             refused: NotValidForName"
        );
    }

    fn status_of(fault: &Fault) -> u16 {
        fault.status().as_u16()
    }

    #[test]
    fn static_faults_hide_what_should_stay_hidden_and_blame_the_server_only_for_its_own() {
        assert_eq!(
            status(Fault::Static(StaticError::Path(PathError::Hidden))),
            404
        );
        assert_eq!(
            status(Fault::Static(StaticError::Path(PathError::EscapesRoot))),
            400
        );
        assert_eq!(status(Fault::Static(StaticError::SymlinkLeavesRoot)), 403);
        assert_eq!(
            status(Fault::Static(StaticError::DirectoryWithoutIndex)),
            403
        );
        assert_eq!(status(Fault::Static(StaticError::PreconditionFailed)), 412);
        let too_long = io::Error::from(io::ErrorKind::InvalidFilename);
        let fault = Fault::Static(StaticError::FileSystem(too_long));
        assert_eq!(
            (status(Fault::Static(StaticError::NotFound)), fault.blame()),
            (404, Blame::Client)
        );
        assert_eq!(fault.status().as_u16(), 404);
        let broken = Fault::Static(StaticError::FileSystem(io::Error::other("disk on fire")));
        assert_eq!(
            (broken.status().as_u16(), broken.blame()),
            (500, Blame::Server)
        );
        let range = Fault::Static(StaticError::RangeNotSatisfiable { size: 10 });
        let response = range.response(&ErrorPages::default());
        assert_eq!(response.status.as_u16(), 416);
        assert!(response
            .headers
            .iter()
            .any(|(name, _)| *name == "Content-Range"));
        let method = Fault::Static(StaticError::MethodNotAllowed).response(&ErrorPages::default());
        assert!(method.headers.iter().any(|(name, _)| *name == "Allow"));
    }

    #[test]
    fn internal_faults_are_500_and_the_servers() {
        let fault = Fault::Internal("a bug");
        assert_eq!(
            (fault.status().as_u16(), fault.blame()),
            (500, Blame::Server)
        );
    }
}
