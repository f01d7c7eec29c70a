//! Package managers work inside out of the box, each with a cache of its own
//! (cordon's, per workspace, kept between runs), while the host's own caches stay
//! exactly as they were; and `~/.npmrc` shows its settings but not its tokens.
//!
//! Everything installs from local fixtures (no registry is reachable in CI): npm
//! from a tarball, pip from a local sdist with `--find-links`, cargo from a local
//! registry. Each test runs as root and as the ordinary user (cargo only as root:
//! it lives in /root/.cargo, which the ordinary user cannot reach), asserts the
//! effect on the host (the host cache's files before and after), and shows, as a
//! positive control, that the same command without cordon does write the host's
//! cache.

use crate::common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file and directory below `dir` with its content (`None` for a
/// directory), sorted: what a host cache holds.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p.clone());
                out.push((p, None));
            } else {
                out.push((p.clone(), Some(fs::read(&p).unwrap_or_default())));
            }
        }
    }
    out.sort();
    out
}

/// The workspace's managed cache dir on the host.
fn managed_dir(fx: &Fixture) -> PathBuf {
    let ws = fs::canonicalize(&fx.work).unwrap();
    let key = cordon_policy::caches::workspace_key(&ws).unwrap();
    fx.home.join(".cache/cordon/caches").join(key)
}

/// Files below `dir` whose path contains `needle`.
fn files_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter(|(p, c)| c.is_some() && p.to_string_lossy().contains(needle))
        .map(|(p, _)| p)
        .collect()
}

/// Runs `program args` as the fixture's user without cordon, in `dir`, with the
/// fixture's HOME (the positive control).
fn without_cordon(fx: &Fixture, dir: &Path, path: &str, program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &fx.home)
        .env("LANG", "C.UTF-8")
        .env("RUSTUP_HOME", "/root/.rustup")
        .current_dir(dir);
    fx.user.apply(&mut cmd);
    run_cmd(cmd, None, RUN_DEADLINE)
}

/// A copy of the workspace's content in a sibling directory, for the control run.
fn control_dir(fx: &Fixture) -> PathBuf {
    let dir = fx.root.join("control");
    fx.mkdir(&dir);
    dir
}

// ---------------------------------------------------------------------------------
// npm
// ---------------------------------------------------------------------------------

/// A package tarball as `npm pack` makes it (`package/...`), at `<root>/pkg.tgz`.
fn npm_tarball(fx: &Fixture) -> PathBuf {
    let src = fx.root.join("npm-src");
    fx.write(
        &src.join("package/package.json"),
        r#"{"name":"localpkg","version":"1.0.0","main":"index.js"}"#,
    );
    fx.write(&src.join("package/index.js"), "module.exports = 42;\n");
    let tgz = fx.root.join("pkg.tgz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg("package")
        .status()
        .unwrap();
    assert!(st.success());
    fx.chown(&tgz);
    tgz
}

#[test]
fn npm_installs_with_a_cache_of_its_own_and_the_hosts_stays_unchanged() {
    for_each_user("caches-npm", |fx| {
        let tgz = npm_tarball(fx);
        let host_cache = fx.home.join(".npm");
        fx.write(&host_cache.join("_cacache/index-v5/keep"), "the user's\n");
        let before = snapshot(&host_cache);

        let tgz_arg = tgz.to_str().unwrap();
        let out = fx.cordon(&["run", "--", "npm", "install", "--no-audit", tgz_arg]);
        out.assert_success();
        assert!(
            fx.work.join("node_modules/localpkg/index.js").is_file(),
            "{out}"
        );
        // Its cache went to the managed dir, and the host's is as it was.
        let managed = managed_dir(fx).join("npm");
        assert!(
            !files_named(&managed.join("_cacache/index-v5"), "").is_empty(),
            "nothing cached in {}\n{out}",
            managed.display()
        );
        assert_eq!(
            snapshot(&host_cache),
            before,
            "the host's ~/.npm changed\n{out}"
        );
        // The next run uses the same one.
        let out = fx.cordon(&["run", "--", "sh", "-c", "npm config get cache"]);
        assert_eq!(out.stdout_str().trim(), managed.to_str().unwrap(), "{out}");

        // Without the managed caches npm fails on the read-only ~/.npm, and cordon
        // says why.
        let cfg = fx.root.join("off.json");
        fx.write(&cfg, r#"{"caches": false}"#);
        let out = fx.cordon(&[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &format!("npm install --no-audit {tgz_arg}"),
        ]);
        out.assert_failure();
        out.assert_stderr_contains("cordon: hint: npm's cache");
        out.assert_stderr_contains("\"caches\": false");
        assert_eq!(snapshot(&host_cache), before);

        // Positive control: npm without cordon writes the host's cache.
        let ctl = control_dir(fx);
        without_cordon(fx, &ctl, PATH, "npm", &["install", "--no-audit", tgz_arg]).assert_success();
        assert_ne!(snapshot(&host_cache), before, "the control wrote nothing");
    });
}

// ---------------------------------------------------------------------------------
// pip
// ---------------------------------------------------------------------------------

/// A local sdist in `<root>/wheels` (pip builds a wheel from it and caches that).
fn pip_sdist(fx: &Fixture) -> PathBuf {
    let src = fx.root.join("pip-src");
    fx.write(
        &src.join("setup.py"),
        "from setuptools import setup\nsetup(name='localmod', version='1.0', packages=['localmod'])\n",
    );
    fx.write(&src.join("localmod/__init__.py"), "VALUE = 42\n");
    let wheels = fx.root.join("wheels");
    fx.mkdir(&wheels);
    let mut cmd = Command::new("python3");
    cmd.args(["setup.py", "-q", "sdist", "-d"])
        .arg(&wheels)
        .env("PATH", PATH)
        .current_dir(&src);
    run_cmd(cmd, None, RUN_DEADLINE).assert_success();
    fx.chown_tree(&fx.root.join("pip-src"));
    fx.chown_tree(&wheels);
    wheels
}

#[test]
fn pip_installs_with_a_cache_of_its_own_and_the_hosts_stays_unchanged() {
    for_each_user("caches-pip", |fx| {
        let wheels = pip_sdist(fx);
        let host_cache = fx.home.join(".cache/pip");
        fx.write(&host_cache.join("http/keep"), "the user's\n");
        let before = snapshot(&host_cache);
        let args = [
            "-m",
            "pip",
            "install",
            "--no-index",
            "--disable-pip-version-check",
            "--find-links",
            wheels.to_str().unwrap(),
            "--target",
            "t",
            "localmod",
        ];
        let mut cordon_args = vec!["run", "--", "python3"];
        cordon_args.extend(args);
        let out = fx.cordon(&cordon_args);
        out.assert_success();
        assert!(fx.work.join("t/localmod/__init__.py").is_file(), "{out}");
        let built = files_named(&managed_dir(fx).join("pip/wheels"), "localmod-1.0");
        assert!(!built.is_empty(), "no wheel cached\n{out}");
        assert_eq!(
            snapshot(&host_cache),
            before,
            "the host's pip cache changed\n{out}"
        );

        // Positive control: pip without cordon caches the wheel in the host's.
        let ctl = control_dir(fx);
        without_cordon(fx, &ctl, PATH, "python3", &args).assert_success();
        assert!(
            !files_named(&host_cache.join("wheels"), "localmod-1.0").is_empty(),
            "the control cached nothing"
        );
    });
}

// ---------------------------------------------------------------------------------
// cargo
// ---------------------------------------------------------------------------------

const ROOT_CARGO: &str = "/root/.cargo/bin";

/// A local registry holding `tinydep 0.1.0` (a `local-registry` source: cargo
/// unpacks its crates into `$CARGO_HOME/registry/src`), at `<root>/registry`.
fn local_registry(fx: &Fixture, path: &str) -> PathBuf {
    let src = fx.root.join("tinydep");
    fx.write(
        &src.join("Cargo.toml"),
        "[package]\nname = \"tinydep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    fx.write(&src.join("src/lib.rs"), "pub const VALUE: u32 = 42;\n");
    let mut cmd = Command::new("cargo");
    cmd.args(["package", "-q", "--no-verify", "--allow-dirty", "--offline"])
        .env("PATH", path)
        .env("CARGO_HOME", fx.root.join("pkg-cargo-home"))
        .env("RUSTUP_HOME", "/root/.rustup")
        .current_dir(&src);
    run_cmd(cmd, None, RUN_DEADLINE).assert_success();
    let reg = fx.root.join("registry");
    let krate = reg.join("tinydep-0.1.0.crate");
    fx.mkdir(&reg.join("index/ti/ny"));
    fs::copy(src.join("target/package/tinydep-0.1.0.crate"), &krate).unwrap();
    let sum = run_cmd(
        {
            let mut c = Command::new("sha256sum");
            c.arg(&krate);
            c
        },
        None,
        RUN_DEADLINE,
    )
    .stdout_str();
    let sum = sum.split_whitespace().next().unwrap().to_string();
    fx.write(
        &reg.join("index/ti/ny/tinydep"),
        &format!(
            "{{\"name\":\"tinydep\",\"vers\":\"0.1.0\",\"deps\":[],\"cksum\":\"{sum}\",\"features\":{{}},\"yanked\":false}}\n"
        ),
    );
    fx.chown_tree(&fx.root);
    reg
}

/// A crate depending on `tinydep` from the local registry, in `dir`.
fn app(fx: &Fixture, dir: &Path, reg: &Path) {
    fx.write(
        &dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ntinydep = \"0.1\"\n",
    );
    fx.write(
        &dir.join("src/main.rs"),
        "fn main() { println!(\"{}\", tinydep::VALUE); }\n",
    );
    fx.write(
        &dir.join(".cargo/config.toml"),
        &format!(
            "[source.crates-io]\nreplace-with = \"local\"\n[source.local]\nlocal-registry = \"{}\"\n",
            reg.display()
        ),
    );
}

#[test]
fn cargo_builds_with_a_cache_of_its_own_and_the_hosts_stays_unchanged() {
    for_each_user("caches-cargo", |fx| {
        let usable = fs::metadata(Path::new(ROOT_CARGO).join("cargo"))
            .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
            && (fx.user.is_root()
                || fs::metadata("/root").is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005));
        if !usable {
            eprintln!(
                "note: cargo test skipped as {}: cargo is in {ROOT_CARGO}, which this user cannot reach",
                fx.user.name
            );
            return;
        }
        let path = format!("{ROOT_CARGO}:{PATH}");
        let reg = local_registry(fx, &path);
        app(fx, &fx.work, &reg);
        // ~/.cargo holds the user's config (which must still apply) and no
        // registry yet: cordon makes the empty mount points `registry` and `git`,
        // as cargo itself would, and binds the cache there.
        let cargo_home = fx.home.join(".cargo");
        fx.write(&cargo_home.join("config.toml"), "[term]\nverbose = false\n");
        let before = snapshot(&cargo_home);

        let mut cmd = fx.cordon_cmd(&[
            "run",
            "--env",
            "RUSTUP_HOME=/root/.rustup",
            "--",
            "cargo",
            "run",
            "-q",
            "--offline",
        ]);
        cmd.env("PATH", &path);
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_success();
        assert_eq!(out.stdout_str().trim(), "42", "{out}");
        let unpacked = files_named(&managed_dir(fx).join("cargo/registry/src"), "tinydep-0.1.0");
        assert!(
            !unpacked.is_empty(),
            "nothing unpacked in the managed cache\n{out}"
        );
        let mut expected = before.clone();
        expected.extend(["registry", "git"].map(|d| (cargo_home.join(d), None)));
        expected.sort();
        assert_eq!(
            snapshot(&cargo_home),
            expected,
            "the host's ~/.cargo changed (beyond its two empty mount points)\n{out}"
        );

        // Positive control: cargo without cordon unpacks into the host's.
        let ctl = control_dir(fx);
        app(fx, &ctl, &reg);
        without_cordon(fx, &ctl, &path, "cargo", &["build", "-q", "--offline"]);
        assert!(
            !files_named(&cargo_home.join("registry/src"), "tinydep-0.1.0").is_empty(),
            "the control unpacked nothing"
        );
    });
}

// ---------------------------------------------------------------------------------
// ~/.npmrc
// ---------------------------------------------------------------------------------

/// Looks for the marker (given in two halves, so no command line holds it whole)
/// in every file below $HOME, /tmp and the current directory, and in every
/// process's environment and command line; prints the places. Opened without
/// blocking: a FIFO another program left in the host's /tmp (the control runs
/// there) would otherwise wait for a writer forever.
const SCAN: &str = r#"
import os, sys
m = (sys.argv[1] + sys.argv[2]).encode()
hits = []
def scan(p):
    try:
        with os.fdopen(os.open(p, os.O_RDONLY | os.O_NONBLOCK), 'rb') as f:
            d = f.read(1 << 22)
    except Exception:
        return
    if m in d:
        hits.append(p)
for root in [os.environ['HOME'], '/tmp', os.getcwd()]:
    for dp, dn, fn in os.walk(root):
        for f in fn:
            scan(os.path.join(dp, f))
for pid in os.listdir('/proc'):
    if pid.isdigit():
        for n in ('environ', 'cmdline'):
            scan('/proc/%s/%s' % (pid, n))
print('hits:', hits)
"#;

/// Writes each of `files` (its content made from the marker's two halves) in the
/// fixture's home, runs `probe` (a shell script, given `args` as `$1`...) and then
/// the marker scan inside, and checks: the probe's first line is `first` (the
/// settings are read), the marker is in no file, variable or command line and
/// nowhere in cordon's output, the copy says `copy_says`, and the host's files are
/// unchanged. Positive control: without cordon the same script reads the same
/// settings and the scan finds the marker in a file named `found_in`.
/// A settings file's path (relative to the home) and how its content is made
/// from the marker's two halves.
type SettingsFile<'a> = (&'a str, fn(&str, &str) -> String);

fn assert_shown_without_credentials(
    fx: &Fixture,
    files: &[SettingsFile<'_>],
    probe: &str,
    args: &[&str],
    first: &str,
    copy_says: &str,
    found_in: &str,
) {
    let (a, b) = fx.marker.split_at(fx.marker.len() / 2);
    let paths: Vec<PathBuf> = files.iter().map(|(rel, _)| fx.home.join(rel)).collect();
    for ((_, content), path) in files.iter().zip(&paths) {
        fx.write(path, &content(a, b));
    }
    let originals: Vec<_> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    let script = format!("{probe}; python3 -c \"$0\" {a} {b}");
    let mut argv = vec!["run", "--", "sh", "-c", &script, SCAN];
    argv.extend(args);
    let out = fx.cordon(&argv);
    out.assert_success();
    let stdout = out.stdout_str();
    assert_eq!(stdout.lines().next(), Some(first), "{out}");
    assert!(stdout.contains("hits: []"), "the marker is inside\n{out}");
    out.assert_not_printed(&fx.marker);
    assert!(stdout.contains(copy_says), "{out}");
    let now: Vec<_> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    assert_eq!(now, originals, "the host's files changed");

    let ctl = control_dir(fx);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script, SCAN])
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", &fx.home)
        .current_dir(&ctl);
    fx.user.apply(&mut cmd);
    let out = run_cmd(cmd, None, RUN_DEADLINE);
    assert_eq!(out.stdout_str().lines().next(), Some(first), "{out}");
    assert!(
        out.stdout_str().contains(found_in),
        "the control found nothing\n{out}"
    );
}

#[test]
fn npmrc_settings_are_shown_and_its_credentials_are_not() {
    for_each_user("caches-npmrc", |fx| {
        assert_shown_without_credentials(
            fx,
            &[(".npmrc", |a, b| {
                format!(
                    "fund=false\n//registry.example/:_authToken={a}{b}\n_auth={a}{b}\nhttps-proxy=http://u:{a}{b}@proxy.example:8080\n; {a}{b}\n"
                )
            })],
            "npm config get fund; npm config list; cat ~/.npmrc",
            &[],
            "false",
            "without its credentials",
            ".npmrc'",
        );
    });
}

/// Reads `timeout` from pip's two user files as pip does (configparser, the later
/// file winning), so no pip install is needed.
const PIP_TIMEOUT: &str = r#"
import configparser, os
c = configparser.RawConfigParser()
c.read([os.path.expanduser('~/.pip/pip.conf'), os.path.expanduser('~/.config/pip/pip.conf')])
print('timeout', c.get('global', 'timeout', fallback='none'), c.get('global', 'retries', fallback='none'))
"#;

#[test]
fn pip_conf_settings_are_shown_and_its_credentials_are_not() {
    for_each_user("caches-pipconf", |fx| {
        assert_shown_without_credentials(
            fx,
            &[
                (".config/pip/pip.conf", |a, b| {
                    format!(
                        "[global]\ntimeout = 61\nindex-url = https://user:{a}{b}@pypi.corp.example/simple\nextra-index-url =\n    https://x.example/simple?sig={a}{b}\n# {a}{b}\n"
                    )
                }),
                (".pip/pip.conf", |a, b| {
                    format!("[global]\nretries = 7\ntrusted-host: {a}{b}\n")
                }),
            ],
            "python3 -c \"$1\"; cat ~/.config/pip/pip.conf ~/.pip/pip.conf",
            &[PIP_TIMEOUT],
            "timeout 61 7",
            "your pip.conf without its credentials",
            "pip.conf'",
        );
    });
}
