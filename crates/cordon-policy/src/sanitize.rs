//! Copies of hidden settings files without their credentials.
//!
//! `~/.npmrc` is a built-in secret (it holds registry tokens), but also the user's
//! npm settings (`fund=false`, a registry, a proxy): hidden whole, those silently
//! vanish inside. So the sandbox sees a copy laid over it that keeps the settings
//! and drops every line that is, or may be, a credential. pip's `pip.conf` is the
//! same kind of file (an index URL may hold `user:token@`) and is cleaned by the
//! same rules.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a settings file is cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanitizeFormat {
    /// npm's ini file: see [`sanitize_npmrc`].
    Npmrc,
    /// pip's ini file (`pip.conf`), cleaned by the same rules as `.npmrc`.
    PipConf,
}

/// The hidden settings files shown as cleaned copies, relative to the home
/// directory (each is also in [`crate::defaults::HOME_SECRETS`]).
pub const SANITIZED_FILES: &[(&str, SanitizeFormat)] = &[
    (".npmrc", SanitizeFormat::Npmrc),
    (".config/pip/pip.conf", SanitizeFormat::PipConf),
    (".pip/pip.conf", SanitizeFormat::PipConf),
];

/// A hidden file shown inside as a copy without its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanitizedCopy {
    /// The file, on the host and inside (absolute, canonical).
    pub path: PathBuf,
    pub format: SanitizeFormat,
}

impl SanitizedCopy {
    /// The copy of `text` (the file's content) to show inside.
    pub fn sanitize(&self, text: &[u8]) -> String {
        match self.format {
            SanitizeFormat::Npmrc => sanitize_npmrc(text),
            SanitizeFormat::PipConf => sanitize_pip_conf(text),
        }
    }
}

/// npm's keys that hold credentials (compared without case), besides every key
/// that starts with `_` (npm's own private ones: `_auth`, `_authToken`,
/// `_password`) or `//` (settings of one registry: its token, password,
/// certificate).
const NPMRC_CREDENTIAL_KEYS: &[&str] = &[
    "username", "password", "email", "otp", "certfile", "keyfile", "cert", "key", "token",
];

/// Words that make any key holding them count as a credential.
const CREDENTIAL_WORDS: &[&str] = &["auth", "token", "pass", "secret", "email", "cert", "key"];

/// `~/.npmrc` without what could be a credential: comments (they may hold
/// anything), lines that are not `key=value` or `[section]`, keys that start
/// with `_` or `//`, keys naming a credential ([`NPMRC_CREDENTIAL_KEYS`], or
/// holding one of [`CREDENTIAL_WORDS`]), values holding a URL with a
/// user or password (`https://user:pw@host`) or an environment reference
/// (`${NPM_TOKEN}`: the variable is not set inside, and npm stops at it). A file
/// that is not UTF-8 keeps nothing. The copy starts with a comment that says so.
pub fn sanitize_npmrc(text: &[u8]) -> String {
    sanitize_ini(text, "~/.npmrc", false)
}

/// pip's `pip.conf` cleaned by the rules of [`sanitize_npmrc`], and more: its
/// `key: value` lines are not `key=value`, and its indented lines continue the
/// value above them (a second index URL, `?sig=TOKEN` included), so both are
/// dropped.
pub fn sanitize_pip_conf(text: &[u8]) -> String {
    sanitize_ini(text, "pip.conf", true)
}

/// An ini file (`key=value` lines and `[section]`s) cleaned by the rules of
/// [`sanitize_npmrc`]; `name` is the file the copy's first comment names;
/// `continuations`: an indented line continues the value above it.
fn sanitize_ini(text: &[u8], name: &str, continuations: bool) -> String {
    let text = std::str::from_utf8(text).unwrap_or("");
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            kept.push("");
            continue;
        }
        let continues = continuations && line.starts_with([' ', '\t']);
        if !continues && npmrc_line_is_safe(t) {
            kept.push(t);
        } else {
            dropped += 1;
        }
    }
    let mut out = format!(
        "; cordon: your {name} without its credentials ({dropped} line(s) dropped: comments, tokens, passwords, per-registry settings)\n"
    );
    for line in kept {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn npmrc_line_is_safe(line: &str) -> bool {
    if line.starts_with('[') {
        return line.ends_with(']') && !has_userinfo(line) && !line.contains("${");
    }
    let Some((key, value)) = line.split_once('=') else {
        return false;
    };
    let key = key.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    if key.is_empty() || key.starts_with('_') || key.starts_with("//") || key.starts_with(';') {
        return false;
    }
    // The last part of a scoped or prefixed key (`@scope:registry`).
    let last = key.rsplit(':').next().unwrap_or(&key);
    if NPMRC_CREDENTIAL_KEYS.contains(&last) || CREDENTIAL_WORDS.iter().any(|w| key.contains(w)) {
        return false;
    }
    !has_userinfo(value) && !value.contains("${")
}

/// Whether `s` holds a URL with a user (and perhaps a password) before its host.
fn has_userinfo(s: &str) -> bool {
    s.match_indices("://").any(|(i, _)| {
        let rest = &s[i + 3..];
        let authority = rest
            .split(['/', '?', '#', ' ', '"', '\''])
            .next()
            .unwrap_or("");
        authority.contains('@')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_stay_and_credentials_go() {
        let rc = "\
fund=false
registry = https://registry.example/
@corp:registry=https://npm.corp.example/
//registry.example/:_authToken=SECRET1
//npm.corp.example/:_auth=SECRET2
_authToken=SECRET3
_auth = SECRET4
_password=SECRET5
username=SECRET6
email=SECRET7
password=SECRET8
//registry.example/:certfile=/h/SECRET9.pem
keyfile=/h/SECRET10.key
https-proxy=http://user:SECRET11@proxy:8080
proxy=http://proxy.example:3128
registry=https://SECRET12@registry.example/
; a comment with SECRET13
# SECRET14
always-auth=SECRET15
SECRET16
//host/:tokenHelper=SECRET17
otp=SECRET18
@corp:_authToken=SECRET19
init-author-email=SECRET20
cafile=/etc/ssl/corp.pem
token=${NPM_TOKEN_SECRET21}
save-exact=true
";
        let out = sanitize_npmrc(rc.as_bytes());
        assert!(!out.contains("SECRET"), "{out}");
        for kept in [
            "fund=false",
            "registry = https://registry.example/",
            "@corp:registry=https://npm.corp.example/",
            "proxy=http://proxy.example:3128",
            "cafile=/etc/ssl/corp.pem",
            "save-exact=true",
        ] {
            assert!(out.lines().any(|l| l == kept), "{kept}: {out}");
        }
        assert!(out.starts_with("; cordon:"), "{out}");
        assert!(out.contains("21 line(s) dropped"), "{out}");
    }

    #[test]
    fn odd_input_keeps_nothing_secret() {
        assert!(!sanitize_npmrc(b"\xff\xfe_authToken=SECRET").contains("SECRET"));
        let out = sanitize_npmrc(b"[https://u:SECRET@x/]\n[section]\n\r\n\"_auth\"=SECRET\n");
        assert!(!out.contains("SECRET"), "{out}");
        assert!(out.contains("[section]"), "{out}");
    }

    #[test]
    fn pip_settings_stay_and_credentials_go() {
        let conf = "\
[global]
timeout = 60
index-url = https://user:SECRET1@pypi.corp.example/simple
extra-index-url =
    https://pypi.org/simple
    https://x.example/simple?sig=SECRET2
trusted-host: SECRET3.example
client-cert = /h/SECRET4.pem
# SECRET5
[install]
no-compile = true
";
        let out = sanitize_pip_conf(conf.as_bytes());
        assert!(!out.contains("SECRET"), "{out}");
        for kept in ["[global]", "timeout = 60", "[install]", "no-compile = true"] {
            assert!(out.lines().any(|l| l == kept), "{kept}: {out}");
        }
        assert!(out.starts_with("; cordon: your pip.conf"), "{out}");
        // The same line indented is a setting of npm's, and a continuation of pip's.
        assert!(sanitize_npmrc(b"  fund=false").contains("fund=false"));
        assert!(!sanitize_pip_conf(b"  fund=false").contains("fund=false"));
    }
}
