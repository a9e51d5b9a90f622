//! The `compression` section and each route's `compression: false`, validated into the
//! settings the static-file handler and the proxy relay read.

use std::sync::Arc;

use super::raw::{RawCompression, RawRoute};
use super::Validator;
use crate::compression::{Algorithm, Level, MediaRange, Settings};
use crate::limits::{DEFAULT_COMPRESSION_TYPES, MAX_COMPRESSION_MIN_BYTES};

/// Compression as configured; `Config::compression` is `None` when the section is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionConfig {
    pub settings: Arc<Settings>,
    /// One per entry of `Config::routes`, at the same index: `false` where the route opted
    /// out.
    pub routes: Vec<bool>,
}

impl CompressionConfig {
    /// The settings for requests taken by route `route` (`None`: no route took it), or
    /// `None` when that route opted out.
    pub fn for_route(&self, route: Option<usize>) -> Option<&Settings> {
        let enabled = route.is_none_or(|index| self.routes.get(index).copied().unwrap_or(true));
        enabled.then_some(&*self.settings)
    }
}

impl Validator<'_> {
    pub(super) fn compression(
        &self,
        raw: Option<&RawCompression>,
        routes: &[RawRoute],
        route_count: usize,
    ) -> Option<CompressionConfig> {
        let raw = raw?;
        let algorithms = match &raw.algorithms {
            None => Algorithm::ALL.to_vec(),
            Some(names) => {
                let mut algorithms = Vec::with_capacity(names.len());
                for name in names {
                    match Algorithm::from_token(name.as_bytes()) {
                        Some(a) if !algorithms.contains(&a) => algorithms.push(a),
                        Some(_) => self.report(
                            "compression.algorithms",
                            format!("{name:?} is listed twice"),
                        ),
                        None => self.report(
                            "compression.algorithms",
                            format!("{name:?} is not one of \"zstd\", \"br\", \"gzip\""),
                        ),
                    }
                }
                if names.is_empty() {
                    self.report(
                        "compression.algorithms",
                        "is empty: remove the compression section to turn it off",
                    );
                }
                algorithms
            }
        };
        if raw.min_bytes > MAX_COMPRESSION_MIN_BYTES {
            self.report(
                "compression.min_bytes",
                format!("must be at most {MAX_COMPRESSION_MIN_BYTES}"),
            );
        }
        let type_names: Vec<&str> = match &raw.types {
            None => DEFAULT_COMPRESSION_TYPES.to_vec(),
            Some(names) => names.iter().map(String::as_str).collect(),
        };
        let mut types = Vec::with_capacity(type_names.len());
        for name in type_names {
            match MediaRange::parse(name) {
                Some(range) => types.push(range),
                None => self.report(
                    "compression.types",
                    format!("{name:?} is not a media type (type/subtype or type/*)"),
                ),
            }
        }
        let level = Level::parse(&raw.level).unwrap_or_else(|| {
            self.report(
                "compression.level",
                format!(
                    "{:?} is not one of \"fast\", \"balanced\", \"best\"",
                    raw.level
                ),
            );
            Level::Fast
        });
        let mut enabled: Vec<bool> = routes.iter().map(|r| r.compression).collect();
        // The implicit route (no `routes` section) compresses.
        enabled.resize(route_count, true);
        Some(CompressionConfig {
            settings: Arc::new(Settings {
                algorithms,
                min_bytes: raw.min_bytes,
                types,
                precompressed: raw.precompressed,
                level,
            }),
            routes: enabled,
        })
    }
}
