//! What `cordon pi` adds to a run, worked out on the host before its policy:
//! pi's program and what it needs to run, its config dir, the credentials found
//! in it and the environment ([`super::import`]), the run's own config dir, and
//! the rules for them all.

use super::import::{Import, PiConfig, import};
use super::run_dir::{Overlay, RunDir};
use crate::SessionError;
use cordon_policy::{Access, NetMode, PiMode, Policy};
use std::path::{Path, PathBuf};

/// How to install pi, for the messages when it is missing.
pub const INSTALL_HINT: &str = "npm install -g @earendil-works/pi-coding-agent";

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

/// What `cordon pi` adds to a run. Dropping it removes what it made on the host.
#[derive(Debug)]
pub struct PiSetup {
    /// pi's real config dir (canonical).
    agent_dir: PathBuf,
    /// pi's config dir inside: one made for the run.
    run_dir: RunDir,
    /// node's compile cache for sandboxed pi runs.
    compile_cache: PathBuf,
    import: Import,
    /// What pi needs that lies below `/tmp` (its install, node, its config dir),
    /// shown read-only in the sandbox's private `/tmp`, each with the reason.
    shown: Vec<(PathBuf, String)>,
    /// pi's own settings in cordon's environment, passed to pi.
    pi_env: Vec<String>,
}

impl PiSetup {
    /// Finds pi's config dir (for the user whose home is `home`) and the
    /// credentials. With `prepare`, also makes what a run needs on the host (the
    /// sessions dir, the run's config dir, the compile cache); without, nothing is
    /// made (for showing the policy).
    pub fn gather(home: &Path, prepare: bool) -> Result<PiSetup, SessionError> {
        let custom_dir = std::env::var_os("PI_CODING_AGENT_DIR").filter(|d| !d.is_empty());
        // (Inside, PI_CODING_AGENT_DIR names the run's own config dir, see mode().)
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let agent_dir =
            cordon_policy::pi_agent_dir(home, custom_dir.as_deref().map(Path::new), &cwd);
        let sessions = agent_dir.join("sessions");
        if prepare {
            std::fs::create_dir_all(&sessions).map_err(|e| SessionError::SessionsDir {
                path: sessions,
                source: e,
            })?;
        }
        let agent_dir = agent_dir.canonicalize().unwrap_or(agent_dir);
        let import = import(&PiConfig::read(&agent_dir));
        let cache = cordon_net::Dirs::cache_from_env(home).join("pi");
        // pi turns on node's compile cache, kept in $TMPDIR: the sandbox's /tmp is
        // new every run, and compiling pi afresh costs more than the whole sandbox.
        // A cache of cordon's own, shared only by sandboxed pi runs (never the
        // host's node).
        let mut compile_cache = cache.join("node-compile-cache");
        let run_dir = if prepare {
            // A hidden file with no copy to show (none, or unreadable): pi sees none.
            let without: Vec<&Path> = import
                .hidden
                .iter()
                .map(|(p, _)| p.as_path())
                .filter(|p| !import.files.iter().any(|(t, _)| t == p))
                .collect();
            let run_dir = RunDir::make(&cache, &agent_dir, &without)?;
            if std::fs::create_dir_all(&compile_cache).is_ok() {
                compile_cache = compile_cache.canonicalize().unwrap_or(compile_cache);
            }
            run_dir
        } else {
            RunDir::planned(&cache)
        };
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
            import,
            shown: below_tmp(needed),
            pi_env,
        })
    }

    /// What was found in pi's config and environment.
    pub fn import(&self) -> &Import {
        &self.import
    }

    /// The rules `cordon pi` adds to the policy, each with its reason: the
    /// importer's layer, and pi's dirs and settings.
    pub fn mode(&self) -> PiMode {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let run_dir = self.run_dir.path();
        let config_dir = "pi's config dir for this run".to_string();
        let cache = "node's compile cache for sandboxed pi".to_string();
        let mut mode = PiMode {
            allow_write: vec![
                (
                    self.agent_dir.join("sessions"),
                    "pi's sessions, kept on the host".to_string(),
                ),
                (run_dir.to_path_buf(), config_dir.clone()),
            ],
            allow_read: self.shown.clone(),
            home_visible: vec![(
                self.agent_dir.clone(),
                "pi's config dir (its entries in the run's config dir link there)".to_string(),
            )],
            env: vec![(format!("PI_CODING_AGENT_DIR={}", text(run_dir)), config_dir)],
            ..self.import.layer()
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
        mode
    }

    /// Whether pi can run under `policy`: neither `program` (pi) nor what it
    /// needs below `/tmp` may be in a path the policy hides (a rule of the
    /// user's denying a directory above it).
    pub fn check(&self, policy: &Policy, program: &Path) -> Result<(), SessionError> {
        for (path, why) in &self.shown {
            let hiding = policy
                .rules
                .iter()
                .filter(|r| path.starts_with(&r.path) && r.path != *path)
                .max_by_key(|r| r.path.components().count())
                .filter(|r| r.access == Access::Deny);
            if let Some(rule) = hiding {
                return Err(SessionError::NeedHidden {
                    what: why.clone(),
                    path: path.clone(),
                    hidden: rule.path.clone(),
                    origin: rule.origin.to_string(),
                });
            }
        }
        if policy.access_for(program) == Access::Deny {
            return Err(SessionError::PiHidden(program.to_path_buf()));
        }
        Ok(())
    }

    /// The warnings found while reading pi's config, and one for each local
    /// provider the policy does not let through.
    pub fn warnings(&self, policy: &Policy) -> Vec<String> {
        let mut warnings = self.import.warnings.clone();
        if std::env::var_os("PI_CODING_AGENT_SESSION_DIR").is_some() {
            warnings.push(format!(
                "PI_CODING_AGENT_SESSION_DIR is not passed to pi: inside, pi keeps its sessions in {}, the one dir of pi's it may write",
                self.agent_dir.join("sessions").display()
            ));
        }
        if policy.net.value == NetMode::Host {
            return warnings;
        }
        for (id, addr) in &self.import.locals {
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

    /// Writes the copies of pi's config files, each credential replaced by
    /// `placeholder` of its secret's name, and returns the overlays that show
    /// them inside.
    pub fn overlays(
        &self,
        placeholder: &dyn Fn(&str) -> String,
    ) -> Result<Vec<Overlay>, SessionError> {
        self.run_dir
            .write_overlays(&self.import.render(placeholder))
    }
}

/// `$CORDON_PI`, else `pi` on PATH, with its symlinks followed.
pub fn find_pi() -> Result<PathBuf, SessionError> {
    if let Some(pi) = std::env::var_os("CORDON_PI").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(&pi);
        return path
            .canonicalize()
            .map_err(|e| SessionError::CordonPi { path, source: e });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("pi"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .ok_or(SessionError::PiNotFound)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_and_paths_below_tmp() {
        assert_eq!(
            package_of(Path::new("/opt/p/node_modules/a/node_modules/b/cli.js")),
            Path::new("/opt/p/node_modules")
        );
        assert_eq!(package_of(Path::new("/usr/bin/pi")), Path::new("/usr/bin"));
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let inner = dir.path().join("a");
        std::fs::create_dir(&inner).unwrap();
        let kept = below_tmp(vec![
            (inner.clone(), "inner".into()),
            (dir.path().to_path_buf(), "outer".into()),
            ("/usr".into(), "elsewhere".into()),
            ("/tmp".into(), "tmp itself".into()),
        ]);
        let outer = dir.path().canonicalize().unwrap();
        assert_eq!(kept, vec![(outer, "outer".to_string())]);
    }

    #[test]
    fn shebang_words() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("pi");
        std::fs::write(&script, "#!/usr/bin/env -S node --no-warnings\nrest").unwrap();
        assert_eq!(
            shebang(&script).unwrap(),
            ["/usr/bin/env", "-S", "node", "--no-warnings"]
        );
        std::fs::write(&script, "no shebang").unwrap();
        assert!(shebang(&script).is_none());
    }
}
