//! Local handlers: which one answers a request that routing did not send to an upstream.

use crate::http::request::RequestHead;
use crate::http::response::{Response, StatusCode};
use crate::pages::error_response;
use crate::routing::Routed;
use crate::snapshot::Snapshot;
use crate::static_files;

/// Produce the response for `head` under `snapshot`, as routed.
pub fn handle(head: &RequestHead, snapshot: &Snapshot, routed: &Routed<'_>) -> Response {
    let config = &snapshot.config;
    match (routed, &config.static_files, &snapshot.file_cache) {
        (Routed::Static, Some(site), Some(cache)) => {
            static_files::respond(head, site, cache, &config.error_pages)
        }
        (Routed::MethodNotAllowed, _, _) => {
            error_response(StatusCode::METHOD_NOT_ALLOWED, &config.error_pages)
        }
        _ => error_response(StatusCode::NOT_FOUND, &config.error_pages),
    }
}
