//! The RFC 9111 shared response cache (issue 19). The pure rules live in their own files:
//! `directives` (Cache-Control), `freshness` (lifetimes, ages, what a request accepts),
//! `storable` (what may be stored) and `key` (primary and Vary keys). Storage, coalescing and
//! the proxy's hook build on them.

pub mod coalesce;
pub mod directives;
pub mod fill;
pub mod freshness;
pub mod key;
pub mod serve;
pub mod state;
pub mod stats;
pub mod storable;
pub mod store;
