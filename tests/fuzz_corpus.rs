//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) on the stable toolchain through
//! the very checks the fuzz targets run (`fuzz/src/checks.rs`, included below), so every seed
//! and every crash input ever saved there is re-checked by `cargo test`. Replay is exhaustive:
//! every prefix and every two-read split of each file, on top of what the fuzz targets check.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/checks.rs"]
mod checks;

use checks::Effort;

/// The files of one target's corpus, sorted; the directory must exist and not be empty, so
/// this test fails if the corpus goes missing rather than passing on nothing.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the corpus {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
}

/// Run `check` on every file of `target`'s corpus, then fail naming every file that failed.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let files = corpus(target);
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let input = fs::read(path).expect("read corpus file");
            panic::catch_unwind(AssertUnwindSafe(|| check(&input))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files failed (messages above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn parse_request_corpus() {
    replay("parse_request", |input| {
        checks::check_request_stream(input, Effort::Sampled);
        checks::check_request_stream(input, Effort::Exhaustive);
    });
}

#[test]
fn parse_response_corpus() {
    replay("parse_response", |input| {
        checks::check_response_stream(input, Effort::Sampled);
        checks::check_response_stream(input, Effort::Exhaustive);
    });
}

/// The seeds' names say what they are; hold them to it under the default limits, so a seed
/// meant to be refused keeps exercising a refusal (and not, say, a `Partial`).
#[test]
fn parse_response_seed_names_match_their_verdicts() {
    use sentinel::http::response_parser::{parse_response, ResponseLimits, ResponseStatus};
    let limits = ResponseLimits {
        max_head_bytes: sentinel::limits::DEFAULT_MAX_RESPONSE_HEAD_BYTES,
        max_headers: sentinel::limits::MAX_RESPONSE_HEADERS,
    };
    for path in corpus("parse_response") {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let input = fs::read(&path).expect("read corpus file");
        let verdict = parse_response(&input, &limits);
        let fits = match name.split('_').next() {
            Some("valid" | "over" | "truncated") => {
                matches!(verdict, Ok(ResponseStatus::Complete(..)))
            }
            Some("bad") => verdict.is_err(),
            Some("partial") => verdict == Ok(ResponseStatus::Partial),
            _ => true,
        };
        assert!(fits, "{name} gave {verdict:?}");
    }
}

#[test]
fn decode_chunked_corpus() {
    replay("decode_chunked", |input| {
        checks::check_chunked(input, Effort::Sampled);
        checks::check_chunked(input, Effort::Exhaustive);
    });
}

#[test]
fn sanitize_path_corpus() {
    replay("sanitize_path", |input| {
        checks::check_sanitize_path(&String::from_utf8_lossy(input));
    });
}

#[test]
fn config_corpus() {
    replay("config", |input| {
        if let Ok(text) = std::str::from_utf8(input) {
            checks::check_config(text);
        }
    });
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", checks::check_proxy_header);
}
