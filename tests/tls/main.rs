//! TLS termination (issue 17) with real TLS clients: rustls for ordinary handshakes, raw
//! ClientHello bytes and `openssl s_client` where a test needs versions and cipher suites
//! that rustls clients cannot offer. Every certificate is made at run time by a test CA.
//!
//! `handshakes`: versions, ALPN, resumption, SNI, client certificates. `refusals`: old
//! versions and weak suites. `serving`: requests over TLS, stalls, plain HTTP on the HTTPS
//! port, redirects. `rotation`: certificates replaced on disk. `binary`: logs, config
//! reload and `--check` through the real binary. `validation`: the `tls` section.

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod handshakes;
mod refusals;
mod rotation;
mod serving;
mod validation;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tls::{connect, presented, tls_error, tls_yaml, trusting_anything, Issued};
use common::{Options, TestServer};
use rustls::AlertDescription;

/// How long a test waits for an effect before failing; each wait polls for its condition.
const WAIT: Duration = Duration::from_secs(10);

fn tls_server(certificates: &[(&Issued, &[&str])], tls_extra: &str, extra: &str) -> TestServer {
    TestServer::start_with(Options {
        extra_yaml: format!("{}{extra}", tls_yaml(certificates, tls_extra)),
        ..Options::default()
    })
}

fn https(server: &TestServer) -> SocketAddr {
    server.tls_addr.expect("the server has an HTTPS listener")
}

/// The alert the server answered a handshake with, from a failed client handshake.
fn alert_of(error: &std::io::Error) -> Option<AlertDescription> {
    match tls_error(error) {
        Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
        _ => None,
    }
}

/// Poll `condition` until it holds; fail with `what` at `deadline`.
fn wait_until(deadline: Instant, what: &str, mut condition: impl FnMut() -> bool) {
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The leaf a new handshake as `localhost` gets.
fn leaf_of_new_handshake(addr: SocketAddr) -> Option<Vec<u8>> {
    connect(addr, "localhost", trusting_anything())
        .ok()
        .map(|client| presented(&client))
}
