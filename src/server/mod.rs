//! The server: binds the listener, accepts connections under a connection limit and hands
//! each to the HTTP connection state machine; stops accepting and drains on shutdown.

mod connection;
mod listener;

pub use listener::{bind_lone_listener, Server, ServerHandle};
pub(crate) use listener::{is_per_connection, ACCEPT_ERROR_BACKOFF};
