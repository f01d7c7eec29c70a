//! No project config ever loosens: for random user configs, flags and project
//! configs (the project's holding any field, its `pi` section too), the policy
//! resolved with the project's `.cordon.json` gives nothing that the policy
//! resolved without it does not: no path more access, no limit higher, no
//! network more open, no domain, service, secret, variable, mount or switch more,
//! no bigger VM.

use cordon_policy::{Access, Flags, NetMode, PiMode, Policy};
use cordon_test_support::PolicyEnv;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// One config field with a value from a small pool of valid ones (and a few
/// that resolution refuses), keyed by its config name.
fn field() -> impl Strategy<Value = (String, Value)> {
    let pick = |key: &'static str, values: Vec<Value>| {
        prop::sample::select(values).prop_map(move |v| (key.to_string(), v))
    };
    let paths = || {
        vec![
            json!(["x"]),
            json!(["sub/y", "${HOME}/notes"]),
            json!(["~/.ssh"]),
            json!(["/etc"]),
            json!(["${WORKSPACE}"]),
            json!(["~"]),
        ]
    };
    let yes_no = || vec![json!(true), json!(false)];
    prop_oneof![
        pick("allow_write", paths()),
        pick("allow_read", paths()),
        pick("deny_read", paths()),
        pick(
            "unprotect",
            vec![json!([".git/config"]), json!([".git/hooks"])]
        ),
        pick(
            "home_visible",
            vec![json!(["~/.cargo"]), json!(["~/notes"])]
        ),
        pick("read_only", yes_no()),
        pick("hide_home", yes_no()),
        pick("env", vec![json!(["EDITOR"]), json!(["A=1", "PATH"])]),
        pick(
            "net",
            vec![json!("none"), json!("allowlist"), json!("host")]
        ),
        pick(
            "allow_domain",
            vec![json!(["example.com"]), json!(["*.example.org:8443"])]
        ),
        pick(
            "deny_domain",
            vec![json!(["example.com"]), json!(["evil.test"])]
        ),
        pick(
            "allow_preset",
            vec![json!(["npm"]), json!(["github", "pypi"])]
        ),
        pick("allow_local", vec![json!(["127.0.0.1:11434"])]),
        pick("secret", vec![json!(["TOKEN=api.example.com"])]),
        pick("resolve", vec![json!(["db.test:10.0.0.5"])]),
        pick("upstream_ca", vec![json!(["~/ca.pem"])]),
        pick(
            "timeout",
            vec![json!(1), json!(60), json!(0.5), json!(3600)]
        ),
        pick(
            "memory",
            vec![json!("64M"), json!("1G"), json!(1 << 20), json!("4G")]
        ),
        pick(
            "pids",
            vec![json!(1), json!(100), json!(4096), json!(100_000)]
        ),
        pick("cpus", vec![json!(0.5), json!(1), json!(2.5), json!(64)]),
        pick("vm_memory", vec![json!("128M"), json!("1G"), json!("16G")]),
        pick("vm_cpus", vec![json!(1), json!(2), json!(32)]),
        pick("nested_userns", yes_no()),
        pick("unix_sockets", yes_no()),
        pick("caches", yes_no()),
        pick(
            "mount",
            vec![json!(["~/data:/data"]), json!(["~/data:/data-rw:rw"])]
        ),
    ]
}

/// A config file: a few fields, and sometimes a `pi` section of a few more.
fn config() -> impl Strategy<Value = Value> {
    let fields = || prop::collection::vec(field(), 0..6);
    (fields(), prop::option::of(fields())).prop_map(|(top, pi)| {
        let mut object: Map<String, Value> = top.into_iter().collect();
        if let Some(pi) = pi {
            object.insert("pi".into(), Value::Object(pi.into_iter().collect()));
        }
        Value::Object(object)
    })
}

/// The flags of a run: a few of those that set a value, and `cordon pi`'s mode.
fn flags() -> impl Strategy<Value = Flags> {
    (
        prop::option::of(prop::sample::select(vec!["32M", "2G"])),
        prop::option::of(prop::sample::select(vec![10u64, 10_000])),
        prop::option::of(prop::sample::select(vec![0.25, 4.0])),
        prop::option::of(prop::sample::select(vec![5.0, 7200.0])),
        prop::option::of(prop::sample::select(vec![
            NetMode::None,
            NetMode::Allowlist,
            NetMode::Host,
        ])),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(memory, pids, cpus, timeout, net, (read_only, allow, pi))| Flags {
                memory: memory.map(str::to_string),
                pids,
                cpus,
                timeout,
                net,
                read_only,
                allow_domain: if allow {
                    vec!["api.example.com".into()]
                } else {
                    Vec::new()
                },
                pi: pi.then(PiMode::default),
                ..Flags::default()
            },
        )
}

/// How much `access` gives: deny < read < write.
fn rank(access: Access) -> u8 {
    match access {
        Access::Deny => 0,
        Access::Read => 1,
        Access::Write => 2,
    }
}

/// How much of the host's `path` the sandbox gets: the access of its rule, but
/// nothing below a private tmpfs (`/tmp`, a hidden home) that no rule inside it
/// shows.
fn reach(p: &Policy, path: &Path) -> u8 {
    let rule = p.rule_for(path);
    let hidden = p.scratch.iter().any(|s| {
        path.starts_with(s) && rule.is_none_or(|r| !(r.path.starts_with(s) && r.path != *s))
    });
    if hidden {
        0
    } else {
        rule.map_or(rank(Access::Read), |r| rank(r.access))
    }
}

/// `a` is no more than `b`, where `None` is no limit at all.
fn at_most<T: PartialOrd>(a: Option<&T>, b: Option<&T>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

fn openness(mode: NetMode) -> u8 {
    match mode {
        NetMode::None => 0,
        NetMode::Allowlist => 1,
        NetMode::Host => 2,
    }
}

/// Panics naming the first way `with` (the project's config applied) is looser
/// than `without`.
fn assert_no_looser(with: &Policy, without: &Policy, ws: &Path, home: &Path) {
    let mut probes: Vec<PathBuf> = [with, without]
        .iter()
        .flat_map(|p| p.rules.iter().map(|r| r.path.clone()))
        .collect();
    probes.extend(probes.clone().into_iter().map(|p| p.join("below")));
    probes.extend(
        [
            "x",
            "sub/y",
            ".git/hooks/pre-commit",
            ".git/config",
            ".cordon.json",
        ]
        .map(|p| ws.join(p)),
    );
    probes.extend([".ssh/id_rsa", "notes", "data/f", ".cargo/bin"].map(|p| home.join(p)));
    probes.extend(["/etc/passwd", "/var/tmp", "/usr/bin"].map(PathBuf::from));
    // This workspace's own managed cache dir (`~/.cache/cordon/caches/<ws>`) is
    // as much the workspace's as the workspace: only its sandboxes write it, and
    // the host's tools never read it. A project that hides the home may make
    // cordon provide it where the user's writable home held the tool's own
    // cache (which the host's tools do read): narrower, not looser.
    let own_cache = with.caches.dir.as_ref().filter(|dir| {
        let key = cordon_policy::caches::workspace_key(ws);
        dir.file_name().and_then(|n| n.to_str()) == key.as_deref()
    });
    for path in &probes {
        if own_cache.is_some_and(|dir| path.starts_with(dir)) {
            continue;
        }
        assert!(
            reach(with, path) <= reach(without, path),
            "{} is more reachable with the project's config: {:?} against {:?}",
            path.display(),
            with.rule_for(path),
            without.rule_for(path)
        );
    }
    let (l, m) = (&with.limits, &without.limits);
    let value = |s: &Option<cordon_policy::Sourced<u64>>| s.as_ref().map(|s| s.value);
    assert!(
        at_most(value(&l.memory).as_ref(), value(&m.memory).as_ref()),
        "memory"
    );
    assert!(
        at_most(value(&l.pids).as_ref(), value(&m.pids).as_ref()),
        "pids"
    );
    let cpus = |s: &Option<cordon_policy::Sourced<f64>>| s.as_ref().map(|s| s.value);
    assert!(
        at_most(cpus(&l.cpus).as_ref(), cpus(&m.cpus).as_ref()),
        "cpus"
    );
    let timeout = |p: &Policy| p.timeout.as_ref().map(|t| t.value);
    assert!(
        at_most(timeout(with).as_ref(), timeout(without).as_ref()),
        "timeout"
    );
    assert!(
        openness(with.net.value) <= openness(without.net.value),
        "net"
    );
    let (n, o) = (&with.network, &without.network);
    for allow in &n.allow {
        assert!(
            o.allow.iter().any(|a| a.pattern == allow.pattern),
            "allow {}",
            allow.pattern
        );
    }
    for deny in &o.deny {
        assert!(n.deny.iter().any(|d| d.pattern == deny.pattern), "deny");
    }
    for local in &n.local {
        assert!(o.local.iter().any(|l| l.addr == local.addr), "local");
    }
    for secret in &n.secrets {
        let theirs = o.secrets.iter().find(|s| s.name == secret.name);
        assert!(
            theirs.is_some_and(|s| secret.hosts.iter().all(|h| s.hosts.contains(h))),
            "secret {}",
            secret.name
        );
    }
    for entry in &n.resolve {
        assert!(
            o.resolve
                .iter()
                .any(|r| r.host == entry.host && r.addr == entry.addr)
        );
    }
    for ca in &n.upstream_ca {
        assert!(
            o.upstream_ca.iter().any(|c| c.file == ca.file),
            "upstream_ca"
        );
    }
    for var in &with.env {
        // The variable that points a tool at its managed cache (above).
        let to_own_cache = own_cache.is_some_and(|dir| {
            var.value
                .as_deref()
                .is_some_and(|v| Path::new(v).starts_with(dir))
        });
        if to_own_cache {
            continue;
        }
        assert!(
            without
                .env
                .iter()
                .any(|v| v.name == var.name && v.value == var.value),
            "env {}",
            var.name
        );
    }
    for mount in &with.mounts {
        assert!(
            without.mounts.iter().any(|m| m.source == mount.source
                && m.target == mount.target
                && (m.writable || !mount.writable)),
            "mount {}",
            mount.target.display()
        );
    }
    let (s, t) = (&with.switches, &without.switches);
    assert!(
        s.nested_userns.value <= t.nested_userns.value,
        "nested_userns"
    );
    assert!(s.unix_sockets.value <= t.unix_sockets.value, "unix_sockets");
    // A project cannot turn on the managed caches a user turned off.
    let turned_off = without
        .caches
        .unmanaged
        .iter()
        .any(|u| u.why.contains("\"caches\": false"));
    assert!(!turned_off || with.caches.dir.is_none(), "caches");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_project_config_ever_loosens(user in config(), project in config(), flags in flags()) {
        let e = PolicyEnv::new();
        std::fs::create_dir_all(e.home.join("data")).unwrap();
        std::fs::write(e.home.join("data/f"), "data").unwrap();
        std::fs::write(e.home.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        e.user(&user.to_string());
        // Without the project's config, the policy may be refused (a bad value):
        // then there is nothing to loosen.
        let Ok(without) = e.resolve_with(flags.clone()) else {
            return Ok(());
        };
        e.project(&project.to_string());
        // With it, a refusal loosens nothing either.
        if let Ok(with) = e.resolve_with(flags) {
            assert_no_looser(&with, &without, &e.ws, &e.home);
        }
    }
}

/// The property can fail: a policy looser than another is caught.
#[test]
fn a_looser_policy_is_caught() {
    let e = PolicyEnv::new();
    let tight = e.resolve();
    e.user(r#"{"allow_write": ["~/notes"], "net": "host", "unix_sockets": true}"#);
    let loose = e.resolve();
    let caught = std::panic::catch_unwind(|| assert_no_looser(&loose, &tight, &e.ws, &e.home));
    assert!(caught.is_err());
    assert_no_looser(&tight, &loose, &e.ws, &e.home);
}

/// Found by `no_project_config_ever_loosens`: with ~/.cache/cordon shown by the
/// user's config (or the caches under another $XDG_CACHE_HOME), a project that
/// turned the managed caches off, or hid every tool's cache, showed the other
/// workspaces' cache dirs, which managed caches hide.
#[test]
fn turning_the_caches_off_keeps_the_other_workspaces_caches_hidden() {
    let e = PolicyEnv::new();
    e.user(r#"{"allow_read": ["~"]}"#);
    let others = e.home.join(".cache/cordon/caches/other-workspace");
    assert_eq!(e.resolve().access_for(&others), Access::Deny);
    for project in [
        r#"{"caches": false}"#,
        r#"{"deny_read": ["~/.npm", "~/.cache/pip", "~/.cargo"]}"#,
    ] {
        e.project(project);
        let p = e.resolve();
        assert!(p.caches.dir.is_none(), "{project}: {:?}", p.caches);
        assert_eq!(p.access_for(&others), Access::Deny, "{project}");
    }
}

/// Found by `no_project_config_ever_loosens`: with the whole home writable in
/// the user's config, a project's `hide_home` dropped the secrets' deny rules in
/// the (now private) home, then protected its start-up files and cordon's own
/// directories read-only there: rules that show the host's paths in the tmpfs.
#[test]
fn hiding_a_writable_home_shows_nothing_of_it() {
    let e = PolicyEnv::new();
    e.user(r#"{"allow_write": ["~"]}"#);
    let (key, data) = (
        e.home.join(".ssh/id_rsa"),
        e.home.join(".local/share/cordon"),
    );
    let open = e.resolve();
    assert_eq!(open.access_for(&key), Access::Deny);
    assert_eq!(open.access_for(&data), Access::Deny);
    e.project(r#"{"hide_home": true}"#);
    let hidden = e.resolve();
    assert_eq!(hidden.home_hidden.as_ref().map(|h| &h.value), Some(&e.home));
    let inside: Vec<_> = hidden
        .rules
        .iter()
        .filter(|r| r.path.starts_with(&e.home) && r.path != e.home)
        .filter(|r| r.access != Access::Deny)
        .collect();
    assert!(inside.is_empty(), "{inside:#?}");
    assert_no_looser(&hidden, &open, &e.ws, &e.home);
}
