//! Sentinel: an HTTP/1.1 web server and reverse proxy built on its own strict HTTP/1.1 engine.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod buffer_pool;
pub mod cache;
pub mod certificates;
pub mod compression;
pub mod config;
pub mod dispatch;
pub mod fault;
pub mod http;
pub mod https_redirect;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pages;
pub mod plugins;
pub mod privileges;
pub mod probe;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod static_files;
#[cfg(unix)]
pub mod systemd;
pub mod transport;
#[cfg(unix)]
pub mod upgrade;
