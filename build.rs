//! Embeds the git commit the binary was built from as `SENTINEL_COMMIT`, for `--version` and
//! the `listening` log line: an operator holding a binary can tell which source it is.
//!
//! Outside a git checkout of this crate (a crates tarball, a vendored copy inside another
//! project's repository, or no `git` on the build machine) the commit is `unknown`: the build
//! never fails over it.
//!
//! There is no `-dirty` suffix: telling whether the work tree differs from the commit needs a
//! rerun on every edit, and the reruns below are chosen so that only a commit or a checkout
//! rebuilds.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `SENTINEL_COMMIT` says when the commit cannot be known.
const UNKNOWN: &str = "unknown";

/// Set by a build that has the commit but no `.git` (the `Dockerfile`'s build stage is handed
/// it as a build argument): it wins over asking git.
const COMMIT_OVERRIDE: &str = "SENTINEL_BUILD_COMMIT";

fn main() {
    println!("cargo:rerun-if-env-changed={COMMIT_OVERRIDE}");
    if let Some(commit) = std::env::var(COMMIT_OVERRIDE)
        .ok()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        println!("cargo:rerun-if-changed=build.rs");
        println!("cargo:rustc-env=SENTINEL_COMMIT={commit}");
        return;
    }
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match git_checkout(&manifest_dir) {
        Some(checkout) => {
            watch_head(&checkout);
            git(&manifest_dir, &["rev-parse", "--short", "HEAD"])
                .unwrap_or_else(|| UNKNOWN.to_string())
        }
        None => {
            // Naming a path that does not exist (`.git`) would rerun this on every build.
            println!("cargo:rerun-if-changed=build.rs");
            UNKNOWN.to_string()
        }
    };
    println!("cargo:rustc-env=SENTINEL_COMMIT={commit}");
}

/// The git directories of a checkout whose top level is this crate's directory.
struct Checkout {
    /// This work tree's own directory: `HEAD` lives here (for a linked worktree, under the
    /// main repository's `.git/worktrees/`).
    git_dir: PathBuf,
    /// Where refs and `packed-refs` live (the main repository's `.git` for a worktree).
    common_dir: PathBuf,
}

fn git_checkout(manifest_dir: &Path) -> Option<Checkout> {
    let top = git(manifest_dir, &["rev-parse", "--show-toplevel"])?;
    // A crate unpacked inside some other repository must not report that repository's commit.
    if !same_dir(Path::new(&top), manifest_dir) {
        return None;
    }
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            manifest_dir.join(p)
        }
    };
    Some(Checkout {
        git_dir: absolute(git(manifest_dir, &["rev-parse", "--git-dir"])?),
        common_dir: absolute(git(manifest_dir, &["rev-parse", "--git-common-dir"])?),
    })
}

/// Rerun when HEAD moves: a checkout rewrites `HEAD`, a commit rewrites the branch's ref (a
/// loose file, or `packed-refs` after `git gc`). Only paths that exist are named, because
/// cargo reruns on every build for a path that does not.
fn watch_head(checkout: &Checkout) {
    let mut watched = vec![checkout.git_dir.join("HEAD")];
    watched.push(checkout.common_dir.join("packed-refs"));
    if let Ok(head) = std::fs::read_to_string(checkout.git_dir.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            let loose = checkout.common_dir.join(reference);
            if loose.exists() {
                watched.push(loose);
            } else if let Some(parent) = loose.parent() {
                // A packed ref becomes a loose file again at the next commit: its directory
                // changes then.
                watched.push(parent.to_path_buf());
            }
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// `git ARGS` in `dir`: its trimmed stdout when it succeeds with some.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
