//! `sentinel --probe URL`: one blocking `GET` to a health endpoint, for container health
//! checks (Docker's `HEALTHCHECK`, a Kubernetes `exec` probe) in an image that carries no
//! `curl`. The answer's status line is read with the same strict parser the proxy applies to
//! upstreams, so a garbled answer is a failed probe, never a passed one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http::error::ParseError;
use crate::http::response_parser::{parse_response, ResponseLimits, ResponseStatus};

/// Head limits for the probed answer: an admin endpoint's head is a few hundred bytes.
const PROBE_LIMITS: ResponseLimits = ResponseLimits {
    max_head_bytes: 8 * 1024,
    max_headers: 64,
};

/// Why a probe failed. Its `Display` is the one line the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0:?} is not an http://HOST:PORT/PATH URL")]
    BadUrl(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        addr: String,
        reason: std::io::Error,
    },
    #[error("no complete answer within the timeout")]
    Timeout,
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("the connection closed before a complete answer")]
    Closed,
    #[error("malformed answer: {0}")]
    Malformed(ParseError),
}

/// Where a probe goes: host and port to connect to, path to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub authority: String,
    pub path: String,
}

impl ProbeTarget {
    /// Accepts `http://HOST:PORT/PATH` (port required: there is no default admin port), with
    /// the `http://` optional. TLS is not spoken: probes target the plain admin listener.
    pub fn parse(url: &str) -> Result<Self, ProbeError> {
        let bad = || ProbeError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !has_port || !printable(authority) || !printable(path) || rest.contains("://") {
            return Err(bad());
        }
        Ok(Self {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Send `GET` and return the answer's status code. The whole exchange, connect included,
/// fits in `timeout`.
pub fn probe(target: &ProbeTarget, timeout: Duration) -> Result<u16, ProbeError> {
    let deadline = Instant::now() + timeout;
    let addr: SocketAddr = target
        .authority
        .to_socket_addrs()
        .map_err(|_| ProbeError::Resolve(target.authority.clone()))?
        .next()
        .ok_or_else(|| ProbeError::Resolve(target.authority.clone()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|reason| ProbeError::Connect {
            addr: target.authority.clone(),
            reason,
        })?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sentinel-probe\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(ProbeError::Io)?;
    stream
        .write_all(request.as_bytes())
        .map_err(timeout_or_io)?;
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match parse_response(&answer, &PROBE_LIMITS).map_err(ProbeError::Malformed)? {
            ResponseStatus::Complete(head, _) => return Ok(head.status.as_u16()),
            ResponseStatus::Partial => {}
        }
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(ProbeError::Io)?;
        match stream.read(&mut chunk).map_err(timeout_or_io)? {
            0 => return Err(ProbeError::Closed),
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Time left before `deadline`; none left is a timeout (a zero socket timeout would mean
/// "wait forever" to the standard library).
fn remaining(deadline: Instant) -> Result<Duration, ProbeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ProbeError::Timeout)
    } else {
        Ok(left)
    }
}

fn timeout_or_io(error: std::io::Error) -> ProbeError {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ProbeError::Timeout,
        _ => ProbeError::Io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_need_a_host_and_a_port() {
        let target = ProbeTarget::parse("http://127.0.0.1:9901/readyz").unwrap();
        assert_eq!(target.authority, "127.0.0.1:9901");
        assert_eq!(target.path, "/readyz");
        assert_eq!(ProbeTarget::parse("localhost:1").unwrap().path, "/");
        assert_eq!(
            ProbeTarget::parse("http://[::1]:9/healthz")
                .unwrap()
                .authority,
            "[::1]:9"
        );
        for bad in [
            "http://127.0.0.1/healthz",
            "https://127.0.0.1:443/",
            "http://:80/",
            "http://h:99999/",
            "http://h:1/a b",
            "",
        ] {
            assert!(ProbeTarget::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Serves one connection with `answer` and returns the target to probe it.
    fn answering(answer: &'static [u8]) -> ProbeTarget {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answer);
            }
        });
        ProbeTarget {
            authority,
            path: "/healthz".into(),
        }
    }

    #[test]
    fn the_status_code_comes_from_a_strictly_parsed_head() {
        let ok = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        assert_eq!(probe(&ok, Duration::from_secs(5)).unwrap(), 200);
        let draining = answering(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(probe(&draining, Duration::from_secs(5)).unwrap(), 503);
        let garbage = answering(b"HTTP/1.1 200 OK\nbare: lf\n\n");
        assert!(matches!(
            probe(&garbage, Duration::from_secs(5)),
            Err(ProbeError::Malformed(_))
        ));
        let cut = answering(b"HTTP/1.1 200 OK\r\n");
        assert!(matches!(
            probe(&cut, Duration::from_secs(5)),
            Err(ProbeError::Closed)
        ));
    }

    #[test]
    fn a_silent_peer_is_a_timeout_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = ProbeTarget {
            authority: listener.local_addr().unwrap().to_string(),
            path: "/".into(),
        };
        // Accepted by the kernel's backlog, never answered.
        let result = probe(&target, Duration::from_millis(200));
        assert!(matches!(result, Err(ProbeError::Timeout)), "{result:?}");
        drop(listener);
    }
}
