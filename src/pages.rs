//! Error responses: the operator's custom page for a status when one is configured, a small
//! built-in page otherwise. Used by the connection (parse errors, timeouts) and handlers alike.

use bytes::Bytes;

use crate::config::ErrorPages;
use crate::http::response::{Response, ResponseBody, StatusCode};

const HTML: &str = "text/html; charset=utf-8";

/// A complete error response for `status`.
pub fn error_response(status: StatusCode, pages: &ErrorPages) -> Response {
    let body = match pages.get(status) {
        Some(page) => page.clone(),
        None => Bytes::from(builtin_page(status)),
    };
    Response::new(status)
        .with_header("Content-Type", HTML)
        .with_body(ResponseBody::Full(body))
}

fn builtin_page(status: StatusCode) -> String {
    let reason = status.reason();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n\
         <body><h1>{status} {reason}</h1><hr><p>sentinel</p></body></html>\n"
    )
}
