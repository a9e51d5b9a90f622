//! Tracing setup: level from `RUST_LOG` or the config, text or JSON lines on stderr.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Install the global subscriber. `RUST_LOG`, when set, overrides `logging.level`.
pub fn init(config: &LoggingConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env.map(|directives| EnvFilter::try_new(&directives)) {
        Some(Ok(filter)) => filter,
        Some(Err(error)) => {
            eprintln!("sentinel: ignoring RUST_LOG ({error}); using logging.level");
            EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"))
        }
        None => EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        // Event fields stay under "fields": flattened, the access event's `target` field would
        // collide with the event's own `target` key.
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(error) = result {
        eprintln!("sentinel: logging already initialised: {error}");
    }
}
