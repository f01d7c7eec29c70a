//! `cordon pi`: the whole pi agent inside the sandbox, its credentials outside.
//!
//! pi's config dir is visible read-only, its `sessions/` read-write, `auth.json`
//! hidden. Every LLM credential pi would use — provider keys in the environment,
//! keys and OAuth tokens in `auth.json`, keys `models.json` names or holds — becomes
//! a broker secret scoped to its provider's hosts; inside, pi sees placeholders
//! (in its environment, and in copies of `models.json` and `auth.json` laid over
//! the real ones). The providers pi is configured for are allowed on the network.

use super::run::{execute_in, home_dir, resolve_policy_with};
use crate::cli::RunOptions;
use cordon_net::SandboxSide;
use cordon_policy::{NetMode, Policy};
use cordon_sandbox::{Command, FileOverlay, Terminal};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How to install pi, for the message when it is missing.
const INSTALL_HINT: &str = "npm install -g @earendil-works/pi-coding-agent";

/// Providers pi knows: its id, the environment variables it takes a key from
/// (pi-ai's env-api-keys), and the hosts its API (and sign-in) lives at.
const PROVIDERS: &[(&str, &[&str], &[&str])] = &[
    (
        "anthropic",
        &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_OAUTH_TOKEN",
            "ANTHROPIC_AUTH_TOKEN",
        ],
        &["api.anthropic.com", "console.anthropic.com"],
    ),
    ("openai", &["OPENAI_API_KEY"], &["api.openai.com"]),
    (
        "google",
        &["GEMINI_API_KEY"],
        &["generativelanguage.googleapis.com"],
    ),
    ("openrouter", &["OPENROUTER_API_KEY"], &["openrouter.ai"]),
    ("groq", &["GROQ_API_KEY"], &["api.groq.com"]),
    ("mistral", &["MISTRAL_API_KEY"], &["api.mistral.ai"]),
    ("xai", &["XAI_API_KEY"], &["api.x.ai"]),
    ("deepseek", &["DEEPSEEK_API_KEY"], &["api.deepseek.com"]),
    ("cerebras", &["CEREBRAS_API_KEY"], &["api.cerebras.ai"]),
    ("huggingface", &["HF_TOKEN"], &["router.huggingface.co"]),
    ("fireworks", &["FIREWORKS_API_KEY"], &["api.fireworks.ai"]),
    ("together", &["TOGETHER_API_KEY"], &["api.together.ai"]),
    ("zai", &["ZAI_API_KEY"], &["api.z.ai"]),
    ("moonshotai", &["MOONSHOT_API_KEY"], &["api.moonshot.ai"]),
    ("minimax", &["MINIMAX_API_KEY"], &["api.minimax.io"]),
    ("nvidia", &["NVIDIA_API_KEY"], &["integrate.api.nvidia.com"]),
    (
        "vercel-ai-gateway",
        &["AI_GATEWAY_API_KEY"],
        &["ai-gateway.vercel.sh"],
    ),
    ("opencode", &["OPENCODE_API_KEY"], &["opencode.ai"]),
    ("kimi-coding", &["KIMI_API_KEY"], &["api.kimi.com"]),
    (
        "github-copilot",
        &["COPILOT_GITHUB_TOKEN"],
        &[
            "api.githubcopilot.com",
            "*.githubcopilot.com",
            "copilot-proxy.githubusercontent.com",
            "api.github.com",
            "github.com",
        ],
    ),
    ("openai-codex", &[], &["chatgpt.com", "auth.openai.com"]),
    (
        "google-gemini-cli",
        &[],
        &["cloudcode-pa.googleapis.com", "oauth2.googleapis.com"],
    ),
];

/// The fields of an auth.json entry that are not credentials: its kind, when its
/// token expires, and names a provider's login records (Google's project, the
/// account's e-mail, a GitHub Enterprise host). Every other string is one.
const AUTH_PLAIN_FIELDS: &[&str] = &["type", "expires", "projectId", "email", "enterpriseUrl"];

fn provider_hosts(id: &str) -> Option<Vec<String>> {
    PROVIDERS
        .iter()
        .find(|(p, _, _)| *p == id)
        .map(|(_, _, hosts)| hosts.iter().map(|h| h.to_string()).collect())
}

/// What `cordon pi` adds to a run, worked out before its policy: pi's config
/// dir, the credentials found in it and the environment, and the rules for them.
pub struct PiSetup {
    /// pi's real config dir (canonical).
    agent_dir: PathBuf,
    /// pi's config dir inside: one made for the run (see [`run_dir`]).
    run_dir: PathBuf,
    /// node's compile cache for sandboxed pi runs.
    compile_cache: PathBuf,
    found: Found,
    /// What pi needs that lies below `/tmp` (its install, node, its config dir),
    /// shown read-only in the sandbox's private `/tmp`, each with the reason.
    shown: Vec<(PathBuf, String)>,
    /// pi's own settings in cordon's environment, passed to pi.
    pi_env: Vec<String>,
    /// Removes the run's config dir when the setup is dropped, however the run
    /// ends (`None` when nothing was made on the host).
    _run_dir_removal: Option<RemoveOnDrop>,
}

/// The name of a run's overlay dir in $TMPDIR, before its PID.
const OVERLAY_DIR_PREFIX: &str = "cordon-pi-";

/// A directory of one run's, removed with what it holds when this is dropped, so
/// that every way out of `cordon pi` (an error or the end of the run) cleans up.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the dirs named `PREFIX<pid>` in `parent` whose run has ended without
/// cleaning up (cordon killed by SIGKILL, or the machine reset): no process of that
/// PID is alive. A live process that reused the PID keeps its dir, which is harmless.
fn remove_stale_run_dirs(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl PiSetup {
    /// Finds pi's config dir and credentials. With `prepare`, also makes what a
    /// run needs on the host (the sessions dir, the run's config dir, the cache).
    pub fn gather(prepare: bool) -> Result<PiSetup, String> {
        let home = home_dir()?;
        let custom_dir = std::env::var_os("PI_CODING_AGENT_DIR").filter(|d| !d.is_empty());
        // (Inside, PI_CODING_AGENT_DIR names the run's own config dir, see below.)
        let agent_dir = agent_dir(&home, custom_dir.as_deref());
        let sessions = agent_dir.join("sessions");
        if prepare {
            std::fs::create_dir_all(&sessions).map_err(|e| {
                format!(
                    "cannot create pi's sessions dir {}: {e}",
                    sessions.display()
                )
            })?;
        }
        let agent_dir = agent_dir.canonicalize().unwrap_or(agent_dir);
        let found = Found::gather(&agent_dir, |name| std::env::var(name).ok());
        let cache = cordon_net::Dirs::from_env(&home).cache.join("pi");
        // pi turns on node's compile cache, kept in $TMPDIR: the sandbox's /tmp is
        // new every run, and compiling pi afresh costs more than the whole sandbox.
        // A cache of cordon's own, shared only by sandboxed pi runs (never the
        // host's node).
        let mut compile_cache = cache.join("node-compile-cache");
        // pi locks its config files by making `<file>.lock` directories next to
        // them, so it needs a writable config dir: inside, its config dir is one
        // made for this run, of symlinks to the real entries (which stay
        // read-only, but for sessions/), where the locks and pi's caches land and
        // are dropped after.
        let mut run_dir = cache.join(format!("agent-{}", std::process::id()));
        let mut run_dir_removal = None;
        if prepare {
            remove_stale_run_dirs(&cache, "agent-");
            remove_stale_run_dirs(&std::env::temp_dir(), OVERLAY_DIR_PREFIX);
            run_dir_removal = Some(RemoveOnDrop(run_dir.clone()));
            run_dir = make_run_dir(&run_dir, &agent_dir)?;
            for (hidden, _) in &found.hidden {
                if !found.files.iter().any(|(t, _)| t == hidden)
                    && let Some(name) = hidden.file_name()
                {
                    // No copy to show (none, or unreadable): pi sees none.
                    let _ = std::fs::remove_file(run_dir.join(name));
                }
            }
            if std::fs::create_dir_all(&compile_cache).is_ok() {
                compile_cache = compile_cache.canonicalize().unwrap_or(compile_cache);
            }
        }
        let pi_env: Vec<String> = PI_SETTINGS
            .iter()
            .filter(|name| std::env::var_os(name).is_some())
            .map(|name| name.to_string())
            .collect();
        let mut needed = vec![(agent_dir.clone(), "pi's config dir".to_string())];
        if let Ok(program) = find_pi() {
            needed.extend(program_paths(&program));
        }
        if let Some(dir) = std::env::var_os("PI_PACKAGE_DIR").filter(|d| !d.is_empty()) {
            needed.push((PathBuf::from(dir), "PI_PACKAGE_DIR, pi's package".into()));
        }
        Ok(PiSetup {
            agent_dir,
            run_dir,
            compile_cache,
            found,
            shown: below_tmp(needed),
            pi_env,
            _run_dir_removal: run_dir_removal,
        })
    }

    /// The rules `cordon pi` adds to the policy, each with its reason.
    pub fn mode(&self) -> cordon_policy::PiMode {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let config_dir = "pi's config dir for this run".to_string();
        let cache = "node's compile cache for sandboxed pi".to_string();
        let mut mode = cordon_policy::PiMode {
            allow_write: vec![
                (
                    self.agent_dir.join("sessions"),
                    "pi's sessions, kept on the host".to_string(),
                ),
                (self.run_dir.clone(), config_dir.clone()),
            ],
            allow_read: self.shown.clone(),
            deny_read: self.found.hidden.clone(),
            home_visible: vec![(
                self.agent_dir.clone(),
                "pi's config dir (its entries in the run's config dir link there)".to_string(),
            )],
            env: vec![(
                format!("PI_CODING_AGENT_DIR={}", text(&self.run_dir)),
                config_dir,
            )],
            ..Default::default()
        };
        for name in &self.pi_env {
            mode.env.push((
                name.clone(),
                "pi's own setting, from the environment".into(),
            ));
        }
        if self.compile_cache.is_dir() {
            mode.allow_write
                .push((self.compile_cache.clone(), cache.clone()));
            mode.env.push((
                format!("NODE_COMPILE_CACHE={}", text(&self.compile_cache)),
                cache,
            ));
        }
        for (name, secret) in &self.found.secrets {
            let hosts: Vec<&str> = secret.hosts.iter().map(String::as_str).collect();
            mode.secret
                .push((format!("{name}={}", hosts.join(",")), secret.why.clone()));
        }
        for (domain, why) in &self.found.domains {
            mode.allow_domain.push((domain.clone(), why.clone()));
        }
        mode
    }

    /// What pi needs below `/tmp` that the policy hides (a rule of the user's
    /// denying a directory above it): pi cannot run then.
    fn check_shown(&self, policy: &Policy) -> Result<(), String> {
        for (path, why) in &self.shown {
            let hiding = policy
                .rules
                .iter()
                .filter(|r| path.starts_with(&r.path) && r.path != *path)
                .max_by_key(|r| r.path.components().count())
                .filter(|r| r.access == cordon_policy::Access::Deny);
            if let Some(rule) = hiding {
                return Err(format!(
                    "{why} ({}) is in {}, which the policy hides ({}), so pi cannot run inside (hint: drop that rule, or move it elsewhere)",
                    path.display(),
                    rule.path.display(),
                    rule.origin
                ));
            }
        }
        Ok(())
    }

    /// The warnings found while reading pi's config, and one for each local
    /// provider the policy does not let through.
    pub fn warnings(&self, policy: &Policy) -> Vec<String> {
        let mut warnings = self.found.warnings.clone();
        if std::env::var_os("PI_CODING_AGENT_SESSION_DIR").is_some() {
            warnings.push(format!(
                "PI_CODING_AGENT_SESSION_DIR is not passed to pi: inside, pi keeps its sessions in {}, the one dir of pi's it may write",
                self.agent_dir.join("sessions").display()
            ));
        }
        if policy.net.value == NetMode::Host {
            return warnings;
        }
        for (id, addr) in &self.found.locals {
            let allowed = cordon_policy::parse_local_service(addr).is_ok_and(|a| {
                policy.network.local.iter().any(|l| l.addr == a)
                    && policy.net.value == NetMode::Allowlist
            });
            if !allowed {
                warnings.push(format!(
                    "pi's provider {id:?} (models.json) is at {addr}, on this machine, which the sandbox cannot reach (hint: pass --allow-local {addr}, or add \"{addr}\" to \"allow_local\" in your config)"
                ));
            }
        }
        warnings
    }
}

pub fn pi(options: &RunOptions, args: Vec<OsString>) -> Result<u8, String> {
    let program = find_pi()?;
    let setup = PiSetup::gather(true)?;
    let policy = resolve_policy_with(options, Some(setup.mode()))?;
    for warning in setup.warnings(&policy) {
        eprintln!("cordon: warning: {warning}");
    }
    let found = &setup.found;
    setup.check_shown(&policy)?;
    if policy.access_for(&program) == cordon_policy::Access::Deny {
        return Err(format!(
            "pi ({}) is in a path the policy hides, so it cannot run inside (hint: install pi elsewhere: {INSTALL_HINT})",
            program.display()
        ));
    }

    let overlay_dir = RemoveOnDrop(
        std::env::temp_dir().join(format!("{OVERLAY_DIR_PREFIX}{}", std::process::id())),
    );
    let overlay_dir = &overlay_dir.0;
    let write_overlays =
        |placeholder: &dyn Fn(&str) -> String| -> Result<Vec<FileOverlay>, String> {
            let mut overlays = Vec::new();
            if found.files.is_empty() {
                return Ok(overlays);
            }
            std::fs::create_dir_all(overlay_dir)
                .map_err(|e| format!("cannot create {}: {e}", overlay_dir.display()))?;
            for (target, content) in &found.files {
                let mut text = content.clone();
                for name in found.secrets.keys().chain(found.redacted.iter()) {
                    text = text.replace(&token(name), &placeholder(name));
                }
                let name = target.file_name().unwrap_or_default();
                let source = overlay_dir.join(name);
                std::fs::write(&source, &text)
                    .map_err(|e| format!("cannot write {}: {e}", source.display()))?;

                let source = source.canonicalize().unwrap_or(source);
                // The copy also sits on the run's config dir's symlink itself: pi
                // 1.x locks a file beside its real path (`auth.json.lock`), which
                // must be the writable run dir, not the read-only real config dir.
                overlays.push(FileOverlay {
                    source: source.clone(),
                    target: setup.run_dir.join(name),
                });
                overlays.push(FileOverlay {
                    source,
                    target: target.clone(),
                });
            }
            Ok(overlays)
        };
    let values = |name: &str| {
        found
            .secrets
            .get(name)
            .map(|s| s.value.clone())
            .or_else(|| std::env::var(name).ok())
    };
    let synthetic: BTreeSet<String> = found
        .secrets
        .iter()
        .filter(|(_, s)| s.synthetic)
        .map(|(n, _)| n.clone())
        .collect();
    let interactive = unsafe { libc::isatty(libc::STDIN_FILENO) == 1 };
    // pi's screen is on the terminal cordon's stderr shares: a refusal printed
    // during the run would be drawn over it, so the refusals wait for its end.
    let held = (interactive && unsafe { libc::isatty(libc::STDERR_FILENO) == 1 })
        .then(cordon_net::audit::HeldNotices::default);
    let mut file_overlays = None;
    let egress = super::egress::additions_with(&policy, false, held.clone(), values, |side| {
        let placeholders = |name: &str| {
            side_value(side, name).unwrap_or_else(|| "cordon-secret-unavailable".to_string())
        };
        let overlays = write_overlays(&placeholders)?;
        side.env.retain(|(name, _)| !synthetic.contains(name));
        file_overlays = Some(overlays);
        Ok(())
    })?;
    let overlays = match file_overlays {
        Some(o) => o,
        // No broker (--net none or host): the files still must not show the keys.
        None => write_overlays(&|_| "cordon-secret-unavailable".to_string())?,
    };
    let mut additions = egress.additions;
    additions.files.extend(overlays);

    let command = Command {
        program: program.into_os_string(),
        args,
        cwd: None,
        terminal: if interactive {
            Terminal::Pty
        } else {
            Terminal::Inherit
        },
    };
    let status = execute_in(options, &policy, command, additions, &egress.status);
    if let Some(held) = held {
        let refused = held.take();
        if !refused.is_empty() {
            let log = cordon_net::Dirs::from_env(&policy.home).audit_log();
            eprintln!(
                "cordon: while pi ran, {}; each decision is in the audit log {}",
                refused.join("; "),
                log.display()
            );
        }
    }
    status
}

/// A fresh directory `dir` for pi's config dir inside the sandbox: a symlink to
/// every entry of the real one.
fn make_run_dir(dir: &Path, agent_dir: &Path) -> Result<PathBuf, String> {
    let dir = dir.to_path_buf();
    let fail = |e: std::io::Error| format!("cannot make pi's config dir {}: {e}", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(fail)?;
    if let Ok(entries) = std::fs::read_dir(agent_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".lock") {
                continue;
            }
            std::os::unix::fs::symlink(agent_dir.join(&name), dir.join(&name)).map_err(fail)?;
        }
    }
    Ok(dir.canonicalize().unwrap_or(dir))
}

fn side_value(side: &SandboxSide, name: &str) -> Option<String> {
    side.env
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// `$CORDON_PI`, else `pi` on PATH, with its symlinks followed.
fn find_pi() -> Result<PathBuf, String> {
    if let Some(pi) = std::env::var_os("CORDON_PI").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(&pi);
        return path.canonicalize().map_err(|e| {
            format!(
                "CORDON_PI={} cannot be used: {e} (hint: point it at pi's executable, or unset it and install pi: {INSTALL_HINT})",
                path.display()
            )
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("pi"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| {
            format!(
                "pi is not on PATH (hint: install it with `{INSTALL_HINT}`, or set CORDON_PI to its executable)"
            )
        })
}

/// pi's own settings (its docs' environment-variables.md, and what 0.87 and 1.x
/// read from `process.env`), passed to pi from cordon's environment: none holds a
/// credential. Not among them: PI_CODING_AGENT_DIR (inside, it names the run's
/// config dir), PI_CODING_AGENT_SESSION_DIR (pi may write its sessions only in
/// its config dir's sessions/), and the variables pi sets for the commands it
/// runs (PI_SESSION_ID, PI_SESSION_FILE, PI_PROVIDER, PI_MODEL, ...).
const PI_SETTINGS: &[&str] = &[
    "PI_OFFLINE",
    "PI_SKIP_VERSION_CHECK",
    "PI_TELEMETRY",
    "PI_PACKAGE_DIR",
    "PI_SELF_UPDATE_COMMAND",
    "PI_CODEMODE_MAX_WORKERS",
    "PI_CACHE_RETENTION",
    "PI_SHARE_VIEWER_URL",
    "PI_RADIUS_GATEWAY",
    "PI_CLEAR_ON_SHRINK",
    "PI_HARDWARE_CURSOR",
    "PI_CLIPBOARD_OSC52",
    "PI_HYPERLINKS",
    "PI_PROGRAM_STATUS",
    "PI_IMAGE_PROTOCOL",
    "PI_TRUE_COLOR",
    "PI_TUI_ESC_TIMEOUT",
    "PI_TUI_WRITE_LOG",
    "PI_TUI_DEBUG",
    "PI_TUI_DEBUG_REDRAW",
    "PI_EXPERIMENTAL",
    "PI_TIMING",
    "PI_STARTUP_BENCHMARK",
    "PI_OAUTH_CALLBACK_HOST",
];

/// What running `program` (pi, canonical) needs to see: its package (the whole
/// `node_modules` tree it lies in, where its dependencies are), and the
/// interpreter its `#!` line names, found in PATH when through `env`: the PATH
/// directory it is found in, and its own package or directory.
fn program_paths(program: &Path) -> Vec<(PathBuf, String)> {
    let mut paths = vec![(package_of(program), "pi's package".to_string())];
    let Some(words) = shebang(program) else {
        return paths;
    };
    let mut words = words.iter().map(String::as_str);
    let Some(interpreter) = words.next() else {
        return paths;
    };
    let found = if Path::new(interpreter).file_name() == Some("env".as_ref()) {
        let Some(name) = words.find(|w| !w.starts_with('-') && !w.contains('=')) else {
            return paths;
        };
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    } else {
        Some(PathBuf::from(interpreter))
    };
    if let Some(found) = found {
        let why = format!("pi's interpreter ({})", found.display());
        if let Some(dir) = found.parent().and_then(|d| d.canonicalize().ok()) {
            paths.push((dir, why.clone()));
        }
        if let Ok(real) = found.canonicalize() {
            paths.push((package_of(&real), why));
        }
    }
    paths
}

/// The words of `file`'s `#!` line, if it has one.
fn shebang(file: &Path) -> Option<Vec<String>> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(file).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    Some(
        String::from_utf8_lossy(line)
            .split_whitespace()
            .map(String::from)
            .collect(),
    )
}

/// The outermost `node_modules` directory `file` lies in, else its directory.
fn package_of(file: &Path) -> PathBuf {
    file.ancestors()
        .filter(|a| a.file_name() == Some("node_modules".as_ref()))
        .last()
        .or_else(|| file.parent())
        .unwrap_or(file)
        .to_path_buf()
}

/// Of `paths`, those below `/tmp`, which the sandbox replaces with a private one
/// (elsewhere the host is visible read-only as the policy says), canonical, and
/// none inside another.
fn below_tmp(paths: Vec<(PathBuf, String)>) -> Vec<(PathBuf, String)> {
    let tmp = Path::new("/tmp")
        .canonicalize()
        .unwrap_or_else(|_| "/tmp".into());
    let mut shown: Vec<(PathBuf, String)> = paths
        .into_iter()
        .filter_map(|(p, why)| Some((p.canonicalize().ok()?, why)))
        .filter(|(p, _)| p.starts_with(&tmp) && *p != tmp)
        .collect();
    shown.sort();
    let mut kept: Vec<(PathBuf, String)> = Vec::new();
    for (path, why) in shown {
        if !kept.iter().any(|(k, _)| path.starts_with(k)) {
            kept.push((path, why));
        }
    }
    kept
}

/// pi's config dir: `$PI_CODING_AGENT_DIR` (a leading `~` is home), else `~/.pi/agent`
/// (the policy protects the same one where a writable root holds it).
fn agent_dir(home: &Path, custom: Option<&std::ffi::OsStr>) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    cordon_policy::pi_agent_dir(home, custom.map(Path::new), &cwd)
}

/// The marker left in a rewritten config file where a secret's placeholder goes.
fn token(name: &str) -> String {
    format!("@@cordon-pi:{name}@@")
}

/// One secret for the broker.
#[derive(Debug)]
struct FoundSecret {
    value: String,
    /// Host patterns (no ports).
    hosts: BTreeSet<String>,
    /// A name cordon made up (the value is from a file): not in pi's environment.
    synthetic: bool,
    /// Where it was found, for `cordon policy --pi`.
    why: String,
}

/// What pi's environment and config dir need from the sandbox.
#[derive(Debug, Default)]
struct Found {
    secrets: BTreeMap<String, FoundSecret>,
    /// Values hidden without a secret (no host to scope them to).
    redacted: BTreeSet<String>,
    /// Domain patterns to allow (with a port where the URL has one), each with
    /// the reason.
    domains: BTreeMap<String, String>,
    /// Providers on this machine or at an address: id, `HOST:PORT` as
    /// `--allow-local` takes it.
    locals: Vec<(String, String)>,
    /// Config files to lay over the real ones: target path, content with tokens.
    files: Vec<(PathBuf, String)>,
    /// Files of pi's config dir hidden inside, each with the reason (a copy in
    /// `files` may be laid over one).
    hidden: Vec<(PathBuf, String)>,
    warnings: Vec<String>,
    /// The provider being read, for the reasons of what it adds.
    why: String,
}

impl Found {
    fn gather(agent_dir: &Path, env: impl Fn(&str) -> Option<String>) -> Found {
        let mut found = Found::default();
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        // Keys in the environment.
        for (provider, vars, hosts) in PROVIDERS {
            for var in *vars {
                if let Some(value) = env(var) {
                    found.why = format!("${var} in the environment, for provider {provider:?}");
                    found.secret(var, value, hosts.iter().map(|h| h.to_string()), false);
                    found.allow(provider, hosts.iter().map(|h| h.to_string()));
                }
            }
        }
        found.hidden.push((
            agent_dir.join("auth.json"),
            "pi's credentials (inside, a copy holding placeholders)".to_string(),
        ));
        found.hidden.push((
            agent_dir.join("mcp-auth.json"),
            "pi's sign-ins to MCP servers".to_string(),
        ));
        // The default provider of pi's settings.
        if let Some(settings) = read_json(&agent_dir.join("settings.json"), &mut found.warnings)
            && let Some(provider) = settings.get("defaultProvider").and_then(Value::as_str)
            && let Some(hosts) = provider_hosts(provider)
        {
            found.why = format!("defaultProvider {provider:?} in settings.json");
            found.allow(provider, hosts);
        }
        // models.json: custom providers and overrides of built-in ones.
        let models_path = agent_dir.join("models.json");
        let mut custom_hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(mut models) = read_json(&models_path, &mut found.warnings) {
            let mut changed = false;
            if let Some(providers) = models.get_mut("providers").and_then(Value::as_object_mut) {
                for (id, provider) in providers.iter_mut() {
                    found.why = format!("provider {id:?} in models.json");
                    let (hosts, domain, local) = match provider
                        .get("baseUrl")
                        .and_then(Value::as_str)
                    {
                        Some(url) => match url_host(url) {
                            Some((host, port)) if is_local(&host) => {
                                let port = port.unwrap_or(if url.starts_with("https:") {
                                    443
                                } else {
                                    80
                                });
                                let addr = if host.contains(':') {
                                    format!("[{host}]:{port}")
                                } else {
                                    format!("{host}:{port}")
                                };
                                (Vec::new(), None, Some((url.to_string(), host, addr)))
                            }
                            Some((host, port)) => {
                                let domain = match port {
                                    Some(p) => format!("{host}:{p}"),
                                    None => host.clone(),
                                };
                                (vec![host], Some(domain), None)
                            }
                            None => {
                                found.warnings.push(format!("{}: provider {id:?} has a baseUrl cordon cannot read ({url:?}); allow its host with --allow-domain", models_path.display()));
                                (Vec::new(), None, None)
                            }
                        },
                        None => (provider_hosts(id).unwrap_or_default(), None, None),
                    };
                    if let Some(domain) = domain {
                        found.domains.entry(domain).or_insert(found.why.clone());
                    } else if local.is_none() && !hosts.is_empty() {
                        found.allow(id, hosts.clone());
                    }
                    if let Some((url, host, addr)) = &local {
                        found.locals.push((id.clone(), addr.clone()));
                        // Inside, a local service is at 127.0.0.1:PORT.
                        if host != "127.0.0.1"
                            && let Some(inside) = with_host(url, host, "127.0.0.1")
                        {
                            provider["baseUrl"] = Value::String(inside);
                            changed = true;
                        }
                    }
                    custom_hosts.insert(id.clone(), hosts.clone());
                    let secret_name = format!("CORDON_PI_MODELS_{}", env_suffix(id));
                    let local = local.is_some();
                    if let Some(key) = provider.get_mut("apiKey") {
                        changed |= found.config_value(key, &secret_name, &hosts, local, &env);
                    }
                    // Header values, of the provider, its models and its overrides of
                    // built-in models: each resolved like apiKey.
                    let Some(fields) = provider.as_object_mut() else {
                        continue;
                    };
                    for (field, item) in fields.iter_mut() {
                        match field.as_str() {
                            "headers" => {
                                let name = format!("{secret_name}_H");
                                changed |= found.headers(item, &name, &hosts, local, &env);
                            }
                            "models" => {
                                for (i, model) in
                                    item.as_array_mut().into_iter().flatten().enumerate()
                                {
                                    if let Some(h) = model.get_mut("headers") {
                                        let name = format!("{secret_name}_M{i}_H");
                                        changed |= found.headers(h, &name, &hosts, local, &env);
                                    }
                                }
                            }
                            "modelOverrides" => {
                                for (model, o) in item.as_object_mut().into_iter().flatten() {
                                    if let Some(h) = o.get_mut("headers") {
                                        let name =
                                            format!("{secret_name}_O_{}_H", env_suffix(model));
                                        changed |= found.headers(h, &name, &hosts, local, &env);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            if changed {
                found.push_file(models_path, &models);
            }
        } else if models_path.symlink_metadata().is_ok() {
            // pi may read what cordon cannot: it is not shown to pi inside.
            found.warnings.push(format!("{} is hidden inside, since cordon cannot read it to keep its keys outside (hint: fix the file; `pi --list-models` outside shows what pi makes of it)", models_path.display()));
            found.hidden.push((
                models_path,
                "pi's models.json, which cordon cannot read".to_string(),
            ));
        }
        // auth.json: API keys and OAuth tokens pi stored at /login. Every string
        // of it is a credential, but an entry's type and a few names that are not.
        let auth_path = agent_dir.join("auth.json");
        if let Some(mut auth) = read_json(&auth_path, &mut found.warnings) {
            match auth.as_object_mut() {
                Some(entries) => {
                    for (id, entry) in entries.iter_mut() {
                        found.auth_entry(id, entry, &custom_hosts, &env);
                    }
                }
                None => {
                    found.why = "auth.json".to_string();
                    found.literal_tree(&mut auth, "CORDON_PI_AUTH", &[]);
                }
            }
            found.push_file(auth_path, &auth);
        }
        found
    }

    /// One provider's entry of auth.json.
    fn auth_entry(
        &mut self,
        id: &str,
        entry: &mut Value,
        custom_hosts: &BTreeMap<String, Vec<String>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        self.why = format!("provider {id:?} in auth.json");
        let hosts = custom_hosts
            .get(id)
            .filter(|h| !h.is_empty())
            .cloned()
            .or_else(|| provider_hosts(id))
            .unwrap_or_default();
        if hosts.is_empty() {
            self.warnings.push(format!("auth.json: cordon does not know the hosts of provider {id:?}; its credential is hidden and cannot be used inside (hint: name the provider's baseUrl in models.json)"));
        } else {
            self.allow(id, hosts.clone());
        }
        let base = format!("CORDON_PI_AUTH_{}", env_suffix(id));
        let Some(fields) = entry.as_object_mut() else {
            self.literal_tree(entry, &base, &hosts);
            return;
        };
        let kind = fields
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string);
        if kind.as_deref() == Some("oauth")
            && let Some(expires) = fields.get("expires").and_then(Value::as_f64)
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_millis() as f64);
            if expires <= now {
                self.warnings.push(format!("the OAuth token of {id:?} in auth.json has expired, and pi cannot refresh it inside the sandbox (hint: run pi once outside to refresh it, then cordon pi)"));
            }
        }
        for (field, value) in fields.iter_mut() {
            if AUTH_PLAIN_FIELDS.contains(&field.as_str()) {
                continue;
            }
            if kind.as_deref() == Some("api_key") && field == "key" {
                // pi resolves an API key like models.json's apiKey.
                self.config_value(value, &base, &hosts, false, env);
            } else {
                let name = format!("{base}_{}", env_suffix(field));
                self.literal_tree(value, &name, &hosts);
            }
        }
    }

    /// A `headers` object of models.json: each value resolved like an apiKey.
    fn headers(
        &mut self,
        headers: &mut Value,
        name: &str,
        hosts: &[String],
        local: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> bool {
        let Some(headers) = headers.as_object_mut() else {
            // Not what pi takes; whatever it holds stays outside.
            return !local && self.literal_tree(headers, name, &[]);
        };
        let mut changed = false;
        for (header, value) in headers.iter_mut() {
            let name = format!("{name}_{}", env_suffix(header));
            changed |= self.config_value(value, &name, hosts, local, env);
        }
        changed
    }

    fn allow(&mut self, _provider: &str, hosts: impl IntoIterator<Item = String>) {
        for host in hosts {
            self.domains.entry(host).or_insert_with(|| self.why.clone());
        }
    }

    fn secret(
        &mut self,
        name: &str,
        value: String,
        hosts: impl IntoIterator<Item = String>,
        synthetic: bool,
    ) {
        let entry = self
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| FoundSecret {
                value,
                hosts: BTreeSet::new(),
                synthetic,
                why: self.why.clone(),
            });
        entry.hosts.extend(hosts);
    }

    /// A value of pi's config (an API key or header value), read as pi reads it
    /// ([`ConfigValue`]). One whole `$NAME` stays in the copy and its variable
    /// becomes a secret (inside, the variable holds the placeholder); anything else
    /// that is credential-shaped never enters: a literal, or a template that mixes
    /// text and variables, becomes a secret of the value pi would send, and a
    /// `!command` (which cordon does not run) a placeholder no host accepts. Returns
    /// whether `value` changed.
    fn config_value(
        &mut self,
        value: &mut Value,
        name: &str,
        hosts: &[String],
        local: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> bool {
        let Some(text) = value.as_str().map(str::to_string) else {
            return false;
        };
        if local {
            // A local service: no host name to scope a secret to. Left as it is.
            return false;
        }
        match ConfigValue::parse(&text) {
            ConfigValue::Command(_) => {
                self.warnings.push(format!("pi's config gets a key from a command ({}: {name}); cordon runs no command of pi's config, on the host or inside, so that key is not available inside (hint: put the key in an environment variable and write \"$NAME\" in pi's config, or store it with pi's /login)", self.why));
                self.redact(value, name)
            }
            ConfigValue::Template(parts) => {
                if let [Part::Var(var)] = parts.as_slice() {
                    if let Some(v) = env(var)
                        && !hosts.is_empty()
                    {
                        self.secret(var, v, hosts.iter().cloned(), false);
                    }
                    return false;
                }
                if parts.iter().all(|p| matches!(p, Part::Literal(_))) {
                    // A bare name of a set variable is also what older pi versions read.
                    if cordon_policy::valid_env_name(&text)
                        && let Some(v) = env(&text)
                        && !hosts.is_empty()
                    {
                        self.secret(&text, v, hosts.iter().cloned(), false);
                    }
                }
                match ConfigValue::resolve(&parts, env) {
                    Some(resolved) => self.literal(value, name, resolved, hosts),
                    // pi sends no key when a variable is unset: neither does the copy.
                    None => self.redact(value, name),
                }
            }
        }
    }

    /// A literal credential `secret` held in `value`: a synthetic secret (or
    /// redacted when there are no hosts); the copy holds its token.
    fn literal(&mut self, value: &mut Value, name: &str, secret: String, hosts: &[String]) -> bool {
        if secret.is_empty() && value.as_str().is_some_and(str::is_empty) {
            return false;
        }
        if hosts.is_empty() || secret.is_empty() {
            return self.redact(value, name);
        }
        // Two credentials whose names differ only in punctuation (providers "a-b"
        // and "a_b") stay two secrets, each scoped to its own hosts.
        let mut unique = name.to_string();
        let mut n = 1;
        while self
            .secrets
            .get(&unique)
            .is_some_and(|s| s.value != secret || !s.synthetic || s.why != self.why)
            || self.redacted.contains(&unique)
        {
            n += 1;
            unique = format!("{name}_{n}");
        }
        self.secret(&unique, secret, hosts.iter().cloned(), true);
        *value = Value::String(token(&unique));
        true
    }

    /// `value` replaced in the copy by a placeholder no host accepts.
    fn redact(&mut self, value: &mut Value, name: &str) -> bool {
        let name = format!("{name}_REDACTED");
        self.redacted.insert(name.clone());
        *value = Value::String(token(&name));
        true
    }

    /// Every string in `value` (at any depth) is a credential: each becomes a
    /// literal secret named `name` (plus its key or index below the top).
    fn literal_tree(&mut self, value: &mut Value, name: &str, hosts: &[String]) -> bool {
        match value {
            Value::String(s) => {
                let secret = s.clone();
                self.literal(value, name, secret, hosts)
            }
            Value::Array(items) => {
                let mut changed = false;
                for (i, item) in items.iter_mut().enumerate() {
                    changed |= self.literal_tree(item, &format!("{name}_{i}"), hosts);
                }
                changed
            }
            Value::Object(fields) => {
                let mut changed = false;
                for (key, item) in fields.iter_mut() {
                    changed |=
                        self.literal_tree(item, &format!("{name}_{}", env_suffix(key)), hosts);
                }
                changed
            }
            _ => false,
        }
    }

    fn push_file(&mut self, path: PathBuf, value: &Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        self.files.push((path, text));
    }
}

fn read_json(path: &Path, warnings: &mut Vec<String>) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&strip_json_comments(text.trim_start_matches('\u{feff}'))) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!(
                "cannot read {}: {e}; cordon finds no credentials in it",
                path.display()
            ));
            None
        }
    }
}

/// A value of pi's config (an `apiKey`, a header value, an auth.json `key`), as
/// pi reads it (pi's resolve-config-value, the same in 0.87 and 1.x).
#[derive(Debug, PartialEq)]
enum ConfigValue {
    /// `!command`: pi runs the command and takes its output.
    Command(String),
    /// Literal text and `$NAME` / `${NAME}` variables; `$$` is `$` and `$!` is `!`.
    Template(Vec<Part>),
}

#[derive(Debug, PartialEq)]
enum Part {
    Literal(String),
    Var(String),
}

impl ConfigValue {
    fn parse(text: &str) -> ConfigValue {
        if let Some(command) = text.strip_prefix('!') {
            return ConfigValue::Command(command.to_string());
        }
        let mut parts: Vec<Part> = Vec::new();
        let literal = |parts: &mut Vec<Part>, s: &str| {
            if s.is_empty() {
                return;
            }
            match parts.last_mut() {
                Some(Part::Literal(l)) => l.push_str(s),
                _ => parts.push(Part::Literal(s.to_string())),
            }
        };
        let is_start = |c: char| c.is_ascii_alphabetic() || c == '_';
        let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal(&mut parts, &rest[..at]);
            let after = &rest[at + 1..];
            match after.chars().next() {
                Some(c @ ('$' | '!')) => {
                    literal(&mut parts, &c.to_string());
                    rest = &after[1..];
                }
                Some('{') => match after.find('}') {
                    Some(end) => {
                        let name = &after[1..end];
                        if name.starts_with(is_start) && name.chars().all(is_part) {
                            parts.push(Part::Var(name.to_string()));
                        } else {
                            literal(&mut parts, &rest[at..at + 2 + end]);
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        literal(&mut parts, "$");
                        rest = after;
                    }
                },
                Some(c) if is_start(c) => {
                    let len = after.find(|c: char| !is_part(c)).unwrap_or(after.len());
                    parts.push(Part::Var(after[..len].to_string()));
                    rest = &after[len..];
                }
                _ => {
                    literal(&mut parts, "$");
                    rest = after;
                }
            }
        }
        literal(&mut parts, rest);
        ConfigValue::Template(parts)
    }

    /// The value pi makes of a template with the environment `env`: `None` when a
    /// variable is unset or empty (pi then has no value).
    fn resolve(parts: &[Part], env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => out.push_str(&env(v).filter(|v| !v.is_empty())?),
            }
        }
        Some(out)
    }
}

/// `text` without what pi drops before parsing models.json: `//` comments, then
/// commas before a closing bracket, outside strings (pi's stripJsonComments).
fn strip_json_comments(text: &str) -> String {
    let comments = outside_strings(text, |rest| {
        rest.starts_with("//")
            .then(|| rest.find('\n').unwrap_or(rest.len()))
    });
    outside_strings(&comments, |rest| {
        (rest.starts_with(',') && rest[1..].trim_start().starts_with(['}', ']'])).then_some(1)
    })
}

/// `text` with the bytes `cut` names dropped: at each position outside a JSON
/// string, `cut(rest)` may say how many bytes of `rest` to drop.
fn outside_strings(text: &str, cut: impl Fn(&str) -> Option<usize>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while let Some(c) = text[i..].chars().next() {
        if in_string {
            if c == '\\' {
                let escaped = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&text[i..i + 1 + escaped]);
                i += 1 + escaped;
                continue;
            }
            in_string = c != '"';
        } else if c == '"' {
            in_string = true;
        } else if let Some(n) = cut(&text[i..]) {
            i += n;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// `https://host:port/path` → (host, port if given).
fn url_host(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let port = authority[end + 1..]
            .strip_prefix(':')
            .and_then(|p| p.parse().ok());
        return Some((authority[1..end].to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_ascii_lowercase(), Some(p.parse().ok()?))),
        None => Some((authority.to_ascii_lowercase(), None)),
    }
}

/// `url` with its host `host` replaced by `new` (the first occurrence after the
/// scheme, brackets of an IPv6 address included).
fn with_host(url: &str, host: &str, new: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let written = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let at = rest.to_ascii_lowercase().find(&written)?;
    Some(format!(
        "{scheme}://{}{new}{}",
        &rest[..at],
        &rest[at + written.len()..]
    ))
}

/// A host on this machine or a literal address: reached with `--allow-local`, no
/// name to scope a secret to.
fn is_local(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

fn env_suffix(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_urls() {
        use ConfigValue::{Command, Template};
        use Part::{Literal, Var};
        let lit = |s: &str| Literal(s.to_string());
        let var = |s: &str| Var(s.to_string());
        assert_eq!(ConfigValue::parse("$A_B"), Template(vec![var("A_B")]));
        assert_eq!(
            ConfigValue::parse("x${KEY}y$$z$OTHER"),
            Template(vec![lit("x"), var("KEY"), lit("y$z"), var("OTHER")])
        );
        assert_eq!(
            ConfigValue::parse("sk-literal"),
            Template(vec![lit("sk-literal")])
        );
        // pi's escapes and the `$`s it takes literally.
        assert_eq!(
            ConfigValue::parse("a$!b$1c${no-name}d${e"),
            Template(vec![lit("a!b$1c${no-name}d${e")])
        );
        assert_eq!(ConfigValue::parse("sk$"), Template(vec![lit("sk$")]));
        assert_eq!(
            ConfigValue::parse("!op read x"),
            Command("op read x".into())
        );
        assert_eq!(ConfigValue::parse("$!op"), Template(vec![lit("!op")]));
        assert_eq!(
            ConfigValue::parse("${A}${B}"),
            Template(vec![var("A"), var("B")])
        );
        let env = |n: &str| (n == "SET").then(|| "v".to_string());
        let resolve = |t: &str| match ConfigValue::parse(t) {
            Template(parts) => ConfigValue::resolve(&parts, &env),
            Command(_) => None,
        };
        assert_eq!(resolve("a$$b${SET}c$SET"), Some("a$bvcv".into()));
        assert_eq!(resolve("a$UNSET"), None);
        // pi's JSON leniency in models.json: `//` comments and trailing commas.
        assert_eq!(
            strip_json_comments("{\"a\": \"x//y,}\", // c\n \"b\": [1,2,],\n}"),
            "{\"a\": \"x//y,}\", \n \"b\": [1,2]\n}"
        );
        assert_eq!(
            strip_json_comments(r#"{"a":"q\"//,]", } // end"#),
            r#"{"a":"q\"//,]" } "#
        );
        assert_eq!(
            url_host("https://Fake.test:8443/v1"),
            Some(("fake.test".into(), Some(8443)))
        );
        assert_eq!(
            url_host("https://api.example.com/v1"),
            Some(("api.example.com".into(), None))
        );
        assert!(is_local("127.0.0.1") && is_local("localhost") && !is_local("a.b"));
    }

    #[test]
    fn credentials_become_secrets_and_files_hold_tokens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("models.json"),
            r#"{"providers":{"fake":{"baseUrl":"https://fake.test:8443/v1","apiKey":"$FAKE_KEY"},
                "lit":{"baseUrl":"https://lit.example/v1","apiKey":"sk-literal-123"},
                "ollama":{"baseUrl":"http://127.0.0.1:11434/v1","apiKey":"ollama"}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("auth.json"),
            r#"{"anthropic":{"type":"oauth","access":"sk-ant-oat-xyz","refresh":"r-123","expires":99999999999999},
                "openai":{"type":"api_key","key":"sk-openai-abc"}}"#,
        )
        .unwrap();
        let env = |name: &str| match name {
            "FAKE_KEY" => Some("real-secret".to_string()),
            "GEMINI_API_KEY" => Some("g-key".to_string()),
            _ => None,
        };
        let found = Found::gather(dir.path(), env);
        let hosts = |n: &str| found.secrets[n].hosts.iter().cloned().collect::<Vec<_>>();
        assert_eq!(hosts("FAKE_KEY"), vec!["fake.test"]);
        assert_eq!(found.secrets["FAKE_KEY"].value, "real-secret");
        assert!(!found.secrets["FAKE_KEY"].synthetic);
        assert_eq!(
            hosts("GEMINI_API_KEY"),
            vec!["generativelanguage.googleapis.com"]
        );
        assert_eq!(
            found.secrets["CORDON_PI_MODELS_LIT"].value,
            "sk-literal-123"
        );
        assert_eq!(
            found.secrets["CORDON_PI_AUTH_ANTHROPIC_ACCESS"].value,
            "sk-ant-oat-xyz"
        );
        assert_eq!(
            found.secrets["CORDON_PI_AUTH_OPENAI"].value,
            "sk-openai-abc"
        );
        assert_eq!(
            found.domains["fake.test:8443"],
            "provider \"fake\" in models.json"
        );
        assert!(found.domains.contains_key("api.anthropic.com"));
        assert_eq!(
            found.locals,
            vec![("ollama".to_string(), "127.0.0.1:11434".to_string())]
        );
        let all: String = found.files.iter().map(|(_, t)| t.as_str()).collect();
        for secret in ["sk-literal-123", "sk-ant-oat-xyz", "r-123", "sk-openai-abc"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert!(
            all.contains("$FAKE_KEY") && all.contains("\"ollama\""),
            "{all}"
        );
    }

    /// Every credential-shaped value of auth.json and models.json is out of the
    /// copies pi sees inside: as a secret of the value pi would send, or redacted.
    #[test]
    fn no_credential_enters_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        // Commented like pi allows; literals with `$`, mixed templates, a command,
        // headers of the provider, a model and an override.
        std::fs::write(
            dir.path().join("models.json"),
            r#"{"providers": {
                // a comment pi skips
                "p": {"baseUrl": "https://p.example/v1", "apiKey": "sk-a$$b-M1",
                      "headers": {"X-Lit": "M5h", "X-Mix": "Bearer M3-${SET_VAR}",
                                  "X-Unset": "M2-$UNSET_VAR", "X-Cmd": "!echo M4"},
                      "models": [{"id": "m", "headers": {"X-M": "M6m", "X-V": "$SET_VAR"}}],
                      "modelOverrides": {"gpt": {"headers": {"X-O": "M7o"}}},},
                "q": {"baseUrl": "https://q.example/v1", "apiKey": "$SET_VAR"},
                "r-s": {"baseUrl": "https://r.example/v1", "apiKey": "M8r"},
                "r_s": {"baseUrl": "https://rs.example/v1", "apiKey": "M9rs"},
            }}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("auth.json"),
            r#"{"anthropic": {"type": "oauth", "access": "A1", "refresh": "A2", "idToken": "A3",
                              "expires": 99999999999999, "projectId": "proj-1",
                              "extra": {"deep": ["A4"]}},
                "openai": {"type": "api_key", "key": "k$$A5", "note": "A6"},
                "p": "A7",
                "odd": {"type": "something", "key": "A8"}}"#,
        )
        .unwrap();
        let env = |name: &str| (name == "SET_VAR").then(|| "setvalue".to_string());
        let found = Found::gather(dir.path(), env);
        let all: String = found.files.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(found.files.len(), 2, "{all}");
        for secret in [
            "M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8", "M9", "A1", "A2", "A3", "A4", "A5",
            "A6", "A7", "A8", "setvalue",
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        // What the copies keep: a whole variable, and what is no credential.
        assert!(
            all.contains("\"$SET_VAR\"") && all.contains("proj-1"),
            "{all}"
        );
        let value = |v: &str| {
            found
                .secrets
                .values()
                .filter(|s| s.value == v)
                .map(|s| s.hosts.iter().cloned().collect::<Vec<_>>())
                .next()
                .unwrap_or_else(|| panic!("no secret {v}: {:?}", found.secrets))
        };
        // The values pi would send, each for its provider's hosts.
        assert_eq!(value("sk-a$b-M1"), vec!["p.example"]);
        assert_eq!(value("Bearer M3-setvalue"), vec!["p.example"]);
        assert_eq!(value("M5h"), vec!["p.example"]);
        assert_eq!(value("M6m"), vec!["p.example"]);
        assert_eq!(value("M7o"), vec!["p.example"]);
        assert_eq!(value("M8r"), vec!["r.example"]);
        assert_eq!(value("M9rs"), vec!["rs.example"]);
        assert_eq!(
            value("A3"),
            vec!["api.anthropic.com", "console.anthropic.com"]
        );
        assert_eq!(
            value("A4"),
            vec!["api.anthropic.com", "console.anthropic.com"]
        );
        assert_eq!(value("k$A5"), vec!["api.openai.com"]);
        assert_eq!(value("A7"), vec!["p.example"]);
        assert_eq!(found.secrets["SET_VAR"].value, "setvalue");
        // An unset variable and a command: no value pi would send, so none inside;
        // an unknown provider's credential: no host to use it at.
        let redacted: Vec<&str> = found.redacted.iter().map(String::as_str).collect();
        assert_eq!(
            redacted,
            [
                "CORDON_PI_AUTH_ODD_KEY_REDACTED",
                "CORDON_PI_MODELS_P_H_X_CMD_REDACTED",
                "CORDON_PI_MODELS_P_H_X_UNSET_REDACTED"
            ]
        );
        assert!(
            found.warnings.iter().any(|w| w.contains("command")),
            "{:?}",
            found.warnings
        );
    }

    /// A models.json cordon cannot read is hidden, not shown as it is; auth.json
    /// that is not an object of entries has every string replaced.
    #[test]
    fn unreadable_config_stays_outside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("models.json"),
            r#"{"providers": {"p": {"apiKey": "M1" /* pi rejects this too */}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("auth.json"), r#"["A1", {"k": "A2"}]"#).unwrap();
        let found = Found::gather(dir.path(), |_| None);
        let hidden: Vec<_> = found.hidden.iter().map(|(p, _)| p.clone()).collect();
        for name in ["auth.json", "mcp-auth.json", "models.json"] {
            assert!(
                hidden.contains(&dir.path().join(name)),
                "{name}: {hidden:?}"
            );
        }
        let all: String = found.files.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(found.files.len(), 1, "{all}");
        assert!(!all.contains("A1") && !all.contains("A2"), "{all}");
    }
}
