//! pi's credentials and providers, worked out from the contents of its config
//! files and the environment: a pure function ([`import`]) of a [`PiConfig`], so
//! every credential class is tested without a filesystem.
//!
//! Every LLM credential pi would use — provider keys in the environment, keys and
//! OAuth tokens in `auth.json`, keys and header values `models.json` names or holds
//! — becomes a broker secret scoped to its provider's hosts, or, where cordon has
//! no host to scope it to or no value pi would send, a placeholder no host
//! accepts. The copies of `models.json` and `auth.json` pi sees inside hold tokens
//! where the credentials were ([`Import::render`] puts the placeholders in).

use super::config_value::{ConfigValue, Part, strip_json_comments};
use crate::providers::{PROVIDERS, provider_hosts};
use crate::url::{is_local, url_host, with_host};
use cordon_policy::{PiMode, PiSecret};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The fields of an auth.json entry that are not credentials: its kind, when its
/// token expires, and names a provider's login records (Google's project, the
/// account's e-mail, a GitHub Enterprise host). Every other string is one.
const AUTH_PLAIN_FIELDS: &[&str] = &["type", "expires", "projectId", "email", "enterpriseUrl"];

/// What reading one of pi's config files gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Contents {
    /// No such file.
    #[default]
    Absent,
    /// There is one, but cordon cannot read it (pi may).
    Unreadable,
    Text(String),
}

impl Contents {
    /// Reads `path`: a dangling symlink or a file cordon may not read is
    /// [`Contents::Unreadable`], not absent.
    pub fn read(path: &Path) -> Contents {
        match std::fs::read_to_string(path) {
            Ok(text) => Contents::Text(text),
            Err(_) if path.symlink_metadata().is_ok() => Contents::Unreadable,
            Err(_) => Contents::Absent,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Contents::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// Everything the importer reads: pi's config files and the environment.
#[derive(Debug, Clone)]
pub struct PiConfig {
    /// pi's config dir (canonical): the files' paths, for the copies' targets and
    /// the messages.
    pub agent_dir: PathBuf,
    /// `settings.json`.
    pub settings: Contents,
    /// `models.json`.
    pub models: Contents,
    /// `auth.json`.
    pub auth: Contents,
    /// The environment pi would be started with (on the host).
    pub env: BTreeMap<String, String>,
    /// Now, for whether an OAuth token has expired.
    pub now: SystemTime,
}

impl PiConfig {
    /// The config in `agent_dir`, with this process's environment.
    pub fn read(agent_dir: &Path) -> PiConfig {
        PiConfig {
            agent_dir: agent_dir.to_path_buf(),
            settings: Contents::read(&agent_dir.join("settings.json")),
            models: Contents::read(&agent_dir.join("models.json")),
            auth: Contents::read(&agent_dir.join("auth.json")),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            now: SystemTime::now(),
        }
    }
}

/// One secret for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub value: String,
    /// Host patterns (no ports).
    pub hosts: BTreeSet<String>,
    /// The file of pi's the value is from (`models.json`, `auth.json`), under a
    /// name cordon made up, which is not in pi's environment; `None`: the value is
    /// the host's environment variable of the secret's name.
    pub file: Option<&'static str>,
    /// Where it was found, for `cordon policy --pi`.
    pub why: String,
}

/// What pi's environment and config dir need from the sandbox.
#[derive(Debug, Default, Clone)]
pub struct Import {
    pub secrets: BTreeMap<String, Secret>,
    /// Values hidden without a secret (no host to scope them to): token names.
    pub redacted: BTreeSet<String>,
    /// Domain patterns to allow (with a port where the URL has one), each with
    /// the reason.
    pub domains: BTreeMap<String, String>,
    /// Providers on this machine or at an address: id, `HOST:PORT` as
    /// `--allow-local` takes it.
    pub locals: Vec<(String, String)>,
    /// Config files to lay over the real ones: target path, content with tokens
    /// where the credentials were.
    pub files: Vec<(PathBuf, String)>,
    /// Files of pi's config dir hidden inside, each with the reason (a copy in
    /// `files` may be laid over one).
    pub hidden: Vec<(PathBuf, String)>,
    pub warnings: Vec<String>,
}

impl Import {
    /// The rules this adds to the policy: the hidden files, the providers'
    /// domains, and the secrets (by name; their values are [`Import::value`]).
    pub fn layer(&self) -> PiMode {
        let secret = self
            .secrets
            .iter()
            .map(|(name, s)| {
                let hosts: Vec<&str> = s.hosts.iter().map(String::as_str).collect();
                PiSecret {
                    arg: format!("{name}={}", hosts.join(",")),
                    value_from: s.file.map(|file| format!("pi's {file}")),
                    reason: s.why.clone(),
                }
            })
            .collect();
        PiMode {
            deny_read: self.hidden.clone(),
            allow_domain: self.domains.clone().into_iter().collect(),
            secret,
            ..PiMode::default()
        }
    }

    /// The value of the secret `name` when it is not the host's variable of that
    /// name (a value from pi's files).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(|s| s.value.as_str())
    }

    /// The secrets whose names cordon made up: none is in pi's environment.
    pub fn synthetic(&self) -> BTreeSet<String> {
        self.secrets
            .iter()
            .filter(|(_, s)| s.file.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The copies of the config files, each token replaced by `placeholder` of
    /// its name: (target path, content).
    pub fn render(&self, placeholder: &dyn Fn(&str) -> String) -> Vec<(PathBuf, String)> {
        self.files
            .iter()
            .map(|(target, content)| {
                let mut text = content.clone();
                for name in self.secrets.keys().chain(self.redacted.iter()) {
                    text = text.replace(&token(name), &placeholder(name));
                }
                (target.clone(), text)
            })
            .collect()
    }
}

/// The marker left in a rewritten config file where a secret's placeholder goes.
fn token(name: &str) -> String {
    format!("@@cordon-pi:{name}@@")
}

/// pi's credentials and providers in `config`.
pub fn import(config: &PiConfig) -> Import {
    let mut importer = Importer {
        out: Import::default(),
        env: &config.env,
        why: String::new(),
        file: "",
    };
    importer.run(config);
    importer.out
}

/// The importer's state while it reads.
struct Importer<'a> {
    out: Import,
    env: &'a BTreeMap<String, String>,
    /// What is being read, for the reasons of what it adds.
    why: String,
    /// The file being read.
    file: &'static str,
}

impl Importer<'_> {
    /// The value of variable `name`, if set and not empty (pi takes an empty one
    /// as unset).
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn run(&mut self, config: &PiConfig) {
        let agent_dir = &config.agent_dir;
        // Keys in the environment.
        for provider in PROVIDERS {
            for var in provider.env_keys {
                if let Some(value) = self.env(var) {
                    self.why = format!("${var} in the environment, for provider {:?}", provider.id);
                    let hosts = provider.hosts.iter().map(|h| h.to_string());
                    self.secret(var, value, hosts.clone(), None);
                    self.allow(hosts);
                }
            }
        }
        self.out.hidden.push((
            agent_dir.join("auth.json"),
            "pi's credentials (inside, a copy holding placeholders)".to_string(),
        ));
        self.out.hidden.push((
            agent_dir.join("mcp-auth.json"),
            "pi's sign-ins to MCP servers".to_string(),
        ));
        // The default provider of pi's settings.
        if let Some(settings) = self.json(&agent_dir.join("settings.json"), &config.settings)
            && let Some(provider) = settings.get("defaultProvider").and_then(Value::as_str)
            && let Some(hosts) = provider_hosts(provider)
        {
            self.why = format!("defaultProvider {provider:?} in settings.json");
            self.allow(hosts);
        }
        let custom_hosts = self.models(&agent_dir.join("models.json"), &config.models);
        self.auth(
            &agent_dir.join("auth.json"),
            &config.auth,
            &custom_hosts,
            config.now,
        );
    }

    /// models.json: custom providers and overrides of built-in ones. Returns each
    /// provider's hosts, for its entry in auth.json.
    fn models(&mut self, path: &Path, contents: &Contents) -> BTreeMap<String, Vec<String>> {
        self.file = "models.json";
        let mut custom_hosts = BTreeMap::new();
        let Some(mut models) = self.json(path, contents) else {
            if *contents != Contents::Absent {
                // pi may read what cordon cannot: it is not shown to pi inside.
                self.out.warnings.push(format!("{} is hidden inside, since cordon cannot read it to keep its keys outside (hint: fix the file; `pi --list-models` outside shows what pi makes of it)", path.display()));
                self.out.hidden.push((
                    path.to_path_buf(),
                    "pi's models.json, which cordon cannot read".to_string(),
                ));
            }
            return custom_hosts;
        };
        let mut changed = false;
        if let Some(providers) = models.get_mut("providers").and_then(Value::as_object_mut) {
            for (id, provider) in providers.iter_mut() {
                let hosts = self.models_provider(path, id, provider, &mut changed);
                custom_hosts.insert(id.clone(), hosts);
            }
        }
        if changed {
            self.push_file(path, &models);
        }
        custom_hosts
    }

    /// One provider of models.json: its host allowed (or noted as local), its
    /// key and header values made secrets. Returns its hosts.
    fn models_provider(
        &mut self,
        path: &Path,
        id: &str,
        provider: &mut Value,
        changed: &mut bool,
    ) -> Vec<String> {
        self.why = format!("provider {id:?} in models.json");
        let url = provider.get("baseUrl").and_then(Value::as_str);
        let (hosts, local) = match url.map(|url| (url, url_host(url))) {
            Some((url, Some((host, port)))) if is_local(&host) => {
                let port = port.unwrap_or(if url.starts_with("https:") { 443 } else { 80 });
                let addr = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                self.out.locals.push((id.to_string(), addr));
                // Inside, a local service is at 127.0.0.1:PORT.
                if host != "127.0.0.1"
                    && let Some(inside) = with_host(url, &host, "127.0.0.1")
                {
                    provider["baseUrl"] = Value::String(inside);
                    *changed = true;
                }
                (Vec::new(), true)
            }
            Some((_, Some((host, port)))) => {
                let domain = match port {
                    Some(p) => format!("{host}:{p}"),
                    None => host.clone(),
                };
                self.out.domains.entry(domain).or_insert(self.why.clone());
                (vec![host], false)
            }
            Some((url, None)) => {
                self.out.warnings.push(format!("{}: provider {id:?} has a baseUrl cordon cannot read ({url:?}); allow its host with --allow-domain", path.display()));
                (Vec::new(), false)
            }
            None => {
                let hosts = provider_hosts(id).unwrap_or_default();
                self.allow(hosts.clone());
                (hosts, false)
            }
        };
        let secret_name = format!("CORDON_PI_MODELS_{}", env_suffix(id));
        if let Some(key) = provider.get_mut("apiKey") {
            *changed |= self.config_value(key, &secret_name, &hosts, local);
        }
        // Header values, of the provider, its models and its overrides of
        // built-in models: each resolved like apiKey.
        let Some(fields) = provider.as_object_mut() else {
            return hosts;
        };
        for (field, item) in fields.iter_mut() {
            match field.as_str() {
                "headers" => {
                    let name = format!("{secret_name}_H");
                    *changed |= self.headers(item, &name, &hosts, local);
                }
                "models" => {
                    for (i, model) in item.as_array_mut().into_iter().flatten().enumerate() {
                        if let Some(h) = model.get_mut("headers") {
                            let name = format!("{secret_name}_M{i}_H");
                            *changed |= self.headers(h, &name, &hosts, local);
                        }
                    }
                }
                "modelOverrides" => {
                    for (model, o) in item.as_object_mut().into_iter().flatten() {
                        if let Some(h) = o.get_mut("headers") {
                            let name = format!("{secret_name}_O_{}_H", env_suffix(model));
                            *changed |= self.headers(h, &name, &hosts, local);
                        }
                    }
                }
                _ => {}
            }
        }
        hosts
    }

    /// auth.json: API keys and OAuth tokens pi stored at /login. Every string of
    /// it is a credential, but an entry's type and a few names that are not.
    fn auth(
        &mut self,
        path: &Path,
        contents: &Contents,
        custom_hosts: &BTreeMap<String, Vec<String>>,
        now: SystemTime,
    ) {
        self.file = "auth.json";
        let Some(mut auth) = self.json(path, contents) else {
            return;
        };
        match auth.as_object_mut() {
            Some(entries) => {
                for (id, entry) in entries.iter_mut() {
                    self.auth_entry(id, entry, custom_hosts, now);
                }
            }
            None => {
                self.why = "auth.json".to_string();
                self.literal_tree(&mut auth, "CORDON_PI_AUTH", &[]);
            }
        }
        self.push_file(path, &auth);
    }

    /// One provider's entry of auth.json.
    fn auth_entry(
        &mut self,
        id: &str,
        entry: &mut Value,
        custom_hosts: &BTreeMap<String, Vec<String>>,
        now: SystemTime,
    ) {
        self.why = format!("provider {id:?} in auth.json");
        let hosts = custom_hosts
            .get(id)
            .filter(|h| !h.is_empty())
            .cloned()
            .or_else(|| provider_hosts(id))
            .unwrap_or_default();
        if hosts.is_empty() {
            self.out.warnings.push(format!("auth.json: cordon does not know the hosts of provider {id:?}; its credential is hidden and cannot be used inside (hint: name the provider's baseUrl in models.json)"));
        } else {
            self.allow(hosts.clone());
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
            let now = now
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_millis() as f64);
            if expires <= now {
                self.out.warnings.push(format!("the OAuth token of {id:?} in auth.json has expired, and pi cannot refresh it inside the sandbox (hint: run pi once outside to refresh it, then cordon pi)"));
            }
        }
        for (field, value) in fields.iter_mut() {
            if AUTH_PLAIN_FIELDS.contains(&field.as_str()) {
                continue;
            }
            if kind.as_deref() == Some("api_key") && field == "key" {
                // pi resolves an API key like models.json's apiKey.
                self.config_value(value, &base, &hosts, false);
            } else {
                let name = format!("{base}_{}", env_suffix(field));
                self.literal_tree(value, &name, &hosts);
            }
        }
    }

    /// A `headers` object of models.json: each value resolved like an apiKey.
    fn headers(&mut self, headers: &mut Value, name: &str, hosts: &[String], local: bool) -> bool {
        let Some(headers) = headers.as_object_mut() else {
            // Not what pi takes; whatever it holds stays outside.
            return !local && self.literal_tree(headers, name, &[]);
        };
        let mut changed = false;
        for (header, value) in headers.iter_mut() {
            let name = format!("{name}_{}", env_suffix(header));
            changed |= self.config_value(value, &name, hosts, local);
        }
        changed
    }

    fn allow(&mut self, hosts: impl IntoIterator<Item = String>) {
        for host in hosts {
            self.out
                .domains
                .entry(host)
                .or_insert_with(|| self.why.clone());
        }
    }

    fn secret(
        &mut self,
        name: &str,
        value: String,
        hosts: impl IntoIterator<Item = String>,
        file: Option<&'static str>,
    ) {
        let entry = self
            .out
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| Secret {
                value,
                hosts: BTreeSet::new(),
                file,
                why: self.why.clone(),
            });
        entry.hosts.extend(hosts);
    }

    /// A value of pi's config (an API key or header value), read as pi reads it
    /// ([`ConfigValue`]). One whole `$NAME` stays in the copy and its variable
    /// becomes a secret (inside, the variable holds the placeholder); anything else
    /// that is credential-shaped never enters: a literal (a bare `NAME` too, which
    /// pi sends as it is), or a template that mixes text and variables, becomes a
    /// secret of the value pi would send, and a `!command` (which cordon does not
    /// run) a placeholder no host accepts. Returns whether `value` changed.
    fn config_value(
        &mut self,
        value: &mut Value,
        name: &str,
        hosts: &[String],
        local: bool,
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
                self.out.warnings.push(format!("pi's config gets a key from a command ({}: {name}); cordon runs no command of pi's config, on the host or inside, so that key is not available inside (hint: put the key in an environment variable and write \"$NAME\" in pi's config, or store it with pi's /login)", self.why));
                self.redact(value, name)
            }
            ConfigValue::Template(parts) => {
                if let [Part::Var(var)] = parts.as_slice() {
                    if let Some(v) = self.env(var)
                        && !hosts.is_empty()
                    {
                        self.secret(var, v, hosts.iter().cloned(), None);
                    }
                    return false;
                }
                match ConfigValue::resolve(&parts, &|n| self.env(n)) {
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
            .out
            .secrets
            .get(&unique)
            .is_some_and(|s| s.value != secret || s.file.is_none() || s.why != self.why)
            || self.out.redacted.contains(&unique)
        {
            n += 1;
            unique = format!("{name}_{n}");
        }
        self.secret(&unique, secret, hosts.iter().cloned(), Some(self.file));
        *value = Value::String(token(&unique));
        true
    }

    /// `value` replaced in the copy by a placeholder no host accepts.
    fn redact(&mut self, value: &mut Value, name: &str) -> bool {
        let name = format!("{name}_REDACTED");
        self.out.redacted.insert(name.clone());
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

    fn push_file(&mut self, path: &Path, value: &Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        self.out.files.push((path.to_path_buf(), text));
    }

    /// `contents` parsed as pi does (comments and trailing commas allowed); a
    /// warning when it is there but not JSON.
    fn json(&mut self, path: &Path, contents: &Contents) -> Option<Value> {
        let text = contents.text()?;
        match serde_json::from_str(&strip_json_comments(text.trim_start_matches('\u{feff}'))) {
            Ok(v) => Some(v),
            Err(e) => {
                self.out.warnings.push(format!(
                    "cannot read {}: {e}; cordon finds no credentials in it",
                    path.display()
                ));
                None
            }
        }
    }
}

/// `id` as a part of a variable name: letters and digits uppercased, the rest `_`.
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
    use std::time::Duration;

    const AGENT: &str = "/home/u/.pi/agent";

    /// pi's config of these files' contents (`None`: absent) and environment, at
    /// a fixed now.
    fn config(models: Option<&str>, auth: Option<&str>, env: &[(&str, &str)]) -> PiConfig {
        let contents = |t: Option<&str>| t.map_or(Contents::Absent, |t| Contents::Text(t.into()));
        PiConfig {
            agent_dir: AGENT.into(),
            settings: Contents::Absent,
            models: contents(models),
            auth: contents(auth),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    /// All the copies' text.
    fn copies(found: &Import) -> String {
        found.files.iter().map(|(_, t)| t.as_str()).collect()
    }

    fn hosts(found: &Import, name: &str) -> Vec<String> {
        let s = found
            .secrets
            .get(name)
            .unwrap_or_else(|| panic!("no secret {name}: {:?}", found.secrets));
        s.hosts.iter().cloned().collect()
    }

    /// The hosts of the secret whose value is `v`.
    fn hosts_of_value(found: &Import, v: &str) -> Vec<String> {
        found
            .secrets
            .values()
            .find(|s| s.value == v)
            .map(|s| s.hosts.iter().cloned().collect())
            .unwrap_or_else(|| panic!("no secret {v}: {:?}", found.secrets))
    }

    #[test]
    fn credentials_become_secrets_and_files_hold_tokens() {
        let found = import(&config(
            Some(
                r#"{"providers":{"fake":{"baseUrl":"https://fake.test:8443/v1","apiKey":"$FAKE_KEY"},
                "lit":{"baseUrl":"https://lit.example/v1","apiKey":"sk-literal-123"},
                "ollama":{"baseUrl":"http://127.0.0.1:11434/v1","apiKey":"ollama"}}}"#,
            ),
            Some(
                r#"{"anthropic":{"type":"oauth","access":"sk-ant-oat-xyz","refresh":"r-123","expires":99999999999999},
                "openai":{"type":"api_key","key":"sk-openai-abc"}}"#,
            ),
            &[("FAKE_KEY", "real-secret"), ("GEMINI_API_KEY", "g-key")],
        ));
        assert_eq!(hosts(&found, "FAKE_KEY"), ["fake.test"]);
        assert_eq!(found.value("FAKE_KEY"), Some("real-secret"));
        assert_eq!(found.secrets["FAKE_KEY"].file, None);
        assert_eq!(
            hosts(&found, "GEMINI_API_KEY"),
            ["generativelanguage.googleapis.com"]
        );
        assert_eq!(found.value("CORDON_PI_MODELS_LIT"), Some("sk-literal-123"));
        assert_eq!(
            found.secrets["CORDON_PI_MODELS_LIT"].file,
            Some("models.json")
        );
        assert_eq!(
            found.value("CORDON_PI_AUTH_ANTHROPIC_ACCESS"),
            Some("sk-ant-oat-xyz")
        );
        assert_eq!(
            found.secrets["CORDON_PI_AUTH_ANTHROPIC_ACCESS"].file,
            Some("auth.json")
        );
        assert_eq!(found.value("CORDON_PI_AUTH_OPENAI"), Some("sk-openai-abc"));
        assert_eq!(
            found.domains["fake.test:8443"],
            "provider \"fake\" in models.json"
        );
        assert!(found.domains.contains_key("api.anthropic.com"));
        assert_eq!(
            found.locals,
            vec![("ollama".to_string(), "127.0.0.1:11434".to_string())]
        );
        let all = copies(&found);
        for secret in ["sk-literal-123", "sk-ant-oat-xyz", "r-123", "sk-openai-abc"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert!(
            all.contains("$FAKE_KEY") && all.contains("\"ollama\""),
            "{all}"
        );
        // The rendered copies hold the placeholders, and the targets are pi's files.
        let rendered = found.render(&|name| format!("PH-{name}"));
        let targets: Vec<&Path> = rendered.iter().map(|(t, _)| t.as_path()).collect();
        let agent = Path::new(AGENT);
        assert_eq!(
            targets,
            [agent.join("models.json"), agent.join("auth.json")]
        );
        let text: String = rendered.iter().map(|(_, t)| t.as_str()).collect();
        assert!(text.contains("\"PH-CORDON_PI_MODELS_LIT\""), "{text}");
        assert!(!text.contains("@@cordon-pi:"), "{text}");
        assert_eq!(
            found.synthetic().into_iter().collect::<Vec<_>>(),
            [
                "CORDON_PI_AUTH_ANTHROPIC_ACCESS",
                "CORDON_PI_AUTH_ANTHROPIC_REFRESH",
                "CORDON_PI_AUTH_OPENAI",
                "CORDON_PI_MODELS_LIT"
            ]
        );
    }

    /// Every credential-shaped value of auth.json and models.json is out of the
    /// copies pi sees inside: as a secret of the value pi would send, or redacted.
    #[test]
    fn no_credential_enters_verbatim() {
        // Commented like pi allows; literals with `$`, mixed templates, a command,
        // headers of the provider, a model and an override.
        let found = import(&config(
            Some(
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
            ),
            Some(
                r#"{"anthropic": {"type": "oauth", "access": "A1", "refresh": "A2", "idToken": "A3",
                              "expires": 99999999999999, "projectId": "proj-1",
                              "extra": {"deep": ["A4"]}},
                "openai": {"type": "api_key", "key": "k$$A5", "note": "A6"},
                "p": "A7",
                "odd": {"type": "something", "key": "A8"}}"#,
            ),
            &[("SET_VAR", "setvalue")],
        ));
        let all = copies(&found);
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
        // The values pi would send, each for its provider's hosts.
        let anthropic = ["api.anthropic.com", "console.anthropic.com"];
        assert_eq!(hosts_of_value(&found, "sk-a$b-M1"), ["p.example"]);
        assert_eq!(hosts_of_value(&found, "Bearer M3-setvalue"), ["p.example"]);
        assert_eq!(hosts_of_value(&found, "M5h"), ["p.example"]);
        assert_eq!(hosts_of_value(&found, "M6m"), ["p.example"]);
        assert_eq!(hosts_of_value(&found, "M7o"), ["p.example"]);
        assert_eq!(hosts_of_value(&found, "M8r"), ["r.example"]);
        assert_eq!(hosts_of_value(&found, "M9rs"), ["rs.example"]);
        assert_eq!(hosts_of_value(&found, "A3"), anthropic);
        assert_eq!(hosts_of_value(&found, "A4"), anthropic);
        assert_eq!(hosts_of_value(&found, "k$A5"), ["api.openai.com"]);
        assert_eq!(hosts_of_value(&found, "A7"), ["p.example"]);
        assert_eq!(found.value("SET_VAR"), Some("setvalue"));
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

    /// A literal key is the value pi sends, `$` and all, as pi reads it: `$$` is
    /// one `$`; a `$` before no name, and `${` with no name, are themselves.
    #[test]
    fn literal_keys_with_dollars() {
        let provider = |id: &str, key: &str| {
            format!(r#""{id}": {{"baseUrl": "https://{id}.example/v1", "apiKey": "{key}"}}"#)
        };
        let models = format!(
            r#"{{"providers": {{{}, {}, {}, {}, {}}}}}"#,
            provider("a", "sk-a$$b"),
            provider("b", "sk$"),
            provider("c", "pa$1ss$-x"),
            provider("d", "x${not-a-name}y"),
            provider("e", "$$HOME"),
        );
        let found = import(&config(Some(&models), None, &[("HOME", "/root")]));
        for (id, sent) in [
            ("A", "sk-a$b"),
            ("B", "sk$"),
            ("C", "pa$1ss$-x"),
            ("D", "x${not-a-name}y"),
            ("E", "$HOME"),
        ] {
            let name = format!("CORDON_PI_MODELS_{id}");
            assert_eq!(found.value(&name), Some(sent), "{name}");
            assert_eq!(found.secrets[&name].file, Some("models.json"));
            assert_eq!(
                hosts(&found, &name),
                [format!("{}.example", id.to_lowercase())]
            );
        }
        // `$$HOME` is the text `$HOME`, not the variable: no secret HOME.
        assert!(!found.secrets.contains_key("HOME"));
        let all = copies(&found);
        for key in ["sk-a", "sk$", "pa$1", "not-a-name", "HOME"] {
            assert!(!all.contains(key), "{key} in {all}");
        }
    }

    /// auth.json's OAuth entries: every field but the plain ones is a credential,
    /// at any depth (`idToken`, a provider's own extra fields); an expired token
    /// is warned of.
    #[test]
    fn oauth_extra_fields_are_secrets() {
        let found = import(&config(
            None,
            Some(
                r#"{"google-gemini-cli": {"type": "oauth", "access": "T1", "refresh": "T2",
                    "idToken": "T3", "expires": 1000, "projectId": "my-proj",
                    "email": "me@example.com", "tokens": {"id": ["T4", {"x": "T5"}]},
                    "n": 42, "ok": true}}"#,
            ),
            &[],
        ));
        let code_assist = ["cloudcode-pa.googleapis.com", "oauth2.googleapis.com"];
        for (value, name) in [
            ("T1", "CORDON_PI_AUTH_GOOGLE_GEMINI_CLI_ACCESS"),
            ("T2", "CORDON_PI_AUTH_GOOGLE_GEMINI_CLI_REFRESH"),
            ("T3", "CORDON_PI_AUTH_GOOGLE_GEMINI_CLI_IDTOKEN"),
            ("T4", "CORDON_PI_AUTH_GOOGLE_GEMINI_CLI_TOKENS_ID_0"),
            ("T5", "CORDON_PI_AUTH_GOOGLE_GEMINI_CLI_TOKENS_ID_1_X"),
        ] {
            assert_eq!(found.value(name), Some(value), "{name}");
            assert_eq!(hosts(&found, name), code_assist, "{name}");
            assert_eq!(found.secrets[name].file, Some("auth.json"));
        }
        let all = copies(&found);
        for v in ["T1", "T2", "T3", "T4", "T5"] {
            assert!(!all.contains(v), "{v} in {all}");
        }
        // The plain fields stay, so pi still knows the login.
        for plain in [
            "my-proj",
            "me@example.com",
            "\"oauth\"",
            "1000",
            "42",
            "true",
        ] {
            assert!(all.contains(plain), "{plain} not in {all}");
        }
        assert!(
            found.warnings.iter().any(|w| w.contains("has expired")),
            "{:?}",
            found.warnings
        );
        for host in code_assist {
            assert!(found.domains.contains_key(host), "{host}");
        }
    }

    /// Keys named after variables: `$NAME` and `${NAME}` are the variable (a
    /// secret of that name, the copy keeps the reference); a bare `NAME` is text
    /// to pi (0.87 and 1.x), so the variable is no secret even when it is set, and
    /// the layer says where each value is.
    #[test]
    fn env_named_keys() {
        let found = import(&config(
            Some(
                r#"{"providers": {
                "a": {"baseUrl": "https://a.example/v1", "apiKey": "$KEY_A"},
                "b": {"baseUrl": "https://b.example/v1", "apiKey": "${KEY_B}"},
                "c": {"baseUrl": "https://c.example/v1", "apiKey": "KEY_C"},
                "d": {"baseUrl": "https://d.example/v1", "apiKey": "$KEY_UNSET"},
                "e": {"baseUrl": "https://e.example/v1", "apiKey": "$KEY_EMPTY"},
                "openai": {"apiKey": "$KEY_A"}}}"#,
            ),
            None,
            &[
                ("KEY_A", "va"),
                ("KEY_B", "vb"),
                ("KEY_C", "vc"),
                ("KEY_EMPTY", ""),
                ("OPENAI_API_KEY", "vo"),
            ],
        ));
        // One variable, used by two providers: scoped to both.
        assert_eq!(hosts(&found, "KEY_A"), ["a.example", "api.openai.com"]);
        assert_eq!(hosts(&found, "KEY_B"), ["b.example"]);
        assert_eq!(found.value("KEY_B"), Some("vb"));
        // The bare name: what pi sends is the text `KEY_C`.
        assert!(!found.secrets.contains_key("KEY_C"), "{:?}", found.secrets);
        assert_eq!(found.value("CORDON_PI_MODELS_C"), Some("KEY_C"));
        // Unset or empty: no secret; the copy keeps the reference, which inside
        // is unset too.
        assert!(!found.secrets.contains_key("KEY_UNSET"));
        assert!(!found.secrets.contains_key("KEY_EMPTY"));
        // A provider's own variable in the environment, for its hosts.
        assert_eq!(hosts(&found, "OPENAI_API_KEY"), ["api.openai.com"]);
        let all = copies(&found);
        assert!(
            all.contains("\"$KEY_A\"") && all.contains("\"${KEY_B}\""),
            "{all}"
        );
        assert!(all.contains("\"$KEY_UNSET\"") && all.contains("\"$KEY_EMPTY\""));
        assert!(!all.contains("KEY_C"), "{all}");

        // The layer: each secret says where its value is.
        let layer = found.layer();
        let secret = |name: &str| {
            layer
                .secret
                .iter()
                .find(|s| s.arg.split('=').next() == Some(name))
                .unwrap_or_else(|| panic!("no {name}: {:?}", layer.secret))
                .clone()
        };
        assert_eq!(secret("KEY_A").arg, "KEY_A=a.example,api.openai.com");
        assert_eq!(secret("KEY_A").value_from, None);
        assert_eq!(
            secret("CORDON_PI_MODELS_C").value_from.as_deref(),
            Some("pi's models.json")
        );
        assert_eq!(
            secret("CORDON_PI_MODELS_C").reason,
            "provider \"c\" in models.json"
        );
        assert!(layer.secret.iter().all(|s| !s.arg.starts_with("KEY_C=")));
        let denied: Vec<&Path> = layer.deny_read.iter().map(|(p, _)| p.as_path()).collect();
        let agent = Path::new(AGENT);
        assert_eq!(
            denied,
            [agent.join("auth.json"), agent.join("mcp-auth.json")]
        );
        assert!(layer.allow_domain.iter().any(|(d, _)| d == "c.example"));
    }

    /// A models.json cordon cannot read is hidden, not shown as it is; auth.json
    /// that is not an object of entries has every string replaced.
    #[test]
    fn unreadable_config_stays_outside() {
        let agent = Path::new(AGENT);
        for models in [
            Contents::Text(
                r#"{"providers": {"p": {"apiKey": "M1" /* pi rejects this too */}}}"#.into(),
            ),
            Contents::Unreadable,
        ] {
            let mut cfg = config(None, Some(r#"["A1", {"k": "A2"}]"#), &[]);
            cfg.models = models.clone();
            let found = import(&cfg);
            let hidden: Vec<_> = found.hidden.iter().map(|(p, _)| p.clone()).collect();
            for name in ["auth.json", "mcp-auth.json", "models.json"] {
                assert!(hidden.contains(&agent.join(name)), "{name}: {hidden:?}");
            }
            let all = copies(&found);
            assert_eq!(found.files.len(), 1, "{all}");
            assert!(!all.contains("A1") && !all.contains("A2"), "{all}");
            assert!(
                found.warnings.iter().any(|w| w.contains("hidden inside")),
                "{models:?}: {:?}",
                found.warnings
            );
        }
        // Absent: nothing to hide, nothing to warn of.
        let found = import(&config(None, None, &[]));
        assert_eq!(found.hidden.len(), 2);
        assert!(found.files.is_empty() && found.warnings.is_empty());
    }
}
