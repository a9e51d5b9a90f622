//! The hand-rolled HTTP/1.1 engine: a pure parser and body decoders, a pure response writer,
//! and the connection state machine that owns the client socket.

pub mod body;
pub mod connection;
pub mod date;
pub mod error;
pub(crate) mod lazy_timer;
pub mod parser;
pub mod request;
pub mod response;
pub mod response_parser;
pub mod writer;
#[cfg(target_os = "linux")]
pub mod zero_copy;
