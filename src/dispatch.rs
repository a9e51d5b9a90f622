//! Local handlers: which one answers a request that routing did not send to an upstream.

use crate::config::Config;
use crate::http::request::RequestHead;
use crate::http::response::{Response, StatusCode};
use crate::pages::error_response;
use crate::routing::Routed;
use crate::static_files;

/// Produce the response for `head` under `config`, as routed.
pub fn handle(head: &RequestHead, config: &Config, routed: &Routed<'_>) -> Response {
    match (routed, &config.static_files) {
        (Routed::Static, Some(static_config)) => {
            static_files::respond(head, static_config, &config.error_pages)
        }
        (Routed::MethodNotAllowed, _) => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, &config.error_pages)
        }
        _ => error_response(StatusCode::NOT_FOUND, &config.error_pages),
    }
}
