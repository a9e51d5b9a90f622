//! Test harness: an in-process Sentinel on 127.0.0.1:0 serving a temporary site, and a raw
//! blocking client that writes exact bytes and reads exact responses.
#![allow(dead_code)]

pub mod backend;
pub mod daemon;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sentinel::config::Config;
use sentinel::server::Server;

/// How long any single test read may block before the test fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server on its own runtime thread; shut down and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the config has a `tls` section.
    pub tls_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    /// The running server's live snapshot: config and runtime state (pools, health, stats).
    pub config: sentinel::snapshot::SharedSnapshot,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What to put in the test config beyond the defaults.
#[derive(Default)]
pub struct Options {
    /// Extra lines for the `server:` section, e.g. `"  max_headers: 5\n"` (two-space indent).
    pub server_yaml: String,
    /// Extra lines for the `static_files:` section.
    pub static_yaml: String,
    /// Lines appended at top level (e.g. a `proxy:` section).
    pub extra_yaml: String,
}

impl TestServer {
    /// The standard test site with default limits.
    pub fn start() -> TestServer {
        TestServer::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("public");
        write_site(&root);
        let yaml = format!(
            "server:\n  listen_addr: \"127.0.0.1:0\"\n{server}\
             static_files:\n  root: \"{root}\"\n  index: \"index.html\"\n  error_pages:\n    \
             not_found: \"errors/404.html\"\n    bad_request: \"errors/400.html\"\n{statics}\
             logging:\n  level: \"warn\"\n  access_log: false\n{extra}",
            server = options.server_yaml,
            root = root.display(),
            statics = options.static_yaml,
            extra = options.extra_yaml,
        );
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");
        let config = Config::load(&config_path, None)
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
        TestServer::spawn(config, dir)
    }

    fn spawn(config: Config, dir: tempfile::TempDir) -> TestServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            // A current-thread runtime, as each worker of the default layout (`per_core`)
            // and a lone worker run: the accept loop then takes the path that clears
            // tokio's readability guess on accepted sockets. `shared` has binary tests of
            // its own (tests/cli.rs, tests/reload.rs).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let server = Server::bind(config).expect("bind");
                let tls_addr = server.tls_local_addr().map(|addr| addr.expect("tls addr"));
                if let Some(tls) = server.handle().tls() {
                    sentinel::reload::certificates::watch(std::sync::Arc::clone(tls.store()));
                }
                addr_tx
                    .send((
                        server.local_addr().expect("addr"),
                        tls_addr,
                        server.handle().config,
                    ))
                    .expect("send addr");
                server
                    .run(async {
                        let _ = shutdown_rx.await;
                    })
                    .await;
            });
        });
        let (addr, tls_addr, config) = addr_rx
            .recv_timeout(IO_TIMEOUT)
            .expect("server did not start");
        TestServer {
            addr,
            tls_addr,
            dir,
            config,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("public")
    }

    pub fn connect(&self) -> RawClient {
        RawClient::connect(self.addr)
    }

    /// Send `request` on a fresh connection and read one response.
    pub fn request(&self, request: &[u8]) -> Response {
        let mut client = self.connect();
        client.send(request);
        client.read_response()
    }

    /// `GET path` with a Host header on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The site every test server serves. Error pages carry a marker so tests can tell the
/// custom page from the built-in one.
pub fn write_site(root: &Path) {
    std::fs::create_dir_all(root.join("errors")).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
    std::fs::write(root.join("style.css"), "body { color: black }\n").unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
    std::fs::write(root.join("docs/page.html"), "<p>page</p>\n").unwrap();
    std::fs::write(root.join(".secret"), "hidden\n").unwrap();
    std::fs::write(root.join("errors/404.html"), "CUSTOM-404 page\n").unwrap();
    std::fs::write(root.join("errors/400.html"), "CUSTOM-400 page\n").unwrap();
    std::fs::write(root.join("errors/502.html"), "CUSTOM-502 page\n").unwrap();
    std::fs::write(root.join("errors/504.html"), "CUSTOM-504 page\n").unwrap();
    let digits: Vec<u8> = (0..1000u32).map(|i| b'0' + (i % 10) as u8).collect();
    std::fs::write(root.join("digits.txt"), digits).unwrap();
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking client that sends exact bytes, over plain TCP or any other byte stream (TLS).
pub struct RawClient<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient::over(stream)
    }
}

impl<S: Read + Write> RawClient<S> {
    /// A client on a stream that is already connected.
    pub fn over(stream: S) -> RawClient<S> {
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Read one response to a request that was not HEAD.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to(false)
    }

    /// Read one response; `head_request` means no body follows whatever the headers say.
    pub fn read_response_to(&mut self, head_request: bool) -> Response {
        let (status, reason, headers, head_len) = loop {
            let mut header_storage = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut header_storage);
            match parsed.parse(&self.buf).expect("malformed response head") {
                httparse::Status::Complete(len) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (
                        parsed.code.unwrap(),
                        parsed.reason.unwrap_or("").to_string(),
                        headers,
                        len,
                    );
                }
                httparse::Status::Partial => {
                    assert!(self.fill() > 0, "connection closed before a response head");
                }
            }
        };
        self.buf.drain(..head_len);
        let mut response = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        let bodyless = head_request || status < 200 || status == 204 || status == 304;
        if bodyless {
            return response;
        }
        if response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            response.body = self.read_chunked_body();
            return response;
        }
        let Some(length) = response.header("content-length") else {
            // Delimited by close.
            while self.fill() > 0 {}
            response.body = std::mem::take(&mut self.buf);
            return response;
        };
        let length: usize = length.parse().expect("numeric content-length");
        while self.buf.len() < length {
            assert!(self.fill() > 0, "connection closed mid-body");
        }
        response.body = self.buf.drain(..length).collect();
        response
    }

    /// A chunked body, strictly: hex size, optional extension, CRLFs where they belong.
    fn read_chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line();
            let size_text = line.split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                while !self.read_line().is_empty() {}
                return body;
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill() > 0, "connection closed mid-chunk");
            }
            body.extend(self.buf.drain(..size));
            assert_eq!(
                self.buf.drain(..2).collect::<Vec<_>>(),
                b"\r\n",
                "chunk not ended by CRLF"
            );
        }
    }

    fn read_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill() > 0, "connection closed mid-line");
        }
    }

    /// Read more bytes into the buffer; 0 on EOF.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            // A TLS peer that closes without close_notify reads as an unexpected EOF.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                0
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Bytes received but not yet consumed as a response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

impl RawClient {
    /// True when the server closed the connection (EOF, or reset) within `wait`, with no
    /// further bytes.
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 1024];
        let result = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    break false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => break false,
            }
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        result
    }
}
