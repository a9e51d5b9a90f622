//! The server: binds the listener, accepts connections under a connection limit and hands
//! each to the HTTP connection state machine; stops accepting and drains on shutdown.

mod connection;
mod listener;

pub use listener::{Server, ServerHandle};

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;

/// The live configuration: each request loads one snapshot and keeps it; a reload swaps the
/// whole thing at once.
pub type SharedConfig = Arc<ArcSwap<Config>>;
