//! The cache's runtime state beside a config snapshot: the store and the misses in flight.
//! A reload whose cache budgets did not change carries both over, so stored responses
//! survive it.

use std::sync::Arc;

use super::coalesce::Coalescer;
use super::store::Store;
use crate::config::CacheConfig;

#[derive(Debug)]
pub struct CacheState {
    pub config: CacheConfig,
    pub store: Store,
    pub coalescer: Arc<Coalescer>,
}

impl CacheState {
    /// The state for `config` (`None`: the cache is off), reusing `previous`'s store when
    /// its budgets are the same.
    pub fn build(
        config: Option<&CacheConfig>,
        previous: Option<&CacheState>,
    ) -> Option<CacheState> {
        let config = config?;
        let (store, coalescer) = match previous.filter(|p| p.config.same_store(config)) {
            Some(previous) => (previous.store.clone(), Arc::clone(&previous.coalescer)),
            None => (Store::new(config.max_bytes), Arc::new(Coalescer::default())),
        };
        Some(CacheState {
            config: config.clone(),
            store,
            coalescer,
        })
    }
}
