//! The static file cache is invisible except in speed: every hit is revalidated, so changes,
//! deletions and symlink swaps are seen by the very next request.

mod common;

use common::{Options, TestServer};

fn set_mtime(path: &std::path::Path, secs_ago: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

#[test]
fn a_changed_file_is_served_fresh_even_with_the_same_size() {
    let server = TestServer::start();
    let path = server.root().join("same-size.txt");
    std::fs::write(&path, "version-1").unwrap();
    set_mtime(&path, 100);
    let first = server.get("/same-size.txt");
    assert_eq!(first.body_text(), "version-1");
    assert_eq!(server.get("/same-size.txt").body_text(), "version-1");

    std::fs::write(&path, "version-2").unwrap();
    let second = server.get("/same-size.txt");
    assert_eq!(second.body_text(), "version-2");
    assert_ne!(first.header("etag"), second.header("etag"));
}

#[test]
fn a_deleted_file_is_not_found_after_being_cached() {
    let server = TestServer::start();
    let path = server.root().join("gone.txt");
    std::fs::write(&path, "here").unwrap();
    assert_eq!(server.get("/gone.txt").status, 200);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(server.get("/gone.txt").status, 404);
}

#[cfg(unix)]
#[test]
fn a_cached_directory_swapped_for_an_escaping_symlink_is_refused() {
    let server = TestServer::start();
    let outside = server.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("page.html"), "SECRET-OUTSIDE").unwrap();
    assert_eq!(server.get("/docs/page.html").body_text(), "<p>page</p>\n");

    let docs = server.root().join("docs");
    std::fs::rename(&docs, server.root().join("docs-old")).unwrap();
    std::os::unix::fs::symlink(&outside, &docs).unwrap();
    let after = server.get("/docs/page.html");
    assert_eq!(after.status, 403);
    assert!(!after.body_text().contains("SECRET-OUTSIDE"));
}

#[test]
fn an_index_replaced_by_a_directory_is_no_longer_served() {
    let server = TestServer::start();
    assert_eq!(server.get("/docs/").body_text(), "<h1>docs</h1>\n");
    let index = server.root().join("docs/index.html");
    std::fs::remove_file(&index).unwrap();
    std::fs::create_dir(&index).unwrap();
    assert_eq!(server.get("/docs/").status, 403);
}

#[test]
fn ranges_and_conditionals_work_on_cached_files() {
    let server = TestServer::start();
    let full = server.get("/digits.txt");
    assert_eq!(full.body.len(), 1000);
    let etag = full.header("etag").unwrap().to_string();
    let range =
        server.request(b"GET /digits.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=10-14\r\n\r\n");
    assert_eq!((range.status, range.body_text().as_str()), (206, "01234"));
    let not_modified = server.request(
        format!("GET /digits.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    assert_eq!(not_modified.status, 304);
}

#[test]
fn files_too_big_for_the_cache_and_a_disabled_cache_still_serve() {
    for static_yaml in ["  cache_max_bytes: 0\n", "  cache_max_file_bytes: 10\n"] {
        let server = TestServer::start_with(Options {
            static_yaml: static_yaml.to_string(),
            ..Options::default()
        });
        for _ in 0..2 {
            let response = server.get("/digits.txt");
            assert_eq!(response.status, 200, "{static_yaml}");
            assert_eq!(response.body.len(), 1000, "{static_yaml}");
        }
    }
}
