//! Tracing setup: level from `RUST_LOG` or the config, text or JSON lines on stderr. The
//! config's level can be changed by a reload; `RUST_LOG`, when set, wins for the process's
//! lifetime.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the filter of the installed subscriber; unset when `RUST_LOG` decides.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// The format the installed subscriber writes (`logging.format` takes effect at a restart).
static INSTALLED_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format of the log lines the process writes, once `init` has run: the access-log
/// writer shapes the `text` access line to match it, whatever a reloaded config says.
pub fn installed_format() -> Option<LogFormat> {
    INSTALLED_FORMAT.get().copied()
}

/// Apply a reloaded `logging.level` (validated with the config). Returns whether it took.
pub fn set_level(level: &str) -> bool {
    let (Some(set), Ok(filter)) = (SET_FILTER.get(), EnvFilter::try_new(level)) else {
        return false;
    };
    set(filter).is_ok()
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `logging.level`.
pub fn init(config: &LoggingConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let env_wins = from_env.is_some();
    let filter = match from_env.map(|directives| EnvFilter::try_new(&directives)) {
        Some(Ok(filter)) => filter,
        Some(Err(error)) => {
            eprintln!("sentinel: ignoring RUST_LOG ({error}); using logging.level");
            EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"))
        }
        None => EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let keep = |set: SetFilter| {
        if !env_wins {
            let _ = SET_FILTER.set(set);
        }
    };
    let result = match config.format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            keep(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
        // Event fields stay under "fields": flattened, the access event's `target` field would
        // collide with the event's own `target` key.
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            keep(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            builder.try_init()
        }
    };
    match result {
        Ok(()) => {
            let _ = INSTALLED_FORMAT.set(config.format);
        }
        Err(error) => eprintln!("sentinel: logging already initialised: {error}"),
    }
}
