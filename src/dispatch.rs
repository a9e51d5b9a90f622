//! Local handlers: which one answers a request that routing did not send to an upstream.

use crate::fault::Fault;
use crate::http::request::RequestHead;
use crate::http::response::Response;
use crate::routing::Routed;
use crate::snapshot::Snapshot;
use crate::static_files;

/// Produce the response for `head` under `snapshot`, as routed, or the fault that keeps it
/// from being produced (the connection answers that with the error table's page).
/// `route_index` is the index of the route that took it, which says whether it compresses.
pub fn handle(
    head: &RequestHead,
    snapshot: &Snapshot,
    routed: &Routed<'_>,
    route_index: Option<usize>,
) -> Result<Response, Fault> {
    let config = &snapshot.config;
    match (routed, &config.static_files, &snapshot.file_cache) {
        (Routed::Static { .. }, Some(site), Some(cache)) => {
            let compression = config
                .compression
                .as_ref()
                .and_then(|c| c.for_route(route_index));
            static_files::respond(head, site, cache, &config.error_pages, compression)
                .map_err(Fault::Static)
        }
        (Routed::MethodNotAllowed, _, _) => Err(Fault::MethodNotAllowed),
        _ => Err(Fault::NoRoute),
    }
}
