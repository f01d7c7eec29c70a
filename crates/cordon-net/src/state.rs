//! The broker's state: what it decides with (the rules in force, the secrets,
//! cordon's CA, the audit log) and what it remembers (the synthetic names the DNS
//! stub handed out, recent refusals, TLS configurations, which HTTP version each
//! upstream speaks). Every decision that is not about bytes is here: is this name
//! allowed, why not, log it. It knows nothing of how connections arrive or are
//! carried (see [`crate::router`] and [`crate::ingress`]), and imports nothing of
//! them.

use crate::audit::{Audit, Event, Record, rule_reason};
use crate::ca::CertificateAuthority;
use crate::dns::names::SyntheticNames;
use crate::dns::stub::Lookup;
use crate::error::NetError;
use crate::scrub::Scrubber;
use crate::secrets::Secret;
use crate::upstream;
use cordon_policy::{DomainError, DomainRule, LOCAL_SERVICE_NAME, NetworkRules, Verdict};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::net::TcpStream;

/// Everything the broker decides with, made on the host before the sandbox starts.
pub struct BrokerConfig {
    pub rules: NetworkRules,
    /// Secrets with their real values and placeholders.
    pub secrets: Vec<Secret>,
    /// Present when some secret needs TLS terminated.
    pub ca: Option<CertificateAuthority>,
    /// Roots for the broker's own upstream TLS (host roots plus `--upstream-ca`);
    /// used only where it terminates TLS, so empty when `ca` is `None`.
    pub roots: Arc<rustls::RootCertStore>,
    pub audit: Audit,
}

impl BrokerConfig {
    /// A broker that only decides by `rules`: no secrets (so no CA and no
    /// upstream roots), refusals noticed on stderr and recorded nowhere (tests,
    /// benchmarks, fuzzing).
    pub fn deciding(rules: NetworkRules) -> BrokerConfig {
        BrokerConfig {
            rules,
            secrets: Vec::new(),
            ca: None,
            roots: Arc::new(rustls::RootCertStore::empty()),
            audit: Audit::notices_only(),
        }
    }
}

/// How many refusals the broker keeps for `status`.
const RECENT_REFUSALS: usize = 50;

/// One of the broker's recent refusals (for the session's `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub time: SystemTime,
    /// The name (or address) the sandbox asked for.
    pub host: String,
    /// The port it connected to; none for a DNS question.
    pub port: Option<u16>,
    /// Why: the rule or the check that refused it.
    pub reason: String,
}

/// Why a domain could not be allowed during the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowDomainError {
    #[error("{0}")]
    Pattern(#[from] DomainError),
    /// A rule added later can use only the ports that had a listener from the start.
    #[error(
        "the sandbox has no listener on port {port}: a port can only be allowed when the session starts (pass --allow-domain {pattern})"
    )]
    NoListener { port: u16, pattern: String },
}

pub(crate) struct State {
    pub config: BrokerConfig,
    /// The rules in force: the policy's, plus what the session allowed since
    /// (replaced whole on a change, so a connection decides on one snapshot).
    rules: std::sync::RwLock<Arc<NetworkRules>>,
    /// The ports the sandbox has listeners on: a rule added later can use no other.
    ports: Vec<u16>,
    names: Mutex<SyntheticNames>,
    server_configs: Mutex<std::collections::HashMap<String, Arc<rustls::ServerConfig>>>,
    /// The last [`RECENT_REFUSALS`] refusals.
    refusals: Mutex<std::collections::VecDeque<Refusal>>,
    /// The HTTP version (ALPN) each terminated upstream picked last, by name and port.
    alpn_memory: Mutex<std::collections::HashMap<(String, u16), Vec<u8>>>,
    /// Masks the secrets' values in what comes back from a host they may go to
    /// (`None` without secrets).
    scrubber: Option<Arc<Scrubber>>,
    /// Upstream TLS configurations by ALPN offer, kept for their session caches.
    client_configs: Mutex<std::collections::HashMap<Vec<Vec<u8>>, Arc<rustls::ClientConfig>>>,
}

impl State {
    /// The state for a broker deciding with `config`; `ports` are those the
    /// sandbox can connect to (a rule added later can use no other).
    pub(crate) fn new(config: BrokerConfig, ports: Vec<u16>) -> State {
        let scrubber = Scrubber::new(&config.secrets).map(Arc::new);
        State {
            scrubber,
            rules: std::sync::RwLock::new(Arc::new(config.rules.clone())),
            ports,
            config,
            names: Mutex::new(SyntheticNames::new()),
            server_configs: Mutex::new(Default::default()),
            client_configs: Mutex::new(Default::default()),
            alpn_memory: Mutex::new(Default::default()),
            refusals: Mutex::new(Default::default()),
        }
    }

    /// The rules in force now.
    pub(crate) fn rules(&self) -> Arc<NetworkRules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Allows `pattern` for the rest of the session, the rule's origin saying who
    /// asked (`reason`), and logs the widening. Returns the rule as written.
    pub(crate) fn allow_domain(
        &self,
        pattern: &str,
        reason: String,
    ) -> Result<String, AllowDomainError> {
        let pattern = cordon_policy::DomainPattern::parse(pattern)?;
        if let Some(port) = pattern
            .ports()
            .into_iter()
            .find(|p| !self.ports.contains(p))
        {
            return Err(AllowDomainError::NoListener {
                port,
                pattern: pattern.to_string(),
            });
        }
        let shown = pattern.to_string();
        let origin = cordon_policy::Origin::Session { reason };
        let logged = rule_reason(&shown, None, &origin);
        {
            let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
            let mut next = NetworkRules::clone(&rules);
            next.allow.push(DomainRule {
                pattern,
                preset: None,
                origin,
            });
            *rules = Arc::new(next);
        }
        self.config.audit.record(&Record {
            event: Event::AllowDomain,
            host: &shown,
            port: None,
            allowed: true,
            reason: &logged,
            via: None,
        });
        Ok(shown)
    }

    /// The DNS stub's question: is `name` allowed, and at which address?
    pub(crate) fn lookup(&self, name: &str) -> Lookup {
        let rules = &*self.rules();
        if name == LOCAL_SERVICE_NAME && !rules.local.is_empty() {
            return Lookup::Address(Ipv4Addr::LOCALHOST);
        }
        if !rules.name_allowed(name) {
            self.refuse(Event::Dns, name, None, &verdict_reason(rules, name, None));
            return Lookup::Refused;
        }
        let addr = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .addr_for(name);
        match addr {
            Some(addr) => Lookup::Address(addr),
            None => Lookup::Refused,
        }
    }

    /// Logs a refusal (and, the first time for the host, tells the user).
    pub(crate) fn refuse(&self, event: Event, host: &str, port: Option<u16>, reason: &str) {
        let record = Record {
            event,
            host,
            port,
            allowed: false,
            reason,
            via: None,
        };
        self.config.audit.record(&record);
        let mut recent = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(Refusal {
            time: SystemTime::now(),
            host: host.to_string(),
            port,
            reason: reason.to_string(),
        });
    }

    /// The last refusals, oldest first (for the session's `status`).
    pub(crate) fn recent_refusals(&self) -> Vec<Refusal> {
        let recent = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    /// Logs what was allowed, by which rule, and how it is carried.
    pub(crate) fn allow(
        &self,
        event: Event,
        host: &str,
        port: Option<u16>,
        reason: &str,
        via: &str,
    ) {
        self.config.audit.record(&Record {
            event,
            host,
            port,
            allowed: true,
            reason,
            via: Some(via),
        });
    }

    /// The name the DNS stub handed out `addr` for, if it did.
    pub(crate) fn name_of(&self, addr: Ipv4Addr) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.name_of(addr).map(str::to_string)
    }

    /// Resolves and connects, recording why not when it cannot.
    pub(crate) async fn open_upstream(&self, name: &str, port: u16) -> Option<TcpStream> {
        let rules = self.rules();
        let result = match upstream::addresses(&rules, name, port).await {
            Ok(addrs) => upstream::connect(&addrs).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(stream) => Some(stream),
            Err(e) => {
                self.refuse(Event::Connect, name, Some(port), &e.to_string());
                None
            }
        }
    }

    pub(crate) fn secrets_for(&self, host: &str) -> Vec<&Secret> {
        self.config
            .secrets
            .iter()
            .filter(|s| s.scoped_to(host))
            .collect()
    }

    /// The scrubber for what comes back from `host`: every secret's value, when
    /// some secret may go there (any secret's, since one host may be in several
    /// scopes); `None` when none may.
    pub(crate) fn scrubber_for(&self, host: &str) -> Option<Arc<Scrubber>> {
        if self.secrets_for(host).is_empty() {
            return None;
        }
        self.scrubber.clone()
    }

    pub(crate) fn remembered_alpn(&self, name: &str, port: u16) -> Option<Vec<u8>> {
        let memory = self.alpn_memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.get(&(name.to_string(), port)).cloned()
    }

    pub(crate) fn remember_alpn(&self, name: &str, port: u16, alpn: &[u8]) {
        let mut memory = self.alpn_memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.insert((name.to_string(), port), alpn.to_vec());
    }

    pub(crate) fn forget_alpn(&self, name: &str, port: u16) {
        let mut memory = self.alpn_memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.remove(&(name.to_string(), port));
    }

    /// The upstream TLS configuration offering `alpn`.
    pub(crate) fn client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let key: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let mut configs = self
            .client_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let config = upstream::client_config(self.config.roots.clone(), alpn)?;
        configs.insert(key, config.clone());
        Ok(config)
    }

    /// The TLS server configuration for `name`: cordon's certificate for it.
    pub(crate) fn server_config(
        &self,
        name: &str,
        alpn: &[u8],
    ) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let key = format!("{name}\0{}", String::from_utf8_lossy(alpn));
        let mut configs = self
            .server_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let ca = self
            .config
            .ca
            .as_ref()
            .ok_or_else(|| NetError::Tls("no CA".into()))?;
        let leaf = ca.leaf(name)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(leaf)));
        if !alpn.is_empty() {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        let config = Arc::new(config);
        configs.insert(key, config.clone());
        Ok(config)
    }
}

#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Why `name` (on `port`, or on any port for DNS) is not allowed, naming the rule.
pub(crate) fn verdict_reason(rules: &NetworkRules, name: &str, port: Option<u16>) -> String {
    let verdict = match port {
        Some(port) => rules.verdict(name, port),
        None => rules
            .deny
            .iter()
            .find(|d| d.pattern.port.is_none() && d.pattern.matches_name(name))
            .map_or(Verdict::NotAllowed, Verdict::Denied),
    };
    match verdict {
        Verdict::Denied(rule) => {
            format!(
                "denied by {}",
                rule_reason(&rule.pattern, rule.preset.as_deref(), &rule.origin)
            )
        }
        Verdict::NotAllowed if port.is_some() && rules.name_allowed(name) => {
            "this port is not allowed for the name".into()
        }
        _ => "not in the allowlist".into(),
    }
}
