//! Shared harness of cordon's integration tests (attacks.rs, functional.rs).
//!
//! - Every test runs once per [`User`]: as root *and* as the ordinary user
//!   `cordon-test` (created here, under a file lock) when the tests run as root; only
//!   as the current user otherwise (the root variant is then reported as skipped).
//! - cordon is run from a world-readable copy of the binary, so the ordinary user can
//!   execute it even when the repository's target dir is private.
//! - Every test gets a fresh [`Fixture`] per user: `home/` holding secrets whose content
//!   is a random marker, `work/` (the workspace) and `outside/` (a sibling directory
//!   the user may write outside cordon), all owned by that user.
//! - Every child process is run with a deadline: a hung test is a failing test.
//! - Anything an escape could leave on the host (files in /etc, mounts, device nodes,
//!   a setuid binary, kernel settings) is removed by a [`Defer`] guard, also when the
//!   assertion fails, so a broken cordon does not damage the machine running the suite.
//!
//! Environment: `CORDON_TEST_BIN` runs the suite against another cordon binary;
//! `CORDON_TEST_DIR` moves the fixtures (default /var/tmp/cordon-tests);
//! `CORDON_TEST_KEEP=1` keeps the fixtures of failed tests for inspection.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)] // each test crate uses a different part of the harness

pub mod fake_model;
pub mod pi;
pub mod serve;
pub mod upstream;

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// PATH given to cordon (and so to the sandbox): system directories only, so that
/// every user finds the same python3, git and node.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The longest any single cordon run may take before the test fails as hung.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The ordinary user the tests create when they run as root.
pub const TEST_USER: &str = "cordon-test";

/// The secret files placed in every fixture's home (relative to `home/`), each holding
/// `<marker>:<path>`. All of them are in cordon's default deny list.
pub const SECRETS: &[&str] = &[
    ".ssh/id_rsa",
    ".ssh/config",
    ".aws/credentials",
    ".gnupg/private-keys-v1.d/key.key",
    ".config/gcloud/credentials.db",
    ".kube/config",
    ".docker/config.json",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pi/agent/auth.json",
    // The credential stores of other developer tools.
    ".azure/msal_token_cache.json",
    ".oci/config",
    ".config/containers/auth.json",
    ".terraform.d/credentials.tfrc.json",
    ".terraformrc",
    ".vault-token",
    ".config/gh/hosts.yml",
    ".config/hub",
    ".config/git/credentials",
    ".yarnrc",
    ".config/configstore/firebase-tools.json",
    ".cargo/credentials.toml",
    ".cargo/credentials",
    ".pypirc",
    ".config/pypoetry/auth.toml",
    ".gem/credentials",
    ".m2/settings.xml",
    ".m2/settings-security.xml",
    ".gradle/gradle.properties",
    ".composer/auth.json",
    ".config/composer/auth.json",
    ".config/rclone/rclone.conf",
    ".s3cfg",
    ".boto",
    ".pgpass",
    ".my.cnf",
    ".config/op/config",
    ".1password/agent.sock",
    ".password-store/github.gpg",
    ".config/gopass/config.yml",
    ".local/share/gopass/stores/root/x.gpg",
    ".local/share/keyrings/login.keyring",
    ".local/share/kwalletd/kdewallet.kwl",
    ".local/share/python_keyring/keyring_pass.cfg",
    ".config/sops/age/keys.txt",
    ".config/age/key.txt",
    ".mozilla/firefox/p.default/cookies.sqlite",
    ".config/google-chrome/Default/Cookies",
    ".config/chromium/Default/Login Data",
    ".config/BraveSoftware/Brave-Browser/Default/Cookies",
    ".config/microsoft-edge/Default/Cookies",
    ".config/vivaldi/Default/Cookies",
    ".config/opera/Cookies",
    "snap/firefox/common/.mozilla/firefox/p/cookies.sqlite",
    "snap/chromium/common/chromium/Default/Cookies",
    ".var/app/org.mozilla.firefox/.mozilla/firefox/p/cookies.sqlite",
    ".var/app/com.google.Chrome/config/google-chrome/Default/Cookies",
    ".var/app/org.chromium.Chromium/config/chromium/Default/Cookies",
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".claude/.credentials.json",
    ".codex/auth.json",
    ".gemini/oauth_creds.json",
    ".config/github-copilot/apps.json",
];

// ---------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------

/// Who runs cordon in one variant of a test.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// "root" or "user": used in fixture names and failure messages.
    pub fn label(&self) -> &'static str {
        if self.is_root() { "root" } else { "user" }
    }

    /// Whether commands for this user must switch uid/gid (the test process is root
    /// and this user is not).
    fn needs_switch(&self) -> bool {
        euid() != self.uid || egid() != self.gid
    }

    /// Applies this user's ids to a command run by the (root) test process. std
    /// clears the supplementary groups when it switches uid as root.
    pub fn apply(&self, cmd: &mut Command) {
        if self.needs_switch() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }
}

pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

pub fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

pub fn running_as_root() -> bool {
    euid() == 0
}

/// The users every test runs as: root and `cordon-test` when running as root, the
/// current user otherwise.
pub fn users() -> Vec<User> {
    if running_as_root() {
        vec![
            User {
                name: "root".into(),
                uid: 0,
                gid: 0,
            },
            test_user(),
        ]
    } else {
        eprintln!("note: root variant skipped: the tests are not running as root");
        vec![current_user()]
    }
}

fn current_user() -> User {
    let uid = euid();
    let name = passwd_entries()
        .into_iter()
        .find(|(_, u, _)| *u == uid)
        .map(|(n, _, _)| n)
        .unwrap_or_else(|| format!("uid{uid}"));
    User {
        name,
        uid,
        gid: egid(),
    }
}

/// (name, uid, gid) of every line of /etc/passwd.
fn passwd_entries() -> Vec<(String, u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

fn lookup_user(name: &str) -> Option<User> {
    passwd_entries()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(name, uid, gid)| User { name, uid, gid })
}

/// The ordinary test user, created on first use. Safe under parallel tests and
/// parallel test binaries: creation happens under an exclusive file lock.
pub fn test_user() -> User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        assert!(running_as_root(), "only root can create the test user");
        if let Some(u) = lookup_user(TEST_USER) {
            return u;
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open("/tmp/.cordon-test-useradd.lock")
            .expect("open the useradd lock file");
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .expect("flock the useradd lock file");
        if lookup_user(TEST_USER).is_none() {
            let tries: [&[&str]; 2] = [
                &["--system", "--create-home", "--shell", "/bin/sh", TEST_USER],
                &["-m", TEST_USER],
            ];
            let mut errors = String::new();
            for args in tries {
                let out = Command::new("useradd")
                    .args(args)
                    .env("PATH", PATH)
                    .output()
                    .expect("run useradd");
                if out.status.success() || lookup_user(TEST_USER).is_some() {
                    break;
                }
                errors.push_str(&String::from_utf8_lossy(&out.stderr));
            }
            assert!(
                lookup_user(TEST_USER).is_some(),
                "could not create user {TEST_USER}: {errors}"
            );
        }
        drop(lock); // releases the flock
        lookup_user(TEST_USER).expect("test user exists")
    })
    .clone()
}

// ---------------------------------------------------------------------------------
// Paths: the base directory and the cordon binary
// ---------------------------------------------------------------------------------

/// Where fixtures live: `$CORDON_TEST_DIR`, else /var/tmp/cordon-tests (not under
/// /tmp, so that the fixture's home and `outside/` stay visible, read-only, inside the
/// sandbox: the attacks then hit real paths rather than a private tmpfs).
pub fn base_dir() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = std::env::var_os("CORDON_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if Path::new("/var/tmp").is_dir() {
                    PathBuf::from("/var/tmp/cordon-tests")
                } else {
                    std::env::temp_dir().join("cordon-tests")
                }
            });
        fs::create_dir_all(&base).expect("create the fixture base dir");
        if fs::metadata(&base).is_ok_and(|m| m.uid() == euid()) {
            fs::set_permissions(&base, fs::Permissions::from_mode(0o1777)).ok();
        }
        base
    })
    .clone()
}

/// A world-readable copy of the cordon binary under test (made once per test binary;
/// stale copies of finished test processes are removed). `CORDON_TEST_BIN` overrides
/// the binary.
pub fn cordon_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let base = base_dir();
        if let Ok(entries) = fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let stale = name
                    .strip_prefix("bin-")
                    .is_some_and(|pid| !Path::new("/proc").join(pid).exists());
                if stale {
                    fs::remove_dir_all(e.path()).ok();
                }
            }
        }
        let dir = base.join(format!("bin-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the binary dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("cordon");
        // CORDON_TEST_BIN runs the suite against another build (or, to check that the
        // tests can fail, against something that does not sandbox at all).
        let source = std::env::var_os("CORDON_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cordon")));
        // By cp, not in this process: a write descriptor open here would be
        // inherited by a child another test thread forks meanwhile, and running the
        // copy would fail with ETXTBSY until that child execs.
        let copied = Command::new("cp").arg(&source).arg(&bin).status();
        assert!(copied.is_ok_and(|s| s.success()), "copy the cordon binary");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        bin
    })
    .clone()
}

/// A random hex string (from /dev/urandom).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random number in `lo..lo+span`, for unique `sleep` arguments.
pub fn random_u32(lo: u32, span: u32) -> u32 {
    let h = random_hex(4);
    lo + u32::from_str_radix(&h, 16).unwrap() % span
}

// ---------------------------------------------------------------------------------
// Running processes with a deadline
// ---------------------------------------------------------------------------------

/// What a finished process produced.
pub struct Output {
    /// What was run, for messages.
    pub what: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr_str())
    }

    /// The exit status; panics if the process died of a signal.
    pub fn status(&self) -> i32 {
        match self.code {
            Some(c) => c,
            None => panic!("{self}\nprocess died of signal {:?}", self.signal),
        }
    }

    pub fn assert_status(&self, expected: i32) -> &Self {
        assert_eq!(self.code, Some(expected), "unexpected exit status\n{self}");
        self
    }

    pub fn assert_success(&self) -> &Self {
        self.assert_status(0)
    }

    pub fn assert_failure(&self) -> &Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a failure exit status\n{self}"
        );
        self
    }

    /// Asserts that stdout contains `needle`.
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout_str().contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr_str().contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }

    /// Asserts that `needle` appears in neither stdout nor stderr.
    pub fn assert_not_printed(&self, needle: &str) -> &Self {
        assert!(
            !self.all().contains(needle),
            "{needle:?} was printed\n{self}"
        );
        self
    }
}

fn clip(bytes: &[u8]) -> String {
    const MAX: usize = 6000;
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= MAX {
        s.into_owned()
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… [{} bytes in all]", &s[..cut], bytes.len())
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- {}", self.what)?;
        writeln!(
            f,
            "--- exit code {:?}, signal {:?}, {:?}",
            self.code, self.signal, self.elapsed
        )?;
        writeln!(f, "--- stdout:\n{}", clip(&self.stdout))?;
        write!(f, "--- stderr:\n{}", clip(&self.stderr))
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A readable description of a command.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&format!("{:?}", a.to_string_lossy()));
    }
    s
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Waits for `child` at most `deadline`; kills it (SIGKILL) and panics after that.
pub fn wait_deadline(
    child: &mut Child,
    deadline: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung: {what} did not finish within {deadline:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `cmd` with stdin, stdout and stderr on /dev/null: a process the test
/// watches from outside rather than reads.
pub fn spawn_quiet(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&cmd)))
}

/// Runs `cmd` with `stdin` as its input, collecting stdout and stderr, with a deadline.
/// Once the process has exited, its output pipes must close promptly: a pipe held
/// open means a process outlived it, and fails the test.
pub fn run_cmd(mut cmd: Command, stdin: Option<Vec<u8>>, deadline: Duration) -> Output {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let out_rx = spawn_reader(child.stdout.take().unwrap());
    let err_rx = spawn_reader(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, deadline, &what);
    let elapsed = start.elapsed();
    let grace = Duration::from_secs(10);
    let stdout = out_rx.recv_timeout(grace).unwrap_or_else(|_| {
        panic!("{what}: exited, but its stdout stayed open for {grace:?}: a process outlived it")
    });
    let stderr = err_rx.recv_timeout(grace).unwrap_or_else(|_| {
        panic!("{what}: exited, but its stderr stayed open for {grace:?}: a process outlived it")
    });
    Output {
        what,
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        elapsed,
    }
}

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// One test's directories for one user.
pub struct Fixture {
    pub user: User,
    /// The fixture's root: holds home/, work/, outside/.
    pub root: PathBuf,
    pub home: PathBuf,
    /// The workspace.
    pub work: PathBuf,
    /// A sibling of the workspace the user could write without cordon.
    pub outside: PathBuf,
    /// Contained in every secret; must never appear in what the sandbox prints.
    pub marker: String,
    keep: std::cell::Cell<bool>,
}

impl Fixture {
    /// A fresh fixture under [`base_dir`].
    pub fn new(user: &User, test: &str) -> Fixture {
        Self::new_in(user, test, &base_dir())
    }

    /// A fresh fixture under `parent` (e.g. /tmp).
    pub fn new_in(user: &User, test: &str, parent: &Path) -> Fixture {
        let root = parent.join(format!("{test}-{}-{}", user.label(), random_hex(6)));
        fs::create_dir_all(&root).expect("create fixture root");
        let fx = Fixture {
            user: user.clone(),
            home: root.join("home"),
            work: root.join("work"),
            outside: root.join("outside"),
            root,
            marker: format!("CRDNMARK{}", random_hex(12)),
            keep: std::cell::Cell::new(false),
        };
        for d in [&fx.home, &fx.work, &fx.outside] {
            fs::create_dir_all(d).unwrap();
        }
        for s in SECRETS {
            fx.write(&fx.home.join(s), &fx.secret_content(s));
        }
        fx.write(&fx.home.join(".bashrc"), "# the user's bashrc\n");
        // As in most homes: cordon keeps its managed caches below it
        // (~/.cache/cordon/caches), which is cordon's doing, not the sandbox's, and
        // must not show as a change of the home in the attack tests.
        fs::create_dir_all(fx.home.join(".cache")).unwrap();
        fx.write(&fx.home.join("notes.txt"), "plain-home-file\n");
        fx.write(&fx.outside.join("file"), "outside-original\n");
        fx.write(&fx.work.join("README"), "workspace-file\n");
        fs::set_permissions(&fx.root, fs::Permissions::from_mode(0o755)).unwrap();
        fx.chown_tree(&fx.root);
        fx
    }

    /// The content of secret `rel` (contains the marker).
    pub fn secret_content(&self, rel: &str) -> String {
        format!("{}:{rel}\n", self.marker)
    }

    /// Marks the fixture as failed: it stays on disk when `CORDON_TEST_KEEP` is set.
    pub fn keep(&self) {
        self.keep.set(true);
    }

    /// Writes `content` at `path`, creating parents; everything owned by the user.
    pub fn write(&self, path: &Path, content: &str) {
        self.write_bytes(path, content.as_bytes());
    }

    pub fn write_bytes(&self, path: &Path, content: &[u8]) {
        if let Some(parent) = path.parent() {
            self.mkdir(parent);
        }
        fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.chown(path);
    }

    /// Creates a directory and its missing parents (inside the fixture), owned by the user.
    pub fn mkdir(&self, path: &Path) {
        let mut missing = Vec::new();
        let mut p = path.to_path_buf();
        while !p.exists() {
            missing.push(p.clone());
            if !p.pop() {
                break;
            }
        }
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        for m in missing {
            self.chown(&m);
        }
    }

    /// Makes `link` a symlink to `target` (owned by the user).
    pub fn symlink(&self, target: &Path, link: &Path) {
        std::os::unix::fs::symlink(target, link).unwrap();
        std::os::unix::fs::lchown(link, Some(self.user.uid), Some(self.user.gid)).unwrap();
    }

    pub fn chown(&self, path: &Path) {
        if running_as_root() {
            std::os::unix::fs::lchown(path, Some(self.user.uid), Some(self.user.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    pub fn chown_tree(&self, path: &Path) {
        self.chown(path);
        if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            for e in fs::read_dir(path).unwrap().flatten() {
                self.chown_tree(&e.path());
            }
        }
    }

    /// The environment every run gets (cordon passes an allowlist of it inside).
    fn base_env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", &self.home)
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm");
        // The backend every suite runs against: CORDON_TEST_BACKEND=vm reruns the
        // same attacks and functional tests in the VM backend.
        if let Some(backend) = std::env::var_os("CORDON_TEST_BACKEND") {
            cmd.env("CORDON_BACKEND", backend);
        }
        cmd.current_dir(&self.work);
        self.user.apply(cmd);
    }

    /// `cordon ARGS...` as this fixture's user, in `work/`, with HOME=`home/`. Add
    /// environment variables or change stdio before running it with [`run_cmd`].
    pub fn cordon_cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(cordon_bin());
        self.base_env(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// Runs `cordon ARGS...` (a whole command line, subcommand included).
    pub fn cordon<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_cmd(self.cordon_cmd(args), None, RUN_DEADLINE)
    }

    /// `cordon run OPTS... -- sh -c SCRIPT`, to adjust before running it.
    pub fn sh_cmd_with(&self, opts: &[&str], script: &str) -> Command {
        let mut args: Vec<&str> = vec!["run"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        self.cordon_cmd(&args)
    }

    /// `cordon run -- sh -c SCRIPT`, to adjust before running it.
    pub fn sh_cmd(&self, script: &str) -> Command {
        self.sh_cmd_with(&[], script)
    }

    /// Runs `cordon run OPTS... -- sh -c SCRIPT`.
    pub fn sh_with(&self, opts: &[&str], script: &str) -> Output {
        run_cmd(self.sh_cmd_with(opts, script), None, RUN_DEADLINE)
    }

    /// Runs `cordon run -- sh -c SCRIPT`.
    pub fn sh(&self, script: &str) -> Output {
        self.sh_with(&[], script)
    }

    /// Runs `cordon run -- CMD...`.
    pub fn run(&self, command: &[&str]) -> Output {
        let mut args = vec!["run", "--"];
        args.extend_from_slice(command);
        self.cordon(&args)
    }

    /// `PROGRAM ARGS...` as the same user with the same environment, without cordon.
    pub fn host_cmd(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new(argv[0]);
        self.base_env(&mut cmd);
        cmd.args(&argv[1..]);
        cmd
    }

    /// `sh -c SCRIPT` as the same user with the same environment, *without* cordon:
    /// the positive control showing what the attack does when nothing stops it.
    pub fn host_sh_cmd(&self, script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        self.base_env(&mut cmd);
        cmd.args(["-c", script]);
        cmd
    }

    pub fn host_sh(&self, script: &str) -> Output {
        run_cmd(self.host_sh_cmd(script), None, RUN_DEADLINE)
    }

    /// `cordon policy --json` parsed.
    pub fn policy_json(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["policy", "--json"];
        args.extend_from_slice(extra);
        let out = self.cordon(&args);
        out.assert_success();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("policy --json is not JSON: {e}\n{out}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let failed = self.keep.get() || std::thread::panicking();
        if failed && std::env::var_os("CORDON_TEST_KEEP").is_some() {
            eprintln!("note: fixture kept for inspection: {}", self.root.display());
            return;
        }
        if failed {
            eprintln!(
                "note: set CORDON_TEST_KEEP=1 to keep the fixture of a failed test ({})",
                self.root.display()
            );
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Runs `f` once per user (root and the ordinary user when running as root), each
/// with its own fresh fixture. Every variant runs even if an earlier one failed; the
/// test then fails naming each failed variant.
pub fn for_each_user(test: &str, f: impl Fn(&Fixture)) {
    let mut failures = Vec::new();
    for user in users() {
        let fx = Fixture::new(&user, test);
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(&fx))) {
            fx.keep();
            failures.push(format!(
                "as {} ({}): {}",
                user.label(),
                user.name,
                panic_text(&e)
            ));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{test} failed in {} variant(s):\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic".into()
    }
}

// ---------------------------------------------------------------------------------
// Assertions on effects
// ---------------------------------------------------------------------------------

/// Asserts that `marker` (a secret's bytes) appears nowhere in what the sandbox printed.
pub fn assert_absent(out: &Output, marker: &str) {
    let found = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker.as_bytes());
    assert!(
        !found(&out.stdout) && !found(&out.stderr),
        "secret marker {marker:?} leaked into the sandbox's output\n{out}"
    );
}

/// What a path looks like on the host, to compare before and after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    pub exists: bool,
    pub kind: &'static str,
    pub mode: u32,
    pub ino: u64,
    pub mtime: (i64, i64),
    /// File content, directory entry names (sorted), or symlink target.
    pub content: Vec<u8>,
}

pub fn snapshot(path: &Path) -> Snapshot {
    match fs::symlink_metadata(path) {
        Err(_) => Snapshot {
            path: path.into(),
            exists: false,
            kind: "absent",
            mode: 0,
            ino: 0,
            mtime: (0, 0),
            content: Vec::new(),
        },
        Ok(m) => {
            let (kind, content) = if m.file_type().is_symlink() {
                (
                    "symlink",
                    fs::read_link(path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                let mut names: Vec<String> = fs::read_dir(path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                ("dir", names.join("\n").into_bytes())
            } else if m.is_file() {
                ("file", fs::read(path).unwrap_or_default())
            } else {
                ("other", Vec::new())
            };
            Snapshot {
                path: path.into(),
                exists: true,
                kind,
                mode: m.mode(),
                ino: m.ino(),
                mtime: (m.mtime(), m.mtime_nsec()),
                content,
            }
        }
    }
}

/// Snapshots of several paths, for [`assert_all_unchanged`].
pub fn snapshots<P: AsRef<Path>>(paths: &[P]) -> Vec<Snapshot> {
    paths.iter().map(|p| snapshot(p.as_ref())).collect()
}

/// Asserts that every path of `before` is on the host exactly as it was.
pub fn assert_all_unchanged(before: &[Snapshot]) {
    for b in before {
        assert_unchanged(&b.path, b);
    }
}

/// Asserts that `path` on the host is exactly as it was in `before`.
pub fn assert_unchanged(path: &Path, before: &Snapshot) {
    let now = snapshot(path);
    assert!(
        now == *before,
        "{} changed on the host:\nbefore: {} {:?} mode {:o} mtime {:?}\n{}\nafter:  {} {:?} mode {:o} mtime {:?}\n{}",
        path.display(),
        before.kind,
        before.ino,
        before.mode,
        before.mtime,
        String::from_utf8_lossy(&before.content),
        now.kind,
        now.ino,
        now.mode,
        now.mtime,
        String::from_utf8_lossy(&now.content)
    );
}

pub fn assert_not_exists(path: &Path) {
    assert!(
        fs::symlink_metadata(path).is_err(),
        "{} exists on the host but must not",
        path.display()
    );
}

// ---------------------------------------------------------------------------------
// Processes on the host
// ---------------------------------------------------------------------------------

/// The argv of process `pid` (empty for kernel threads and zombies).
pub fn argv_of(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Host processes whose argv contains `word` as one whole argument.
pub fn procs_with_arg(word: &str) -> Vec<(u32, Vec<String>)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let argv = argv_of(pid);
        if argv.iter().any(|a| a == word) {
            found.push((pid, argv));
        }
    }
    found
}

/// Polls until no host process has `word` as an argument, at most `within`.
/// Returns the survivors (empty when all are gone).
pub fn wait_gone(word: &str, within: Duration) -> Vec<(u32, Vec<String>)> {
    let start = Instant::now();
    loop {
        let left = procs_with_arg(word);
        if left.is_empty() || start.elapsed() > within {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until a host process has `word` as an argument, at most `within`.
pub fn wait_present(word: &str, within: Duration) -> Vec<(u32, Vec<String>)> {
    let start = Instant::now();
    loop {
        let found = procs_with_arg(word);
        if !found.is_empty() || start.elapsed() > within {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills leftover processes (after a test found some), so one failure does not
/// leak into other tests.
pub fn kill_all(procs: &[(u32, Vec<String>)]) {
    for (pid, _) in procs {
        if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The host process state letter of `pid` (R, S, T, t, Z ...), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

// ---------------------------------------------------------------------------------
// Pseudo-terminals
// ---------------------------------------------------------------------------------

/// A pseudo-terminal opened by the test: the master stays with the test, the slave
/// becomes a child's controlling terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// Everything read from the master so far.
    pub seen: Vec<u8>,
}

impl Pty {
    pub fn open(rows: u16, cols: u16) -> Pty {
        let mut master: RawFd = -1;
        let mut slave: RawFd = -1;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the live locals and reads the
        // window size from one; the NULL name and termios ask it for nothing else.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both are open descriptors that nothing
        // else owns: each is owned here once.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let cloexec = rustix::io::FdFlags::CLOEXEC;
        rustix::io::fcntl_setfd(&master, cloexec).expect("FD_CLOEXEC on the pty master");
        rustix::io::fcntl_setfd(&slave, cloexec).expect("FD_CLOEXEC on the pty slave");
        Pty {
            master,
            slave,
            seen: Vec::new(),
        }
    }

    /// Gives the slave to `user` (as a login would), so the user's programs may use it.
    pub fn give_to(&self, user: &User) {
        if running_as_root() {
            let _ = rustix::fs::fchown(
                &self.slave,
                Some(rustix::process::Uid::from_raw(user.uid)),
                Some(rustix::process::Gid::from_raw(user.gid)),
            );
        }
    }

    /// Makes `cmd` run on the slave: stdin/stdout/stderr, a new session, and the slave
    /// as its controlling terminal.
    pub fn attach(&self, cmd: &mut Command) {
        let stdio = || Stdio::from(self.slave.try_clone().expect("dup the pty slave"));
        cmd.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: the closure runs in the forked child before exec and makes two
        // system calls only: no allocation, no lock another thread could hold.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                Ok(())
            });
        }
    }

    pub fn send(&self, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            let n = rustix::io::write(&self.master, &bytes[off..]).expect("write to pty master");
            assert!(n > 0, "write to pty master: nothing written");
            off += n;
        }
    }

    /// Reads what is available within `wait` (at least one poll).
    /// Returns false when the master reports end of file (every slave closed).
    pub fn pump(&mut self, wait: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut pfd = [PollFd::new(&self.master, PollFlags::IN)];
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        if !matches!(rustix::event::poll(&mut pfd, Some(&timeout)), Ok(n) if n > 0) {
            return true;
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(n) if n > 0 => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads until `needle` appears in the output after byte offset `from`; returns
    /// the offset just past it. Panics (with the transcript) after `timeout`.
    pub fn expect_from(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = find(&self.seen[from.min(self.seen.len())..], needle.as_bytes()) {
                return from + i + needle.len();
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                panic!(
                    "terminal: {needle:?} did not appear within {timeout:?}; transcript after offset {from}:\n{}",
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
                );
            }
            if !self.pump(left.min(Duration::from_millis(100))) {
                panic!(
                    "terminal closed before {needle:?} appeared; transcript:\n{}",
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
                );
            }
        }
    }

    /// Reads until the end of the output is `needle` (a prompt waiting for input).
    pub fn expect_end(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let tail = &self.seen[from.min(self.seen.len())..];
            if tail.ends_with(needle.as_bytes()) {
                return self.seen.len();
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                panic!(
                    "terminal: output did not end with {needle:?} within {timeout:?}; transcript:\n{}",
                    String::from_utf8_lossy(tail)
                );
            }
            if !self.pump(left.min(Duration::from_millis(100))) {
                panic!(
                    "terminal closed before {needle:?}; transcript:\n{}",
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
                );
            }
        }
    }

    /// Drains output until the master reports end of file or `timeout` passes.
    pub fn drain(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if !self.pump(Duration::from_millis(50)) {
                return;
            }
        }
    }

    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes waiting in a terminal's input queue (FIONREAD on the slave).
pub fn tty_input_pending(fd: &OwnedFd) -> i32 {
    rustix::io::ioctl_fionread(fd).expect("FIONREAD") as i32
}

/// Runs a closure when dropped, also when the test panics: host clean-up that must
/// happen even after a failed assertion (files an escape may have made, mounts,
/// kernel settings to put back).
pub struct Defer<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
