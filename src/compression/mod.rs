//! Response compression: which encoding a client gets (`negotiate`), whether a response may
//! be compressed at all (`policy`), and the streaming encoders (`encoder`). The first two are
//! pure; the hooks that apply them live with the static-file handler and the proxy relay.
//!
//! This module sits below `config` (which names its algorithms and levels) and imports only
//! `http` types, so both handlers can use it without an import running back up.

mod encoder;
mod negotiate;
mod policy;

pub use encoder::{compress_whole, Encoder, Level};
pub use negotiate::{negotiate, Accepted, Algorithm};
pub use policy::{can_vary, merge_vary, weaken_etag, MediaRange, ResponseFacts, Skip};

/// The settings every hook reads, validated from the `compression` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Server preference, most preferred first; ties in the client's q-values go to the
    /// earlier one.
    pub algorithms: Vec<Algorithm>,
    /// Bodies shorter than this are sent as they are.
    pub min_bytes: u64,
    /// Media types compressed on the fly.
    pub types: Vec<MediaRange>,
    /// Serve `file.ext.zst` / `.br` / `.gz` beside `file.ext` when fresh.
    pub precompressed: bool,
    pub level: Level,
}
