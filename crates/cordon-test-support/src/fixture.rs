//! A test's fixture for one user (a home holding secrets, a workspace, a
//! directory outside it) and cordon run in it, against the backend
//! `$CORDON_TEST_BACKEND` names.

use crate::process::{Output, PATH, RUN_DEADLINE, run_cmd};
use crate::random::random_hex;
use crate::users::{User, euid, running_as_root, users};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
    // Added with the second list (issue 11 class 7's variations).
    ".aliyun/config.json",
    ".config/scw/config.yaml",
    ".config/openstack/clouds.yaml",
    ".config/doctl/config.yaml",
    ".config/hcloud/cli.toml",
    ".config/linode-cli",
    ".pulumi/credentials.json",
    ".minikube/profiles/minikube/client.key",
    ".tsh/keys/proxy/user",
    ".talos/config",
    ".cloudflared/cert.pem",
    ".wrangler/config/default.toml",
    ".config/.wrangler/config/default.toml",
    ".fly/config.yml",
    ".config/netlify/config.json",
    ".local/share/com.vercel.cli/auth.json",
    ".config/helm/repositories.yaml",
    ".config/helm/registry/config.json",
    ".config/ngrok/ngrok.yml",
    ".ngrok2/ngrok.yml",
    ".config/stripe/config.toml",
    ".sentryclirc",
    ".config/glab-cli/config.yml",
    ".config/tea/config.yml",
    ".git-credential-cache/socket",
    ".cache/git/credential/socket",
    ".yarnrc.yml",
    ".bunfig.toml",
    ".config/pip/pip.conf",
    ".pip/pip.conf",
    ".databrickscfg",
    ".snowflake/connections.toml",
    ".dbt/profiles.yml",
    ".mc/config.json",
    ".kaggle/kaggle.json",
    ".huggingface/token",
    ".cache/huggingface/token",
    ".cache/huggingface/stored_tokens",
    ".pki/nssdb/key4.db",
    ".thunderbird/p.default/logins.json",
    ".ipython/profile_default/history.sqlite",
    ".local/share/atuin/key",
    ".claude.json",
    ".codex/auth.json",
    ".gemini/oauth_creds.json",
    ".config/github-copilot/apps.json",
];

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
/// the binary; else it is the one cargo built for the cordon package's tests.
/// Gives SIGINT and SIGQUIT their default action in the test process, and so in
/// every cordon it starts: a shell without job control starts a background job
/// with both ignored, which cordon and its command inherit, and then the tests
/// that send SIGINT to cordon see it ignored (as it rightly is).
fn default_interrupt_signals() {
    for signal in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: setting a signal's disposition to SIG_DFL installs no handler
        // and touches no memory of this process; the old disposition is dropped.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

pub fn cordon_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        default_interrupt_signals();
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
        // tests can fail, against something that does not sandbox at all). Else the
        // binary cargo built for the tests of the cordon package: cargo names it in
        // CARGO_BIN_EXE_cordon when it runs them (as env! reads it when it builds them).
        let source = ["CORDON_TEST_BIN", "CARGO_BIN_EXE_cordon"]
            .into_iter()
            .find_map(std::env::var_os)
            .map(PathBuf::from)
            .expect(
                "no cordon binary to test: run the suite with `cargo test -p cordon`, or name one in CORDON_TEST_BIN",
            );
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
        if crate::process::in_vm() {
            fx.link_vm_boot_files();
        }
        fx
    }

    /// With the VM backend: this user's boot files and template, made once by
    /// `cordon vm setup` into a cache shared by the tests, hard-linked into the
    /// fixture's own cache (`~/.cache/cordon/vm`). Else every fixture's first
    /// run would assemble them and boot cold (seconds under TCG) and say so on
    /// stderr, which the tests of the streams would read as the command's.
    fn link_vm_boot_files(&self) {
        static MADE: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let shared = base_dir().join(format!("vm-boot-files-{}", self.user.label()));
        let dir = shared.join("cache/cordon/vm");
        {
            let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
            if !made.contains(&self.user.label()) {
                fs::create_dir_all(shared.join("cache")).unwrap();
                fs::create_dir_all(shared.join("home")).unwrap();
                self.chown_tree(&shared);
                // `vm setup` runs a session of the user's defaults, which makes
                // the managed caches' mount points in its home: a home of its
                // own keeps this fixture's home as its test expects it.
                let mut cmd = self.cordon_cmd(&["vm", "setup"]);
                cmd.env("XDG_CACHE_HOME", shared.join("cache"));
                cmd.env("HOME", shared.join("home"));
                let out = run_cmd(cmd, None, std::time::Duration::from_secs(300));
                out.assert_success();
                made.push(self.user.label());
            }
        }
        let into = self.home.join(".cache/cordon/vm");
        fs::create_dir_all(&into).unwrap();
        for e in fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                fs::hard_link(e.path(), into.join(e.file_name())).unwrap();
            }
        }
        self.chown_tree(&self.home.join(".cache"));
    }

    /// The content of secret `rel` (contains the marker). pip's files stay valid
    /// ini, so that pip on the host (the controls) still starts.
    pub fn secret_content(&self, rel: &str) -> String {
        if rel.ends_with("pip.conf") {
            format!("[global]\n# {}:{rel}\n", self.marker)
        } else {
            format!("{}:{rel}\n", self.marker)
        }
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
        // The backend every suite runs against: the VM rerun runs the same
        // attacks and functional tests in the VM backend.
        let backend = crate::process::test_backend();
        if backend != "os" {
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
