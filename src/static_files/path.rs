//! PURE request-path handling: split the target, percent-decode, normalise. Nothing here
//! touches the file system, so every traversal trick is a unit test.

use std::path::PathBuf;

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

/// A request path made safe to join onto the root: no `..`, no empty or `.` segments, no
/// separators or NULs inside a segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
