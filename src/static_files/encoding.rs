//! Compression of static files: a fresh precompressed sidecar (`app.js.zst` beside
//! `app.js`) when the client accepts its coding, else the file compressed on the fly when its
//! type and size allow, else the file as it is. Every answer whose encoding could have been
//! different says `Vary: Accept-Encoding`.
//!
//! A sidecar is its own representation: its own length (sent with `sendfile` like any file),
//! its own strong ETag (from its own size and time, tagged with the coding, so it never
//! equals the identity one). A body compressed on the fly gets a weak ETag: the bytes depend
//! on the encoder's version and level. Range requests are always answered from the identity
//! file, and compressed answers do not advertise `Accept-Ranges`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::cache::{CachedFile, FileIdentity, Sidecar, SidecarSet};
use super::conditional::{evaluate_preconditions, Validators};
use super::path::SafePath;
use super::{
    content_type, file_response, file_response_as, open_nonblocking, read_whole, with_validators,
    Content, FileCache, FileHeaders, Ranges, StaticError,
};
use crate::compression::{
    can_vary, compress_whole, negotiate, Accepted, Algorithm, Encoder, ResponseFacts, Settings,
};
use crate::config::StaticFilesConfig;
use crate::http::request::{Method, RequestHead, Version};
use crate::http::response::{BodyStream, HeaderValue, Response, ResponseBody, StatusCode};

/// The file a request named: where it is and what is known of it.
#[derive(Clone, Copy)]
pub(super) struct FileInfo<'a> {
    pub path: &'a Path,
    pub headers: &'a FileHeaders,
}

/// Answer `head` with `file` (its bytes in `content`), compressed when the client, the file
/// and `settings` allow.
pub(super) fn respond(
    head: &RequestHead,
    key: &SafePath,
    file: FileInfo<'_>,
    content: Content,
    settings: &Settings,
    config: &StaticFilesConfig,
    cache: &FileCache,
) -> Result<Response, StaticError> {
    let headers = file.headers;
    let facts = ResponseFacts {
        status: StatusCode::OK.as_u16(),
        content_type: Some(headers.content_type.as_bytes()),
        length: Some(headers.size),
        ..ResponseFacts::default()
    };
    let compressible = can_vary(&facts, &settings.types, settings.min_bytes).is_ok();
    // RFC 9110 §14.2: a range is of the identity representation (Range applies to GET only).
    let wants_range = head.method() == Method::Get && head.header("range").is_some();
    let accepted = if wants_range {
        Accepted::default()
    } else {
        negotiate(head.header("accept-encoding"), &settings.algorithms)
    };
    // Sidecars are looked for only where the encoding may vary anyway: an image costs no
    // `stat` per accepted coding, and every identity answer that a sidecar could replace
    // says `Vary`.
    if settings.precompressed && compressible && !accepted.is_empty() {
        let known = cache.sidecars(key);
        let from_memory = known.is_some();
        let set = known.unwrap_or_else(|| look_for_sidecars(file, key, accepted, config, cache));
        match serve_known(head, &set, accepted, cache) {
            Known::Served(response) => return response,
            // Changed since it was remembered: look again, once.
            Known::Changed if from_memory => {
                let set = look_for_sidecars(file, key, accepted, config, cache);
                if let Known::Served(response) = serve_known(head, &set, accepted, cache) {
                    return response;
                }
            }
            Known::Changed | Known::None => {}
        }
    }
    let algorithm = match accepted.best() {
        // Chunked framing is HTTP/1.1's: a 1.0 client gets a large file as it is.
        Some(_) if matches!(content, Content::File(_)) && head.version() != Version::Http11 => None,
        Some(algorithm) if compressible => Some(algorithm),
        _ => None,
    };
    let Some(algorithm) = algorithm else {
        let response = file_response(head, headers, content)?;
        return Ok(if compressible {
            with_vary(response)
        } else {
            response
        });
    };
    on_the_fly(head, headers, content, algorithm, settings, config)
}

/// The file compressed as it is sent (read whole already: compressed whole, with a length).
fn on_the_fly(
    head: &RequestHead,
    headers: &FileHeaders,
    content: Content,
    algorithm: Algorithm,
    settings: &Settings,
    config: &StaticFilesConfig,
) -> Result<Response, StaticError> {
    let validators = Validators {
        etag: tagged_etag(&headers.validators.etag, algorithm, true),
        ..headers.validators.clone()
    };
    if let Some(status) = evaluate_preconditions(head, &validators) {
        return match status {
            StatusCode::NOT_MODIFIED => Ok(with_vary(with_validators(
                Response::new(status),
                &validators,
            ))),
            _ => Err(StaticError::PreconditionFailed),
        };
    }
    let body = match content {
        Content::Memory(bytes) => match compress_whole(algorithm, settings.level, &bytes) {
            Ok(compressed) => ResponseBody::Full(Bytes::from(compressed)),
            Err(error) => {
                tracing::warn!(%error, coding = algorithm.token(), "compression failed; sending the file as it is");
                let response = file_response(head, headers, Content::Memory(bytes))?;
                return Ok(with_vary(response));
            }
        },
        Content::File(file) => {
            let encoder = Encoder::new(algorithm, settings.level)?;
            ResponseBody::Stream(Box::new(FileEncoder {
                file,
                remaining: headers.size,
                input: vec![0; config.read_chunk_bytes],
                encoder: Some(encoder),
            }))
        }
    };
    let response = with_validators(Response::new(StatusCode::OK), &validators)
        .with_header("Content-Type", headers.content_type.clone())
        .with_body(body);
    Ok(encoded(response, algorithm))
}

/// `Content-Encoding` on a body that has one and `Vary` on every answer. `response` carries
/// no `Accept-Ranges`: ranges are served from the identity file only.
fn encoded(mut response: Response, algorithm: Algorithm) -> Response {
    if !response.status.is_bodyless() {
        response = response.with_header("Content-Encoding", algorithm.token());
    }
    with_vary(response)
}

fn with_vary(response: Response) -> Response {
    response.with_header("Vary", "Accept-Encoding")
}

/// A sidecar remembered within `static_files.sidecar_valid_ms`, served with no `stat` of
/// the original or of the sidecar (issue 23: those two per request were the difference
/// between level with nginx's `gzip_static` and ahead of it). `None`: nothing remembered, a
/// range, or no remembered sidecar the client accepts; the full path decides.
pub(super) fn respond_from_known_sidecar(
    head: &RequestHead,
    key: &SafePath,
    settings: &Settings,
    cache: &FileCache,
) -> Option<Result<Response, StaticError>> {
    if !settings.precompressed {
        return None;
    }
    let set = cache.sidecars(key)?;
    // RFC 9110 §14.2: a range is of the identity representation.
    if head.method() == Method::Get && head.header("range").is_some() {
        return None;
    }
    let accepted = negotiate(head.header("accept-encoding"), &settings.algorithms);
    match serve_known(head, &set, accepted, cache) {
        Known::Served(response) => Some(response),
        Known::Changed | Known::None => None,
    }
}

/// What `serve_known` made of a set of sidecars.
enum Known {
    Served(Result<Response, StaticError>),
    /// No sidecar for any coding the client accepts.
    None,
    /// The sidecar to serve is no longer the version that was checked.
    Changed,
}

/// The first sidecar in `set` for a coding in `accepted` (the client's order), served from
/// the file cache when it holds the checked version, else opened (and its version checked
/// with `fstat` on what was opened).
fn serve_known(
    head: &RequestHead,
    set: &SidecarSet,
    accepted: Accepted,
    cache: &FileCache,
) -> Known {
    for algorithm in accepted.iter() {
        let Some(sidecar) = &set.by_coding[algorithm.index()] else {
            continue;
        };
        let held = sidecar
            .held
            .upgrade()
            .or_else(|| sidecar.key.as_ref().and_then(|key| cache.peek(key)))
            .filter(|cached| cached.identity == sidecar.identity);
        let content = match held {
            Some(cached) => Content::Memory(cached.content.clone()),
            None => match open_checked(&sidecar.path) {
                Some((opened, identity)) if identity == sidecar.identity => Content::File(opened),
                _ => return Known::Changed,
            },
        };
        // No range to consider: a request with one never reaches a sidecar.
        let response = file_response_as(head, &sidecar.headers, content, Ranges::Refused);
        return Known::Served(response.map(|response| encoded(response, algorithm)));
    }
    Known::None
}

/// Open `path` (a regular file) and tell which version was opened.
fn open_checked(path: &Path) -> Option<(File, FileIdentity)> {
    let opened = open_nonblocking(path).ok()?;
    let metadata = opened.metadata().ok().filter(|m| m.is_file())?;
    Some((opened, FileIdentity::of(&metadata)))
}

/// Look for every coding's sidecar of `file` (a `stat` each) and remember what was found
/// under `key` for `static_files.sidecar_valid_ms`. Every coding, not only the ones this
/// client accepts, so the next client's answer needs no `stat` whatever it accepts. When
/// nothing is remembered (`sidecar_valid_ms: 0`), only `accepted`'s, up to the first found.
fn look_for_sidecars(
    file: FileInfo<'_>,
    key: &SafePath,
    accepted: Accepted,
    config: &StaticFilesConfig,
    cache: &FileCache,
) -> Arc<SidecarSet> {
    let mut by_coding = [None, None, None];
    if cache.remembers_sidecars() {
        for algorithm in Algorithm::ALL {
            by_coding[algorithm.index()] = fresh_sidecar(file, algorithm, config, cache);
        }
        let set = Arc::new(SidecarSet::new(by_coding));
        cache.remember_sidecars(key, Arc::clone(&set));
        return set;
    }
    for algorithm in accepted.iter() {
        if let Some(sidecar) = fresh_sidecar(file, algorithm, config, cache) {
            by_coding[algorithm.index()] = Some(sidecar);
            break;
        }
    }
    Arc::new(SidecarSet::new(by_coding))
}

/// The sidecar of `file` for `algorithm`, with the headers it is served with, when it is a
/// regular file (a symlink is not followed: it could lead out of the root) at least as new
/// as the original. A stale one (the original was edited after it was made) is ignored.
///
/// Sidecars are kept in the file cache like any small file, under the key a request for
/// the sidecar itself would use (the same file), so a request for it by name shares it.
fn fresh_sidecar(
    file: FileInfo<'_>,
    algorithm: Algorithm,
    config: &StaticFilesConfig,
    cache: &FileCache,
) -> Option<Sidecar> {
    let mut name = file.path.as_os_str().to_owned();
    name.push(algorithm.sidecar_suffix());
    let path = PathBuf::from(name);
    let key = cache_key(&config.root, &path);
    if let Some(cached) = key.as_ref().and_then(|key| cache.lookup(key)) {
        if !is_fresh(cached.headers.modified, file.headers.modified, &path) {
            return None;
        }
        return Some(Sidecar {
            headers: sidecar_headers(&cached.headers, file.headers, algorithm),
            identity: cached.identity,
            held: Arc::downgrade(&cached),
            path,
            key,
        });
    }
    let metadata = std::fs::symlink_metadata(&path).ok()?;
    if !metadata.is_file() || !is_fresh(metadata.modified().ok(), file.headers.modified, &path) {
        return None;
    }
    let mut opened = open_nonblocking(&path).ok()?;
    // The metadata of what was opened, not of what was looked at.
    let metadata = opened.metadata().ok().filter(|m| m.is_file())?;
    // As a request for the sidecar itself would cache it: it may be asked for by name too.
    let own = FileHeaders {
        validators: Validators::of(&metadata),
        content_type: content_type(&path),
        size: metadata.len(),
        modified: metadata.modified().ok(),
    };
    let headers = sidecar_headers(&own, file.headers, algorithm);
    let identity = FileIdentity::of(&metadata);
    let mut held = Weak::new();
    if let (Some(key), true) = (&key, cache.admits(own.size)) {
        let content = read_whole(&mut opened, &metadata).ok()?;
        let cached = CachedFile {
            path: path.clone(),
            identity,
            headers: own,
            content,
        };
        if let Some(kept) = cache.insert(key.clone(), cached) {
            held = Arc::downgrade(&kept);
        }
    }
    Some(Sidecar {
        path,
        key,
        held,
        identity,
        headers,
    })
}

/// What a sidecar is sent with: its own length and validators, its ETag tagged with the
/// coding (never equal to the identity one), the original's type.
fn sidecar_headers(own: &FileHeaders, original: &FileHeaders, algorithm: Algorithm) -> FileHeaders {
    FileHeaders {
        validators: Validators {
            etag: tagged_etag(&own.validators.etag, algorithm, false),
            ..own.validators.clone()
        },
        content_type: original.content_type.clone(),
        size: own.size,
        modified: own.modified,
    }
}

/// The cache key of the file at `path` under `root`: the one a request naming it gets.
fn cache_key(root: &Path, path: &Path) -> Option<SafePath> {
    let relative = path.strip_prefix(root).ok()?;
    let segments = relative
        .iter()
        .map(|segment| segment.to_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    Some(SafePath {
        segments,
        trailing_slash: false,
    })
}

fn is_fresh(sidecar: Option<SystemTime>, original: Option<SystemTime>, path: &Path) -> bool {
    let fresh = match (sidecar, original) {
        (Some(sidecar), Some(original)) => whole_seconds(sidecar) >= whole_seconds(original),
        _ => false,
    };
    if !fresh {
        tracing::debug!(sidecar = %path.display(), "precompressed file older than its original; not used");
    }
    fresh
}

/// A modification time in whole seconds since the epoch. Sidecars are compared at this
/// resolution because the tools that make them copy the original's time onto them, and
/// `brotli` copies only its whole seconds: compared to the nanosecond, every fresh `.br`
/// would look older than its original. (An original edited within the same second after
/// its sidecar was made is missed; the next edit is not.)
fn whole_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `"tag"` → `"tag-zstd"` (or `W/"tag-zstd"`): an encoded representation's ETag never
/// equals the identity one's.
fn tagged_etag(etag: &HeaderValue, algorithm: Algorithm, weak: bool) -> HeaderValue {
    let opaque = etag.as_bytes();
    let inner = opaque
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .unwrap_or(opaque);
    let mut tagged = String::with_capacity(opaque.len() + 10);
    if weak {
        tagged.push_str("W/");
    }
    tagged.push('"');
    tagged.push_str(&String::from_utf8_lossy(inner));
    tagged.push('-');
    tagged.push_str(algorithm.token());
    tagged.push('"');
    tagged.into()
}

/// A file compressed one `read_chunk_bytes` piece at a time as it is sent.
struct FileEncoder {
    file: File,
    /// Bytes of the file still to read: the size announced when it was opened.
    remaining: u64,
    input: Vec<u8>,
    /// `None` once finished.
    encoder: Option<Encoder>,
}

impl BodyStream for FileEncoder {
    fn next_piece(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        out.clear();
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(false);
        };
        if self.remaining > 0 {
            let want = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(self.input.len());
            let read = self.file.read(&mut self.input[..want])?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            self.remaining -= read as u64;
            encoder.write(&self.input[..read], false, out)?;
        }
        if self.remaining > 0 {
            return Ok(true);
        }
        if let Some(encoder) = self.encoder.take() {
            out.extend_from_slice(&encoder.finish()?);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_etags_differ_from_the_identity_one() {
        let etag = HeaderValue::from("\"1f-2a\"");
        assert_eq!(
            tagged_etag(&etag, Algorithm::Zstd, false).as_bytes(),
            b"\"1f-2a-zstd\""
        );
        assert_eq!(
            tagged_etag(&etag, Algorithm::Brotli, true).as_bytes(),
            b"W/\"1f-2a-br\""
        );
    }
}
