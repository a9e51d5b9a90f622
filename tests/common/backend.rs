//! Scripted in-process backends for proxy tests: a blocking listener on 127.0.0.1:0 that
//! reads each request exactly as it arrived (head by httparse, body by its framing), records
//! the raw bytes, and answers with whatever bytes the test's script returns. Anything a
//! backend receives beyond one well-framed request is read as another request and recorded,
//! so a smuggled request cannot go unnoticed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection (0-based) it came on.
    pub connection: usize,
    pub method: String,
    pub target: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The head and body bytes exactly as received.
    pub raw: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// What the script does after seeing a request.
pub enum Reply {
    /// Write these bytes and keep reading requests on the connection.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Close without answering.
    Close,
    /// Write these bytes, then hand the raw stream to the closure (tunnels, slow writers).
    Takeover(Vec<u8>, Box<dyn FnOnce(TcpStream) + Send>),
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// A backend that runs `script` for every request.
    pub fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let (seen, connections, stop) = (seen.clone(), connections.clone(), stop.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, script) = (seen.clone(), script.clone());
                    thread::spawn(move || serve(stream, id, &seen, &*script));
                }
            });
        }
        Backend {
            addr,
            seen,
            connections,
            stop,
        }
    }

    /// A backend answering every request with 200 and `name` as the body.
    pub fn named(name: &'static str) -> Backend {
        Backend::start(move |_| Reply::Send(ok(name)))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// `name: "..."`, `address: "..."` lines for a `backends:` list.
    pub fn yaml_entry(&self, name: &str, indent: &str) -> String {
        format!(
            "{indent}- name: \"{name}\"\n{indent}  address: \"{}\"\n",
            self.addr
        )
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// `200 OK` with `body` and its Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn serve(mut stream: TcpStream, id: usize, seen: &Mutex<Vec<Seen>>, script: &Script) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf, id) else {
            return;
        };
        seen.lock().unwrap().push(request.clone());
        match script(&request) {
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::SendAndClose(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Reply::Close => return,
            Reply::Takeover(bytes, then) => {
                if stream.write_all(&bytes).is_ok() {
                    then(stream);
                }
                return;
            }
        }
    }
}

/// Read one request from `buf` + the stream; `None` on EOF or anything unreadable.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, id: usize) -> Option<Seen> {
    let (head_len, method, target, headers) = loop {
        let mut storage = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut storage);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers: Vec<(String, String)> = request
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    len,
                    request.method.unwrap_or("").to_string(),
                    request.path.unwrap_or("").to_string(),
                    headers,
                );
            }
            Ok(httparse::Status::Partial) => fill(stream, buf)?,
            Err(_) => return None,
        }
    };
    let find = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let mut pos = head_len;
    let mut body = Vec::new();
    if find("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let line_end = loop {
                if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                fill(stream, buf)?;
            };
            let line = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                            break pos + i;
                        }
                        fill(stream, buf)?;
                    };
                    let empty = end == pos;
                    pos = end + 2;
                    if empty {
                        break;
                    }
                }
                break;
            }
            while buf.len() < pos + size + 2 {
                fill(stream, buf)?;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else if let Some(length) = find("content-length").first() {
        let length: usize = length.trim().parse().ok()?;
        while buf.len() < pos + length {
            fill(stream, buf)?;
        }
        body.extend_from_slice(&buf[pos..pos + length]);
        pos += length;
    }
    let raw = buf.drain(..pos).collect();
    Some(Seen {
        connection: id,
        method,
        target,
        headers,
        body,
        raw,
    })
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
