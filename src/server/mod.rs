//! The server: binds the listener, accepts connections under a connection limit and hands
//! each to the HTTP connection state machine; stops accepting and drains on shutdown.

mod connection;
mod listener;

pub use listener::{Server, ServerHandle};
