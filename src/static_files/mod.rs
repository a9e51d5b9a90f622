//! The static-file handler: request path → sanitised relative path (pure, traversal-tested)
//! → file under the root → response with validators, conditional and range handling.
//!
//! File-system calls are made directly on the connection's task, as nginx does without aio:
//! for files in the page cache an `open`/`fstat`/`read` costs microseconds, far less than a
//! hop to a blocking thread pool (see `docs/adr/0003-synchronous-file-io.md`). Small files are
//! kept in a revalidated cache (`cache.rs`); large ones are read one `read_chunk_bytes` piece
//! at a time, each written before the next is read, so memory per response is bounded
//! whatever the file size.

mod cache;
pub(crate) mod conditional;
mod encoding;
mod path;

pub use cache::{FileCache, SidecarLimits};
pub use conditional::{parse_range, RangeRequest};
pub use path::{sanitize_path, split_target, PathError, SafePath};

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::compression::Settings as CompressionSettings;
use crate::config::{ErrorPages, StaticFilesConfig};
use crate::http::request::{Method, RequestHead};
use crate::http::response::{HeaderValue, Response, ResponseBody, StatusCode};
use crate::pages::error_response;
use cache::{CachedFile, FileIdentity};
use conditional::{evaluate_preconditions, if_range_matches, Validators};

/// Why a file could not be served. The error table (`fault.rs`) gives each its status.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("only GET and HEAD are served")]
    MethodNotAllowed,
    #[error("refused path: {0}")]
    Path(PathError),
    /// A directory where a file was named (`/file.txt/`), or no regular file (a FIFO).
    #[error("no such file")]
    NotFound,
    #[error("symlink leads outside the root")]
    SymlinkLeavesRoot,
    #[error("directory without an index file")]
    DirectoryWithoutIndex,
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("range not satisfiable for {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    FileSystem(io::Error),
    /// The file cannot be held in memory on this platform (larger than `usize`).
    #[error("file of {0} bytes cannot be read whole")]
    Unreadable(u64),
}

impl From<io::Error> for StaticError {
    fn from(error: io::Error) -> StaticError {
        StaticError::FileSystem(error)
    }
}

/// Answer a request from the static root. `pages` gives the redirect its body;
/// `compression`, when set, lets the file go out compressed (`encoding.rs`).
pub fn respond(
    head: &RequestHead,
    config: &StaticFilesConfig,
    cache: &FileCache,
    pages: &ErrorPages,
    compression: Option<&CompressionSettings>,
) -> Result<Response, StaticError> {
    match head.method() {
        Method::Get | Method::Head => {}
        _ => return Err(StaticError::MethodNotAllowed),
    }
    let (raw_path, query) = split_target(head.target());
    let safe = sanitize_path(raw_path, config.serve_hidden).map_err(StaticError::Path)?;
    if let Some(answer) = compression
        .and_then(|settings| encoding::respond_from_known_sidecar(head, &safe, settings, cache))
    {
        return answer;
    }
    if let Some(cached) = cache.lookup(&safe) {
        let content = Content::Memory(cached.content.clone());
        return match compression {
            None => file_response(head, &cached.headers, content),
            Some(settings) => {
                let file = encoding::FileInfo {
                    path: &cached.path,
                    headers: &cached.headers,
                };
                encoding::respond(head, &safe, file, content, settings, config, cache)
            }
        };
    }
    match resolve(config, &safe)? {
        Resolved::File { path } => {
            let (headers, content) = open_file(&path, config, cache, &safe)?;
            match compression {
                None => file_response(head, &headers, content),
                Some(settings) => {
                    let file = encoding::FileInfo {
                        path: &path,
                        headers: &headers,
                    };
                    encoding::respond(head, &safe, file, content, settings, config, cache)
                }
            }
        }
        Resolved::Directory if !safe.trailing_slash => {
            // RFC 9110 §15.4.2: send the canonical URL so relative links resolve. Built from
            // the normalised segments, never from the raw path: `//evil.example/../docs`
            // must redirect to `/docs/`, not to a scheme-relative URL on another host.
            Ok(error_response(StatusCode::MOVED_PERMANENTLY, pages)
                .with_header("Location", directory_location(&safe, query)))
        }
        Resolved::Directory => Err(StaticError::DirectoryWithoutIndex),
    }
}

/// The headers of one file version that do not depend on the request.
#[derive(Debug, Clone)]
pub struct FileHeaders {
    validators: Validators,
    content_type: HeaderValue,
    size: u64,
    /// A precompressed sidecar is used only when at least as new (`encoding.rs`).
    modified: Option<std::time::SystemTime>,
}

/// Where the bytes of a file come from.
enum Content {
    /// The whole file, already read (or cached).
    Memory(Bytes),
    /// An open file, read piece by piece as it is sent.
    File(File),
}

/// Open `path` and prepare its headers; read it whole when it is small, and cache it when
/// the cache admits it.
fn open_file(
    path: &Path,
    config: &StaticFilesConfig,
    cache: &FileCache,
    key: &SafePath,
) -> Result<(FileHeaders, Content), StaticError> {
    let mut file = open_nonblocking(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(StaticError::NotFound);
    }
    let headers = FileHeaders {
        validators: Validators::of(&metadata),
        content_type: content_type(path),
        size: metadata.len(),
        modified: metadata.modified().ok(),
    };
    let cacheable = cache.admits(headers.size);
    if !cacheable && headers.size > config.read_chunk_bytes as u64 {
        return Ok((headers, Content::File(file)));
    }
    let content = read_whole(&mut file, &metadata)?;
    if cacheable {
        cache.insert(
            key.clone(),
            CachedFile {
                path: path.to_path_buf(),
                identity: FileIdentity::of(&metadata),
                headers: headers.clone(),
                content: content.clone(),
            },
        );
    }
    Ok((headers, Content::Memory(content)))
}

fn read_whole(file: &mut File, metadata: &Metadata) -> Result<Bytes, StaticError> {
    let len =
        usize::try_from(metadata.len()).map_err(|_| StaticError::Unreadable(metadata.len()))?;
    let mut content = vec![0; len];
    file.read_exact(&mut content)?;
    Ok(Bytes::from(content))
}

/// Whether a response may be a range of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ranges {
    /// The identity file: `Range` is honoured and `Accept-Ranges: bytes` said.
    Served,
    /// An encoded representation: ranges are of the identity file only (ADR 0016).
    Refused,
}

/// The response for one file version: preconditions, then range, then the content.
fn file_response(
    head: &RequestHead,
    headers: &FileHeaders,
    content: Content,
) -> Result<Response, StaticError> {
    file_response_as(head, headers, content, Ranges::Served)
}

fn file_response_as(
    head: &RequestHead,
    headers: &FileHeaders,
    content: Content,
    ranges: Ranges,
) -> Result<Response, StaticError> {
    let validators = &headers.validators;
    if let Some(status) = evaluate_preconditions(head, validators) {
        return match status {
            StatusCode::NOT_MODIFIED => Ok(with_validators(Response::new(status), validators)),
            _ => Err(StaticError::PreconditionFailed),
        };
    }
    let size = headers.size;
    // RFC 9110 §14.2: Range is defined for GET only; HEAD describes the full response.
    let range = match head.header("range").filter(|_| ranges == Ranges::Served) {
        Some(range) if head.method() == Method::Get && if_range_matches(head, validators) => {
            parse_range(range, size)
        }
        _ => RangeRequest::Full,
    };
    let (status, offset, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Satisfiable { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => return Err(StaticError::RangeNotSatisfiable { size }),
    };
    let mut response = with_validators(Response::new(status), validators)
        .with_header("Content-Type", headers.content_type.clone());
    if ranges == Ranges::Served {
        response = response.with_header("Accept-Ranges", "bytes");
    }
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.with_header(
            "Content-Range",
            format!("bytes {offset}-{}/{size}", offset + len - 1),
        );
    }
    let body = match content {
        Content::Memory(bytes) => {
            // Both bounds are within the file, which is in memory, so they fit in usize.
            let start = offset as usize;
            ResponseBody::Full(bytes.slice(start..start + len as usize))
        }
        Content::File(file) => ResponseBody::File { file, offset, len },
    };
    Ok(response.with_body(body))
}

fn with_validators(response: Response, validators: &Validators) -> Response {
    let response = response.with_header("ETag", validators.etag.clone());
    match &validators.last_modified {
        Some(modified) => response.with_header("Last-Modified", modified.clone()),
        None => response,
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

enum Resolved {
    File {
        path: PathBuf,
    },
    /// A directory without an index file (or a request for one without a trailing slash).
    Directory,
}

/// Find what `safe` names under the root, refusing anything reached through a symlink that
/// leaves the root. Only the components below the (already canonical) root are checked, one
/// `lstat` each.
fn resolve(config: &StaticFilesConfig, safe: &SafePath) -> Result<Resolved, StaticError> {
    let path = config.root.join(safe.to_relative());
    let metadata = metadata_inside_root(&config.root, &path, safe.segments.len())?;
    if metadata.is_file() {
        // `/file.txt/` names a directory that does not exist (ENOTDIR), as in nginx.
        if safe.trailing_slash {
            return Err(StaticError::NotFound);
        }
        return Ok(Resolved::File { path });
    }
    if !metadata.is_dir() {
        // FIFOs, sockets, devices: opening a FIFO would block this worker until a writer
        // appears.
        return Err(StaticError::NotFound);
    }
    if !safe.trailing_slash {
        return Ok(Resolved::Directory);
    }
    let index = path.join(&config.index);
    match metadata_inside_root(&config.root, &index, safe.segments.len() + 1) {
        Ok(meta) if meta.is_file() => Ok(Resolved::File { path: index }),
        Ok(_) => Ok(Resolved::Directory),
        Err(StaticError::FileSystem(error)) if error.kind() == io::ErrorKind::NotFound => {
            Ok(Resolved::Directory)
        }
        Err(other) => Err(other),
    }
}

/// Metadata of `path` (which has `depth` components below `root`), following symlinks only
/// when their target stays inside `root`.
fn metadata_inside_root(root: &Path, path: &Path, depth: usize) -> Result<Metadata, StaticError> {
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
            return Err(StaticError::SymlinkLeavesRoot);
        }
        return Ok(std::fs::metadata(&real)?);
    }
    match last {
        Some(meta) => Ok(meta),
        None => Ok(std::fs::metadata(root)?),
    }
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

/// `Content-Type` from the extension; text types are declared UTF-8.
fn content_type(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    if mime.starts_with("text/") || mime == "application/javascript" || mime == "application/json" {
        format!("{mime}; charset=utf-8").into()
    } else {
        mime.into()
    }
}
