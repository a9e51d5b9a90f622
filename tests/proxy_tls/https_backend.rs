//! An HTTPS backend on 127.0.0.1:0 for proxy tests: tokio-rustls on a runtime of its own
//! thread, HTTP/1.1 with keep-alive, and a record of every TLS connection (the SNI it was
//! asked for, the ALPN protocol, whether the session was resumed) and every request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::certs::ServerIdentity;

/// One TLS connection the backend accepted.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub server_name: Option<String>,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
}

/// One request, as the backend read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which TLS connection (0-based, in the order of their handshakes) carried it.
    pub connection: usize,
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct Record {
    handshakes: Mutex<Vec<Handshake>>,
    requests: Mutex<Vec<Request>>,
    /// Connections whose handshake did not complete (the client refused the certificate,
    /// or never spoke TLS).
    failed_handshakes: AtomicUsize,
    /// Whether `/healthz` answers 200 (else 503).
    healthy: AtomicBool,
    /// A pause before each read of at most [`SLOW_READ_BYTES`]: a backend that takes a
    /// request body more slowly than it is sent, so the sender's socket fills up.
    slow_reads: Option<Duration>,
}

const SLOW_READ_BYTES: usize = 4096;

pub struct HttpsBackend {
    pub addr: SocketAddr,
    record: Arc<Record>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpsBackend {
    /// Answers `/healthz` with 200 (see [`HttpsBackend::set_healthy`]) and everything else
    /// with 200 and `name method target body` as the body.
    pub fn start(name: &'static str, identity: ServerIdentity) -> HttpsBackend {
        HttpsBackend::start_with(name, identity, None)
    }

    /// As [`HttpsBackend::start`], reading at most 4 KiB after each `pause`.
    pub fn slow_reader(
        name: &'static str,
        identity: ServerIdentity,
        pause: Duration,
    ) -> HttpsBackend {
        HttpsBackend::start_with(name, identity, Some(pause))
    }

    fn start_with(
        name: &'static str,
        identity: ServerIdentity,
        slow_reads: Option<Duration>,
    ) -> HttpsBackend {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Record {
            slow_reads,
            ..Record::default()
        });
        record.healthy.store(true, Ordering::SeqCst);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&record);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
                            tokio::spawn(async move {
                                match acceptor.accept(tcp).await {
                                    Ok(tls) => serve(tls, name, &state).await,
                                    Err(_) => {
                                        state.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        HttpsBackend {
            addr,
            record,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.record.handshakes.lock().unwrap().clone()
    }

    pub fn failed_handshakes(&self) -> usize {
        self.record.failed_handshakes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.record.requests.lock().unwrap().clone()
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.record.healthy.store(healthy, Ordering::SeqCst);
    }

    /// A `backends:` entry with `tls: true` and any `extra` keys (`tls_server_name: x`).
    pub fn yaml_entry(&self, name: &str, extra: &str) -> String {
        let mut entry = format!(
            "    - name: \"{name}\"\n      address: \"{}\"\n      tls: true\n",
            self.addr
        );
        if !extra.is_empty() {
            entry += &format!("      {extra}\n");
        }
        entry
    }
}

impl Drop for HttpsBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    name: &str,
    record: &Record,
) {
    let connection = {
        let session = tls.get_ref().1;
        let mut handshakes = record.handshakes.lock().unwrap();
        handshakes.push(Handshake {
            server_name: session.server_name().map(str::to_owned),
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            resumed: session.handshake_kind() == Some(HandshakeKind::Resumed),
        });
        handshakes.len() - 1
    };
    let mut buf = Vec::new();
    while let Some((request, close)) = read_request(&mut tls, &mut buf, connection, record).await {
        let response = if request.target == "/healthz" {
            if record.healthy.load(Ordering::SeqCst) {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nup".to_string()
            } else {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_string()
            }
        } else {
            let body = format!(
                "{name} {} {} {}",
                request.method,
                request.target,
                String::from_utf8_lossy(&request.body)
            );
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        record.requests.lock().unwrap().push(request);
        if tls.write_all(response.as_bytes()).await.is_err() || tls.flush().await.is_err() {
            return;
        }
        if close {
            let _ = tls.shutdown().await;
            return;
        }
    }
}

/// One request with a Content-Length body (or none), and whether it asked to close;
/// `None` at EOF or on anything else.
async fn read_request(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    buf: &mut Vec<u8>,
    connection: usize,
    record: &Record,
) -> Option<(Request, bool)> {
    loop {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Request::new(&mut storage);
        if let httparse::Status::Complete(head_len) = head.parse(buf).ok()? {
            let value = |name: &str| {
                head.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let length: usize = value("content-length").map_or(Some(0), |v| v.parse().ok())?;
            let close = value("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let (method, target) = (head.method?.to_string(), head.path?.to_string());
            while buf.len() < head_len + length {
                read_more(tls, buf, record).await?;
            }
            let body = buf[head_len..head_len + length].to_vec();
            buf.drain(..head_len + length);
            let request = Request {
                connection,
                method,
                target,
                body,
            };
            return Some((request, close));
        }
        read_more(tls, buf, record).await?;
    }
}

async fn read_more(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    buf: &mut Vec<u8>,
    record: &Record,
) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let mut window = &mut chunk[..];
    if let Some(pause) = record.slow_reads {
        tokio::time::sleep(pause).await;
        window = &mut chunk[..SLOW_READ_BYTES];
    }
    match tls.read(window).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
