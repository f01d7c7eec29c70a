//! A policy resolved against real files: a home, a workspace, a current
//! directory, an XDG config home (so the real user's config is never read) and a
//! TMPDIR, each a directory of a temporary tree, with the user's and the
//! project's config files written there.

use cordon_policy::{Flags, Inputs, Origin, Policy, PolicyError, resolve};
use std::fs;
use std::path::{Path, PathBuf};

/// A sandbox of directories: a home, a workspace, a current directory, an XDG config
/// home (so the real user's config is never read) and a TMPDIR.
pub struct PolicyEnv {
    _t: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub ws: PathBuf,
    pub cwd: PathBuf,
    pub xdg: PathBuf,
    pub tmp: PathBuf,
}

impl PolicyEnv {
    pub fn new() -> PolicyEnv {
        // Not under /tmp, where a checkout (and so the cargo target dir) may well
        // be: /tmp is a scratch directory (writable) in the policy, which would
        // change what "outside the workspace" means.
        let t = tempfile::Builder::new()
            .prefix("cordon-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        let mk = |n: &str| {
            let p = root.join(n);
            fs::create_dir_all(&p).unwrap();
            p
        };
        PolicyEnv {
            home: mk("home"),
            ws: mk("ws"),
            cwd: mk("cwd"),
            xdg: mk("xdg"),
            tmp: mk("tmpdir"),
            root,
            _t: t,
        }
    }

    pub fn inputs(&self) -> Inputs {
        PolicyEnv::inputs_in(&self.root)
    }

    /// The [`Inputs`] of the tree at `root` (which a [`PolicyEnv`] made), for a
    /// process that was given only its root.
    pub fn inputs_in(root: &Path) -> Inputs {
        Inputs {
            workspace: root.join("ws"),
            cwd: root.join("cwd"),
            home: root.join("home"),
            tmp: root.join("tmpdir"),
            config: None,
            xdg_config_home: Some(root.join("xdg")),
            xdg_data_home: None,
            flags: Flags::default(),
        }
    }

    pub fn user_config_path(&self) -> PathBuf {
        self.xdg.join("cordon/config.json")
    }

    pub fn user(&self, json: &str) {
        let p = self.user_config_path();
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, json).unwrap();
    }

    pub fn project_path(&self) -> PathBuf {
        self.ws.join(".cordon.json")
    }

    pub fn project(&self, json: &str) {
        fs::write(self.project_path(), json).unwrap();
    }

    pub fn resolve(&self) -> Policy {
        resolve(&self.inputs()).unwrap()
    }

    /// Resolves expecting an error.
    pub fn resolve_err(&self) -> PolicyError {
        resolve(&self.inputs()).unwrap_err()
    }

    pub fn resolve_with(&self, flags: Flags) -> Result<Policy, PolicyError> {
        let mut i = self.inputs();
        i.flags = flags;
        resolve(&i)
    }

    pub fn user_origin(&self) -> Origin {
        Origin::UserConfig {
            file: self.user_config_path(),
        }
    }

    pub fn project_origin(&self) -> Origin {
        Origin::ProjectConfig {
            file: self.project_path(),
        }
    }
}

impl Default for PolicyEnv {
    fn default() -> PolicyEnv {
        PolicyEnv::new()
    }
}
