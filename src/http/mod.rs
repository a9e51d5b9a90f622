//! The hand-rolled HTTP/1.1 engine: a pure parser and body decoders, a pure response writer
//! and a strict response parser. No sockets: the connection that owns the client socket is
//! `server::connection`; this layer imports nothing of the crate but `limits`.

pub mod body;
pub mod date;
pub mod error;
pub(crate) mod lazy_timer;
pub mod parser;
pub mod persistence;
pub mod proxy_protocol;
pub mod refield;
pub mod request;
pub mod response;
pub mod response_parser;
pub mod scheme;
pub mod writer;
