//! Small value parsers shared by the config schema and the CLI: sizes,
//! `NAME[=VALUE]` environment arguments, and the network arguments
//! (`--allow-local`, `--secret`, `--resolve`).

use crate::error::{
    EnvProblem, LocalServiceProblem, MountProblem, ResolveProblem, SecretProblem, SizeProblem,
    ValueError,
};
use crate::network::{DomainPattern, normalize_name};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Parse a size such as `512M`, `1.5G`, `1024K`, `512MiB` or `100` (bytes).
///
/// Units are binary (K = 1024) and case-insensitive: `K`, `M`, `G`, `T`, each with an
/// optional `i` and an optional `B` (`KiB`, `KB`, `Ki`); `B` alone means bytes. A
/// fraction is allowed with a unit and rounds down to whole bytes. Spaces around the
/// number and between number and unit are allowed.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let bad = |problem: SizeProblem| ValueError::Size {
        input: s.to_string(),
        problem,
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad(SizeProblem::Empty));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(bad(SizeProblem::NoNumber));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    if int_part.is_empty() {
        return Err(bad(SizeProblem::NoIntegerPart));
    }
    if let Some(f) = frac_part {
        if f.is_empty() || f.contains('.') {
            return Err(bad(SizeProblem::Malformed));
        }
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err(bad(SizeProblem::UnknownUnit(unit.to_string()))),
    };
    let mult: u128 = 1u128 << shift;
    let too_large = || bad(SizeProblem::TooLarge);
    let mut int: u128 = 0;
    for d in int_part.bytes() {
        int = int
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .ok_or_else(too_large)?;
        if int > u128::from(u64::MAX) {
            return Err(too_large());
        }
    }
    let mut bytes = int.checked_mul(mult).ok_or_else(too_large)?;
    if let Some(f) = frac_part {
        if shift == 0 && f.bytes().any(|b| b != b'0') {
            return Err(bad(SizeProblem::FractionalBytes));
        }
        // 18 decimal places are more than enough: the largest unit is 2^40 < 10^13.
        let digits = &f[..f.len().min(18)];
        let mut num: u128 = 0;
        for d in digits.bytes() {
            num = num * 10 + u128::from(d - b'0');
        }
        let den = 10u128.pow(digits.len() as u32);
        bytes = bytes.checked_add(num * mult / den).ok_or_else(too_large)?;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// `64M`, `1G`, `1536K` or a number of bytes.
pub fn size_text(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Parse an `--env` argument or an `env` config entry: `NAME` (take the value from
/// the invoking environment) or `NAME=VALUE` (`VALUE` may be empty).
pub fn parse_env_arg(s: &str) -> Result<(String, Option<String>), ValueError> {
    let bad = |problem: EnvProblem| ValueError::Env {
        input: s.to_string(),
        problem,
    };
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    if name.is_empty() {
        return Err(bad(EnvProblem::EmptyName));
    }
    if s.contains('\0') {
        return Err(bad(EnvProblem::Nul));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(bad(EnvProblem::WhitespaceInName));
    }
    Ok((name.to_string(), value.map(str::to_string)))
}

/// Is `name` usable as an environment variable name: a letter or `_`, then
/// letters, digits and `_`?
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parse an `--allow-local` argument: `HOST:PORT`, where HOST is an IPv4 address,
/// an IPv6 address in brackets (`[::1]:8080`) or `localhost` (127.0.0.1), and
/// PORT is required; or the service's http or https URL without a path
/// (`http://localhost:11434`), whose scheme gives the port if it has none.
pub fn parse_local_service(s: &str) -> Result<SocketAddr, ValueError> {
    use LocalServiceProblem as P;
    let bad = |problem: P| ValueError::LocalService {
        input: s.to_string(),
        problem,
    };
    let mut t = s.trim();
    let mut scheme_port = None;
    if let Some((scheme, rest)) = t.split_once("://") {
        scheme_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => Some("80"),
            "https" => Some("443"),
            _ => return Err(bad(P::Scheme)),
        };
        t = rest.strip_suffix('/').unwrap_or(rest);
        if t.contains(['/', '?', '#', '@']) {
            return Err(bad(P::PathOrUser));
        }
    }
    let split = match t.strip_prefix('[') {
        // `[v6]:PORT`: the port follows the bracket.
        Some(_) => t
            .find(']')
            .and_then(|i| t[i + 1..].strip_prefix(':').map(|p| (&t[..=i], p))),
        None => t.rsplit_once(':'),
    };
    let split = match (split, scheme_port) {
        (Some(split), _) => Some(split),
        (None, Some(port)) => Some((t, port)),
        (None, None) => None,
    };
    let Some((host, port)) = split else {
        return Err(bad(P::NoPort));
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad(P::Port(port.to_string())))?;
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| bad(P::NotIpv6(v6.to_string())))?
    } else if host.contains(':') {
        return Err(bad(P::Ipv6WithoutBrackets));
    } else {
        host.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| bad(P::NotAnAddress(host.to_string())))?
    };
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad(P::NotOneHost(ip)));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Parse a `--secret` argument: `NAME=HOST[,HOST...]`. NAME is the host
/// environment variable holding the value; each HOST is a domain pattern without
/// a port (`api.example.com`, `*.example.com`).
pub fn parse_secret_arg(s: &str) -> Result<(String, Vec<DomainPattern>), ValueError> {
    use SecretProblem as P;
    let bad = |problem: P| ValueError::Secret {
        input: s.to_string(),
        problem,
    };
    let Some((name, hosts)) = s.split_once('=') else {
        return Err(bad(P::NoHosts));
    };
    let name = name.trim();
    if !valid_env_name(name) {
        return Err(bad(P::NotAName(name.to_string())));
    }
    let mut patterns: Vec<DomainPattern> = Vec::new();
    for host in hosts.split(',') {
        if host.trim().is_empty() {
            return Err(bad(P::EmptyHost));
        }
        let p = DomainPattern::parse(host).map_err(|e| bad(P::Host(e)))?;
        if p.port.is_some() {
            return Err(bad(P::HostWithPort(host.to_string())));
        }
        if !patterns.contains(&p) {
            patterns.push(p);
        }
    }
    Ok((name.to_string(), patterns))
}

/// Parse a `--resolve` argument: `HOST:ADDR`, like curl's (without its port).
/// ADDR is an IPv4 or IPv6 address; IPv6 may be bracketed or bare.
pub fn parse_resolve_arg(s: &str) -> Result<(String, IpAddr), ValueError> {
    use ResolveProblem as P;
    let bad = |problem: P| ValueError::Resolve {
        input: s.to_string(),
        problem,
    };
    let Some((host, addr)) = s.trim().split_once(':') else {
        return Err(bad(P::NoAddress));
    };
    let name = normalize_name(host).ok_or_else(|| bad(P::NotAHost(host.to_string())))?;
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip: IpAddr = bare.parse().map_err(|_| {
        // curl's HOST:PORT:ADDR: say that the port has no place here.
        let curl_style = addr.split_once(':').is_some_and(|(port, rest)| {
            port.parse::<u16>().is_ok() && {
                let rest = rest
                    .strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .unwrap_or(rest);
                rest.parse::<IpAddr>().is_ok()
            }
        });
        if curl_style {
            bad(P::Port)
        } else {
            bad(P::NotAnAddress(addr.to_string()))
        }
    })?;
    if addr.starts_with('[') && ip.is_ipv4() {
        return Err(bad(P::BracketedIpv4));
    }
    Ok((name, ip))
}

/// Parse a mount argument: `SOURCE:TARGET`, optionally followed by `:ro` (the
/// default) or `:rw`. SOURCE cannot hold a `:`; paths stay as written.
pub fn parse_mount_arg(s: &str) -> Result<MountSpec, ValueError> {
    let bad = |problem: MountProblem| ValueError::Mount {
        input: s.to_string(),
        problem,
    };
    let (rest, writable) = match s.rsplit_once(':') {
        Some((rest, "rw")) => (rest, true),
        Some((rest, "ro")) => (rest, false),
        _ => (s, false),
    };
    let Some((source, target)) = rest.split_once(':') else {
        return Err(bad(MountProblem::Shape));
    };
    check_mount_paths(source, target).map_err(bad)?;
    Ok(MountSpec {
        source: source.to_string(),
        target: target.to_string(),
        writable,
    })
}

/// The shape of a mount's paths: neither empty; the target absolute (after `~`
/// or a leading variable).
pub(crate) fn check_mount_paths(source: &str, target: &str) -> Result<(), MountProblem> {
    if source.is_empty() || target.is_empty() {
        return Err(MountProblem::EmptyPath);
    }
    if !(target.starts_with('/') || target.starts_with('~') || target.starts_with("${")) {
        return Err(MountProblem::RelativeTarget(target.to_string()));
    }
    Ok(())
}

/// One mount as written: a host path shown at `target` inside, read-only unless
/// `mode` is `rw`. Paths stay as written (expanded when the workspace is known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    pub writable: bool,
}

/// The object form of a mount in a config file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MountObject {
    source: String,
    target: String,
    #[serde(default)]
    mode: Option<String>,
}

impl<'de> Deserialize<'de> for MountSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MountSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a mount: {\"source\": PATH, \"target\": PATH, \"mode\": \"ro\" or \"rw\"} or \"SOURCE:TARGET[:ro|rw]\"",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MountSpec, E> {
                parse_mount_arg(v).map_err(|m| E::custom(format!("\"mount\": {m}")))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<MountSpec, A::Error> {
                let o = MountObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let writable = match o.mode.as_deref() {
                    None | Some("ro") => false,
                    Some("rw") => true,
                    Some(other) => {
                        return Err(de::Error::custom(format!(
                            "\"mount\": invalid mode {other:?}: expected \"ro\" or \"rw\""
                        )));
                    }
                };
                check_mount_paths(&o.source, &o.target)
                    .map_err(|m| de::Error::custom(format!("\"mount\": {m}")))?;
                Ok(MountSpec {
                    source: o.source,
                    target: o.target,
                    writable,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const M: u64 = K * K;
    const G: u64 = M * K;
    const T: u64 = G * K;

    #[test]
    fn sizes() {
        let table: &[(&str, u64)] = &[
            ("100", 100),
            ("0", 0),
            ("100B", 100),
            ("100b", 100),
            ("1024K", 1024 * K),
            ("1024k", 1024 * K),
            ("1KB", K),
            ("1KiB", K),
            ("1ki", K),
            ("512M", 512 * M),
            ("512m", 512 * M),
            ("512MiB", 512 * M),
            ("512mib", 512 * M),
            ("512MB", 512 * M),
            ("2G", 2 * G),
            ("1.5G", 3 * G / 2),
            ("1.5g", 3 * G / 2),
            ("0.5K", 512),
            ("1.0001K", 1024), // rounds down to whole bytes
            ("3T", 3 * T),
            (" 2 G ", 2 * G),
            ("2 GiB", 2 * G),
            ("100.0", 100),
            ("16777215T", 16_777_215 * T),
        ];
        for (s, want) in table {
            assert_eq!(parse_size(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn size_errors() {
        for s in [
            "",
            " ",
            "M",
            "abc",
            "-1",
            "+1",
            "1.5",
            "1..5G",
            ".5G",
            "1.G",
            "1e3",
            "1X",
            "1GG",
            "1 G B",
            "1KiBB",
            "2P",
            "16777216T",
            "99999999999999999999999",
            "1\u{0}G",
            "١G",
        ] {
            let err = parse_size(s).expect_err(s).to_string();
            assert!(err.contains("invalid size"), "{s}: {err}");
        }
        assert!(
            parse_size("1.5")
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
        assert!(
            parse_size("2P")
                .unwrap_err()
                .to_string()
                .contains("unknown unit \"P\"")
        );
        assert!(
            parse_size("99999999999999999999T")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    #[test]
    fn env_args() {
        assert_eq!(parse_env_arg("EDITOR"), Ok(("EDITOR".into(), None)));
        assert_eq!(
            parse_env_arg("RUST_LOG=debug"),
            Ok(("RUST_LOG".into(), Some("debug".into())))
        );
        assert_eq!(parse_env_arg("A="), Ok(("A".into(), Some(String::new()))));
        assert_eq!(parse_env_arg("A=b=c"), Ok(("A".into(), Some("b=c".into()))));
        assert!(parse_env_arg("").is_err());
        assert!(parse_env_arg("=x").is_err());
        assert!(parse_env_arg("A B=1").is_err());
        assert!(parse_env_arg("A=\0").is_err());
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "ANTHROPIC_API_KEY", "a1", "_9"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É"] {
            assert!(!valid_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn local_services() {
        let ok = |s: &str| parse_local_service(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:11434"), "127.0.0.1:11434");
        assert_eq!(ok("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(ok("LocalHost:8080"), "127.0.0.1:8080");
        assert_eq!(ok("[::1]:8080"), "[::1]:8080");
        assert_eq!(ok("10.0.0.5:5432"), "10.0.0.5:5432");
        // The service's URL, as its own docs give it.
        assert_eq!(ok("http://localhost:11434"), "127.0.0.1:11434");
        assert_eq!(ok("http://127.0.0.1:11434/"), "127.0.0.1:11434");
        assert_eq!(ok("http://localhost"), "127.0.0.1:80");
        assert_eq!(ok("HTTPS://[::1]"), "[::1]:443");
        for (bad, want) in [
            ("127.0.0.1", "no port"),
            ("localhost", "no port"),
            ("127.0.0.1:0", "invalid port"),
            ("127.0.0.1:65536", "invalid port"),
            ("127.0.0.1:", "invalid port"),
            ("::1:8080", "in brackets"),
            ("[::1]", "no port"),
            ("[::1]8080", "no port"),
            ("[1.2.3.4]:80", "not an IPv6"),
            ("example.com:80", "not an IP address or localhost"),
            ("0.0.0.0:80", "not the address of one host"),
            ("[::]:80", "not the address of one host"),
            ("224.0.0.1:80", "not the address of one host"),
            ("", "no port"),
            ("http://localhost:11434/api", "without a path"),
            ("http://u@localhost:11434", "without a path or user"),
            ("ftp://localhost:21", "only an http:// or https://"),
            ("http://example.com", "not an IP address or localhost"),
        ] {
            let e = parse_local_service(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(e.starts_with("invalid local service"), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets() {
        let (name, hosts) = parse_secret_arg("ANTHROPIC_API_KEY=api.anthropic.com").unwrap();
        assert_eq!(name, "ANTHROPIC_API_KEY");
        assert_eq!(
            hosts,
            vec![DomainPattern::parse("api.anthropic.com").unwrap()]
        );
        let (_, hosts) = parse_secret_arg("T=a.example.com,*.Example.org,a.example.com").unwrap();
        let shown: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a.example.com", "*.example.org"]);
        for (bad, want) in [
            ("TOKEN", "no hosts"),
            ("TOKEN=", "an empty host"),
            ("TOKEN=a.com,", "an empty host"),
            ("=a.com", "not an environment variable name"),
            ("1X=a.com", "not an environment variable name"),
            ("A-B=a.com", "not an environment variable name"),
            ("T=a.com:443", "has a port"),
            ("T=1.2.3.4", "an IP address is not a domain"),
            ("T=exa mple.com", "invalid domain pattern"),
        ] {
            let e = parse_secret_arg(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(e.starts_with("invalid secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn resolve_entries() {
        let ok = |s: &str| parse_resolve_arg(s).unwrap();
        assert_eq!(
            ok("Git.Internal.:10.0.0.5"),
            ("git.internal".into(), "10.0.0.5".parse().unwrap())
        );
        assert_eq!(ok("db:[fd00::5]").1, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(ok("db:fd00::5").1, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(ok("localhost:127.0.0.1").0, "localhost");
        for (bad, want) in [
            ("db", "no address"),
            ("db:", "not an IP address"),
            ("db:example.com", "not an IP address"),
            ("db:[1.2.3.4]", "brackets are for IPv6"),
            (":1.2.3.4", "not a host name"),
            ("a b:1.2.3.4", "not a host name"),
            ("db:1.2.3.4:443", "not an IP address"),
            ("db:443:1.2.3.4", "leave out the port"),
            ("db:443:[::1]", "leave out the port"),
        ] {
            let e = parse_resolve_arg(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(e.starts_with("invalid resolve entry"), "{bad}: {e}");
        }
    }
}
