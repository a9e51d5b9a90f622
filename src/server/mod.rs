//! The server: binds the listeners (plain HTTP, and HTTPS when `tls` is configured),
//! accepts connections under one connection limit, completes TLS where the listener speaks
//! it, and hands each connection to the HTTP connection state machine; stops accepting and
//! drains on shutdown.

mod admission;
mod connection;
pub mod handover;
mod holding;
mod listener;
mod proxy_header;
pub mod tls;

pub use listener::{
    adopt_listener, bind_lone_listener, BindError, Prebound, Rebound, Server, ServerHandle,
};
pub(crate) use listener::{is_per_connection, ACCEPT_ERROR_BACKOFF};
