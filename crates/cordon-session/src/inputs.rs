//! What policy resolution takes from the invoking environment (the current and
//! home directories, `$TMPDIR`, the XDG directories), read once, here.

use crate::SessionError;
use cordon_policy::{Flags, Inputs};
use std::path::PathBuf;

/// The policy's inputs for `workspace` (default: the current directory), the
/// user config `config` (default: the XDG one) and `flags`, with the rest read
/// from this process's environment.
pub fn from_env(
    workspace: Option<PathBuf>,
    config: Option<PathBuf>,
    flags: Flags,
) -> Result<Inputs, SessionError> {
    let cwd = std::env::current_dir().map_err(SessionError::CurrentDir)?;
    Ok(Inputs {
        workspace: workspace.unwrap_or_else(|| cwd.clone()),
        cwd,
        home: home_dir()?,
        tmp: std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
        config,
        xdg_config_home: std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        xdg_data_home: std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        flags,
    })
}

/// $HOME, else the invoking user's entry in /etc/passwd. (Not getpwuid: cordon is
/// a static binary, and glibc's NSS modules cannot be loaded into one reliably.)
pub fn home_dir() -> Result<PathBuf, SessionError> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let uid = rustix::process::geteuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 7 && fields[2] == uid).then(|| PathBuf::from(fields[5]))
            })
        })
        .filter(|home| home.is_absolute())
        .ok_or(SessionError::NoHome)
}
