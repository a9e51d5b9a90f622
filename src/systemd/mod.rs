//! The service manager's side of the process: the `sd_notify` protocol (readiness, reloads,
//! stopping, watchdog pings) and socket activation (listening sockets passed in with
//! `LISTEN_FDS`). Imports nothing of the crate: the listener, the reloader and `main` call
//! down into it. Everything is a no-op when the variables are not set.

pub mod activation;
pub mod notify;
