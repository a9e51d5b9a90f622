//! The reverse proxy: upstream groups of backends (round-robin over the healthy ones, passive
//! health), idle connection pools, head rewriting, and forwarding with streaming bodies both
//! ways, timeouts, failover and protocol upgrades.

pub mod active;
pub mod breaker;
mod buffered;
pub mod exchange;
pub mod forward;
pub mod headers;
pub mod health;
mod log_limit;
pub mod pool;
pub mod relay;
pub mod retry_budget;
#[cfg(target_os = "linux")]
mod splice;
pub mod standing;
pub mod stream;
pub mod tls;
mod tunnel;
pub mod upstream;
