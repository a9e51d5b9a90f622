//! Just enough HTTP/1.1 for both sides of the benchmark: a buffered connection that reads a
//! message head (start line + header fields), a Content-Length body, or a chunked body.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest head accepted (request or response).
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (the benchmark's bodies are a few bytes).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A start line and its header fields; names are kept as sent, compare them with
/// `eq_ignore_ascii_case`.
#[derive(Debug)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `Connection` field lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn content_length(&self) -> io::Result<Option<usize>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| invalid("bad Content-Length")),
        }
    }

    pub fn is_chunked(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .any(|(_, v)| v.to_ascii_lowercase().contains("chunked"))
    }
}

pub fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Read more bytes into the buffer; returns how many (0 = end of stream).
    pub async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next message head. `Ok(None)`: the peer closed the connection cleanly before
    /// sending anything.
    pub async fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            // Tolerate blank lines before a message (RFC 9112 2.2).
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&raw[..end]).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("head too large"));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in a head",
                    ))
                };
            }
        }
    }

    /// Exactly `len` body bytes.
    pub async fn read_exact_body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        if len > MAX_BODY {
            return Err(invalid("body too large"));
        }
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in a body",
                ));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// A chunked body (trailers are read and dropped).
    pub async fn read_chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailer section up to an empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            body.extend(self.read_exact_body(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }

    async fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8(raw[..end].to_vec())
                    .map_err(|_| invalid("non-UTF-8 line"));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in a chunked body",
                ));
            }
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(raw).map_err(|_| invalid("non-UTF-8 head"))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    if start.is_empty() {
        return Err(invalid("empty start line"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("header without colon"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Head { start, headers })
}

/// `key=value` pairs of a query string (no percent-decoding: the values used are plain).
pub fn query_pairs(target: &str) -> Vec<(String, String)> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// `http://host:port/path` -> ("host:port", "/path").
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url}"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// A string as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head() {
        let head =
            parse_head(b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close").unwrap();
        assert_eq!(head.start, "GET /x?a=1 HTTP/1.1");
        assert_eq!(head.header("host"), Some("h"));
        assert!(head.connection_has("close"));
        assert_eq!(
            query_pairs("/x?a=1&b=&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "".into())
            ]
        );
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a?b").unwrap(),
            ("127.0.0.1:8080".into(), "/a?b".into())
        );
        assert_eq!(split_url("http://h").unwrap(), ("h:80".into(), "/".into()));
        assert!(split_url("https://h/").is_err());
    }

    #[test]
    fn escapes_json() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
