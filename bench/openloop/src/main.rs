//! Benchmark helper for Sentinel's adaptive load balancing (see bench/README.md):
//!
//!   openloop backend --port P --service-ms S     single-slot HTTP/1.1 backend
//!   openloop load --url URL --rate R ...          open-loop load generator (Poisson or
//!                                                 fixed-interval arrivals)
//!
//! Both run on a single-threaded tokio runtime: the benchmark pins them to one CPU.

mod backend;
mod http;
mod load;
mod rng;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    version,
    about = "Single-slot backend and open-loop load generator for Sentinel's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An HTTP/1.1 backend that serves one request at a time, each for --service-ms.
    /// Control: POST /_control?slow_factor=F | ?fail_ratio=R | ?reset_ratio=R | ?reset=1;
    /// GET /_stats.
    Backend {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 5.0)]
        service_ms: f64,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Sent in every response as `X-Backend` (default `:PORT`).
        #[arg(long)]
        name: Option<String>,
        /// Which requests fail or are reset at a given ratio: `spread` = exactly that share,
        /// evenly spaced (never two in a row at 0.5); `random` = each one independently with
        /// that probability, so runs of consecutive failures happen as they would in a real
        /// fault.
        #[arg(long, value_enum, default_value_t = Pattern::Spread)]
        failures: Pattern,
        /// Seed of the `random` failure pattern.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Open-loop load at a mean arrival rate; latency from each request's due time.
    /// Writes JSON lines (per window, per phase, total) to --out or stdout.
    Load {
        #[arg(long)]
        url: String,
        /// Requests per second (the mean rate with Poisson arrivals).
        #[arg(long)]
        rate: f64,
        /// `poisson`: exponentially distributed gaps (bursts and lulls, as independent
        /// clients make); `fixed`: one request every 1/rate s exactly.
        #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
        arrivals: Arrivals,
        /// Seed of the Poisson schedule: the same seed gives the same due times.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A backend's stats URL (GET, JSON), read at every phase start and at the end, so
        /// the report can count what each backend received per phase. Repeatable.
        #[arg(long)]
        backend_stats: Vec<String>,
        /// Seconds; needed without --phase-file, cuts the phases short with one.
        #[arg(long)]
        duration: Option<f64>,
        /// Most connections open at once; a request that would need one more is a `cap` error.
        #[arg(long, default_value_t = 4096)]
        connections: usize,
        /// Lines `name seconds [control-url ...]`: the control URLs are POSTed when the
        /// phase starts.
        #[arg(long)]
        phase_file: Option<PathBuf>,
        /// Seconds from a request's due time after which it counts as a `timeout` error.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Width of the per-window statistics, by due time.
        #[arg(long, default_value_t = 1000)]
        window_ms: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arrivals {
    Poisson,
    Fixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    Spread,
    Random,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("openloop: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Backend {
            port,
            service_ms,
            host,
            name,
            failures,
            seed,
        } => runtime
            .block_on(backend::run(backend::Args {
                port,
                host,
                service_ms,
                name,
                failures,
                seed,
            }))
            .map_err(|e| e.to_string()),
        Command::Load {
            url,
            rate,
            arrivals,
            seed,
            backend_stats,
            duration,
            connections,
            phase_file,
            timeout,
            window_ms,
            out,
        } => runtime.block_on(load::run(load::Args {
            url,
            rate,
            arrivals,
            seed,
            backend_stats,
            duration,
            connections,
            phase_file,
            timeout,
            window_ms,
            out,
        })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openloop: {e}");
            ExitCode::FAILURE
        }
    }
}
