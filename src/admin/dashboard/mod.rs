//! The live dashboard at the admin listener's `/`: one page (HTML, CSS and JavaScript
//! compiled into the binary, nothing fetched from elsewhere) that polls
//! `/admin/dashboard.json` and draws every upstream and backend, their rates and latency
//! over the last minutes, and the recent reloads.
//!
//! The page and its two assets hold no data, so they are served without the admin token: a
//! browser cannot attach a bearer token to a navigation, and a token in the URL would end
//! up in history and logs. The data (`/admin/dashboard.json`) wants the token like every
//! other admin endpoint; the page asks for it (or takes it from the URL fragment, which a
//! browser never sends) and sends it as `Authorization: Bearer`. A strict
//! Content-Security-Policy allows the page nothing but its own script, style and feed.

mod feed;
mod history;
mod sampler;

pub use feed::dashboard_json;
pub use history::History;
pub use sampler::{spawn as spawn_sampler, SharedHistory};

use bytes::Bytes;

use crate::http::response::{Response, ResponseBody, StatusCode};

/// The path of the feed the page polls.
pub const FEED_PATH: &str = "/admin/dashboard.json";

/// Only the page's own script, style and feed; no inline code, no frames, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One of the page's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

const ASSETS: [(&str, Asset); 3] = [
    (
        "/",
        Asset {
            content_type: "text/html; charset=utf-8",
            body: include_str!("index.html"),
        },
    ),
    (
        "/dashboard.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_str!("dashboard.css"),
        },
    ),
    (
        "/dashboard.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("dashboard.js"),
        },
    ),
];

/// The page's file at `path`, if it is one.
pub fn asset(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(at, _)| *at == path)
        .map(|(_, asset)| *asset)
}

/// `asset` as an answer. `no-cache`: the files change with the binary, and an old script
/// reading a newer feed would show nonsense; they are small.
pub fn asset_response(asset: Asset) -> Response {
    with_page_headers(Response::new(StatusCode::OK))
        .with_header("Content-Type", asset.content_type)
        .with_header("Cache-Control", "no-cache")
        .with_body(ResponseBody::Full(Bytes::from_static(
            asset.body.as_bytes(),
        )))
}

/// The feed's document as an answer.
pub fn feed_response(json: String) -> Response {
    with_page_headers(Response::new(StatusCode::OK))
        .with_header("Content-Type", "application/json")
        .with_header("Cache-Control", "no-store")
        .with_body(ResponseBody::Full(Bytes::from(json)))
}

fn with_page_headers(response: Response) -> Response {
    response
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("X-Frame-Options", "DENY")
}

/// The `since` parameter of the feed's query (0, the whole history, when absent or bad).
pub fn since(target: &str) -> u64 {
    target
        .split_once('?')
        .map_or("", |(_, query)| query)
        .split('&')
        .find_map(|pair| pair.strip_prefix("since="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_by_path() {
        assert!(asset("/").unwrap().body.contains("<title>"));
        assert!(asset("/dashboard.js")
            .unwrap()
            .content_type
            .starts_with("text/javascript"));
        assert!(asset("/dashboard.css")
            .unwrap()
            .content_type
            .starts_with("text/css"));
        assert_eq!(asset("/index.html"), None);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (_, asset) in ASSETS {
            // The SVG namespace is a name, not a fetch.
            let body = asset.body.replace("'http://www.w3.org/2000/svg'", "");
            for needle in [
                "http://", "https://", "//cdn", "@import", "<script>", "style=\"",
            ] {
                assert!(
                    !body.contains(needle),
                    "{needle} in an asset: no outside resource, no inline code"
                );
            }
        }
    }

    #[test]
    fn since_reads_the_query() {
        assert_eq!(since("/admin/dashboard.json"), 0);
        assert_eq!(since("/admin/dashboard.json?since=42"), 42);
        assert_eq!(since("/admin/dashboard.json?x=1&since=7"), 7);
        assert_eq!(since("/admin/dashboard.json?since=-1"), 0);
    }
}
