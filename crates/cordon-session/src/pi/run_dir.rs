//! pi's config dir for one run, and the copies of its config files laid over the
//! real ones: made on the host before the run, removed after it however it ends
//! (and, when cordon was killed, by the next run).
//!
//! pi locks its config files by making `<file>.lock` directories next to them, so
//! it needs a writable config dir: inside, its config dir is one made for this
//! run, of symlinks to the real entries (which stay read-only, but for
//! sessions/), where the locks and pi's caches land and are dropped after.

use crate::SessionError;
use std::path::{Path, PathBuf};

/// The name of a run's config dir in cordon's cache dir for pi, before its PID.
const RUN_DIR_PREFIX: &str = "agent-";
/// The name of a run's overlay dir in $TMPDIR, before its PID.
const OVERLAY_DIR_PREFIX: &str = "cordon-pi-";

/// A file laid over the sandbox's view: `source` on the host shown at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Absolute, canonical path of the file on the host.
    pub source: PathBuf,
    /// Absolute path in the view.
    pub target: PathBuf,
}

/// One run's config dir for pi, and where the copies of its files are written.
#[derive(Debug)]
pub struct RunDir {
    /// pi's config dir inside (canonical once made).
    path: PathBuf,
    /// Where the copies of pi's config files are written.
    overlays: PathBuf,
    /// Remove the dirs when the run dir is dropped (none when nothing was made).
    _removal: Vec<RemoveOnDrop>,
}

impl RunDir {
    /// The run dir this process would use in `cache` (cordon's cache dir for
    /// pi), made of nothing: for showing the policy.
    pub fn planned(cache: &Path) -> RunDir {
        RunDir {
            path: cache.join(format!("{RUN_DIR_PREFIX}{}", std::process::id())),
            overlays: std::env::temp_dir()
                .join(format!("{OVERLAY_DIR_PREFIX}{}", std::process::id())),
            _removal: Vec::new(),
        }
    }

    /// Makes the run dir in `cache`: a fresh directory with a symlink to every
    /// entry of `agent_dir` (pi's real config dir) but its locks and `without`
    /// (files pi must not see, not even through a link). Removes the dirs of
    /// runs that ended without cleaning up first. Both dirs are removed when the
    /// result is dropped.
    pub fn make(cache: &Path, agent_dir: &Path, without: &[&Path]) -> Result<RunDir, SessionError> {
        remove_stale(cache, RUN_DIR_PREFIX);
        remove_stale(&std::env::temp_dir(), OVERLAY_DIR_PREFIX);
        let planned = RunDir::planned(cache);
        let removal = vec![
            RemoveOnDrop(planned.path.clone()),
            RemoveOnDrop(planned.overlays.clone()),
        ];
        let dir = planned.path;
        let fail = |e: std::io::Error| SessionError::RunDir {
            path: dir.clone(),
            source: e,
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(fail)?;
        if let Ok(entries) = std::fs::read_dir(agent_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let target = agent_dir.join(&name);
                if name.to_string_lossy().ends_with(".lock") || without.contains(&&*target) {
                    continue;
                }
                std::os::unix::fs::symlink(target, dir.join(&name)).map_err(fail)?;
            }
        }
        Ok(RunDir {
            path: dir.canonicalize().unwrap_or(dir),
            overlays: planned.overlays,
            _removal: removal,
        })
    }

    /// pi's config dir inside.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `files` (target path in pi's config dir, content) and returns the
    /// overlays that show them: each over its target and over the run dir's
    /// link to it (pi 1.x locks a file beside its real path, `auth.json.lock`,
    /// which must be in the writable run dir, not the read-only real dir).
    pub fn write_overlays(
        &self,
        files: &[(PathBuf, String)],
    ) -> Result<Vec<Overlay>, SessionError> {
        let mut overlays = Vec::new();
        if files.is_empty() {
            return Ok(overlays);
        }
        std::fs::create_dir_all(&self.overlays).map_err(|e| SessionError::Write {
            path: self.overlays.clone(),
            source: e,
        })?;
        for (target, text) in files {
            let name = target.file_name().unwrap_or_default();
            let source = self.overlays.join(name);
            std::fs::write(&source, text).map_err(|e| SessionError::Write {
                path: source.clone(),
                source: e,
            })?;
            let source = source.canonicalize().unwrap_or(source);
            overlays.push(Overlay {
                source: source.clone(),
                target: self.path.join(name),
            });
            overlays.push(Overlay {
                source,
                target: target.clone(),
            });
        }
        Ok(overlays)
    }
}

/// A directory of one run's, removed with what it holds when this is dropped, so
/// that every way out of a run (an error or its end) cleans up.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the dirs named `PREFIX<pid>` in `parent` whose run has ended without
/// cleaning up (cordon killed by SIGKILL, or the machine reset): no process of that
/// PID is alive. A live process that reused the PID keeps its dir, which is harmless.
fn remove_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|pid| pid.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        let gone = rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_with_links_overlays_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, agent) = (tmp.path().join("cache"), tmp.path().join("agent"));
        std::fs::create_dir_all(agent.join("sessions")).unwrap();
        std::fs::create_dir_all(agent.join("settings.json.lock")).unwrap();
        for f in ["settings.json", "auth.json", "mcp-auth.json"] {
            std::fs::write(agent.join(f), "{}").unwrap();
        }
        // A run that ended without cleaning up (no process has PID 2^22+1:
        // pid_max is at most 2^22), and a live one (this process's parent).
        let stale = cache.join(format!("{RUN_DIR_PREFIX}{}", (1 << 22) + 1));
        let live = cache.join(format!(
            "{RUN_DIR_PREFIX}{}",
            std::os::unix::process::parent_id()
        ));
        for d in [&stale, &live] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mcp = agent.join("mcp-auth.json");
        let run = RunDir::make(&cache, &agent, &[&mcp]).unwrap();
        assert!(!stale.exists() && live.exists());
        let mut names: Vec<String> = std::fs::read_dir(run.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["auth.json", "sessions", "settings.json"]);
        assert_eq!(
            std::fs::read_link(run.path().join("sessions")).unwrap(),
            agent.join("sessions")
        );
        let overlays = run
            .write_overlays(&[(agent.join("auth.json"), "copy".into())])
            .unwrap();
        assert_eq!(overlays.len(), 2);
        assert_eq!(overlays[0].target, run.path().join("auth.json"));
        assert_eq!(overlays[1].target, agent.join("auth.json"));
        assert_eq!(
            std::fs::read_to_string(&overlays[0].source).unwrap(),
            "copy"
        );
        let (path, source) = (run.path().to_path_buf(), overlays[0].source.clone());
        drop(run);
        assert!(!path.exists() && !source.exists());
        assert!(agent.join("auth.json").exists() && live.exists());
    }

    #[test]
    fn planned_makes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::planned(tmp.path());
        assert!(run.path().starts_with(tmp.path()) && !run.path().exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
