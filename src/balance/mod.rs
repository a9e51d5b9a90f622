//! Load balancing, pure where it can be: the strategies, the peak-EWMA latency math, the
//! failure rate, the latency-outlier rule and probe allowance, a small random source, and
//! the per-backend statistics they read.

pub mod ewma;
pub mod failure_rate;
pub mod outlier;
pub mod rng;
pub mod stats;
pub mod strategy;
