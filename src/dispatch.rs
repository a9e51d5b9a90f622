//! Routing: which handler answers a request, given one config snapshot.

use crate::config::Config;
use crate::http::request::RequestHead;
use crate::http::response::{Response, StatusCode};
use crate::pages::error_response;
use crate::static_files;

/// Produce the response for `head` under `config`.
pub fn handle(head: &RequestHead, config: &Config) -> Response {
    match &config.static_files {
        Some(static_config) => static_files::respond(head, static_config, &config.error_pages),
        None => error_response(StatusCode::NOT_FOUND, &config.error_pages),
    }
}
