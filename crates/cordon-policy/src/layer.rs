//! Layering: built-in defaults, then the user's config, then flags, then the
//! project's config (tighten-only), then the derived rules (protected paths), then
//! sorting and deduplication.

use crate::config::{ConfigFile, ConfigNet, Trust, default_user_config, load_config};
use crate::defaults::{SCRATCH, cordon_data_dir, default_env, default_rules};
use crate::error::PolicyError;
use crate::home::HomeEnv;
use crate::model::{
    Access, BackendChoice, EnvVar, Mount, NetMode, Origin, PathRule, Policy, RuleKind, Sourced,
    Switches, VmShare, rule_for_in,
};
use crate::network::{
    DomainPattern, DomainRule, LocalService, NetworkRules, ResolveRule, SecretRule, UpstreamCa,
};
use crate::paths::{Vars, canonicalize_lenient, expand, normalize_lexical, resolve_path};
use crate::protect::protected_paths;
use crate::settings::Settings;
use crate::tighten::{self, Decision, USER_CONFIG_HINT};
use crate::values::{
    parse_env_arg, parse_local_service, parse_mount_arg, parse_resolve_arg, parse_secret_arg,
};
use crate::{Flags, Inputs, PiMode};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) fn resolve(inputs: &Inputs) -> Result<Policy, PolicyError> {
    let cwd = require_absolute("current directory", &inputs.cwd)?;
    let home_raw = require_absolute("home directory ($HOME)", &inputs.home)?;
    let tmp = require_absolute("temporary directory ($TMPDIR)", &inputs.tmp)?;
    let workspace = resolve_workspace(&cwd.join(&inputs.workspace))?;
    let home = canonicalize_lenient(home_raw);
    let vars = Vars {
        workspace: workspace.clone(),
        home: home.clone(),
        tmp: canonicalize_lenient(tmp),
    };

    let mut warnings = Vec::new();
    let (user_file, required) = match &inputs.config {
        Some(p) => (cwd.join(p), true),
        None => (
            default_user_config(home_raw, inputs.xdg_config_home.as_deref()),
            false,
        ),
    };
    let user = load_config(&user_file, required, Trust::User, &workspace, &mut warnings)?;
    let project_file = workspace.join(".cordon.json");
    let project = load_config(
        &project_file,
        false,
        Trust::Project,
        &workspace,
        &mut warnings,
    )?;

    // cordon's data directory (the broker's CA key) is hidden wherever it is.
    let xdg_data_home = inputs.xdg_data_home.as_deref();
    let mut layers = Layers::defaults(vars, xdg_data_home, warnings);
    layers.home_env = HomeEnv::from_vars(|name| match name {
        "XDG_CONFIG_HOME" => inputs.xdg_config_home.clone().map(Into::into),
        "XDG_DATA_HOME" => inputs.xdg_data_home.clone().map(Into::into),
        _ => std::env::var_os(name),
    });
    layers.cwd = cwd.to_path_buf();
    let pi = inputs.flags.pi.as_ref();
    if let Some(mode) = pi {
        layers.apply_pi_mode(mode)?;
    }
    if let Some(c) = &user {
        let file = user_file.clone();
        layers.apply_user(c, Origin::UserConfig { file })?;
        if let (Some(section), Some(_)) = (&c.pi, pi) {
            let file = user_file.clone();
            layers.apply_user(section, Origin::UserPiConfig { file })?;
        }
    }
    layers.apply_flags(&inputs.flags, cwd)?;
    if let Some(c) = &project {
        let file = project_file.clone();
        layers.apply_project(c, &project_file, Origin::ProjectConfig { file }, "")?;
        if let (Some(section), Some(_)) = (&c.pi, pi) {
            let file = project_file.clone();
            let origin = Origin::ProjectPiConfig { file };
            layers.apply_project(section, &project_file, origin, "pi.")?;
        }
    }
    layers.finish()
}

fn require_absolute<'a>(what: &'static str, p: &'a Path) -> Result<&'a Path, PolicyError> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(PolicyError::Environment {
            what,
            path: p.to_path_buf(),
            reason: "must be an absolute path".to_string(),
        })
    }
}

/// The canonical workspace: it must exist, be a directory, and not be `/tmp` itself.
fn resolve_workspace(p: &Path) -> Result<PathBuf, PolicyError> {
    let err = |reason: String| PolicyError::Workspace {
        path: p.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(p).map_err(|e| {
        err(if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist".to_string()
        } else {
            e.to_string()
        })
    })?;
    if !meta.is_dir() {
        return Err(err("is not a directory".to_string()));
    }
    let ws = std::fs::canonicalize(p).map_err(|e| err(e.to_string()))?;
    if ws == canonicalize_lenient(Path::new(SCRATCH)) {
        return Err(err(
            "is /tmp itself, which the sandbox replaces with a private, empty tmpfs; choose a directory under /tmp".to_string(),
        ));
    }
    Ok(ws)
}

/// The policy under construction.
struct Layers {
    vars: Vars,
    /// cordon's own data directory ([`Policy::data_dir`]).
    data_dir: PathBuf,
    /// Path rules except the workspace's, the protected ones and `allow_read`'s.
    rules: Vec<PathRule>,
    /// Read rules added by `allow_read`.
    allow_read: Vec<PathRule>,
    /// Who made the workspace read-only, if anyone.
    read_only: Option<Origin>,
    /// Paths removed from the protected set (each as written, normalised, and
    /// canonicalised).
    unprotect: Vec<PathBuf>,
    /// The network mode as set by a config or a flag, or the default.
    net: Sourced<NetMode>,
    /// Whether a config or a flag set `net` (else it follows [`NetworkRules::allows_anything`]).
    net_explicit: bool,
    network: NetworkRules,
    env: Vec<EnvVar>,
    /// The settings of the table in settings.rs (the limits, the VM's resources).
    settings: Settings,
    timeout: Option<Sourced<Duration>>,
    /// The VM's kernel, when named.
    vm_kernel: Option<Sourced<PathBuf>>,
    backend: Sourced<BackendChoice>,
    vm_share: Option<Sourced<VmShare>>,
    switches: Switches,
    /// Mounts as written, their paths resolved; checked in `finish`.
    mounts: Vec<Mount>,
    /// Put before a field's name in a project config's warnings (`pi.`).
    field_prefix: &'static str,
    /// Who asked to hide the home directory, if anyone.
    hide_home: Option<Origin>,
    /// Paths that stay visible in a hidden home, and who named them.
    home_visible: Vec<(PathBuf, Origin)>,
    /// The environment that moves home files.
    home_env: HomeEnv,
    /// The current directory.
    cwd: PathBuf,
    /// Whether the managed caches are on, and who said so.
    caches: Sourced<bool>,
    warnings: Vec<String>,
}

fn value_err(origin: &Origin, message: String) -> PolicyError {
    PolicyError::Value {
        origin: origin.clone(),
        message,
    }
}

fn flag(name: &str) -> Origin {
    Origin::Flag {
        flag: name.to_string(),
    }
}

fn plain(path: PathBuf, access: Access, origin: &Origin) -> PathRule {
    PathRule {
        path,
        access,
        kind: RuleKind::Plain,
        origin: origin.clone(),
    }
}

fn net_mode(n: ConfigNet) -> NetMode {
    match n {
        ConfigNet::None => NetMode::None,
        ConfigNet::Host => NetMode::Host,
        ConfigNet::Allowlist => NetMode::Allowlist,
    }
}

/// An error in a value of a config `field` (`""` for a flag, whose name the origin
/// already says).
fn field_err(origin: &Origin, field: &str, m: impl std::fmt::Display) -> PolicyError {
    value_err(
        origin,
        if field.is_empty() {
            m.to_string()
        } else {
            format!("\"{field}\": {m}")
        },
    )
}

fn duration(secs: f64, origin: &Origin, what: &str) -> Result<Duration, PolicyError> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(value_err(
            origin,
            format!("invalid {what} {secs}: must be a positive number of seconds"),
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| value_err(origin, format!("invalid {what} {secs}: too large")))
}

impl Layers {
    fn defaults(vars: Vars, xdg_data_home: Option<&Path>, warnings: Vec<String>) -> Self {
        let off = || Sourced::new(false, Origin::Default);
        Layers {
            rules: default_rules(&vars.home, xdg_data_home),
            data_dir: cordon_data_dir(&vars.home, xdg_data_home),
            vars,
            allow_read: Vec::new(),
            read_only: None,
            unprotect: Vec::new(),
            net: Sourced::new(NetMode::None, Origin::Default),
            net_explicit: false,
            network: NetworkRules::default(),
            env: default_env(),
            settings: Settings::defaults(),
            timeout: None,
            vm_kernel: None,
            backend: Sourced::new(BackendChoice::Os, Origin::Default),
            vm_share: None,
            switches: Switches {
                nested_userns: off(),
                unix_sockets: off(),
            },
            mounts: Vec::new(),
            field_prefix: "",
            hide_home: None,
            home_visible: Vec::new(),
            home_env: HomeEnv::default(),
            cwd: PathBuf::from("/"),
            caches: Sourced::new(true, Origin::Default),
            warnings,
        }
    }

    /// Resolve a path from a config file: relative to the workspace.
    fn config_path(&self, raw: &str, field: &str, origin: &Origin) -> Result<PathBuf, PolicyError> {
        resolve_path(raw, &self.vars.workspace, &self.vars)
            .map_err(|m| value_err(origin, format!("\"{field}\": {m}")))
    }

    /// Resolve a path from a flag: relative to the current directory.
    fn flag_path(&self, p: &Path, cwd: &Path, origin: &Origin) -> Result<PathBuf, PolicyError> {
        match p.to_str() {
            Some(s) => resolve_path(s, cwd, &self.vars).map_err(|m| value_err(origin, m)),
            None => Ok(canonicalize_lenient(&cwd.join(p))),
        }
    }

    /// A plain rule with `access` for each path of the config list `field`.
    fn add_config_rules(
        &mut self,
        raws: &[String],
        field: &str,
        access: Access,
        origin: &Origin,
    ) -> Result<(), PolicyError> {
        for raw in raws {
            let p = self.config_path(raw, field, origin)?;
            self.rules.push(plain(p, access, origin));
        }
        Ok(())
    }

    fn set_env(&mut self, arg: &str, origin: &Origin, field: &str) -> Result<(), PolicyError> {
        let (name, value) = parse_env_arg(arg).map_err(|m| field_err(origin, field, m))?;
        let var = EnvVar {
            name,
            value,
            origin: origin.clone(),
        };
        match self.env.iter_mut().find(|e| e.name == var.name) {
            Some(e) => *e = var,
            None => self.env.push(var),
        }
        Ok(())
    }

    /// Set the network mode explicitly (a config's `net` or `--net`).
    fn set_net(&mut self, mode: NetMode, origin: &Origin) {
        self.net = Sourced::new(mode, origin.clone());
        self.net_explicit = true;
    }

    /// The network mode as things stand: the explicit one, else `allowlist` (from
    /// the first allow rule or local service) when anything is allowed, else the
    /// default.
    fn effective_net(&self) -> Sourced<NetMode> {
        if !self.net_explicit {
            let first = (self.network.allow.first().map(|r| &r.origin))
                .or_else(|| self.network.local.first().map(|l| &l.origin));
            if let Some(origin) = first {
                return Sourced::new(NetMode::Allowlist, origin.clone());
            }
        }
        self.net.clone()
    }

    /// Add an allow rule unless the same pattern is already allowed.
    fn push_allow(&mut self, pattern: DomainPattern, preset: Option<&str>, origin: &Origin) {
        if self.network.allow.iter().any(|r| r.pattern == pattern) {
            return;
        }
        self.network.allow.push(DomainRule {
            pattern,
            preset: preset.map(str::to_string),
            origin: origin.clone(),
        });
    }

    fn allow_domain(&mut self, raw: &str, origin: &Origin, field: &str) -> Result<(), PolicyError> {
        let p = DomainPattern::parse(raw).map_err(|m| field_err(origin, field, m))?;
        self.push_allow(p, None, origin);
        Ok(())
    }

    fn deny_domain(&mut self, raw: &str, origin: &Origin, field: &str) -> Result<(), PolicyError> {
        let pattern = DomainPattern::parse(raw).map_err(|m| field_err(origin, field, m))?;
        if !self.network.deny.iter().any(|r| r.pattern == pattern) {
            self.network.deny.push(DomainRule {
                pattern,
                preset: None,
                origin: origin.clone(),
            });
        }
        Ok(())
    }

    fn allow_preset(
        &mut self,
        name: &str,
        origin: &Origin,
        field: &str,
    ) -> Result<(), PolicyError> {
        let hosts = crate::presets::lookup(name).map_err(|m| field_err(origin, field, m))?;
        for h in hosts {
            let p = DomainPattern::parse(h).map_err(|m| field_err(origin, field, m))?;
            self.push_allow(p, Some(name), origin);
        }
        Ok(())
    }

    /// A local service; the same address twice is one, two addresses on one port
    /// are an error (inside, both would be 127.0.0.1:PORT).
    fn allow_local(&mut self, raw: &str, origin: &Origin, field: &str) -> Result<(), PolicyError> {
        let addr = parse_local_service(raw).map_err(|m| field_err(origin, field, m))?;
        match self
            .network
            .local
            .iter()
            .find(|l| l.addr.port() == addr.port())
        {
            Some(l) if l.addr == addr => {}
            Some(l) => {
                return Err(field_err(
                    origin,
                    field,
                    format!(
                        "local service {addr}: port {} is already taken by {} ({}); inside, both would be 127.0.0.1:{}",
                        addr.port(),
                        l.addr,
                        l.origin,
                        addr.port()
                    ),
                ));
            }
            None => self.network.local.push(LocalService {
                addr,
                origin: origin.clone(),
            }),
        }
        Ok(())
    }

    /// A secret; a later one of the same name replaces the earlier one.
    fn secret(&mut self, raw: &str, origin: &Origin, field: &str) -> Result<(), PolicyError> {
        self.secret_from(raw, None, origin, field)
    }

    /// A secret whose value is `value_from` (`None`: the host's variable).
    fn secret_from(
        &mut self,
        raw: &str,
        value_from: Option<String>,
        origin: &Origin,
        field: &str,
    ) -> Result<(), PolicyError> {
        let (name, hosts) = parse_secret_arg(raw).map_err(|m| field_err(origin, field, m))?;
        let rule = SecretRule {
            name,
            hosts,
            origin: origin.clone(),
            value_from,
        };
        match self
            .network
            .secrets
            .iter_mut()
            .find(|s| s.name == rule.name)
        {
            Some(s) => *s = rule,
            None => self.network.secrets.push(rule),
        }
        Ok(())
    }

    /// A `--resolve` entry; a later one for the same host replaces the earlier one.
    fn resolve_entry(
        &mut self,
        raw: &str,
        origin: &Origin,
        field: &str,
    ) -> Result<(), PolicyError> {
        let (host, addr) = parse_resolve_arg(raw).map_err(|m| field_err(origin, field, m))?;
        let rule = ResolveRule {
            host,
            addr,
            origin: origin.clone(),
        };
        match self
            .network
            .resolve
            .iter_mut()
            .find(|r| r.host == rule.host)
        {
            Some(r) => *r = rule,
            None => self.network.resolve.push(rule),
        }
        Ok(())
    }

    /// The VM's kernel (already absolute and canonical): it must be a file.
    fn vm_kernel(
        &mut self,
        file: PathBuf,
        origin: &Origin,
        field: &str,
    ) -> Result<(), PolicyError> {
        require_file(
            &file,
            (origin, field),
            "VM kernel",
            "name a bzImage such as /boot/vmlinuz-VERSION, or an ELF vmlinux",
        )?;
        self.vm_kernel = Some(Sourced::new(file, origin.clone()));
        Ok(())
    }

    /// An upstream CA file (already absolute and canonical): it must be a file.
    fn upstream_ca(
        &mut self,
        file: PathBuf,
        origin: &Origin,
        field: &str,
    ) -> Result<(), PolicyError> {
        require_file(
            &file,
            (origin, field),
            "upstream CA",
            "name a PEM file of CA certificates, e.g. /usr/local/share/ca-certificates/corp.crt",
        )?;
        if !self.network.upstream_ca.iter().any(|c| c.file == file) {
            self.network.upstream_ca.push(UpstreamCa {
                file,
                origin: origin.clone(),
            });
        }
        Ok(())
    }

    /// The network fields of a trusted config (the user's).
    fn apply_config_network(&mut self, c: &ConfigFile, origin: &Origin) -> Result<(), PolicyError> {
        for raw in &c.allow_domain {
            self.allow_domain(raw, origin, "allow_domain")?;
        }
        for raw in &c.deny_domain {
            self.deny_domain(raw, origin, "deny_domain")?;
        }
        for raw in &c.allow_preset {
            self.allow_preset(raw, origin, "allow_preset")?;
        }
        for raw in &c.allow_local {
            self.allow_local(raw, origin, "allow_local")?;
        }
        for raw in &c.secret {
            self.secret(raw, origin, "secret")?;
        }
        for raw in &c.resolve {
            self.resolve_entry(raw, origin, "resolve")?;
        }
        for raw in &c.upstream_ca {
            let file = self.config_path(raw, "upstream_ca", origin)?;
            self.upstream_ca(file, origin, "upstream_ca")?;
        }
        Ok(())
    }

    /// The network flags.
    fn apply_flags_network(&mut self, f: &Flags, cwd: &Path) -> Result<(), PolicyError> {
        let o = flag("--allow-domain");
        for raw in &f.allow_domain {
            self.allow_domain(raw, &o, "")?;
        }
        let o = flag("--deny-domain");
        for raw in &f.deny_domain {
            self.deny_domain(raw, &o, "")?;
        }
        let o = flag("--allow-preset");
        for raw in &f.allow_preset {
            self.allow_preset(raw, &o, "")?;
        }
        let o = flag("--allow-local");
        for raw in &f.allow_local {
            self.allow_local(raw, &o, "")?;
        }
        let o = flag("--secret");
        for raw in &f.secret {
            self.secret(raw, &o, "")?;
        }
        let o = flag("--resolve");
        for raw in &f.resolve {
            self.resolve_entry(raw, &o, "")?;
        }
        let o = flag("--upstream-ca");
        for p in &f.upstream_ca {
            let file = self.flag_path(p, cwd, &o)?;
            self.upstream_ca(file, &o, "")?;
        }
        Ok(())
    }

    /// What `cordon pi` adds: trusted, like a flag.
    fn apply_pi_mode(&mut self, mode: &PiMode) -> Result<(), PolicyError> {
        let pi = |reason: &str| Origin::Pi {
            reason: reason.to_string(),
        };
        for (path, reason) in &mode.allow_write {
            self.rules
                .push(plain(path.clone(), Access::Write, &pi(reason)));
        }
        for (path, reason) in &mode.allow_read {
            self.allow_read
                .push(plain(path.clone(), Access::Read, &pi(reason)));
        }
        for (path, reason) in &mode.deny_read {
            self.rules
                .push(plain(path.clone(), Access::Deny, &pi(reason)));
        }
        for (path, reason) in &mode.home_visible {
            self.home_visible.push((path.clone(), pi(reason)));
        }
        for (arg, reason) in &mode.env {
            self.set_env(arg, &pi(reason), "")?;
        }
        for (raw, reason) in &mode.allow_domain {
            self.allow_domain(raw, &pi(reason), "")?;
        }
        for s in &mode.secret {
            self.secret_from(&s.arg, s.value_from.clone(), &pi(&s.reason), "")?;
        }
        Ok(())
    }

    /// A mount; a later one at the same target replaces the earlier.
    fn push_mount(&mut self, mount: Mount) {
        self.mounts.retain(|m| m.target != mount.target);
        self.mounts.push(mount);
    }

    /// The user's config (or its `pi` section): trusted, everything allowed.
    fn apply_user(&mut self, c: &ConfigFile, origin: Origin) -> Result<(), PolicyError> {
        self.add_config_rules(&c.allow_write, "allow_write", Access::Write, &origin)?;
        self.add_config_rules(&c.deny_read, "deny_read", Access::Deny, &origin)?;
        for raw in &c.allow_read {
            let p = self.config_path(raw, "allow_read", &origin)?;
            self.rules.retain(|r| {
                !(r.access == Access::Deny
                    && matches!(r.kind, RuleKind::Secret | RuleKind::Plain)
                    && r.path.starts_with(&p))
            });
            self.allow_read.push(plain(p, Access::Read, &origin));
        }
        match c.read_only {
            Some(true) => self.read_only = Some(origin.clone()),
            Some(false) => self.read_only = None,
            None => {}
        }
        match c.hide_home {
            Some(true) => self.hide_home = Some(origin.clone()),
            Some(false) => self.hide_home = None,
            None => {}
        }
        for raw in &c.home_visible {
            let p = self.config_path(raw, "home_visible", &origin)?;
            self.home_visible.push((p, origin.clone()));
        }
        for raw in &c.unprotect {
            let written = expand(raw, &self.vars)
                .map_err(|m| value_err(&origin, format!("\"unprotect\": {m}")))?;
            let written = normalize_lexical(&self.vars.workspace.join(written));
            self.unprotect.push(canonicalize_lenient(&written));
            self.unprotect.push(written);
        }
        for e in &c.env {
            self.set_env(e, &origin, "env")?;
        }
        if let Some(n) = c.net {
            self.set_net(net_mode(n), &origin);
        }
        self.apply_config_network(c, &origin)?;
        if let Some(t) = c.timeout {
            self.timeout = Some(Sourced::new(
                duration(t, &origin, "\"timeout\"")?,
                origin.clone(),
            ));
        }
        if let Some(raw) = &c.vm_kernel {
            let file = self.config_path(raw, "vm_kernel", &origin)?;
            self.vm_kernel(file, &origin, "vm_kernel")?;
        }
        if let Some(b) = c.backend {
            self.backend = Sourced::new(b, origin.clone());
        }
        if let Some(s) = c.vm_share {
            self.vm_share = Some(Sourced::new(s, origin.clone()));
        }
        self.settings.apply_config(c, &origin);
        if let Some(b) = c.nested_userns {
            self.switches.nested_userns = Sourced::new(b, origin.clone());
        }
        if let Some(b) = c.unix_sockets {
            self.switches.unix_sockets = Sourced::new(b, origin.clone());
        }
        if let Some(b) = c.caches {
            self.caches = Sourced::new(b, origin.clone());
        }
        for m in &c.mount {
            let mount = Mount {
                source: self.config_path(&m.source, "mount", &origin)?,
                target: self.config_path(&m.target, "mount", &origin)?,
                writable: m.writable,
                origin: origin.clone(),
            };
            self.push_mount(mount);
        }
        Ok(())
    }

    /// Command-line flags: trusted; scalars override the user's config.
    fn apply_flags(&mut self, f: &Flags, cwd: &Path) -> Result<(), PolicyError> {
        let o = flag("--allow-write");
        for p in &f.allow_write {
            let p = self.flag_path(p, cwd, &o)?;
            self.rules.push(plain(p, Access::Write, &o));
        }
        let o = flag("--deny-read");
        for p in &f.deny_read {
            let p = self.flag_path(p, cwd, &o)?;
            self.rules.push(plain(p, Access::Deny, &o));
        }
        if f.read_only {
            self.read_only = Some(flag("--read-only"));
        }
        if f.hide_home {
            self.hide_home = Some(flag("--hide-home"));
        }
        let o = flag("--home-visible");
        for p in &f.home_visible {
            let p = self.flag_path(p, cwd, &o)?;
            self.home_visible.push((p, o.clone()));
        }
        let o = flag("--env");
        for e in &f.env {
            self.set_env(e, &o, "")?;
        }
        let o = flag("--mount");
        for raw in &f.mount {
            let m = parse_mount_arg(raw).map_err(|e| value_err(&o, e.to_string()))?;
            let mount = Mount {
                source: self.flag_path(Path::new(&m.source), cwd, &o)?,
                target: self.flag_path(Path::new(&m.target), cwd, &o)?,
                writable: m.writable,
                origin: o.clone(),
            };
            self.push_mount(mount);
        }
        if let Some(t) = f.timeout {
            let o = flag("--timeout");
            self.timeout = Some(Sourced::new(duration(t, &o, "timeout")?, o));
        }
        if let Some(p) = &f.vm_kernel {
            let o = flag("--vm-kernel");
            let file = self.flag_path(p, cwd, &o)?;
            self.vm_kernel(file, &o, "")?;
        }
        if let Some(b) = f.backend {
            self.backend = Sourced::new(b, flag("--backend (or $CORDON_BACKEND)"));
        }
        if let Some(s) = f.vm_share {
            self.vm_share = Some(Sourced::new(s, flag("--vm-share (or $CORDON_VM_SHARE)")));
        }
        if let Some(n) = f.net {
            self.set_net(n, &flag("--net"));
        }
        self.apply_flags_network(f, cwd)?;
        self.settings.apply_flags(f)?;
        Ok(())
    }

    fn ignored(&mut self, file: &Path, field: &str, detail: &str, hint: &str) {
        self.warnings.push(format!(
            "project config {}: ignored \"{}{field}\"{detail} (a project config may only tighten the policy; {hint})",
            file.display(),
            self.field_prefix
        ));
    }

    /// The project's config (or its `pi` section, whose fields warnings name with
    /// `prefix`): untrusted, may only tighten.
    fn apply_project(
        &mut self,
        c: &ConfigFile,
        file: &Path,
        origin: Origin,
        prefix: &'static str,
    ) -> Result<(), PolicyError> {
        self.field_prefix = prefix;
        let result = self.apply_project_fields(c, file, origin);
        self.field_prefix = "";
        result
    }

    fn apply_project_fields(
        &mut self,
        c: &ConfigFile,
        file: &Path,
        origin: Origin,
    ) -> Result<(), PolicyError> {
        // What only ever tightens is taken as it is.
        self.add_config_rules(&c.deny_read, "deny_read", Access::Deny, &origin)?;
        for raw in &c.deny_domain {
            self.deny_domain(raw, &origin, "deny_domain")?;
        }
        if let Some(on) = c.read_only {
            if tighten::only_on(self.read_only.is_some(), on) == Decision::Take {
                self.read_only = Some(origin.clone());
            }
        }
        if let Some(on) = c.hide_home {
            if tighten::only_on(self.hide_home.is_some(), on) == Decision::Take {
                self.hide_home = Some(origin.clone());
            }
        }
        self.project_switch(file, "caches", c.caches, &origin, |l| &mut l.caches);
        // What only ever loosens is ignored whole.
        for (field, hint) in tighten::loosening_fields(c) {
            self.ignored(file, field, "", &hint);
        }
        if let Some(n) = c.net {
            self.project_net(net_mode(n), file, &origin);
        }
        if let Some(t) = c.timeout {
            self.project_timeout(t, file, &origin)?;
        }
        for i in self.settings.tighten(c, &origin) {
            self.ignored(file, i.field, &i.detail, &i.hint);
        }
        self.project_switch(file, "nested_userns", c.nested_userns, &origin, |l| {
            &mut l.switches.nested_userns
        });
        self.project_switch(file, "unix_sockets", c.unix_sockets, &origin, |l| {
            &mut l.switches.unix_sockets
        });
        Ok(())
    }

    /// A project's value of a switch that loosens when on: taken only to turn
    /// it off.
    fn project_switch(
        &mut self,
        file: &Path,
        field: &str,
        value: Option<bool>,
        origin: &Origin,
        slot: fn(&mut Layers) -> &mut Sourced<bool>,
    ) {
        let Some(value) = value else {
            return;
        };
        match tighten::only_off(slot(self).value, value) {
            Decision::Take => *slot(self) = Sourced::new(value, origin.clone()),
            Decision::Ignore => self.ignored(file, field, ": true", USER_CONFIG_HINT),
            Decision::Keep => {}
        }
    }

    /// A project's network mode: taken when no more open than the current one.
    fn project_net(&mut self, want: NetMode, file: &Path, origin: &Origin) {
        match tighten::net(self.effective_net().value, self.net_explicit, want) {
            Decision::Take => self.set_net(want, origin),
            Decision::Ignore => {
                let (name, flag_arg) = match want {
                    NetMode::Host => ("host", "--net host"),
                    _ => ("allowlist", "--net allowlist"),
                };
                let detail = format!(": \"{name}\"");
                self.ignored(file, "net", &detail, &tighten::user_config_or(flag_arg));
            }
            Decision::Keep => {}
        }
    }

    /// A project's timeout, `secs` as written: taken when shorter than the
    /// current one.
    fn project_timeout(
        &mut self,
        secs: f64,
        file: &Path,
        origin: &Origin,
    ) -> Result<(), PolicyError> {
        let d = duration(secs, origin, "\"timeout\"")?;
        let current = self.timeout.clone();
        match (
            tighten::lower(current.as_ref().map(|t| &t.value), &d),
            current,
        ) {
            (Decision::Take, _) => self.timeout = Some(Sourced::new(d, origin.clone())),
            (Decision::Ignore, Some(cur)) => {
                let detail = format!(
                    ": {secs} s is more than the current {} s ({})",
                    cur.value.as_secs_f64(),
                    cur.origin
                );
                self.ignored(
                    file,
                    "timeout",
                    &detail,
                    &tighten::user_config_or("--timeout"),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Derive the workspace rule and protected paths, sort, deduplicate.
    fn finish(mut self) -> Result<Policy, PolicyError> {
        // A secret's variable holds its placeholder inside: passing the variable in
        // as well would put the real value there.
        for s in &self.network.secrets {
            if let Some(e) = self.env.iter().find(|e| e.name == s.name) {
                let hint = if e.origin == Origin::Default {
                    "cordon passes that variable in by default; a secret needs a variable of its own".to_string()
                } else {
                    format!("drop {} from --env / \"env\"", s.name)
                };
                return Err(value_err(
                    &s.origin,
                    format!(
                        "secret {} is also passed in as an environment variable ({}), but inside, a secret's variable holds only a placeholder (hint: {hint})",
                        s.name, e.origin,
                    ),
                ));
            }
        }
        let net = self.effective_net();
        let ws = self.vars.workspace.clone();
        let mut rules = std::mem::take(&mut self.rules);
        let ws_rule = match &self.read_only {
            Some(origin) => {
                // Read-only wins over an explicit write rule on the workspace itself.
                rules.retain(|r| !(r.path == ws && r.access == Access::Write));
                plain(ws.clone(), Access::Read, origin)
            }
            None => plain(ws.clone(), Access::Write, &Origin::Default),
        };
        rules.insert(1.min(rules.len()), ws_rule);
        let mut scratch = vec![canonicalize_lenient(Path::new(SCRATCH))];
        let home_hidden = self.hidden_home(&ws)?;
        if let Some(h) = &home_hidden {
            scratch.push(h.value.clone());
        }
        rules.extend(crate::mounts::source_rules(&self.mounts, &rules, &scratch)?);

        // `allow_read` never takes write access away.
        let allow_read: Vec<PathRule> = std::mem::take(&mut self.allow_read)
            .into_iter()
            .filter(|r| rule_for_in(&rules, &r.path).map(|w| w.access) != Some(Access::Write))
            .collect();
        rules.extend(allow_read);
        if let Some(h) = &home_hidden {
            self.show_in_hidden_home(&h.value, &mut rules);
        }

        // Protected paths inside every writable root (the workspace always counts).
        let mut roots: Vec<PathBuf> = vec![ws.clone()];
        for r in &rules {
            if r.access == Access::Write
                && !roots.contains(&r.path)
                // cordon pi's own dirs (pi's sessions, its caches): no host tool
                // runs code from them, so no placeholder appears among the sessions.
                && !matches!(r.origin, Origin::Pi { .. })
            {
                roots.push(r.path.clone());
            }
        }
        let mut candidates = Vec::new();
        for root in &roots {
            candidates.extend(protected_paths(root, &mut self.warnings));
        }
        candidates.extend(self.home_protected(&roots, &rules)?);
        let mut protected = Vec::new();
        let index = crate::model::RuleIndex::new(&rules);
        for p in candidates {
            if self.unprotect.contains(&p) {
                continue;
            }
            // In a hidden home, only what a rule there shows is the host's; the
            // rest is the private tmpfs, where nothing needs protecting, and a
            // read-only rule would show the host's path there (a home made
            // writable whole, then hidden by a project's config).
            if home_hidden
                .as_ref()
                .is_some_and(|h| !shown_in_hidden_home(&rules, &h.value, &p))
            {
                continue;
            }
            // Never make a hidden path visible; but keep it from being created: the
            // rule that hides it is protected too (deny wins the tie, so nothing
            // shows, and a missing one gets a hidden placeholder).
            let path = match index.rule_for(&p) {
                Some(r) if r.access == Access::Deny => {
                    if !roots.iter().any(|root| r.path.starts_with(root)) {
                        continue;
                    }
                    r.path.clone()
                }
                _ => p,
            };
            protected.push(protected_rule(path));
        }
        // So are the secrets a writable root holds (`~/.ssh/config`, `~/.kube/config`
        // run commands): they stay hidden, and cannot be created.
        for r in &rules {
            if r.kind == RuleKind::Secret
                && index
                    .rule_for(&r.path)
                    .is_some_and(|d| d.access == Access::Deny)
                && roots
                    .iter()
                    .any(|root| r.path.starts_with(root) && r.path != *root)
            {
                protected.push(protected_rule(r.path.clone()));
            }
        }
        rules.extend(protected);
        for root in &roots {
            if let Some(w) = crate::home::home_root_warning(root, &ws, &self.vars.home) {
                self.warnings.push(w);
            }
        }

        let sanitized = sanitized_copies(&rules, &self.vars.home, home_hidden.is_some());
        let mut rules = sort_dedup(rules);
        let caches = crate::caches::plan(&crate::caches::Inputs {
            home: &self.vars.home,
            workspace: &ws,
            xdg_cache_home: self.home_env.xdg_cache_home.as_deref(),
            enabled: &self.caches,
            rules: &rules,
            env: &self.env,
            mounts: &self.mounts,
            scratch: &scratch,
        });
        if !caches.rules.is_empty() {
            rules.extend(caches.rules);
            rules = sort_dedup(rules);
        }
        self.env.extend(caches.env);
        crate::mounts::check_targets(&mut self.mounts, &rules, &scratch)?;
        // Checked one by one when planned: a mount that cannot be is left out.
        self.mounts.extend(caches.mounts);
        self.mounts.sort_by(|a, b| a.target.cmp(&b.target));
        if let Some(r) = rule_for_in(&rules, &ws) {
            if r.access == Access::Deny {
                return Err(PolicyError::Workspace {
                    path: ws,
                    reason: format!(
                        "is hidden by the rule denying {} ({})",
                        r.path.display(),
                        r.origin
                    ),
                });
            }
        }

        Ok(Policy {
            workspace: ws,
            home: self.vars.home,
            data_dir: self.data_dir,
            rules,
            scratch,
            home_hidden,
            mounts: self.mounts,
            net,
            network: self.network,
            env: self.env,
            limits: self.settings.limits,
            vm: self.settings.vm,
            vm_kernel: self.vm_kernel,
            backend: self.backend,
            vm_share: self.vm_share,
            timeout: self.timeout,
            switches: self.switches,
            caches: caches.caches,
            sanitized,
            warnings: self.warnings,
        })
    }
}

impl Layers {
    /// The home directory, when it is to be hidden: it must not be (or hold) the
    /// workspace. `None` when nobody asked, or there is no home directory to hide.
    fn hidden_home(&mut self, ws: &Path) -> Result<Option<Sourced<PathBuf>>, PolicyError> {
        let Some(origin) = self.hide_home.clone() else {
            return Ok(None);
        };
        let home = self.vars.home.clone();
        if home.starts_with(ws) {
            return Err(value_err(
                &origin,
                format!(
                    "cannot hide the home directory {}: the workspace {} is or holds it (hint: use a project directory as the workspace)",
                    home.display(),
                    ws.display()
                ),
            ));
        }
        if !home.is_dir() {
            self.warnings.push(format!(
                "the home directory {} does not exist, so there is nothing to hide",
                home.display()
            ));
            return Ok(None);
        }
        Ok(Some(Sourced::new(home, origin)))
    }

    /// With a hidden `home`: a read rule for each `home_visible` path (never one that a
    /// deny rule hides), and no deny rule left where nothing is shown anyway.
    fn show_in_hidden_home(&mut self, home: &Path, rules: &mut Vec<PathRule>) {
        for (p, origin) in std::mem::take(&mut self.home_visible) {
            if !p.starts_with(home) || p == home {
                self.warnings.push(format!(
                    "{origin}: {} is not in the home directory {}, so it is not hidden anyway",
                    p.display(),
                    home.display()
                ));
                continue;
            }
            match rule_for_in(rules, &p) {
                Some(r) if r.access == Access::Deny => self.warnings.push(format!(
                    "{origin}: {} stays hidden by the rule denying {} ({}); to show it, add it to \"allow_read\" in your config",
                    p.display(),
                    r.path.display(),
                    r.origin
                )),
                Some(r) if r.access == Access::Write && r.path != *home => {}
                _ => rules.push(plain(p, Access::Read, &origin)),
            }
        }
        // A deny rule in the hidden home outside every path shown there hides what
        // is not there: dropped, so the empty tmpfs gets no mounts of its own.
        let shown: Vec<PathBuf> = rules
            .iter()
            .filter(|r| r.access != Access::Deny && r.path.starts_with(home) && r.path != home)
            .map(|r| r.path.clone())
            .collect();
        rules.retain(|r| {
            !(r.access == Access::Deny
                && r.path.starts_with(home)
                && r.path != home
                && !shown
                    .iter()
                    .any(|s| r.path.starts_with(s) || s.starts_with(&r.path)))
        });
    }

    /// The home files to protect that the writable `roots` hold.
    fn home_protected(
        &self,
        roots: &[PathBuf],
        rules: &[PathRule],
    ) -> Result<Vec<PathBuf>, PolicyError> {
        let home = &self.vars.home;
        let mut candidates = crate::home::candidates(home, &self.home_env, &self.cwd);
        candidates.extend(crate::home::path_dirs(
            &self.home_env,
            &self.vars.workspace,
            home,
        ));
        crate::home::protected_in_roots(&candidates, home, roots, rules, &self.unprotect).map_err(
            |u| PolicyError::Protect {
                path: u.path,
                reason: format!(
                    "cordon protects it because your machine runs it or it configures cordon or pi, but {} is a symlink in the writable root {}, which the sandbox could replace (hint: use a project directory as the workspace, or list {} under \"unprotect\" in your config)",
                    u.link.display(),
                    u.root.display(),
                    u.link.display()
                ),
            },
        )
    }
}

/// The hidden settings files shown as copies without their credentials
/// ([`crate::sanitize::SANITIZED_FILES`]: `~/.npmrc`, pip's `pip.conf`), each
/// while the built-in secret rule alone hides it (not when you hide it yourself,
/// show it with `allow_read`, or hide the whole home) and it is a file. `rules`
/// are not yet deduplicated.
fn sanitized_copies(
    rules: &[PathRule],
    home: &Path,
    home_hidden: bool,
) -> Vec<crate::sanitize::SanitizedCopy> {
    if home_hidden {
        return Vec::new();
    }
    // (Before deduplication, which keeps the secret rule over a deny of yours.)
    let default_secret = |r: &PathRule| r.kind == RuleKind::Secret && r.origin == Origin::Default;
    crate::sanitize::SANITIZED_FILES
        .iter()
        .filter_map(|&(relative, format)| {
            let path = canonicalize_lenient(&home.join(relative));
            let hidden_by_default = rule_for_in(rules, &path)
                .is_some_and(|r| r.path == path && r.access == Access::Deny)
                && rules.iter().filter(|r| r.path == path).all(default_secret)
                && rules.iter().any(|r| r.path == path && default_secret(r));
            (hidden_by_default && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()))
                .then_some(crate::sanitize::SanitizedCopy { path, format })
        })
        .collect()
}

/// Whether `path` lies outside the hidden `home`, or a rule strictly inside it
/// (a path shown there) decides `path`.
fn shown_in_hidden_home(rules: &[PathRule], home: &Path, path: &Path) -> bool {
    !path.starts_with(home)
        || rule_for_in(rules, path).is_some_and(|r| r.path.starts_with(home) && r.path != home)
}

fn protected_rule(path: PathBuf) -> PathRule {
    PathRule {
        path,
        access: Access::Read,
        kind: RuleKind::Protected,
        origin: Origin::Default,
    }
}

/// Sort by path (ancestors first), then access precedence; of rules with the same
/// path and access keep one: a protected or secret rule over a plain one (so its
/// stronger semantics survive), else the first added.
fn sort_dedup(rules: Vec<PathRule>) -> Vec<PathRule> {
    let kind_rank = |k: RuleKind| match k {
        RuleKind::Protected => 0,
        RuleKind::Secret => 1,
        RuleKind::Plain => 2,
    };
    let mut indexed: Vec<(usize, PathRule)> = rules.into_iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| {
        crate::model::path_order(&a.path, &b.path)
            .then(a.access.precedence().cmp(&b.access.precedence()))
            .then(kind_rank(a.kind).cmp(&kind_rank(b.kind)))
            .then(ia.cmp(ib))
    });
    let mut out: Vec<PathRule> = Vec::with_capacity(indexed.len());
    for (_, r) in indexed {
        if out
            .last()
            .is_some_and(|l| l.path == r.path && l.access == r.access)
        {
            continue;
        }
        out.push(r);
    }
    out
}

/// `file` (named by `field` of `origin`) must be a file: else an error
/// naming it as `what`, why not, and the `hint`.
fn require_file(
    file: &Path,
    (origin, field): (&Origin, &str),
    what: &str,
    hint: &str,
) -> Result<(), PolicyError> {
    let problem = match std::fs::metadata(file) {
        Ok(m) if m.is_file() => return Ok(()),
        Ok(_) => "is not a file".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Err(field_err(
        origin,
        field,
        format!("{what} {} {problem} (hint: {hint})", file.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(path: &str, access: Access, kind: RuleKind, origin: Origin) -> PathRule {
        PathRule {
            path: path.into(),
            access,
            kind,
            origin,
        }
    }

    #[test]
    fn sort_and_dedup() {
        let u = Origin::UserConfig { file: "/c".into() };
        let rules = vec![
            r("/a/b", Access::Read, RuleKind::Plain, u.clone()),
            r("/", Access::Read, RuleKind::Plain, Origin::Default),
            r("/a", Access::Deny, RuleKind::Plain, u.clone()),
            r("/a", Access::Write, RuleKind::Plain, Origin::Default),
            r("/a", Access::Deny, RuleKind::Secret, Origin::Default),
            r("/a/b", Access::Read, RuleKind::Protected, Origin::Default),
            r("/a-b", Access::Read, RuleKind::Plain, u.clone()),
            r("/a", Access::Write, RuleKind::Plain, u.clone()),
        ];
        let out = sort_dedup(rules);
        let summary: Vec<(String, Access, RuleKind, Origin)> = out
            .into_iter()
            .map(|r| (r.path.display().to_string(), r.access, r.kind, r.origin))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("/".into(), Access::Read, RuleKind::Plain, Origin::Default),
                ("/a".into(), Access::Write, RuleKind::Plain, Origin::Default),
                ("/a".into(), Access::Deny, RuleKind::Secret, Origin::Default),
                (
                    "/a/b".into(),
                    Access::Read,
                    RuleKind::Protected,
                    Origin::Default
                ),
                ("/a-b".into(), Access::Read, RuleKind::Plain, u),
            ]
        );
    }
}
