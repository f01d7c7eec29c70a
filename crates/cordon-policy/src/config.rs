//! The config file schema (JSON, flat, keys mirror the CLI flags) and its parsing.
//!
//! Parsing only checks shape and values; paths stay as written (variables are
//! expanded later, in [`crate::paths`], when the workspace is known).

use crate::error::{PolicyError, ValueError};
use crate::fields::closest_field;
use crate::values::MountSpec;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest config file cordon reads. Config files are a few hundred bytes; the
/// limit keeps a hostile project from making cordon read something huge.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// `net` as written in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigNet {
    None,
    Host,
    Allowlist,
}

crate::settings::with_settings!(crate::settings::settings! { @config
/// One config file, as written. Every field is optional; absent lists are empty.
/// The settings' keys (`memory`, `pids`, ...) come after `timeout`, from the
/// table in [`crate::settings`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object of cordon settings, e.g. {\"deny_read\": [\"secrets/\"]}"
)]
pub struct ConfigFile {
    /// `$schema`: accepted and ignored (lets editors validate the file).
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default)]
    pub allow_write: Vec<String>,
    #[serde(default)]
    pub allow_read: Vec<String>,
    #[serde(default)]
    pub deny_read: Vec<String>,
    #[serde(default)]
    pub read_only: Option<bool>,
    #[serde(default)]
    pub unprotect: Vec<String>,
    /// `true`: the home directory is an empty private tmpfs inside, but for the
    /// workspace, the writable roots and `home_visible`.
    #[serde(default)]
    pub hide_home: Option<bool>,
    /// Paths in the home directory that stay visible (read-only) with `hide_home`.
    #[serde(default)]
    pub home_visible: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub net: Option<ConfigNet>,
    /// Domain patterns the egress broker lets through (`example.com`,
    /// `*.example.com`, optional `:PORT`).
    #[serde(default, deserialize_with = "de_allow_domains")]
    pub allow_domain: Vec<String>,
    /// Domain patterns refused even when allowed.
    #[serde(default, deserialize_with = "de_deny_domains")]
    pub deny_domain: Vec<String>,
    /// Names of host sets ([`crate::presets::PRESETS`]).
    #[serde(default, deserialize_with = "de_presets")]
    pub allow_preset: Vec<String>,
    /// `HOST:PORT` services on the host, reachable inside.
    #[serde(default, deserialize_with = "de_locals")]
    pub allow_local: Vec<String>,
    /// `NAME=HOST[,HOST...]`.
    #[serde(default, deserialize_with = "de_secrets")]
    pub secret: Vec<String>,
    /// `HOST:ADDR`.
    #[serde(default, deserialize_with = "de_resolves")]
    pub resolve: Vec<String>,
    /// PEM files of extra trust roots for the broker's upstream TLS (paths).
    #[serde(default)]
    pub upstream_ca: Vec<String>,
    /// Seconds, positive.
    #[serde(default, deserialize_with = "de_timeout")]
    pub timeout: Option<f64>,
} {
    #[serde(default)]
    pub nested_userns: Option<bool>,
    #[serde(default)]
    pub unix_sockets: Option<bool>,
    /// Host paths shown at another path inside: `{"source", "target", "mode"}` or
    /// `"SOURCE:TARGET[:ro|rw]"`.
    #[serde(default)]
    pub mount: Vec<MountSpec>,
    /// Where the sandbox runs (`--backend`), user config only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<crate::BackendChoice>,
    /// The VM's file share (`--vm-share`), user config only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_share: Option<crate::VmShare>,
    /// The kernel the VM boots (`--backend vm`): a path, user config only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_kernel: Option<String>,
    /// `false` turns the managed caches off ([`crate::caches`]); on by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caches: Option<bool>,
    /// Settings for `cordon pi` only: the same fields (but `pi`), layered over
    /// this file's.
    #[serde(
        default,
        deserialize_with = "de_pi",
        skip_serializing_if = "Option::is_none"
    )]
    pub pi: Option<Box<ConfigFile>>,
}
});

/// The keys a config file may contain (besides `$schema`), in documentation order:
/// [`ConfigFile`]'s fields, as serde names them (one declaration for both).
pub fn known_fields() -> &'static [&'static str] {
    static KNOWN: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        crate::fields::struct_fields::<ConfigFile>()
            .iter()
            .copied()
            .filter(|f| !f.starts_with('$'))
            .collect()
    })
}

/// The `pi` section: a config of its own, which may not hold another `pi`.
fn de_pi<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<ConfigFile>>, D::Error> {
    let section = Option::<Box<ConfigFile>>::deserialize(d)?;
    if section.as_ref().is_some_and(|s| s.pi.is_some()) {
        return Err(de::Error::custom(
            "\"pi\": a pi section cannot hold another \"pi\" section",
        ));
    }
    if section.as_ref().is_some_and(|s| s.schema.is_some()) {
        return Err(de::Error::custom(
            "\"pi\": \"$schema\" belongs at the top level, not in the pi section",
        ));
    }
    Ok(section)
}

fn positive_f64(v: Option<f64>, what: &str) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            Err(format!("invalid {what} {x}: must be a positive number"))
        }
        _ => Ok(v),
    }
}

fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Option::<f64>::deserialize(d)?;
    let v = positive_f64(v, "timeout").map_err(de::Error::custom)?;
    if let Some(x) = v {
        if std::time::Duration::try_from_secs_f64(x).is_err() {
            return Err(de::Error::custom(format!("invalid timeout {x}: too large")));
        }
    }
    Ok(v)
}

/// A list of strings, each checked with `check` as soon as it is read (so an error
/// points at the entry); an error names `field`.
fn de_checked_list<'de, D: Deserializer<'de>>(
    d: D,
    field: &'static str,
    check: fn(&str) -> Result<(), ValueError>,
) -> Result<Vec<String>, D::Error> {
    struct V {
        field: &'static str,
        check: fn(&str) -> Result<(), ValueError>,
    }
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                (self.check)(&item)
                    .map_err(|m| de::Error::custom(format!("\"{}\": {m}", self.field)))?;
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V { field, check })
}

fn de_allow_domains<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_list(d, "allow_domain", |s| {
        crate::network::DomainPattern::parse(s)
            .map(drop)
            .map_err(Into::into)
    })
}

fn de_deny_domains<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_list(d, "deny_domain", |s| {
        crate::network::DomainPattern::parse(s)
            .map(drop)
            .map_err(Into::into)
    })
}

fn de_presets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_list(d, "allow_preset", |s| crate::presets::lookup(s).map(drop))
}

fn de_locals<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_list(d, "allow_local", |s| {
        crate::values::parse_local_service(s).map(drop)
    })
}

fn de_secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_list(d, "secret", |s| {
        crate::values::parse_secret_arg(s).map(drop)
    })
}

fn de_resolves<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    de_checked_list(d, "resolve", |s| {
        crate::values::parse_resolve_arg(s).map(drop)
    })
}

/// Parse the bytes of a config file. `file` is only used in error messages.
///
/// An empty file (0 bytes, or only whitespace) is an empty config. A leading UTF-8
/// byte order mark is skipped.
pub fn parse_config(bytes: &[u8], file: &Path) -> Result<ConfigFile, PolicyError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ConfigFile::default());
    }
    // serde would also accept a JSON array (fields by position): refuse it.
    if let Some(i) = bytes.iter().position(|b| !b.is_ascii_whitespace()) {
        if bytes[i] != b'{' {
            serde_json::from_slice::<de::IgnoredAny>(bytes).map_err(|e| json_error(file, e))?;
            let before = &bytes[..i];
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
            return Err(PolicyError::Invalid {
                file: file.to_path_buf(),
                line,
                column,
                message: "expected a JSON object of cordon settings, e.g. {\"deny_read\": [\"secrets/\"]}".to_string(),
            });
        }
    }
    serde_json::from_slice(bytes).map_err(|e| json_error(file, e))
}

/// Turn serde_json's error into a [`PolicyError`] that names the file, line and
/// column, and for an unknown key, the key and the known ones.
fn json_error(file: &Path, e: serde_json::Error) -> PolicyError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    let file = file.to_path_buf();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let end = rest
            .rfind("`, expected")
            .or_else(|| rest.find("`, there are no fields"))
            .or_else(|| rest.rfind('`'))
            .unwrap_or(rest.len());
        let field = rest[..end].to_string();
        let suggestion = closest_field(&field, known_fields());
        return PolicyError::UnknownField {
            file,
            field,
            line,
            column,
            suggestion,
            known: known_fields(),
        };
    }
    match e.classify() {
        serde_json::error::Category::Data => PolicyError::Invalid {
            file,
            line,
            column,
            message,
        },
        _ => PolicyError::Syntax {
            file,
            line,
            column,
            message,
        },
    }
}

/// Which config a file is: it decides how strictly the file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The user's config: any file the user names, symlinks followed.
    User,
    /// A project config inside `workspace`: must be a regular file, and a symlink
    /// must not lead outside the workspace.
    Project,
}

/// Read and parse a config file. `Ok(None)` when the file does not exist and that is
/// fine (`required == false`); the result also carries warnings.
pub(crate) fn load_config(
    file: &Path,
    required: bool,
    trust: Trust,
    workspace: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<ConfigFile>, PolicyError> {
    let read_err = |source| PolicyError::Read {
        file: file.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(file).is_ok() && trust == Trust::Project {
                warnings.push(format!(
                    "project config {}: ignored (a dangling symlink)",
                    file.display()
                ));
                return Ok(None);
            }
            if required {
                return Err(PolicyError::ConfigNotFound {
                    file: file.to_path_buf(),
                });
            }
            return Ok(None);
        }
        Err(e) => return Err(read_err(e)),
    };
    if trust == Trust::Project {
        if !meta.is_file() {
            return Err(PolicyError::NotAFile {
                file: file.to_path_buf(),
            });
        }
        let is_link = std::fs::symlink_metadata(file)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            let target = std::fs::canonicalize(file).map_err(read_err)?;
            if !target.starts_with(workspace) {
                warnings.push(format!(
                    "project config {}: ignored (a symlink to {}, outside the workspace)",
                    file.display(),
                    target.display()
                ));
                return Ok(None);
            }
        }
    } else if meta.is_dir() {
        return Err(PolicyError::NotAFile {
            file: file.to_path_buf(),
        });
    }
    let f = std::fs::File::open(file).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(PolicyError::TooLarge {
            file: file.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    parse_config(&bytes, file).map(Some)
}

/// The default user config path: `$XDG_CONFIG_HOME/cordon/config.json` when
/// `$XDG_CONFIG_HOME` is set and absolute, else `~/.config/cordon/config.json`.
pub fn default_user_config(home: &Path, xdg_config_home: Option<&Path>) -> PathBuf {
    match xdg_config_home {
        Some(x) if x.is_absolute() => x.join("cordon/config.json"),
        _ => home.join(".config/cordon/config.json"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ConfigFile, PolicyError> {
        parse_config(s.as_bytes(), Path::new("/w/.cordon.json"))
    }

    #[test]
    fn full_example() {
        let c = parse(
            r#"{
              "$schema": "https://example.invalid/cordon.schema.json",
              "allow_write": ["${WORKSPACE}/../shared-out", "/data/scratch"],
              "allow_read":  ["${HOME}/.ssh/known_hosts"],
              "deny_read":   ["${HOME}/.config/my-secrets", "secrets/"],
              "read_only":   false,
              "unprotect":   [".git/config"],
              "env":         ["EDITOR", "RUST_LOG=debug"],
              "net":         "none",
              "timeout":     600,
              "memory":      "2G",
              "pids":        1024,
              "cpus":        1.5,
              "nested_userns": false,
              "unix_sockets":  false
            }"#,
        )
        .unwrap();
        assert_eq!(c.allow_write.len(), 2);
        assert_eq!(c.deny_read[1], "secrets/");
        assert_eq!(c.read_only, Some(false));
        assert_eq!(c.net, Some(ConfigNet::None));
        assert_eq!(c.timeout, Some(600.0));
        assert_eq!(c.memory, Some(2 << 30));
        assert_eq!(c.pids, Some(1024));
        assert_eq!(c.cpus, Some(1.5));
        assert_eq!(c.nested_userns, Some(false));
        assert_eq!(c.unix_sockets, Some(false));
    }

    #[test]
    fn network_keys() {
        let c = parse(
            r#"{
              "net":          "allowlist",
              "allow_domain": ["example.com", "*.example.org:8443"],
              "deny_domain":  ["evil.example.com"],
              "allow_preset": ["anthropic", "crates"],
              "allow_local":  ["127.0.0.1:11434", "localhost:8080", "[::1]:9000"],
              "secret":       ["ANTHROPIC_API_KEY=api.anthropic.com", "T=a.com,*.b.com"],
              "resolve":      ["git.internal:10.0.0.5", "db:[fd00::5]"],
              "upstream_ca":  ["${HOME}/corp-ca.pem"]
            }"#,
        )
        .unwrap();
        assert_eq!(c.net, Some(ConfigNet::Allowlist));
        assert_eq!(c.allow_domain, ["example.com", "*.example.org:8443"]);
        assert_eq!(c.deny_domain, ["evil.example.com"]);
        assert_eq!(c.allow_preset, ["anthropic", "crates"]);
        assert_eq!(c.allow_local.len(), 3);
        assert_eq!(c.secret[1], "T=a.com,*.b.com");
        assert_eq!(c.resolve, ["git.internal:10.0.0.5", "db:[fd00::5]"]);
        assert_eq!(c.upstream_ca, ["${HOME}/corp-ca.pem"]);
        // Every field is known, in the documented place.
        let i = |f: &str| known_fields().iter().position(|k| *k == f).unwrap();
        assert!(i("net") < i("allow_domain") && i("upstream_ca") < i("timeout"));
    }

    #[test]
    fn bad_network_values_name_field_line_and_column() {
        let cases = [
            (
                r#"{"allow_domain": ["1.2.3.4"]}"#,
                "\"allow_domain\": invalid domain pattern",
            ),
            (
                r#"{"allow_domain": ["a..b"]}"#,
                "\"allow_domain\": invalid domain pattern",
            ),
            (
                r#"{"allow_domain": ["a.com:0"]}"#,
                "\"allow_domain\": invalid port",
            ),
            (
                r#"{"deny_domain": ["*."]}"#,
                "\"deny_domain\": invalid domain pattern",
            ),
            (
                r#"{"allow_preset": ["antropic"]}"#,
                "\"allow_preset\": unknown preset \"antropic\" (known presets: anthropic, openai,",
            ),
            (
                r#"{"allow_local": ["127.0.0.1"]}"#,
                "\"allow_local\": invalid local service",
            ),
            (
                r#"{"allow_local": ["example.com:80"]}"#,
                "\"allow_local\": invalid local service",
            ),
            (r#"{"secret": ["TOKEN"]}"#, "\"secret\": invalid secret"),
            (
                r#"{"secret": ["T=a.com:443"]}"#,
                "\"secret\": invalid secret",
            ),
            (
                r#"{"resolve": ["db"]}"#,
                "\"resolve\": invalid resolve entry",
            ),
            (
                r#"{"resolve": ["db:nowhere"]}"#,
                "\"resolve\": invalid resolve entry",
            ),
            (r#"{"allow_domain": "example.com"}"#, "invalid type"),
            (r#"{"upstream_ca": [1]}"#, "invalid type"),
        ];
        for (src, want) in cases {
            let e = parse(src).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, PolicyError::Invalid { line: 1, .. }),
                "{src}: {e:?}"
            );
            assert!(msg.starts_with("/w/.cordon.json: line 1, column "), "{msg}");
            assert!(msg.contains(want), "{src}: {msg}");
        }
        let e = parse("{\n  \"allow_domain\": [\n    \"ok.com\",\n    \"bad domain\"\n  ]\n}")
            .unwrap_err();
        assert!(matches!(e, PolicyError::Invalid { line: 5, .. }), "{e:?}");
    }

    #[test]
    fn empty_and_whitespace_are_empty_config() {
        for s in ["", " ", "\n\t \r\n", "\u{feff}", "\u{feff}  \n"] {
            assert_eq!(parse(s).unwrap(), ConfigFile::default(), "{s:?}");
        }
        assert_eq!(parse("{}").unwrap(), ConfigFile::default());
    }

    #[test]
    fn vm_resources_take_the_size_syntax_and_their_bounds() {
        let c = parse(r#"{"vm_memory": "2GiB", "vm_cpus": 4}"#).unwrap();
        assert_eq!((c.vm_memory.0, c.vm_cpus.0), (Some(2 << 30), Some(4)));
        assert_eq!(
            parse(r#"{"vm_memory": 536870912}"#).unwrap().vm_memory,
            Some(512 << 20)
        );
        assert_eq!(parse(r#"{"vm_cpus": null}"#).unwrap().vm_cpus, None);
        for (src, want) in [
            (
                r#"{"vm_memory": "64M"}"#,
                "invalid vm_memory 64M: must be at least 128M",
            ),
            (
                r#"{"vm_memory": "2T"}"#,
                "invalid vm_memory 2T: must be at most 1T",
            ),
            (
                r#"{"vm_memory": "1000.5M"}"#,
                "invalid vm_memory 1024512K: must be a whole number of MiB",
            ),
            (r#"{"vm_memory": "lots"}"#, "invalid size \"lots\""),
            (
                r#"{"vm_memory": -1}"#,
                "invalid vm_memory -1: must be positive",
            ),
            (
                r#"{"vm_memory": 1.5}"#,
                "invalid vm_memory 1.5: write a fractional size",
            ),
            (
                r#"{"vm_cpus": 0}"#,
                "invalid vm_cpus 0: must be from 1 to 64",
            ),
            (
                r#"{"vm_cpus": 65}"#,
                "invalid vm_cpus 65: must be from 1 to 64",
            ),
            (
                r#"{"vm_cpus": 1.5}"#,
                "invalid type: floating point `1.5`, expected u64",
            ),
            (
                r#"{"vm_cpus": "2"}"#,
                "invalid type: string \"2\", expected u64",
            ),
        ] {
            let e = parse(src).unwrap_err();
            assert!(
                matches!(e, PolicyError::Invalid { line: 1, .. }),
                "{src}: {e:?}"
            );
            assert!(e.to_string().contains(want), "{src}: {e}");
        }
        // A typo is caught with the nearest key.
        let e = parse(r#"{"vm_memroy": "2G"}"#).unwrap_err().to_string();
        assert!(e.contains("did you mean \"vm_memory\"?"), "{e}");
    }

    #[test]
    fn memory_as_number_or_string() {
        assert_eq!(
            parse(r#"{"memory": 1048576}"#).unwrap().memory,
            Some(1 << 20)
        );
        assert_eq!(
            parse(r#"{"memory": "512MiB"}"#).unwrap().memory,
            Some(512 << 20)
        );
        assert_eq!(parse(r#"{"memory": null}"#).unwrap().memory, None);
        for bad in [
            r#"{"memory": "lots"}"#,
            r#"{"memory": -1}"#,
            r#"{"memory": 1.5}"#,
            r#"{"memory": 0}"#,
            r#"{"memory": "0M"}"#,
            r#"{"memory": true}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e, PolicyError::Invalid { line: 1, .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_field_names_field_and_file() {
        let e = parse("{\n  \"alow_write\": []\n}").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/w/.cordon.json: line 2"), "{msg}");
        assert!(msg.contains("unknown field \"alow_write\""), "{msg}");
        assert!(msg.contains("did you mean \"allow_write\"?"), "{msg}");
        assert!(
            msg.contains("known fields: allow_write, allow_read, deny_read"),
            "{msg}"
        );
        match e {
            PolicyError::UnknownField {
                field, suggestion, ..
            } => {
                assert_eq!(field, "alow_write");
                assert_eq!(suggestion, Some("allow_write"));
            }
            other => panic!("{other:?}"),
        }
        // No suggestion when nothing is close; odd names are quoted and escaped.
        let msg = parse(r#"{"zzzzzzzzzz`, expected": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(r#"unknown field "zzzzzzzzzz`, expected""#),
            "{msg}"
        );
        assert!(!msg.contains("did you mean"), "{msg}");
        let msg = parse(r#"{"a\nb": 1}"#).unwrap_err().to_string();
        assert!(msg.contains(r#"unknown field "a\nb""#), "{msg}");
        assert!(
            parse(r#"{"allow-write": []}"#)
                .unwrap_err()
                .to_string()
                .contains("did you mean \"allow_write\"?")
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse("{\n  \"net\": \"none\"\n  \"pids\": 3\n}").unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::Syntax {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("/w/.cordon.json: line 3, column 3: expected"),
            "{msg}"
        );
        let e = parse("{\"net\": ").unwrap_err();
        assert!(matches!(e, PolicyError::Syntax { line: 1, .. }), "{e:?}");
        for src in ["[1, 2]", "[]", "\n  []", "3", "\"x\"", "null"] {
            let e = parse(src).unwrap_err();
            assert!(
                e.to_string().contains("a JSON object of cordon settings"),
                "{e}"
            );
        }
        let e = parse("\n  []").unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::Invalid {
                    line: 2,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse("[").unwrap_err();
        assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
    }

    #[test]
    fn wrong_types_name_line_and_column() {
        let cases = [
            (r#"{"allow_write": "/x"}"#, "invalid type"),
            (r#"{"read_only": "yes"}"#, "invalid type"),
            (r#"{"net": "all"}"#, "unknown variant"),
            (r#"{"timeout": -1}"#, "positive"),
            (r#"{"timeout": 0}"#, "positive"),
            (r#"{"timeout": 1e300}"#, "too large"),
            (r#"{"pids": 0}"#, "at least 1"),
            (r#"{"pids": 1.5}"#, "invalid type"),
            (r#"{"cpus": 0}"#, "positive"),
            (r#"{"$schema": 3}"#, "invalid type"),
            (r#"{"env": [1]}"#, "invalid type"),
            (r#"{"net": "none", "net": "host"}"#, "duplicate field"),
        ];
        for (src, want) in cases {
            let e = parse(src).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, PolicyError::Invalid { line: 1, .. }),
                "{src}: {e:?}"
            );
            assert!(msg.starts_with("/w/.cordon.json: line 1, column "), "{msg}");
            assert!(msg.contains(want), "{src}: {msg}");
        }
    }

    #[test]
    fn deep_nesting_and_garbage_do_not_panic() {
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).is_err());
        let deep = format!("{{\"env\": {}", "[".repeat(100_000));
        assert!(parse(&deep).is_err());
        assert!(parse_config(&[0xff, 0xfe, 0x00], Path::new("x")).is_err());
        assert!(parse_config(b"{\"env\": [\"\xff\"]}", Path::new("x")).is_err());
    }

    #[test]
    fn default_user_config_path() {
        let home = Path::new("/home/u");
        assert_eq!(
            default_user_config(home, None),
            Path::new("/home/u/.config/cordon/config.json")
        );
        assert_eq!(
            default_user_config(home, Some(Path::new("/x"))),
            Path::new("/x/cordon/config.json")
        );
        assert_eq!(
            default_user_config(home, Some(Path::new("rel"))),
            Path::new("/home/u/.config/cordon/config.json")
        );
    }
}
