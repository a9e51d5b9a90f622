//! The static-file handler: request path → sanitised relative path (pure, traversal-tested)
//! → file under the root → response with validators, conditional and range handling.
//!
//! File-system calls are made directly on the connection's task, as nginx does without aio:
//! for files in the page cache an `open`/`fstat`/`read` costs microseconds, far less than a
//! hop to a blocking thread pool (see `docs/adr/0003-synchronous-file-io.md`). Large files are
//! read one `read_chunk_bytes` piece at a time, each written before the next is read, so memory
//! per response is bounded whatever the file size.

use std::borrow::Cow;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::config::{ErrorPages, StaticFilesConfig};
use crate::http::request::{Method, RequestHead};
use crate::http::response::{Response, ResponseBody, StatusCode};
use crate::pages::error_response;

/// Why a request path cannot name a file under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("malformed percent-encoding")]
    BadEncoding,
    #[error("NUL byte in path")]
    NulByte,
    #[error("backslash in path")]
    Backslash,
    #[error("path climbs above the root")]
    EscapesRoot,
    #[error("hidden path component")]
    Hidden,
    #[error("path is not valid UTF-8")]
    NotUtf8,
}

impl PathError {
    pub fn status(self) -> StatusCode {
        match self {
            // Hidden files are treated as absent, not as forbidden: no hint they exist.
            PathError::Hidden => StatusCode::NOT_FOUND,
            PathError::BadEncoding
            | PathError::NulByte
            | PathError::Backslash
            | PathError::EscapesRoot
            | PathError::NotUtf8 => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request path made safe to join onto the root: no `..`, no empty or `.` segments, no
/// separators or NULs inside a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath {
    pub segments: Vec<String>,
    /// The request asked for a directory (`/docs/`), which decides 301 vs index.
    pub trailing_slash: bool,
}

impl SafePath {
    pub fn to_relative(&self) -> PathBuf {
        self.segments.iter().collect()
    }
}

/// Percent-decode and normalise `path` (the part of the target before `?`).
///
/// Decoding happens first and normalisation second, so `%2e%2e` and `%2f` are seen as the
/// `..` and `/` they spell, and `..` can only ever pop segments the request itself pushed.
pub fn sanitize_path(path: &str, serve_hidden: bool) -> Result<SafePath, PathError> {
    let decoded = percent_decode(path.as_bytes())?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if decoded.contains('\0') {
        return Err(PathError::NulByte);
    }
    // Windows would treat it as a separator; nowhere is it a legitimate file-name byte.
    if decoded.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::EscapesRoot)?;
            }
            _ if !serve_hidden && segment.starts_with('.') => return Err(PathError::Hidden),
            _ => segments.push(segment.to_string()),
        }
    }
    let trailing_slash = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || segments.is_empty();
    Ok(SafePath {
        segments,
        trailing_slash,
    })
}

/// Strict percent-decoding: a `%` must be followed by two hex digits.
fn percent_decode(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = input.get(i + 1).and_then(|&b| (b as char).to_digit(16));
            let lo = input.get(i + 2).and_then(|&b| (b as char).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(PathError::BadEncoding),
            }
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Split a request target into its path and optional query. Absolute-form targets
/// (`http://host/path`) contribute their path; `*` has none.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let path_and_query = if target.starts_with('/') {
        target
    } else if let Some(scheme_end) = target.find("://") {
        let after = &target[scheme_end + 3..];
        match after.find(['/', '?']) {
            Some(i) => &after[i..],
            None => "/",
        }
    } else {
        "/"
    };
    match path_and_query.split_once('?') {
        Some((path, query)) => (if path.is_empty() { "/" } else { path }, Some(query)),
        None => (path_and_query, None),
    }
}

/// Answer a request from the static root.
pub fn respond(head: &RequestHead, config: &StaticFilesConfig, pages: &ErrorPages) -> Response {
    match head.method() {
        Method::Get | Method::Head => {}
        _ => {
            return error_response(StatusCode::METHOD_NOT_ALLOWED, pages)
                .with_header("Allow", "GET, HEAD")
        }
    }
    let (raw_path, query) = split_target(head.target());
    let safe = match sanitize_path(raw_path, config.serve_hidden) {
        Ok(safe) => safe,
        Err(error) => {
            tracing::debug!(path = raw_path, %error, "refused request path");
            return error_response(error.status(), pages);
        }
    };
    match resolve(config, &safe) {
        Ok(Resolved::File { path, .. }) => match serve_file(head, &path, config, pages) {
            Ok(response) => response,
            Err(FileError::Status(status)) => error_response(status, pages),
            Err(FileError::Io(error)) => io_error_response(&error, &path, pages),
        },
        Ok(Resolved::Directory) if !safe.trailing_slash => {
            // RFC 9110 §15.4.2: send the canonical URL so relative links resolve. Built from
            // the normalised segments, never from the raw path: `//evil.example/../docs`
            // must redirect to `/docs/`, not to a scheme-relative URL on another host.
            error_response(StatusCode::MOVED_PERMANENTLY, pages)
                .with_header("Location", directory_location(&safe, query))
        }
        Ok(Resolved::Directory) => error_response(StatusCode::FORBIDDEN, pages),
        Err(FileError::Status(status)) => error_response(status, pages),
        Err(FileError::Io(error)) => io_error_response(&error, &config.root, pages),
    }
}

/// `/seg/ments/?query` with each segment percent-encoded again.
fn directory_location(safe: &SafePath, query: Option<&str>) -> String {
    let mut location = String::from("/");
    for segment in &safe.segments {
        location.extend(utf8_percent_encode(segment, PATH_SEGMENT));
        location.push('/');
    }
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// Bytes that must be escaped inside one path segment (RFC 3986 §3.3 `pchar` complement).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'[')
    .add(b']');

fn io_error_response(error: &io::Error, path: &Path, pages: &ErrorPages) -> Response {
    let status = match error.kind() {
        // A name too long for the file system is a name that does not exist: the client
        // chose it, so it must not produce a 500 and an error-level log line.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            StatusCode::NOT_FOUND
        }
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => {
            tracing::error!(path = %path.display(), %error, "file system error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error_response(status, pages)
}

#[derive(Debug)]
enum FileError {
    Status(StatusCode),
    Io(io::Error),
}

impl From<io::Error> for FileError {
    fn from(error: io::Error) -> FileError {
        FileError::Io(error)
    }
}

enum Resolved {
    File {
        path: PathBuf,
    },
    /// A directory without an index file (or a request for one without a trailing slash).
    Directory,
}

/// Find what `safe` names under the root, refusing anything reached through a symlink that
/// leaves the root. Only the components below the (already canonical) root are checked, one
/// `lstat` each, so the common case costs a single `lstat`.
fn resolve(config: &StaticFilesConfig, safe: &SafePath) -> Result<Resolved, FileError> {
    let path = config.root.join(safe.to_relative());
    let metadata = metadata_inside_root(&config.root, &path, safe.segments.len())?;
    if metadata.is_file() {
        // `/file.txt/` names a directory that does not exist (ENOTDIR), as in nginx.
        if safe.trailing_slash {
            return Err(FileError::Status(StatusCode::NOT_FOUND));
        }
        return Ok(Resolved::File { path });
    }
    if !metadata.is_dir() {
        // FIFOs, sockets, devices: opening a FIFO would block this worker until a writer
        // appears.
        return Err(FileError::Status(StatusCode::NOT_FOUND));
    }
    if !safe.trailing_slash {
        return Ok(Resolved::Directory);
    }
    let index = path.join(&config.index);
    match metadata_inside_root(&config.root, &index, safe.segments.len() + 1) {
        Ok(meta) if meta.is_file() => Ok(Resolved::File { path: index }),
        Ok(_) => Ok(Resolved::Directory),
        Err(FileError::Io(error)) if error.kind() == io::ErrorKind::NotFound => {
            Ok(Resolved::Directory)
        }
        Err(other) => Err(other),
    }
}

/// Metadata of `path` (which has `depth` components below `root`), following symlinks only
/// when their target stays inside `root`.
fn metadata_inside_root(root: &Path, path: &Path, depth: usize) -> Result<Metadata, FileError> {
    let mut saw_symlink = false;
    let mut last = None;
    let components: Vec<_> = path.components().collect();
    let first_below_root = components.len().saturating_sub(depth);
    let mut prefix: PathBuf = components[..first_below_root].iter().collect();
    for component in &components[first_below_root..] {
        prefix.push(component);
        let meta = std::fs::symlink_metadata(&prefix)?;
        saw_symlink |= meta.file_type().is_symlink();
        last = Some(meta);
    }
    if saw_symlink {
        let real = path.canonicalize()?;
        if !real.starts_with(root) {
            tracing::warn!(path = %path.display(), target = %real.display(), "symlink leaves the static root");
            return Err(FileError::Status(StatusCode::FORBIDDEN));
        }
        return Ok(std::fs::metadata(&real)?);
    }
    match last {
        Some(meta) => Ok(meta),
        None => Ok(std::fs::metadata(root)?),
    }
}

/// Validators of one file version.
struct Validators {
    etag: String,
    last_modified: Option<SystemTime>,
}

impl Validators {
    /// A strong ETag from size and modification time to the nanosecond: it changes whenever
    /// the content can have changed, and costs no read of the file.
    fn of(metadata: &Metadata) -> Validators {
        let modified = metadata.modified().ok();
        let nanos = modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Validators {
            etag: format!("\"{:x}-{:x}\"", metadata.len(), nanos),
            last_modified: modified,
        }
    }

    /// Modification time at HTTP-date resolution (whole seconds).
    fn modified_secs(&self) -> Option<u64> {
        self.last_modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }
}

fn serve_file(
    head: &RequestHead,
    path: &Path,
    config: &StaticFilesConfig,
    pages: &ErrorPages,
) -> Result<Response, FileError> {
    let mut file = open_nonblocking(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(FileError::Status(StatusCode::NOT_FOUND));
    }
    let size = metadata.len();
    let validators = Validators::of(&metadata);

    if let Some(status) = evaluate_preconditions(head, &validators) {
        return Ok(match status {
            StatusCode::NOT_MODIFIED => with_validators(Response::new(status), &validators),
            _ => error_response(status, pages),
        });
    }

    // RFC 9110 §14.2: Range is defined for GET only; HEAD describes the full response.
    let range = match head.header("range") {
        Some(range) if head.method() == Method::Get && if_range_matches(head, &validators) => {
            parse_range(range, size)
        }
        _ => RangeRequest::Full,
    };
    let (status, offset, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Satisfiable { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            return Ok(error_response(StatusCode::RANGE_NOT_SATISFIABLE, pages)
                .with_header("Content-Range", format!("bytes */{size}"))
                .with_header("Accept-Ranges", "bytes"));
        }
    };

    let mut response = with_validators(Response::new(status), &validators)
        .with_header("Content-Type", content_type(path))
        .with_header("Accept-Ranges", "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.with_header(
            "Content-Range",
            format!("bytes {offset}-{}/{size}", offset + len - 1),
        );
    }
    let body = if head.method() == Method::Head {
        // The writer announces the length but sends nothing; keep the file closed.
        ResponseBody::File { file, offset, len }
    } else if len <= config.read_chunk_bytes as u64 {
        ResponseBody::Full(read_exact_at(&mut file, offset, len as usize)?)
    } else {
        ResponseBody::File { file, offset, len }
    };
    Ok(response.with_body(body))
}

/// Open for reading without ever blocking on a FIFO swapped in after `resolve` looked.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

fn with_validators(response: Response, validators: &Validators) -> Response {
    let response = response.with_header("ETag", validators.etag.clone());
    match validators.last_modified {
        Some(modified) => response.with_header("Last-Modified", httpdate::fmt_http_date(modified)),
        None => response,
    }
}

fn read_exact_at(file: &mut File, offset: u64, len: usize) -> Result<Bytes, FileError> {
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut content = vec![0; len];
    file.read_exact(&mut content)?;
    Ok(Bytes::from(content))
}

/// RFC 9110 §13.2.2: evaluate conditional headers in the defined order. `None` means serve
/// normally.
fn evaluate_preconditions(head: &RequestHead, validators: &Validators) -> Option<StatusCode> {
    if let Some(if_match) = head.header("if-match") {
        if !etag_list_matches(if_match, &validators.etag, Comparison::Strong) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(since) = head.header("if-unmodified-since").and_then(parse_http_date) {
        if validators.modified_secs().is_some_and(|m| m > since) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(if_none_match) = head.header("if-none-match") {
        if etag_list_matches(if_none_match, &validators.etag, Comparison::Weak) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    } else if let Some(since) = head.header("if-modified-since").and_then(parse_http_date) {
        if validators.modified_secs().is_some_and(|m| m <= since) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    }
    None
}

/// RFC 9110 §13.1.5: a Range applies only if If-Range (an ETag or a date) still matches.
fn if_range_matches(head: &RequestHead, validators: &Validators) -> bool {
    let Some(if_range) = head.header("if-range") else {
        return true;
    };
    let text = String::from_utf8_lossy(if_range);
    let text = text.trim();
    if text.starts_with('"') {
        // Strong comparison only: a weak tag never matches (§13.1.5).
        return text == validators.etag;
    }
    match (parse_http_date(if_range), validators.modified_secs()) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// Does a comma-separated entity-tag list (or `*`) match our strong `etag`?
fn etag_list_matches(list: &[u8], etag: &str, comparison: Comparison) -> bool {
    let text = String::from_utf8_lossy(list);
    if text.trim() == "*" {
        return true;
    }
    text.split(',').map(str::trim).any(|candidate| {
        match (candidate.strip_prefix("W/"), comparison) {
            (Some(weak), Comparison::Weak) => weak == etag,
            (Some(_), Comparison::Strong) => false,
            (None, _) => candidate == etag,
        }
    })
}

fn parse_http_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, malformed, several ranges, or not bytes): send it all.
    Full,
    /// Inclusive byte positions, already clamped to the representation.
    Satisfiable {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// RFC 9110 §14.2: one `bytes=` range. A malformed header is ignored (full 200), as the RFC
/// allows; several ranges are served in full too rather than as multipart.
pub fn parse_range(header: &[u8], size: u64) -> RangeRequest {
    let Ok(text) = std::str::from_utf8(header) else {
        return RangeRequest::Full;
    };
    let Some((unit, spec)) = text.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match digits(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(suffix) => RangeRequest::Satisfiable {
                start: size.saturating_sub(suffix),
                end: size - 1,
            },
            None => RangeRequest::Full,
        },
        (false, _) => {
            let Some(start) = digits(first) else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match digits(last) {
                    Some(end) if end >= start => end,
                    _ => return RangeRequest::Full,
                }
            };
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Satisfiable {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
    }
}

/// `Content-Type` from the extension; text types are declared UTF-8.
fn content_type(path: &Path) -> Cow<'static, str> {
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    if mime.starts_with("text/") || mime == "application/javascript" || mime == "application/json" {
        Cow::Owned(format!("{mime}; charset=utf-8"))
    } else {
        Cow::Borrowed(mime)
    }
}
