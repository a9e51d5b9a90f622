//! A plugin's own metrics (`proxy_define_metric` and friends) and the host's count of its
//! failures, kept per plugin name across reloads and read by `/metrics` at scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// proxy-wasm `MetricType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn from_abi(value: i32) -> Option<MetricKind> {
        match value {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct DefinedMetric {
    pub name: String,
    pub kind: MetricKind,
    pub value: AtomicI64,
}

/// Why a callback failed, for the failure counter's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Trap,
    Timeout,
    OutOfMemory,
    Load,
}

impl FailureReason {
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Trap => "trap",
            FailureReason::Timeout => "timeout",
            FailureReason::OutOfMemory => "out_of_memory",
            FailureReason::Load => "load",
        }
    }
}

/// Metrics of one plugin. Definitions take a short write lock (plugins define them once, at
/// configure time); updates take the read lock and an atomic.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    defined: RwLock<Vec<Arc<DefinedMetric>>>,
    failures: [AtomicU64; 4],
}

impl PluginMetrics {
    /// The id of the metric `name` (the existing one when defined already); `None` past
    /// `MAX_PLUGIN_METRICS` (each is a series on `/metrics` and memory in the host).
    pub fn define(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut defined = self.defined.write().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = defined.iter().position(|m| m.name == name) {
            return u32::try_from(index).ok();
        }
        if defined.len() >= crate::limits::MAX_PLUGIN_METRICS {
            return None;
        }
        defined.push(Arc::new(DefinedMetric {
            name: name.to_string(),
            kind,
            value: AtomicI64::new(0),
        }));
        u32::try_from(defined.len() - 1).ok()
    }

    pub fn get(&self, id: u32) -> Option<Arc<DefinedMetric>> {
        let defined = self.defined.read().unwrap_or_else(|p| p.into_inner());
        defined.get(usize::try_from(id).ok()?).cloned()
    }

    pub fn defined(&self) -> Vec<Arc<DefinedMetric>> {
        self.defined
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn record_failure(&self, reason: FailureReason) {
        self.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self) -> [(FailureReason, u64); 4] {
        [
            FailureReason::Trap,
            FailureReason::Timeout,
            FailureReason::OutOfMemory,
            FailureReason::Load,
        ]
        .map(|reason| {
            (
                reason,
                self.failures[reason as usize].load(Ordering::Relaxed),
            )
        })
    }
}

/// Every plugin's metrics by name: a reload that replaces a plugin keeps its counters.
fn registry() -> &'static Mutex<BTreeMap<String, Arc<PluginMetrics>>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<String, Arc<PluginMetrics>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The metrics of plugin `name`, made on first use.
pub fn for_plugin(name: &str) -> Arc<PluginMetrics> {
    let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(registry.entry(name.to_string()).or_default())
}

/// Every plugin's metrics, for a scrape.
pub fn all() -> Vec<(String, Arc<PluginMetrics>)> {
    let registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    registry
        .iter()
        .map(|(name, metrics)| (name.clone(), Arc::clone(metrics)))
        .collect()
}
