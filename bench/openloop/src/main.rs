//! Benchmark helper for Sentinel's adaptive load balancing (see bench/README.md):
//!
//!   openloop backend --port P --service-ms S     single-slot HTTP/1.1 backend
//!   openloop load --url URL --rate R ...          open-loop load generator
//!
//! Both run on a single-threaded tokio runtime: the benchmark pins them to one CPU.

mod backend;
mod http;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Control: POST /_control?slow_factor=F | ?fail_ratio=R | ?reset=1; GET /_stats.
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
    },
    /// Open-loop load at a fixed arrival rate; latency from each request's due time.
    /// Writes JSON lines (per window, per phase, total) to --out or stdout.
    Load {
        #[arg(long)]
        url: String,
        /// Requests per second (constant inter-arrival time).
        #[arg(long)]
        rate: f64,
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
        } => runtime
            .block_on(backend::run(port, host, service_ms, name))
            .map_err(|e| e.to_string()),
        Command::Load {
            url,
            rate,
            duration,
            connections,
            phase_file,
            timeout,
            window_ms,
            out,
        } => runtime.block_on(load::run(load::Args {
            url,
            rate,
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
