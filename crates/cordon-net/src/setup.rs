//! The host-side preparation of a run in `allowlist` mode: secrets read from the
//! host environment and given placeholders, cordon's CA (only where a secret needs
//! TLS terminated), the trust bundle and resolv.conf the sandbox sees, its
//! environment, and the sockets the backend must open for the broker.

use crate::audit::Audit;
use crate::ca::{CertificateAuthority, write_private};
use crate::error::NetError;
use crate::secrets::Secret;
use crate::state::BrokerConfig;
use cordon_policy::{NetMode, NetworkRules, Policy};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the system keeps its CA bundle, by distribution. Each that exists on the
/// host is covered, inside, by the bundle that adds cordon's and the user's roots.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Variables that point TLS clients at the bundle.
const BUNDLE_VARIABLES: [&str; 6] = [
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
];

/// The HTTP proxy listener's port on the sandbox's 127.0.0.1.
pub const PROXY_PORT: u16 = 3128;

/// cordon's own directories for a user.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The CA's key lives below it; every sandbox has it denied.
    pub data: PathBuf,
    /// The bundle and resolv.conf the sandbox sees (nothing secret).
    pub cache: PathBuf,
    /// The audit log.
    pub state: PathBuf,
}

impl Dirs {
    /// `data` is the policy's [`cordon_policy::Policy::data_dir`] (the one
    /// definition of it: the policy denies it to every sandbox); the others are
    /// the XDG base directories (`$XDG_CACHE_HOME`, `$XDG_STATE_HOME`), else their
    /// defaults below `home`, each with `cordon` appended.
    pub fn from_env(home: &Path, data: &Path) -> Dirs {
        Dirs {
            data: data.to_path_buf(),
            cache: Self::cache_from_env(home),
            state: xdg_dir(home, "XDG_STATE_HOME", ".local/state"),
        }
    }

    /// cordon's cache directory alone (`$XDG_CACHE_HOME/cordon`, else
    /// `~/.cache/cordon`).
    pub fn cache_from_env(home: &Path) -> PathBuf {
        xdg_dir(home, "XDG_CACHE_HOME", ".cache")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.state.join("audit.jsonl")
    }
}

/// `$var/cordon` when `$var` is an absolute path, else `home/default/cordon`.
fn xdg_dir(home: &Path, var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home.join(default))
        .join("cordon")
}

/// What the backend must arrange inside the sandbox.
#[derive(Debug, Default)]
pub struct SandboxSide {
    /// `(host file, path in the view)`: laid read-only over the view.
    pub files: Vec<(PathBuf, PathBuf)>,
    pub env: Vec<(String, String)>,
    /// Ports for the transparent listeners.
    pub ports: Vec<u16>,
    /// Those of `ports` with an `--allow-local` service, reachable at 127.0.0.1.
    pub local_ports: Vec<u16>,
    /// The HTTP proxy listener's port, if it does not clash with one of `ports`.
    pub proxy_port: Option<u16>,
}

/// A prepared broker and what the sandbox needs for it.
pub struct Egress {
    pub config: BrokerConfig,
    pub sandbox: SandboxSide,
}

/// The broker a run under `policy` needs, prepared: none unless its network mode
/// is `allowlist`. `host_env` reads the host's environment (the secrets' values).
pub fn for_policy(
    policy: &Policy,
    host_env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Egress>, NetError> {
    if policy.net.value != NetMode::Allowlist {
        return Ok(None);
    }
    prepare(
        &policy.network,
        &Dirs::from_env(&policy.home, &policy.data_dir),
        host_env,
    )
    .map(Some)
}

/// Prepares the broker for `rules`. `host_env` reads the host's environment (the
/// secrets' values).
pub fn prepare(
    rules: &NetworkRules,
    dirs: &Dirs,
    host_env: impl Fn(&str) -> Option<String>,
) -> Result<Egress, NetError> {
    let mut sandbox = SandboxSide::default();
    let mut secrets = Vec::new();
    for rule in &rules.secrets {
        let value = host_env(&rule.name).ok_or_else(|| NetError::SecretMissing {
            name: rule.name.clone(),
        })?;
        let secret = Secret::new(rule.name.clone(), value, rule.hosts.clone());
        sandbox
            .env
            .push((rule.name.clone(), secret.placeholder.clone()));
        secrets.push(secret);
    }
    let ca = if secrets.is_empty() {
        None
    } else {
        Some(CertificateAuthority::load_or_create(&dirs.data.join("ca"))?)
    };
    let upstream_cas = crate::upstream::read_upstream_cas(&rules.upstream_ca)?;
    let bundle = trust_bundle(&upstream_cas, ca.as_ref(), dirs, &mut sandbox)?;
    for var in BUNDLE_VARIABLES {
        sandbox
            .env
            .push((var.to_string(), bundle.display().to_string()));
    }
    let resolv = cached_file(
        dirs,
        "resolv.conf",
        crate::dns::stub::resolv_conf().as_bytes(),
    )?;
    sandbox
        .files
        .push((resolv, overlay_target(Path::new("/etc/resolv.conf"))));
    // 80 and 443 always: a domain allowed later in the session (`allowDomain`) can
    // use only ports that have a listener from the start.
    sandbox.ports = rules.ports();
    sandbox.ports.extend(cordon_policy::DEFAULT_PORTS);
    sandbox.ports.sort_unstable();
    sandbox.ports.dedup();
    sandbox.local_ports = rules.local.iter().map(|l| l.addr.port()).collect();
    if !sandbox.ports.contains(&PROXY_PORT) {
        sandbox.proxy_port = Some(PROXY_PORT);
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            sandbox.env.push((var.to_string(), proxy.clone()));
        }
        for var in ["NO_PROXY", "no_proxy"] {
            sandbox
                .env
                .push((var.to_string(), "localhost,127.0.0.1,::1".to_string()));
        }
    }
    let audit_log = dirs.audit_log();
    let audit = Audit::open(&audit_log, true).map_err(|source| NetError::File {
        what: "cannot open the audit log",
        path: audit_log,
        source,
    })?;
    // The broker's own roots serve only where it terminates TLS, which only a
    // secret makes it do; loading the host's roots costs milliseconds a run.
    let roots = if secrets.is_empty() {
        rustls::RootCertStore::empty()
    } else {
        crate::upstream::root_store(&upstream_cas)?
    };
    let roots = Arc::new(roots);
    Ok(Egress {
        config: BrokerConfig {
            rules: rules.clone(),
            secrets,
            ca,
            roots,
            audit,
        },
        sandbox,
    })
}

/// The bundle the sandbox trusts: the system's, the user's `--upstream-ca` roots
/// and cordon's CA. Laid over every system bundle path the host has; returns the
/// path the variables name.
fn trust_bundle(
    upstream_cas: &[crate::upstream::UpstreamCaFile],
    ca: Option<&CertificateAuthority>,
    dirs: &Dirs,
    sandbox: &mut SandboxSide,
) -> Result<PathBuf, NetError> {
    let system: Vec<&str> = SYSTEM_BUNDLES
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let mut bundle = system
        .first()
        .and_then(|p| fs::read(p).ok())
        .unwrap_or_default();
    for extra in upstream_cas {
        append_pem(&mut bundle, &extra.pem);
    }
    if let Some(ca) = ca {
        append_pem(&mut bundle, ca.cert_pem().as_bytes());
    }
    let file = cached_file(dirs, "ca-bundle.pem", &bundle)?;
    let targets: Vec<PathBuf> = system
        .iter()
        .map(|p| overlay_target(Path::new(p)))
        .collect();
    let named = targets.first().cloned().unwrap_or_else(|| file.clone());
    for target in targets {
        sandbox.files.push((file.clone(), target));
    }
    Ok(named)
}

fn append_pem(bundle: &mut Vec<u8>, pem: &[u8]) {
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(pem);
}

/// `path` with its parent made canonical: the view refuses symlinks in the
/// directories above an overlay (the file itself may be one).
fn overlay_target(path: &Path) -> PathBuf {
    match (
        path.parent().and_then(|p| p.canonicalize().ok()),
        path.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => path.to_path_buf(),
    }
}

/// `dirs.cache/name` holding `content`, rewritten only when it differs (two runs
/// at once write the same bytes; the rename keeps every reader whole).
fn cached_file(dirs: &Dirs, name: &str, content: &[u8]) -> Result<PathBuf, NetError> {
    let path = dirs.cache.join(name);
    if fs::read(&path).is_ok_and(|old| old == content) {
        return Ok(path);
    }
    let io_error = |source| NetError::File {
        what: "cannot write",
        path: path.clone(),
        source,
    };
    fs::create_dir_all(&dirs.cache).map_err(io_error)?;
    write_private(&path, content, 0o644).map_err(io_error)?;
    Ok(path.canonicalize().unwrap_or(path))
}
