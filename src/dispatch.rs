//! Local handlers: which one answers a request that routing did not send to an upstream.

use crate::fault::Fault;
use crate::http::request::RequestHead;
use crate::http::response::Response;
use crate::routing::Routed;
use crate::snapshot::Snapshot;
use crate::static_files;

/// Produce the response for `head` under `snapshot`, as routed, or the fault that keeps it
/// from being produced (the connection answers that with the error table's page).
pub fn handle(
    head: &RequestHead,
    snapshot: &Snapshot,
    routed: &Routed<'_>,
) -> Result<Response, Fault> {
    let config = &snapshot.config;
    match (routed, &config.static_files, &snapshot.file_cache) {
        (Routed::Static { .. }, Some(site), Some(cache)) => {
            static_files::respond(head, site, cache, &config.error_pages).map_err(Fault::Static)
        }
        (Routed::MethodNotAllowed, _, _) => Err(Fault::MethodNotAllowed),
        _ => Err(Fault::NoRoute),
    }
}
