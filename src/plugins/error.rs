//! Why a plugin could not be loaded, or why one of its callbacks failed.

use std::path::PathBuf;

use super::metrics::FailureReason;

/// Why a plugin could not be loaded or a callback failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid WebAssembly module: {0}")]
    Compile(String),
    #[error("cannot link its imports: {0}")]
    Link(String),
    #[error("the module does not export {0}")]
    MissingExport(&'static str),
    #[error("the module exports {0} with the wrong signature")]
    ExportType(&'static str),
    #[error("{0} returned false")]
    Refused(&'static str),
    #[error("{reason}: {detail}", reason = .0.label(), detail = .1)]
    Failed(FailureReason, String),
}

impl PluginError {
    pub fn reason(&self) -> FailureReason {
        match self {
            PluginError::Failed(reason, _) => *reason,
            _ => FailureReason::Load,
        }
    }
}
