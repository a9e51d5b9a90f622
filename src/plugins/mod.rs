//! proxy-wasm plugins on wasmtime (issue 21, ADR 0018): the set of loaded plugins a
//! snapshot runs (`set.rs`: compiled once, kept across reloads while their file and
//! settings stay the same), one instance per plugin per worker thread (`vm.rs`), the host
//! functions (`abi.rs`, `wasi.rs`), the per-request chain the connection calls
//! (`chain.rs`), and what interrupts a callback past its budget (`watchdog.rs`).

mod abi;
mod chain;
mod engine;
mod error;
mod host;
pub mod metrics;
mod set;
mod vm;
mod wasi;
mod watchdog;

pub use chain::{map_capacity, PluginRequest, RequestInfo, Verdict};
pub use error::PluginError;
pub use host::{HeaderMap, LocalResponse};
pub use set::{check, LoadedPlugin, PluginSet};
