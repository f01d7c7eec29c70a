//! End-to-end tests of `resolve` against real files in temporary directories.

use cordon_policy::{
    Access, BackendChoice, DomainPattern, Flags, Inputs, NetMode, NetworkRules, Origin, PathRule,
    Policy, PolicyError, RuleKind, Sourced, Verdict, VmShare, defaults, resolve,
};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_test_support::PolicyEnv as Env;

fn find<'a>(p: &'a Policy, path: &Path, access: Access) -> Option<&'a PathRule> {
    p.rules
        .iter()
        .find(|r| r.path == path && r.access == access)
}

/// The origin of the rule for `path` with `access`, which must exist.
fn origin<'a>(p: &'a Policy, path: &Path, access: Access) -> &'a Origin {
    match find(p, path, access) {
        Some(r) => &r.origin,
        None => panic!("no {access:?} rule for {}", path.display()),
    }
}

fn flag(name: &str) -> Origin {
    Origin::Flag { flag: name.into() }
}

fn no_duplicates(p: &Policy) {
    for w in p.rules.windows(2) {
        assert!(
            !(w[0].path == w[1].path && w[0].access == w[1].access),
            "duplicate rule {:?}",
            w[0]
        );
        assert!(w[0].path <= w[1].path, "rules not sorted: {:?}", p.rules);
    }
}

#[test]
fn defaults() {
    let e = Env::new();
    let p = e.resolve();
    no_duplicates(&p);
    assert_eq!(p.workspace, e.ws);
    assert_eq!(p.home, e.home);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    let root = find(&p, Path::new("/"), Access::Read).unwrap();
    assert_eq!(
        (root.kind, &root.origin),
        (RuleKind::Plain, &Origin::Default)
    );
    assert_eq!(p.rules[0].path, Path::new("/"));
    let ws = find(&p, &e.ws, Access::Write).unwrap();
    assert_eq!((ws.kind, &ws.origin), (RuleKind::Plain, &Origin::Default));

    for d in ["/run", "/var/run"] {
        let c = fs::canonicalize(d).unwrap_or_else(|_| PathBuf::from(d));
        let r = find(&p, &c, Access::Deny).unwrap();
        assert_eq!(r.kind, RuleKind::Plain);
    }

    for s in defaults::HOME_SECRETS {
        let r = find(&p, &e.home.join(s), Access::Deny).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(
            (r.kind, &r.origin),
            (RuleKind::Secret, &Origin::Default),
            "{s}"
        );
        assert_eq!(p.access_for(&e.home.join(s).join("x")), Access::Deny);
    }
    for s in [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/etc/sudoers.d",
        "/etc/ssl/private",
    ] {
        let c = fs::canonicalize(s).unwrap_or_else(|_| PathBuf::from(s));
        let r = find(&p, &c, Access::Deny).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(r.kind, RuleKind::Secret, "{s}");
    }
    assert!(find(&p, &e.home.join(".cache/cordon"), Access::Deny).is_some());
    // cordon's data directory (the egress broker's CA key).
    let data = find(&p, &e.home.join(".local/share/cordon"), Access::Deny).unwrap();
    assert_eq!(data.kind, RuleKind::Secret);
    assert_eq!(
        defaults::cordon_data_dir(&e.home, None),
        e.home.join(".local/share/cordon")
    );
    assert_eq!(p.network, NetworkRules::default());

    assert_eq!(p.scratch, vec![fs::canonicalize("/tmp").unwrap()]);

    for name in defaults::PROTECTED {
        let r = find(&p, &e.ws.join(name), Access::Read).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(r.kind, RuleKind::Protected, "{name}");
        assert_eq!(p.access_for(&e.ws.join(name).join("x")), Access::Read);
    }
    assert_eq!(p.access_for(&e.ws.join("src/main.rs")), Access::Write);
    assert_eq!(p.access_for(Path::new("/usr/bin/env")), Access::Read);

    // (Besides the managed caches' variables, tested in managed_caches_*.)
    let own: Vec<_> = (p.env.iter())
        .filter(|v| !matches!(v.origin, Origin::Cache { .. }))
        .collect();
    let names: Vec<&str> = own.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, defaults::DEFAULT_ENV);
    assert!(
        own.iter()
            .all(|v| v.value.is_none() && v.origin == Origin::Default)
    );
    for n in ["PATH", "HOME", "LC_ALL", "NO_COLOR", "LINES"] {
        assert!(names.contains(&n), "{n}");
    }

    assert_eq!(p.net.value, NetMode::None);
    assert_eq!(p.net.origin, Origin::Default);
    let pids = p.limits.pids.as_ref().unwrap();
    assert_eq!((pids.value, &pids.origin), (4096, &Origin::Default));
    assert!(p.limits.memory.is_none() && p.limits.cpus.is_none());
    assert!(p.timeout.is_none());
    assert!(!p.switches.nested_userns.value && !p.switches.unix_sockets.value);
    assert_eq!(p.switches.unix_sockets.origin, Origin::Default);
    assert_eq!(
        (p.writable_roots())
            .filter(|r| Some(*r) != p.caches.dir.as_deref())
            .collect::<Vec<_>>(),
        vec![e.ws.as_path()]
    );
}

#[test]
fn var_run_is_deduplicated_with_run() {
    let e = Env::new();
    let p = e.resolve();
    let run = fs::canonicalize("/run").unwrap_or_else(|_| "/run".into());
    let var_run = fs::canonicalize("/var/run").unwrap_or_else(|_| "/var/run".into());
    let n = p
        .rules
        .iter()
        .filter(|r| r.access == Access::Deny && (r.path == run || r.path == var_run))
        .count();
    assert_eq!(n, if run == var_run { 1 } else { 2 });
}

#[test]
fn variables_and_tilde_expand() {
    let e = Env::new();
    e.user(
        r#"{"allow_write": ["${WORKSPACE}/../shared-out", "~/out", "${HOME}/h", "${TMP}/t", "${TMPDIR}/d", "~"]}"#,
    );
    let p = e.resolve();
    for want in [
        e.root.join("shared-out"),
        e.home.join("out"),
        e.home.join("h"),
        e.tmp.join("t"),
        e.tmp.join("d"),
        e.home.clone(),
    ] {
        let r = find(&p, &want, Access::Write).unwrap_or_else(|| panic!("{}", want.display()));
        assert_eq!(r.origin, e.user_origin());
    }
    // The home directory became writable, but its secrets stay hidden.
    assert_eq!(p.access_for(&e.home.join(".ssh/id_ed25519")), Access::Deny);
    assert_eq!(p.access_for(&e.home.join("notes.txt")), Access::Write);
    // A writable home gets its own protected paths.
    let r = find(&p, &e.home.join(".pi"), Access::Read).unwrap();
    assert_eq!(r.kind, RuleKind::Protected);
    // ... but a protected path never uncovers a secret.
    assert_eq!(
        p.access_for(&e.home.join(".pi/agent/auth.json")),
        Access::Deny
    );
}

#[test]
fn unknown_variable_is_an_error_naming_it_and_the_file() {
    let e = Env::new();
    e.user(r#"{"deny_read": ["${SECRETS}/x"]}"#);
    let err = e.resolve_err();
    let msg = err.to_string();
    assert!(msg.contains("${SECRETS}"), "{msg}");
    assert!(
        msg.contains(&e.user_config_path().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("deny_read"), "{msg}");

    let e = Env::new();
    let err = e
        .resolve_with(Flags {
            allow_write: vec!["${NOPE}".into()],
            ..Flags::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("--allow-write"), "{err}");
    assert!(err.to_string().contains("${NOPE}"), "{err}");

    let e = Env::new();
    e.project(r#"{"deny_read": ["${X}"]}"#);
    let msg = e.resolve_err().to_string();
    assert!(
        msg.contains(".cordon.json") && msg.contains("${X}"),
        "{msg}"
    );
}

#[test]
fn relative_paths_config_vs_flags() {
    let e = Env::new();
    e.user(r#"{"allow_write": ["out"], "deny_read": ["./private"]}"#);
    e.project(r#"{"deny_read": ["secrets/"]}"#);
    let p = e
        .resolve_with(Flags {
            allow_write: vec!["build".into()],
            deny_read: vec!["../cwd-secret".into()],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(
        origin(&p, &e.ws.join("out"), Access::Write),
        &e.user_origin()
    );
    assert_eq!(
        origin(&p, &e.ws.join("private"), Access::Deny),
        &e.user_origin()
    );
    assert_eq!(
        origin(&p, &e.ws.join("secrets"), Access::Deny),
        &e.project_origin()
    );
    assert_eq!(
        origin(&p, &e.cwd.join("build"), Access::Write),
        &flag("--allow-write")
    );
    assert_eq!(
        origin(&p, &e.root.join("cwd-secret"), Access::Deny),
        &flag("--deny-read")
    );
    assert_eq!(p.access_for(&e.ws.join("secrets/key")), Access::Deny);
}

#[test]
fn relative_workspace_is_relative_to_cwd() {
    let e = Env::new();
    let mut i = e.inputs();
    i.workspace = "../ws/.".into();
    let p = resolve(&i).unwrap();
    assert_eq!(p.workspace, e.ws);
}

#[test]
fn rules_written_through_a_symlink_land_on_the_target() {
    let e = Env::new();
    let target = e.root.join("target");
    fs::create_dir(&target).unwrap();
    symlink(&target, e.ws.join("link")).unwrap();
    symlink(&target, e.cwd.join("link")).unwrap();
    e.user(r#"{"allow_write": ["link/sub/../out"], "deny_read": ["link/missing/deeper"]}"#);
    let p = e
        .resolve_with(Flags {
            deny_read: vec!["link/x".into()],
            ..Flags::default()
        })
        .unwrap();
    assert!(find(&p, &target.join("out"), Access::Write).is_some());
    assert!(find(&p, &target.join("missing/deeper"), Access::Deny).is_some());
    assert!(find(&p, &target.join("x"), Access::Deny).is_some());
    assert!(
        !p.rules
            .iter()
            .any(|r| r.path.starts_with(e.ws.join("link")))
    );

    // A workspace given through a symlink is canonicalised.
    let e2 = Env::new();
    symlink(&e2.ws, e2.root.join("ws-link")).unwrap();
    let mut i = e2.inputs();
    i.workspace = e2.root.join("ws-link");
    assert_eq!(resolve(&i).unwrap().workspace, e2.ws);
}

#[test]
fn missing_paths_resolve_lexically() {
    let e = Env::new();
    e.user(r#"{"allow_write": ["${WORKSPACE}/a/b/../c/./d", "/nonexistent-cordon/x/../y"]}"#);
    let p = e.resolve();
    assert!(find(&p, &e.ws.join("a/c/d"), Access::Write).is_some());
    assert!(find(&p, Path::new("/nonexistent-cordon/y"), Access::Write).is_some());
}

#[test]
fn unknown_field_names_field_and_file() {
    let e = Env::new();
    e.project("{\n  \"alow_write\": [\"/\"]\n}\n");
    let err = e.resolve_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&e.project_path().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("unknown field \"alow_write\""), "{msg}");
    assert!(msg.contains("known fields: allow_write"), "{msg}");
    assert!(
        matches!(err, PolicyError::UnknownField { line: 2, .. }),
        "{err:?}"
    );

    let e = Env::new();
    e.user(r#"{"$schema": "x", "timout": 3}"#);
    let msg = e.resolve_err().to_string();
    assert!(
        msg.contains(&e.user_config_path().display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("\"timout\"") && msg.contains("did you mean \"timeout\""),
        "{msg}"
    );
}

#[test]
fn parse_errors_name_line_and_column() {
    let e = Env::new();
    e.user("{\n  \"net\": \"none\",\n  \"pids\": 10,,\n}");
    let err = e.resolve_err();
    match &err {
        PolicyError::Syntax {
            file, line, column, ..
        } => {
            assert_eq!(file, &e.user_config_path());
            assert_eq!((*line, *column), (3, 14));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("line 3, column 14"), "{err}");

    let e = Env::new();
    e.project("{\"pids\": \"many\"}");
    let err = e.resolve_err();
    assert!(
        matches!(err, PolicyError::Invalid { line: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(".cordon.json: line 1, column"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn empty_project_config_is_no_config() {
    for content in ["", "   \n\t\n"] {
        let e = Env::new();
        let base = e.resolve();
        e.project(content);
        let p = e.resolve();
        assert_eq!(p, base, "{content:?}");
        assert!(p.warnings.is_empty());
    }
}

#[test]
fn config_file_locations() {
    // --config must exist.
    let e = Env::new();
    let mut i = e.inputs();
    i.config = Some("nothere.json".into());
    let err = resolve(&i).unwrap_err();
    assert!(matches!(err, PolicyError::ConfigNotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&e.cwd.join("nothere.json").display().to_string())
    );

    // --config, relative to cwd, replaces the default user config.
    e.user(r#"{"pids": 1}"#);
    fs::write(e.cwd.join("c.json"), r#"{"pids": 7}"#).unwrap();
    i.config = Some("c.json".into());
    let p = resolve(&i).unwrap();
    let pids = p.limits.pids.unwrap();
    assert_eq!(pids.value, 7);
    assert_eq!(
        pids.origin,
        Origin::UserConfig {
            file: e.cwd.join("c.json")
        }
    );

    // Without XDG_CONFIG_HOME: ~/.config/cordon/config.json.
    let e = Env::new();
    fs::create_dir_all(e.home.join(".config/cordon")).unwrap();
    fs::write(e.home.join(".config/cordon/config.json"), r#"{"pids": 9}"#).unwrap();
    let mut i = e.inputs();
    i.xdg_config_home = None;
    assert_eq!(resolve(&i).unwrap().limits.pids.unwrap().value, 9);

    // A directory where a config file should be is an error.
    let e = Env::new();
    fs::create_dir_all(e.user_config_path()).unwrap();
    assert!(matches!(e.resolve_err(), PolicyError::NotAFile { .. }));
    let e = Env::new();
    fs::create_dir(e.project_path()).unwrap();
    assert!(matches!(e.resolve_err(), PolicyError::NotAFile { .. }));

    // Too large.
    let e = Env::new();
    e.project(&" ".repeat(cordon_policy::MAX_CONFIG_BYTES as usize + 1));
    assert!(matches!(e.resolve_err(), PolicyError::TooLarge { .. }));
}

#[test]
fn project_config_symlink_outside_workspace_is_ignored() {
    let e = Env::new();
    fs::write(e.root.join("elsewhere.json"), r#"{"deny_read": ["x"]}"#).unwrap();
    symlink(e.root.join("elsewhere.json"), e.project_path()).unwrap();
    let p = e.resolve();
    assert!(find(&p, &e.ws.join("x"), Access::Deny).is_none());
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].contains("outside the workspace"),
        "{:?}",
        p.warnings
    );

    // Inside the workspace it is followed.
    let e = Env::new();
    fs::write(e.ws.join("real.json"), r#"{"deny_read": ["x"]}"#).unwrap();
    symlink(e.ws.join("real.json"), e.project_path()).unwrap();
    assert!(find(&e.resolve(), &e.ws.join("x"), Access::Deny).is_some());
}

/// A user config and flags that loosen things, so the project has something to
/// tighten and something it could try to loosen further.
fn loose_user(e: &Env) {
    e.user(
        r#"{"timeout": 600, "memory": "2G", "cpus": 2, "pids": 100,
            "nested_userns": true, "unix_sockets": true}"#,
    );
}

#[test]
fn project_loosening_fields_are_ignored_with_a_warning() {
    let e = Env::new();
    loose_user(&e);
    let base = e.resolve();
    e.project(
        r#"{
          "allow_write": ["/"],
          "allow_read": ["~/.ssh"],
          "unprotect": [".git/hooks"],
          "env": ["AWS_SECRET_ACCESS_KEY"],
          "net": "host",
          "timeout": 6000,
          "memory": "3G",
          "pids": 1000,
          "cpus": 4,
          "vm_kernel": "/boot/vmlinuz",
          "backend": "os",
          "vm_share": "9p",
          "read_only": false
        }"#,
    );
    let p = e.resolve();
    let file = e.project_path().display().to_string();
    for field in [
        "allow_write",
        "allow_read",
        "unprotect",
        "env",
        "net",
        "timeout",
        "memory",
        "pids",
        "cpus",
        "vm_kernel",
        "backend",
        "vm_share",
    ] {
        let w: Vec<&String> = p
            .warnings
            .iter()
            .filter(|w| w.contains(&format!("ignored \"{field}\"")))
            .collect();
        assert_eq!(w.len(), 1, "{field}: {:?}", p.warnings);
        assert!(
            w[0].starts_with(&format!("project config {file}: ")),
            "{}",
            w[0]
        );
        assert!(w[0].contains("may only tighten"), "{}", w[0]);
    }
    assert_eq!(p.warnings.len(), 12, "{:?}", p.warnings);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("or pass --allow-write)"))
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("6000 s is more than the current 600 s"))
    );
    let mut p2 = p.clone();
    p2.warnings.clear();
    assert_eq!(p2, base);

    // Switches: true from a project is ignored when they are off.
    let e = Env::new();
    let base = e.resolve();
    e.project(r#"{"nested_userns": true, "unix_sockets": true, "net": "host", "pids": 5000}"#);
    let p = e.resolve();
    for field in ["nested_userns", "unix_sockets", "net", "pids"] {
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains(&format!("ignored \"{field}\""))),
            "{field}: {:?}",
            p.warnings
        );
    }
    let mut p2 = p.clone();
    p2.warnings.clear();
    assert_eq!(p2, base);
}

#[test]
fn project_tightening_fields_take_effect() {
    let e = Env::new();
    loose_user(&e);
    e.project(
        r#"{"deny_read": ["secrets", "/opt/x"], "read_only": true, "net": "none",
            "timeout": 60, "memory": "512M", "pids": 50, "cpus": 0.5,
            "nested_userns": false, "unix_sockets": false, "allow_write": [], "env": []}"#,
    );
    let p = e
        .resolve_with(Flags {
            net: Some(NetMode::Host),
            ..Flags::default()
        })
        .unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let po = e.project_origin();
    assert_eq!(origin(&p, &e.ws.join("secrets"), Access::Deny), &po);
    assert_eq!(origin(&p, Path::new("/opt/x"), Access::Deny), &po);
    assert_eq!(origin(&p, &e.ws, Access::Read), &po);
    assert!(find(&p, &e.ws, Access::Write).is_none());
    assert_eq!(p.access_for(&e.ws.join("src")), Access::Read);
    assert_eq!((p.net.value, &p.net.origin), (NetMode::None, &po));
    let t = p.timeout.as_ref().unwrap();
    assert_eq!((t.value, &t.origin), (Duration::from_secs(60), &po));
    let m = p.limits.memory.as_ref().unwrap();
    assert_eq!((m.value, &m.origin), (512 << 20, &po));
    let n = p.limits.pids.as_ref().unwrap();
    assert_eq!((n.value, &n.origin), (50, &po));
    let c = p.limits.cpus.as_ref().unwrap();
    assert_eq!((c.value, &c.origin), (0.5, &po));
    assert_eq!(
        p.switches.nested_userns,
        cordon_policy::Sourced::new(false, po.clone())
    );
    assert_eq!(
        p.switches.unix_sockets,
        cordon_policy::Sourced::new(false, po.clone())
    );

    // Limits that are unlimited take any value from the project.
    let e = Env::new();
    e.project(r#"{"timeout": 900, "memory": 1073741824, "cpus": 8}"#);
    let p = e.resolve();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.timeout.unwrap().value, Duration::from_secs(900));
    assert_eq!(p.limits.memory.unwrap().value, 1 << 30);
    assert_eq!(p.limits.cpus.unwrap().value, 8.0);

    // The project tightens flags too (it is applied last).
    let e = Env::new();
    e.project(r#"{"timeout": 10}"#);
    let p = e
        .resolve_with(Flags {
            timeout: Some(30.0),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.timeout.unwrap().value, Duration::from_secs(10));

    // Equal values change nothing and warn about nothing; but `"net": "none"` where
    // nothing set a mode is taken: it turns the network off on purpose, which a
    // `cordon serve` session then keeps (it would otherwise run its broker, to let
    // the user allow names later).
    let e = Env::new();
    e.project(r#"{"pids": 4096, "net": "none", "nested_userns": false}"#);
    let p = e.resolve();
    assert!(p.warnings.is_empty());
    assert_eq!(p.limits.pids.unwrap().origin, Origin::Default);
    assert_eq!(
        p.net,
        cordon_policy::Sourced::new(NetMode::None, e.project_origin())
    );
}

#[test]
fn read_only_wins_over_a_write_rule_on_the_workspace() {
    let e = Env::new();
    e.user(r#"{"allow_write": ["${WORKSPACE}"]}"#);
    e.project(r#"{"read_only": true}"#);
    let p = e.resolve();
    assert_eq!(p.access_for(&e.ws.join("f")), Access::Read);
    // The flag works too, and the protected paths are still listed.
    let e = Env::new();
    let p = e
        .resolve_with(Flags {
            read_only: true,
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(origin(&p, &e.ws, Access::Read), &flag("--read-only"));
    assert!(find(&p, &e.ws.join(".git/hooks"), Access::Read).is_some());
    // (But the managed caches' dir.)
    assert_eq!(
        (p.writable_roots())
            .filter(|r| Some(*r) != p.caches.dir.as_deref())
            .count(),
        0
    );
    // A user config saying false is overridden by the flag.
    e.user(r#"{"read_only": false}"#);
    let p = e
        .resolve_with(Flags {
            read_only: true,
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.access_for(&e.ws), Access::Read);
}

#[test]
fn the_vms_resources_are_layered_and_a_project_may_only_lower_them() {
    let e = Env::new();
    let vm = |p: &Policy| (p.vm.memory.clone(), p.vm.cpus.clone());
    // Built in: 1 GiB and 2 vCPUs.
    let p = e.resolve();
    let default = (
        Sourced::new(1 << 30, Origin::Default),
        Sourced::new(2, Origin::Default),
    );
    assert_eq!(vm(&p), default);
    // The user's config, then the flags, replace them.
    e.user(r#"{"vm_memory": "4G", "vm_cpus": 8}"#);
    let p = e.resolve();
    assert_eq!(vm(&p).0, Sourced::new(4 << 30, e.user_origin()));
    assert_eq!(vm(&p).1, Sourced::new(8, e.user_origin()));
    let flags = Flags {
        vm_memory: Some("2G".into()),
        vm_cpus: Some(3),
        ..Flags::default()
    };
    let p = e.resolve_with(flags.clone()).unwrap();
    assert_eq!(vm(&p).0, Sourced::new(2 << 30, flag("--vm-memory")));
    assert_eq!(vm(&p).1, Sourced::new(3, flag("--vm-cpus")));
    // A project may lower them, not raise them (raising is warned about).
    e.project(r#"{"vm_memory": "512M", "vm_cpus": 16}"#);
    let p = e.resolve_with(flags.clone()).unwrap();
    assert_eq!(vm(&p).0, Sourced::new(512 << 20, e.project_origin()));
    assert_eq!(vm(&p).1, Sourced::new(3, flag("--vm-cpus")));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].contains(
            "ignored \"vm_cpus\": 16 vCPUs is more than the current 3 vCPUs (flag --vm-cpus) \
             (a project config may only tighten the policy; put it in ~/.config/cordon/config.json or pass --vm-cpus)"
        ),
        "{:?}",
        p.warnings
    );
    // Over the built-in default too: a project cannot raise what nobody set.
    let e = Env::new();
    e.project(r#"{"vm_memory": "8G", "vm_cpus": 1}"#);
    let p = e.resolve();
    assert_eq!(vm(&p).0, default.0);
    assert_eq!(vm(&p).1, Sourced::new(1, e.project_origin()));
    assert!(
        p.warnings[0].contains("ignored \"vm_memory\""),
        "{:?}",
        p.warnings
    );
    // A flag out of bounds is an error naming the flag.
    let bad = e.resolve_with(Flags {
        vm_cpus: Some(0),
        ..Flags::default()
    });
    let msg = bad.unwrap_err().to_string();
    assert!(
        msg.contains("flag --vm-cpus: invalid vm_cpus 0: must be from 1 to 64"),
        "{msg}"
    );
    let bad = e.resolve_with(Flags {
        vm_memory: Some("100M".into()),
        ..Flags::default()
    });
    let msg = bad.unwrap_err().to_string();
    assert!(
        msg.contains("flag --vm-memory: invalid vm_memory 100M: must be at least 128M"),
        "{msg}"
    );
}

#[test]
fn flags_override_user_config() {
    let e = Env::new();
    e.user(r#"{"timeout": 600, "memory": "1G", "pids": 10, "cpus": 1, "net": "host"}"#);
    let p = e
        .resolve_with(Flags {
            timeout: Some(900.5),
            memory: Some("4G".into()),
            pids: Some(20),
            cpus: Some(3.0),
            net: Some(NetMode::None),
            ..Flags::default()
        })
        .unwrap();
    let t = p.timeout.unwrap();
    assert_eq!(
        (t.value, t.origin),
        (Duration::from_secs_f64(900.5), flag("--timeout"))
    );
    let m = p.limits.memory.unwrap();
    assert_eq!((m.value, m.origin), (4 << 30, flag("--memory")));
    assert_eq!(p.limits.pids.unwrap().origin, flag("--pids"));
    assert_eq!(p.limits.cpus.unwrap().value, 3.0);
    assert_eq!((p.net.value, p.net.origin), (NetMode::None, flag("--net")));

    // Without flags the user config applies.
    let p = e.resolve();
    assert_eq!(p.net.value, NetMode::Host);
    assert_eq!(p.net.origin, e.user_origin());
    assert_eq!(p.limits.memory.unwrap().value, 1 << 30);
}

#[test]
fn bad_flag_values_are_errors_naming_the_flag() {
    let e = Env::new();
    // A flag's name, and how to set it to a bad value.
    type Case = (&'static str, fn(&mut Flags));
    let cases: [Case; 9] = [
        ("--memory", |f| f.memory = Some("lots".into())),
        ("--memory", |f| f.memory = Some("0".into())),
        ("--timeout", |f| f.timeout = Some(-1.0)),
        ("--timeout", |f| f.timeout = Some(f64::NAN)),
        ("--timeout", |f| f.timeout = Some(f64::MAX)),
        ("--pids", |f| f.pids = Some(0)),
        ("--cpus", |f| f.cpus = Some(f64::INFINITY)),
        ("--env", |f| f.env = vec!["=x".into()]),
        ("--deny-read", |f| f.deny_read = vec!["".into()]),
    ];
    for (name, set) in cases {
        let mut flags = Flags::default();
        set(&mut flags);
        let err = e.resolve_with(flags).unwrap_err();
        assert!(matches!(err, PolicyError::Value { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!("flag {name}: ")),
            "{err}"
        );
    }
}

#[test]
fn env_layers() {
    let e = Env::new();
    e.user(r#"{"env": ["EDITOR=vim", "RUST_LOG=debug", "CARGO_HOME"]}"#);
    let p = e
        .resolve_with(Flags {
            env: vec!["RUST_LOG=trace".into(), "FOO=".into()],
            ..Flags::default()
        })
        .unwrap();
    let get = |n: &str| p.env.iter().find(|v| v.name == n).unwrap();
    let editor = get("EDITOR");
    assert_eq!(editor.value.as_deref(), Some("vim"));
    assert_eq!(editor.origin, e.user_origin());
    // Replaced in place, not appended.
    assert_eq!(p.env.iter().filter(|v| v.name == "EDITOR").count(), 1);
    assert_eq!(get("RUST_LOG").value.as_deref(), Some("trace"));
    assert_eq!(get("RUST_LOG").origin, flag("--env"));
    assert_eq!(get("CARGO_HOME").value, None);
    assert_eq!(get("FOO").value.as_deref(), Some(""));
    let cache_vars = (p.env.iter())
        .filter(|v| matches!(v.origin, Origin::Cache { .. }))
        .count();
    assert_eq!(p.env.len(), defaults::DEFAULT_ENV.len() + 3 + cache_vars);

    let e = Env::new();
    e.user(r#"{"env": ["A B"]}"#);
    let msg = e.resolve_err().to_string();
    assert!(
        msg.contains("user config") && msg.contains("\"env\""),
        "{msg}"
    );
}

#[test]
fn allow_read_beats_a_default_secret() {
    let e = Env::new();
    e.user(r#"{"allow_read": ["~/.ssh/known_hosts", "~/.aws", "/run/user"]}"#);
    let p = e.resolve();
    // The rest of ~/.ssh stays hidden, known_hosts is readable.
    assert_eq!(p.access_for(&e.home.join(".ssh/id_rsa")), Access::Deny);
    assert_eq!(p.access_for(&e.home.join(".ssh/known_hosts")), Access::Read);
    let r = p.rule_for(&e.home.join(".ssh/known_hosts")).unwrap();
    assert_eq!(r.origin, e.user_origin());
    // ~/.aws: the secret rule is gone.
    assert!(find(&p, &e.home.join(".aws"), Access::Deny).is_none());
    assert_eq!(p.access_for(&e.home.join(".aws/credentials")), Access::Read);
    // A path beneath a hidden directory becomes visible.
    let run = fs::canonicalize("/run").unwrap_or_else(|_| "/run".into());
    assert_eq!(p.access_for(&run.join("user/1000")), Access::Read);
    assert_eq!(p.access_for(&run.join("docker.sock")), Access::Deny);

    // It also removes a user's own deny beneath it, but not a later flag's.
    let e = Env::new();
    e.user(r#"{"deny_read": ["~/docs/a"], "allow_read": ["~/docs"]}"#);
    let p = e
        .resolve_with(Flags {
            deny_read: vec![e.home.join("docs/b")],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.access_for(&e.home.join("docs/a")), Access::Read);
    assert_eq!(p.access_for(&e.home.join("docs/b")), Access::Deny);

    // It never takes write access away.
    let e = Env::new();
    e.user(r#"{"allow_read": ["${WORKSPACE}/src"]}"#);
    assert_eq!(e.resolve().access_for(&e.ws.join("src/x")), Access::Write);
}

#[test]
fn unprotect_removes_a_protected_rule() {
    let e = Env::new();
    e.user(r#"{"unprotect": [".git/config", "${WORKSPACE}/.vscode"]}"#);
    let p = e.resolve();
    assert!(find(&p, &e.ws.join(".git/config"), Access::Read).is_none());
    assert!(find(&p, &e.ws.join(".vscode"), Access::Read).is_none());
    assert_eq!(p.access_for(&e.ws.join(".git/config")), Access::Write);
    assert!(find(&p, &e.ws.join(".git/hooks"), Access::Read).is_some());
    assert!(find(&p, &e.ws.join(".pi"), Access::Read).is_some());
}

#[test]
fn protected_paths_for_every_writable_root() {
    let e = Env::new();
    let extra = e.root.join("extra");
    fs::create_dir(&extra).unwrap();
    e.user(&format!(r#"{{"allow_write": ["{}"]}}"#, extra.display()));
    let p = e.resolve();
    for root in [&e.ws, &extra] {
        for name in defaults::PROTECTED {
            let r = find(&p, &root.join(name), Access::Read).unwrap();
            assert_eq!(r.kind, RuleKind::Protected);
        }
    }
    // A flag's writable root too.
    let e = Env::new();
    let p = e
        .resolve_with(Flags {
            allow_write: vec![e.root.join("f")],
            ..Flags::default()
        })
        .unwrap();
    assert!(find(&p, &e.root.join("f/.cordon.json"), Access::Read).is_some());
}

#[test]
fn worktree_git_file_protects_the_real_git_dir() {
    let e = Env::new();
    let main = e.root.join("main");
    let gitdir = main.join(".git/worktrees/ws");
    fs::create_dir_all(&gitdir).unwrap();
    fs::write(gitdir.join("commondir"), "../..\n").unwrap();
    fs::write(e.ws.join(".git"), format!("gitdir: {}\n", gitdir.display())).unwrap();
    let p = e.resolve();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    for path in [
        e.ws.join(".git"),
        gitdir.join("config"),
        gitdir.join("hooks"),
        main.join(".git/hooks"),
        main.join(".git/config"),
    ] {
        let r = find(&p, &path, Access::Read).unwrap_or_else(|| panic!("{}", path.display()));
        assert_eq!(r.kind, RuleKind::Protected);
    }

    // A malformed .git file is a warning, not an error.
    let e = Env::new();
    fs::write(e.ws.join(".git"), "garbage").unwrap();
    let p = e.resolve();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains(".git"), "{:?}", p.warnings);
}

#[test]
fn protected_paths_never_uncover_denied_ones() {
    let e = Env::new();
    // A worktree whose main repository is under a denied directory.
    let hidden = e.root.join("hidden");
    let gitdir = hidden.join("repo/.git/worktrees/ws");
    fs::create_dir_all(&gitdir).unwrap();
    fs::write(e.ws.join(".git"), format!("gitdir: {}", gitdir.display())).unwrap();
    e.user(&format!(r#"{{"deny_read": ["{}"]}}"#, hidden.display()));
    let p = e.resolve();
    assert_eq!(p.access_for(&gitdir.join("config")), Access::Deny);
    assert!(!p.rules.iter().any(|r| r.path.starts_with(&gitdir)));
}

#[test]
fn longest_prefix_and_tie_break() {
    let e = Env::new();
    let x = e.root.join("x");
    e.user(&format!(
        r#"{{"allow_write": ["{0}", "{0}/a/b"], "deny_read": ["{0}", "{0}/a"]}}"#,
        x.display()
    ));
    let p = e.resolve();
    // Tie on x: deny beats write.
    assert_eq!(p.rule_for(&x).unwrap().access, Access::Deny);
    assert_eq!(p.access_for(&x.join("file")), Access::Deny);
    // Longer prefix wins: x/a/b is writable under denied x/a.
    assert_eq!(p.access_for(&x.join("a/b/c")), Access::Write);
    assert_eq!(p.access_for(&x.join("a/c")), Access::Deny);
    // Component-wise prefixes: x/a-b is not under x/a.
    assert_eq!(p.rule_for(&x.join("a-b")).unwrap().path, x);
    // Tie between write and read: write wins (an explicit allow_write of a protected
    // path makes it writable).
    let e = Env::new();
    e.user(r#"{"allow_write": ["${WORKSPACE}/.vscode"]}"#);
    let p = e.resolve();
    assert_eq!(p.access_for(&e.ws.join(".vscode")), Access::Write);
    assert_eq!(p.access_for(&e.ws.join(".vscode/.git/hooks")), Access::Read);
}

#[test]
fn workspace_errors() {
    let e = Env::new();
    let mut i = e.inputs();
    i.workspace = e.root.join("missing");
    let err = resolve(&i).unwrap_err();
    assert!(matches!(err, PolicyError::Workspace { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    fs::write(e.root.join("file"), "").unwrap();
    i.workspace = e.root.join("file");
    assert!(
        resolve(&i)
            .unwrap_err()
            .to_string()
            .contains("not a directory")
    );

    i.workspace = "/tmp".into();
    let msg = resolve(&i).unwrap_err().to_string();
    assert!(msg.contains("choose a directory under /tmp"), "{msg}");
    i.workspace = "/tmp/./".into();
    assert!(resolve(&i).is_err());

    // A workspace inside a denied path.
    let e = Env::new();
    e.project(r#"{"deny_read": ["."]}"#);
    let msg = e.resolve_err().to_string();
    assert!(msg.contains("hidden by the rule"), "{msg}");

    // Relative environment paths.
    let e = Env::new();
    let mut i = e.inputs();
    i.home = "home".into();
    assert!(matches!(
        resolve(&i).unwrap_err(),
        PolicyError::Environment { .. }
    ));
}

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// A key for a random config: a known field, `$schema`, or one that is no field.
fn random_key(rng: &mut Rng) -> &'static str {
    let keys: Vec<&str> = cordon_policy::known_fields()
        .iter()
        .copied()
        .chain(["$schema", "bogus", ""])
        .collect();
    rng.pick(&keys)
}

const ATOMS: &[&str] = &[
    "\"\"",
    "\"/\"",
    "\".\"",
    "\"..\"",
    "\"~\"",
    "\"~/x\"",
    "\"${HOME}\"",
    "\"${WORKSPACE}/../../..\"",
    "\"${TMP}/a\"",
    "\"${NOPE}\"",
    "\"${\"",
    "\"\\u0000\"",
    "\"secrets/\"",
    "\".git/config\"",
    "\"/run\"",
    "\"none\"",
    "\"host\"",
    "\"allowlist\"",
    "\"example.com\"",
    "\"*.example.com:8443\"",
    "\"npm\"",
    "\"localhost:11434\"",
    "\"T=api.example.com\"",
    "\"db:10.0.0.5\"",
    "\"2G\"",
    "\"1.5G\"",
    "\"0\"",
    "\"A=b\"",
    "\"=\"",
    "\"EDITOR\"",
    "0",
    "1",
    "-1",
    "1.5",
    "1e308",
    "-1e308",
    "18446744073709551615",
    "18446744073709551616",
    "true",
    "false",
    "null",
    "{}",
    "[]",
];

fn random_value(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth > 2 { 1 } else { 4 }) {
        0 => rng.pick(ATOMS).to_string(),
        1 | 2 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| random_value(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => random_object(rng, depth + 1),
    }
}

fn random_object(rng: &mut Rng, depth: usize) -> String {
    let n = rng.below(5);
    let fields: Vec<String> = (0..n)
        .map(|_| format!("\"{}\": {}", random_key(rng), random_value(rng, depth)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn mutate(rng: &mut Rng, s: String) -> String {
    let mut b = s.into_bytes();
    match rng.below(4) {
        0 if !b.is_empty() => {
            let cut = rng.below(b.len());
            b.truncate(cut);
        }
        1 if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        _ => {}
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn resolve_never_panics_on_random_configs() {
    let e = Env::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let sizes = ["1G", "x", "", "0", "1.5", "99999999999T", "7k"];
    let mut ok = 0;
    for _ in 0..400 {
        let user = random_object(&mut rng, 0);
        let user = mutate(&mut rng, user);
        let project = random_object(&mut rng, 0);
        let project = mutate(&mut rng, project);
        // Vary one input at a time often enough that some runs resolve.
        let which = rng.below(4);
        e.user(if which & 1 == 0 { &user } else { "" });
        e.project(if which & 2 == 0 { &project } else { "" });
        let flags = if rng.below(3) != 0 {
            Flags::default()
        } else {
            Flags {
                allow_write: vec![rng.pick(&["a", "${HOME}", "/", "~"]).into()],
                deny_read: vec![rng.pick(&["b", "${WORKSPACE}/x", ".."]).into()],
                read_only: rng.below(2) == 0,
                env: vec![rng.pick(&["A", "B=1", "=", "C D"]).into()],
                timeout: [None, Some(1.0), Some(-1.0), Some(f64::NAN), Some(1e300)][rng.below(5)],
                memory: Some(rng.pick(&sizes).into()).filter(|_| rng.below(2) == 0),
                pids: [None, Some(0), Some(1), Some(u64::MAX)][rng.below(4)],
                cpus: [None, Some(0.0), Some(0.5), Some(f64::INFINITY)][rng.below(4)],
                allow_domain: vec![
                    rng.pick(&["example.com", "*.a.b:8443", "1.2.3.4", ""])
                        .into(),
                ],
                deny_domain: vec![rng.pick(&["x.example.com", "*.", "a..b"]).into()],
                allow_preset: vec![rng.pick(&["npm", "nope", "github"]).into()],
                allow_local: vec![
                    rng.pick(&["localhost:11434", "127.0.0.1", "[::1]:80"])
                        .into(),
                ],
                secret: vec![rng.pick(&["T=api.x.com", "T", "1=a"]).into()],
                resolve: vec![rng.pick(&["db:10.0.0.5", "db", "db:[::1]"]).into()],
                net: [
                    None,
                    Some(NetMode::None),
                    Some(NetMode::Host),
                    Some(NetMode::Allowlist),
                ][rng.below(4)],
                ..Flags::default()
            }
        };
        let mut i = e.inputs();
        i.flags = flags;
        if let Ok(p) = resolve(&i) {
            ok += 1;
            assert!(p.rules.iter().all(|r| r.path.is_absolute()));
            assert!(p.rule_for(Path::new("/")).is_some());
            no_duplicates(&p);
        }
        let _ = cordon_policy::parse_config(user.as_bytes(), Path::new("u"));
    }
    eprintln!("resolved {ok} of 400");
    assert!(ok >= 40, "only {ok} random inputs resolved");
}

// ---- The network part of the policy ----

fn pattern(s: &str) -> DomainPattern {
    DomainPattern::parse(s).unwrap()
}

/// The allow rules as (pattern, preset, origin).
fn allows(p: &Policy) -> Vec<(String, Option<String>, Origin)> {
    p.network
        .allow
        .iter()
        .map(|r| (r.pattern.to_string(), r.preset.clone(), r.origin.clone()))
        .collect()
}

#[test]
fn network_flags() {
    let e = Env::new();
    fs::write(e.cwd.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let p = e
        .resolve_with(Flags {
            allow_domain: vec!["Example.com.".into(), "*.example.org:8443".into()],
            deny_domain: vec!["evil.example.org".into()],
            allow_local: vec!["localhost:11434".into(), "[::1]:8080".into()],
            secret: vec!["ANTHROPIC_API_KEY=api.anthropic.com,*.anthropic.com".into()],
            resolve: vec!["git.internal:10.0.0.5".into(), "db:fd00::5".into()],
            upstream_ca: vec!["ca.pem".into()],
            ..Flags::default()
        })
        .unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(
        p.net,
        Sourced::new(NetMode::Allowlist, flag("--allow-domain"))
    );
    assert_eq!(
        allows(&p),
        vec![
            ("example.com".into(), None, flag("--allow-domain")),
            ("*.example.org:8443".into(), None, flag("--allow-domain")),
        ]
    );
    let n = &p.network;
    assert_eq!(n.deny[0].pattern, pattern("evil.example.org"));
    assert_eq!(n.deny[0].origin, flag("--deny-domain"));
    assert!(matches!(
        n.verdict("evil.example.org", 8443),
        Verdict::Denied(_)
    ));
    assert!(matches!(
        n.verdict("a.example.org", 8443),
        Verdict::Allowed(_)
    ));
    let locals: Vec<String> = n.local.iter().map(|l| l.addr.to_string()).collect();
    assert_eq!(locals, ["127.0.0.1:11434", "[::1]:8080"]);
    assert_eq!(n.local[0].origin, flag("--allow-local"));
    assert_eq!(n.secrets.len(), 1);
    assert_eq!(n.secrets[0].name, "ANTHROPIC_API_KEY");
    assert_eq!(
        n.secrets[0].hosts,
        vec![pattern("api.anthropic.com"), pattern("*.anthropic.com")]
    );
    assert_eq!(n.secrets[0].origin, flag("--secret"));
    assert_eq!(
        n.resolved("git.internal"),
        Some("10.0.0.5".parse().unwrap())
    );
    assert_eq!(n.resolved("db"), Some("fd00::5".parse().unwrap()));
    assert_eq!(n.resolve[0].origin, flag("--resolve"));
    assert_eq!(n.upstream_ca.len(), 1);
    assert_eq!(n.upstream_ca[0].file, e.cwd.join("ca.pem"));
    assert_eq!(n.upstream_ca[0].origin, flag("--upstream-ca"));
    assert_eq!(n.ports(), vec![80, 443, 8080, 8443, 11434]);
}

#[test]
fn network_user_config() {
    let e = Env::new();
    fs::write(e.ws.join("ca.pem"), "").unwrap();
    fs::write(e.home.join("corp.pem"), "").unwrap();
    e.user(
        r#"{"allow_domain": ["example.com"], "deny_domain": ["*.ads.example.com"],
            "allow_preset": ["pypi"], "allow_local": ["127.0.0.1:5432"],
            "secret": ["TOKEN=api.example.com"], "resolve": ["db.local:[fd00::1]"],
            "upstream_ca": ["ca.pem", "~/corp.pem"]}"#,
    );
    let p = e.resolve();
    let u = e.user_origin();
    assert_eq!(p.net, Sourced::new(NetMode::Allowlist, u.clone()));
    assert_eq!(
        allows(&p),
        vec![
            ("example.com".into(), None, u.clone()),
            ("pypi.org".into(), Some("pypi".into()), u.clone()),
            (
                "files.pythonhosted.org".into(),
                Some("pypi".into()),
                u.clone()
            ),
        ]
    );
    let n = &p.network;
    assert_eq!(n.deny[0].origin, u);
    assert_eq!(n.local[0].addr, "127.0.0.1:5432".parse().unwrap());
    assert_eq!(n.secrets[0].origin, u);
    assert_eq!(n.resolve[0].host, "db.local");
    // Relative paths in a config are relative to the workspace; `~` expands.
    let cas: Vec<&Path> = n.upstream_ca.iter().map(|c| c.file.as_path()).collect();
    assert_eq!(cas, [e.ws.join("ca.pem"), e.home.join("corp.pem")]);

    // Flags add to the user's lists; a secret or resolve entry of the same name
    // replaces the config's; the same allow pattern twice is one rule.
    let p = e
        .resolve_with(Flags {
            allow_domain: vec!["example.com".into(), "other.org".into()],
            secret: vec!["TOKEN=api2.example.com".into()],
            resolve: vec!["db.local:10.1.1.1".into()],
            allow_local: vec!["localhost:5432".into()],
            ..Flags::default()
        })
        .unwrap();
    let a = allows(&p);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a[0].2, u);
    assert_eq!(a[3], ("other.org".into(), None, flag("--allow-domain")));
    assert_eq!(p.network.secrets.len(), 1);
    assert_eq!(
        p.network.secrets[0].hosts,
        vec![pattern("api2.example.com")]
    );
    assert_eq!(p.network.secrets[0].origin, flag("--secret"));
    assert_eq!(p.network.resolve.len(), 1);
    assert_eq!(
        p.network.resolved("db.local"),
        Some("10.1.1.1".parse().unwrap())
    );
    // The same local service twice is one.
    assert_eq!(p.network.local.len(), 1);
    assert_eq!(p.network.local[0].origin, u);
}

/// The VM's kernel: a user config's path (relative to the workspace, `~`
/// expanded), replaced by the flag's (relative to the current directory); a
/// path that is no file is refused, naming the file and the fix.
#[test]
fn vm_kernel_from_the_user_config_and_the_flag() {
    let e = Env::new();
    fs::write(e.home.join("vmlinuz-mine"), "").unwrap();
    fs::write(e.cwd.join("vmlinux"), "").unwrap();
    assert_eq!(e.resolve().vm_kernel, None);
    e.user(r#"{"vm_kernel": "~/vmlinuz-mine"}"#);
    let p = e.resolve();
    assert_eq!(
        p.vm_kernel,
        Some(Sourced::new(e.home.join("vmlinuz-mine"), e.user_origin()))
    );
    let p = e
        .resolve_with(Flags {
            vm_kernel: Some("vmlinux".into()),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(
        p.vm_kernel,
        Some(Sourced::new(e.cwd.join("vmlinux"), flag("--vm-kernel")))
    );
    let err = e
        .resolve_with(Flags {
            vm_kernel: Some("nope".into()),
            ..Flags::default()
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VM kernel") && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("hint: name a bzImage"), "{err}");
}

/// Where the sandbox runs: os by default; the user config's `backend` (its
/// `pi` section for `cordon pi`), replaced by `--backend`; never a project's
/// (tested with the other loosening fields); a name that is no backend is
/// refused, naming both.
#[test]
fn backend_from_the_user_config_and_the_flag() {
    let e = Env::new();
    let p = e.resolve();
    assert_eq!(p.backend, Sourced::new(BackendChoice::Os, Origin::Default));
    e.user(r#"{"backend": "vm"}"#);
    let p = e.resolve();
    assert_eq!(p.backend, Sourced::new(BackendChoice::Vm, e.user_origin()));
    let p = e
        .resolve_with(Flags {
            backend: Some(BackendChoice::Os),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.backend.value, BackendChoice::Os);
    assert_eq!(p.backend.origin, flag("--backend (or $CORDON_BACKEND)"));

    e.user(r#"{"backend": "docker"}"#);
    let err = e.resolve_with(Flags::default()).unwrap_err().to_string();
    assert!(
        err.contains("docker") && err.contains("`os`") && err.contains("`vm`"),
        "{err}"
    );
}

/// The VM's file share: none chosen by default (virtiofs where virtiofsd is
/// installed, else 9p: the VM backend's choice); the user config's
/// `vm_share`, replaced by `--vm-share`; a name that is no share is refused,
/// naming both.
#[test]
fn vm_share_from_the_user_config_and_the_flag() {
    let e = Env::new();
    assert_eq!(e.resolve().vm_share, None);
    e.user(r#"{"vm_share": "9p"}"#);
    assert_eq!(
        e.resolve().vm_share,
        Some(Sourced::new(VmShare::NineP, e.user_origin()))
    );
    let p = e
        .resolve_with(Flags {
            vm_share: Some(VmShare::Virtiofs),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.vm_share.unwrap().value, VmShare::Virtiofs);
    e.user(r#"{"vm_share": "nfs"}"#);
    let err = e.resolve_with(Flags::default()).unwrap_err().to_string();
    assert!(
        err.contains("nfs") && err.contains("`9p`") && err.contains("`virtiofs`"),
        "{err}"
    );
}

#[test]
fn presets_expand_with_their_name() {
    let e = Env::new();
    let p = e
        .resolve_with(Flags {
            allow_preset: vec!["github".into(), "github-copilot".into()],
            ..Flags::default()
        })
        .unwrap();
    let o = flag("--allow-preset");
    let github = cordon_policy::preset("github").unwrap();
    let a = allows(&p);
    for (i, h) in github.iter().enumerate() {
        assert_eq!(a[i], ((*h).into(), Some("github".into()), o.clone()));
    }
    // Hosts in both presets appear once, with the first preset's name.
    let copilot_only: Vec<&str> = cordon_policy::preset("github-copilot")
        .unwrap()
        .iter()
        .copied()
        .filter(|h| !github.contains(h))
        .collect();
    assert_eq!(a.len(), github.len() + copilot_only.len());
    assert!(a.contains(&(
        "api.githubcopilot.com".into(),
        Some("github-copilot".into()),
        o.clone()
    )));
    assert_eq!(p.net, Sourced::new(NetMode::Allowlist, o));
    // Every documented preset resolves.
    for (name, hosts) in cordon_policy::PRESETS {
        let p = e
            .resolve_with(Flags {
                allow_preset: vec![(*name).into()],
                ..Flags::default()
            })
            .unwrap();
        assert_eq!(p.network.allow.len(), hosts.len(), "{name}");
    }
    // An unknown preset names the known ones.
    let err = e
        .resolve_with(Flags {
            allow_preset: vec!["antropic".into()],
            ..Flags::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("flag --allow-preset: unknown preset \"antropic\""),
        "{msg}"
    );
    assert!(
        msg.contains(
            "known presets: anthropic, openai, gemini, github-copilot, openrouter, github, npm, pypi, crates"
        ),
        "{msg}"
    );
}

#[test]
fn bad_network_flag_values_are_errors_naming_the_flag() {
    let e = Env::new();
    type Case = (&'static str, &'static str, fn(&mut Flags));
    let cases: [Case; 17] = [
        ("--allow-domain", "invalid domain pattern", |f| {
            f.allow_domain = vec!["bad domain".into()]
        }),
        ("--allow-domain", "an IP address is not a domain", |f| {
            f.allow_domain = vec!["10.0.0.1".into()]
        }),
        ("--allow-domain", "invalid port", |f| {
            f.allow_domain = vec!["a.com:99999".into()]
        }),
        ("--deny-domain", "invalid domain pattern", |f| {
            f.deny_domain = vec!["*.".into()]
        }),
        ("--allow-preset", "unknown preset", |f| {
            f.allow_preset = vec!["".into()]
        }),
        ("--allow-local", "no port", |f| {
            f.allow_local = vec!["127.0.0.1".into()]
        }),
        ("--allow-local", "not an IP address or localhost", |f| {
            f.allow_local = vec!["example.com:80".into()]
        }),
        ("--allow-local", "in brackets", |f| {
            f.allow_local = vec!["::1:80".into()]
        }),
        ("--secret", "no hosts", |f| f.secret = vec!["TOKEN".into()]),
        ("--secret", "not an environment variable name", |f| {
            f.secret = vec!["MY-TOKEN=a.com".into()]
        }),
        ("--secret", "has a port", |f| {
            f.secret = vec!["T=a.com:443".into()]
        }),
        ("--resolve", "not an IP address", |f| {
            f.resolve = vec!["db:db2".into()]
        }),
        ("--resolve", "not a host name", |f| {
            f.resolve = vec!["a b:1.2.3.4".into()]
        }),
        ("--resolve", "leave out the port", |f| {
            f.resolve = vec!["db:443:1.2.3.4".into()]
        }),
        ("--upstream-ca", "does not exist (hint: ", |f| {
            f.upstream_ca = vec!["missing.pem".into()]
        }),
        ("--upstream-ca", "is not a file", |f| {
            f.upstream_ca = vec![".".into()]
        }),
        ("--upstream-ca", "unknown variable", |f| {
            f.upstream_ca = vec!["${NOPE}/ca.pem".into()]
        }),
    ];
    for (name, want, set) in cases {
        let mut flags = Flags::default();
        set(&mut flags);
        let err = e.resolve_with(flags).unwrap_err();
        assert!(matches!(err, PolicyError::Value { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("flag {name}: ")), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
    // A config's missing CA names the file and the field.
    e.user(r#"{"upstream_ca": ["nope.pem"]}"#);
    let msg = e.resolve_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "user config {}: \"upstream_ca\": upstream CA {} does not exist",
            e.user_config_path().display(),
            e.ws.join("nope.pem").display()
        )),
        "{msg}"
    );
    // A config's bad domain is caught when the file is parsed: file, line, column.
    e.user("{\n  \"allow_domain\": [\"ok.com\", \"not ok\"]\n}");
    let err = e.resolve_err();
    assert!(
        matches!(err, PolicyError::Invalid { line: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("\"allow_domain\": invalid domain pattern \"not ok\"")
    );
}

#[test]
fn two_local_services_on_one_port_are_an_error() {
    let e = Env::new();
    let err = e
        .resolve_with(Flags {
            allow_local: vec!["127.0.0.1:8080".into(), "[::1]:8080".into()],
            ..Flags::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("flag --allow-local: local service [::1]:8080: port 8080 is already taken by 127.0.0.1:8080 (flag --allow-local)"), "{msg}");
    // Also across layers.
    e.user(r#"{"allow_local": ["10.0.0.2:5432"]}"#);
    let msg = e
        .resolve_with(Flags {
            allow_local: vec!["localhost:5432".into()],
            ..Flags::default()
        })
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("already taken by 10.0.0.2:5432 (user config"),
        "{msg}"
    );
}

#[test]
fn a_secret_cannot_also_be_passed_with_env() {
    let e = Env::new();
    let err = e
        .resolve_with(Flags {
            env: vec!["TOKEN".into()],
            secret: vec!["TOKEN=api.example.com".into()],
            ..Flags::default()
        })
        .unwrap_err();
    assert!(matches!(err, PolicyError::Value { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "flag --secret: secret TOKEN is also passed in as an environment variable (flag --env)"
        ),
        "{msg}"
    );
    assert!(msg.contains("hint: drop TOKEN from --env"), "{msg}");
    // From the user's config too, and with a default variable's name.
    e.user(r#"{"env": ["TOKEN=x"]}"#);
    let msg = e
        .resolve_with(Flags {
            secret: vec!["TOKEN=api.example.com".into()],
            ..Flags::default()
        })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(user config "), "{msg}");
    e.user("{}");
    let msg = e
        .resolve_with(Flags {
            secret: vec!["HOME=api.example.com".into()],
            ..Flags::default()
        })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("passes that variable in by default"), "{msg}");
    // A project's env does not count (it is ignored).
    e.project(r#"{"env": ["TOKEN"]}"#);
    let p = e
        .resolve_with(Flags {
            secret: vec!["TOKEN=api.example.com".into()],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.network.secrets[0].name, "TOKEN");
}

#[test]
fn net_mode_allowlist_is_automatic_and_explicit_net_wins() {
    let e = Env::new();
    let allow = || Flags {
        allow_domain: vec!["example.com".into()],
        ..Flags::default()
    };
    // Automatic, from the first allow rule; a local service alone is enough.
    let p = e.resolve_with(allow()).unwrap();
    assert_eq!(
        p.net,
        Sourced::new(NetMode::Allowlist, flag("--allow-domain"))
    );
    let p = e
        .resolve_with(Flags {
            allow_local: vec!["localhost:11434".into()],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(
        p.net,
        Sourced::new(NetMode::Allowlist, flag("--allow-local"))
    );
    // Denies, secrets and resolve entries alone allow nothing.
    let p = e
        .resolve_with(Flags {
            deny_domain: vec!["example.com".into()],
            secret: vec!["T=example.com".into()],
            resolve: vec!["db:10.0.0.1".into()],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.net, Sourced::new(NetMode::None, Origin::Default));
    // An explicit --net wins, either way; the rules stay in the policy.
    for mode in [NetMode::None, NetMode::Host] {
        let p = e
            .resolve_with(Flags {
                net: Some(mode),
                ..allow()
            })
            .unwrap();
        assert_eq!(p.net, Sourced::new(mode, flag("--net")));
        assert_eq!(p.network.allow.len(), 1);
    }
    // --net allowlist with nothing allowed is valid: everything is refused.
    let p = e
        .resolve_with(Flags {
            net: Some(NetMode::Allowlist),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.net, Sourced::new(NetMode::Allowlist, flag("--net")));
    assert!(!p.network.allows_anything());
    // So does an explicit net in the user's config, even with flags allowing.
    e.user(r#"{"net": "none"}"#);
    let p = e.resolve_with(allow()).unwrap();
    assert_eq!(p.net, Sourced::new(NetMode::None, e.user_origin()));
    e.user(r#"{"net": "allowlist"}"#);
    assert_eq!(
        e.resolve().net,
        Sourced::new(NetMode::Allowlist, e.user_origin())
    );
}

#[test]
fn project_network_fields() {
    let e = Env::new();
    e.user(r#"{"allow_domain": ["example.com", "*.example.org"]}"#);
    let base = e.resolve();
    fs::write(e.ws.join("ca.pem"), "").unwrap();
    e.project(
        r#"{
          "allow_domain": ["evil.com"],
          "allow_preset": ["npm"],
          "allow_local":  ["127.0.0.1:22"],
          "secret":       ["TOKEN=evil.com"],
          "resolve":      ["example.com:10.0.0.1"],
          "upstream_ca":  ["ca.pem"],
          "net":          "host"
        }"#,
    );
    let p = e.resolve();
    let file = e.project_path().display().to_string();
    let fields = [
        "allow_domain",
        "allow_preset",
        "allow_local",
        "secret",
        "resolve",
        "upstream_ca",
        "net",
    ];
    for field in fields {
        let w: Vec<&String> = p
            .warnings
            .iter()
            .filter(|w| w.contains(&format!("ignored \"{field}\"")))
            .collect();
        assert_eq!(w.len(), 1, "{field}: {:?}", p.warnings);
        assert!(
            w[0].starts_with(&format!("project config {file}: ")),
            "{}",
            w[0]
        );
        assert!(w[0].contains("may only tighten"), "{}", w[0]);
    }
    assert_eq!(p.warnings.len(), fields.len(), "{:?}", p.warnings);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("or pass --allow-domain)"))
    );
    let mut p2 = p.clone();
    p2.warnings.clear();
    assert_eq!(p2, base);

    // deny_domain and net "none" take effect.
    e.project(r#"{"deny_domain": ["bad.example.org"], "net": "none"}"#);
    let p = e.resolve();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let po = e.project_origin();
    assert_eq!(p.net, Sourced::new(NetMode::None, po.clone()));
    assert_eq!(p.network.deny.len(), 1);
    assert_eq!(p.network.deny[0].origin, po);
    assert!(matches!(
        p.network.verdict("bad.example.org", 443),
        Verdict::Denied(_)
    ));
    assert!(matches!(
        p.network.verdict("good.example.org", 443),
        Verdict::Allowed(_)
    ));

    // "allowlist" tightens host, and is ignored when the mode is none.
    e.project(r#"{"net": "allowlist"}"#);
    let p = e
        .resolve_with(Flags {
            net: Some(NetMode::Host),
            ..Flags::default()
        })
        .unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.net, Sourced::new(NetMode::Allowlist, po.clone()));
    // Already allowlist (automatically): nothing to do, nothing to say.
    let p = e.resolve();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.net, Sourced::new(NetMode::Allowlist, e.user_origin()));
    e.user("{}");
    let p = e.resolve();
    assert_eq!(p.net, Sourced::new(NetMode::None, Origin::Default));
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].contains("ignored \"net\": \"allowlist\"")
            && p.warnings[0].contains("or pass --net allowlist)"),
        "{}",
        p.warnings[0]
    );
}

/// The resolved policy travels as JSON into the sandbox (to `cordon serve`'s
/// agent): what arrives must be what was sent.
#[test]
fn policy_round_trips_through_json() {
    let e = Env::new();
    let flags = Flags {
        allow_domain: vec!["api.example.com".into(), "*.example.org:8443".into()],
        secret: vec!["TOKEN=api.example.com".into()],
        resolve: vec!["api.example.com:10.0.0.1".into()],
        timeout: Some(2.5),
        memory: Some("1G".into()),
        ..Flags::default()
    };
    let policy = e.resolve_with(flags).unwrap();
    let json = serde_json::to_string(&policy).unwrap();
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, policy);
}

fn cache_env<'a>(p: &'a Policy, name: &str) -> Option<&'a str> {
    (p.env.iter())
        .find(|v| v.name == name && matches!(v.origin, Origin::Cache { .. }))
        .and_then(|v| v.value.as_deref())
}

#[test]
fn managed_caches_by_default() {
    let e = Env::new();
    let p = e.resolve();
    let dir = p.caches.dir.clone().expect("a cache dir");
    let key = cordon_policy::caches::workspace_key(&e.ws).unwrap();
    assert_eq!(dir, e.home.join(".cache/cordon/caches").join(&key));
    assert_eq!(p.access_for(&dir.join("npm/x")), Access::Write);
    // Another workspace's cache, and the rest of cordon's cache, stay hidden.
    let other = e.home.join(".cache/cordon/caches/other");
    assert_eq!(p.access_for(&other), Access::Deny);
    assert_eq!(
        p.access_for(&e.home.join(".cache/cordon/ca.pem")),
        Access::Deny
    );
    // The host's caches stay read-only.
    for c in [".npm", ".cache/pip", ".cargo/registry"] {
        assert_eq!(p.access_for(&e.home.join(c)), Access::Read, "{c}");
    }
    assert_eq!(
        cache_env(&p, "npm_config_cache"),
        Some(dir.join("npm").to_str().unwrap())
    );
    assert_eq!(
        cache_env(&p, "PIP_CACHE_DIR"),
        Some(dir.join("pip").to_str().unwrap())
    );
    // No ~/.cargo: CARGO_HOME is a managed one, and nothing is mounted.
    assert_eq!(
        cache_env(&p, "CARGO_HOME"),
        Some(dir.join("cargo").to_str().unwrap())
    );
    assert!(p.mounts.is_empty());
    assert!(p.caches.unmanaged.is_empty(), "{:?}", p.caches.unmanaged);

    // With ~/.cargo, its config stays: the cache is bound over registry and git.
    fs::create_dir_all(e.home.join(".cargo/registry")).unwrap();
    let p = e.resolve();
    assert!(cache_env(&p, "CARGO_HOME").is_none());
    let targets: Vec<_> = p.mounts.iter().map(|m| m.target.clone()).collect();
    assert_eq!(
        targets,
        [e.home.join(".cargo/git"), e.home.join(".cargo/registry")]
    );
    assert!(
        p.mounts
            .iter()
            .all(|m| m.writable && m.source.starts_with(&dir))
    );

    // Under another $XDG_CACHE_HOME the caches root is hidden by a rule of its own.
    // (Not set here: the policy reads it from the process environment.)
}

#[test]
fn managed_caches_leave_your_choices_alone() {
    let e = Env::new();
    fs::create_dir_all(e.home.join(".cargo")).unwrap();
    std::os::unix::fs::symlink(e.root.join("elsewhere"), e.home.join(".cargo/registry")).unwrap();
    let p = e
        .resolve_with(Flags {
            allow_write: vec![e.home.join(".npm")],
            env: vec!["PIP_CACHE_DIR=/x".into()],
            ..Flags::default()
        })
        .unwrap();
    let why = |tool: &str| {
        (p.caches.unmanaged.iter())
            .find(|u| u.tool == tool)
            .unwrap_or_else(|| panic!("{tool}: {:?}", p.caches))
            .clone()
    };
    assert!(why("npm").writable && why("npm").why.contains("writable"));
    assert!(why("pip").why.contains("PIP_CACHE_DIR is set inside"));
    assert!(
        why("cargo").why.contains("not a directory"),
        "{:?}",
        why("cargo")
    );
    assert!(cache_env(&p, "npm_config_cache").is_none());
    assert_eq!(
        p.env
            .iter()
            .find(|v| v.name == "PIP_CACHE_DIR")
            .unwrap()
            .value
            .as_deref(),
        Some("/x")
    );
    // git is still managed.
    assert_eq!(p.mounts.len(), 1);
    assert_eq!(p.mounts[0].target, e.home.join(".cargo/git"));

    // Off in your config: nothing managed, every tool says why.
    let e = Env::new();
    e.user(r#"{"caches": false}"#);
    let p = e.resolve();
    assert!(p.caches.dir.is_none() && p.caches.managed.is_empty());
    assert!(
        p.caches
            .unmanaged
            .iter()
            .all(|u| u.why.contains("\"caches\": false"))
    );
    assert!(
        !p.env
            .iter()
            .any(|v| matches!(v.origin, Origin::Cache { .. }))
    );
    // A project may turn them off, not on.
    e.project(r#"{"caches": true}"#);
    let p = e.resolve();
    assert!(p.caches.dir.is_none());
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("ignored \"caches\": true")),
        "{:?}",
        p.warnings
    );
    let e = Env::new();
    e.project(r#"{"caches": false}"#);
    assert!(e.resolve().caches.dir.is_none());

    // A workspace that is $HOME: the host's caches are writable anyway.
    let e = Env::new();
    let p = resolve(&Inputs {
        workspace: e.home.clone(),
        ..e.inputs()
    })
    .unwrap();
    assert!(p.caches.dir.is_none(), "{:?}", p.caches);
}

#[test]
fn npmrc_is_shown_without_credentials_only_while_the_default_hides_it() {
    let e = Env::new();
    assert!(e.resolve().sanitized.is_empty(), "no ~/.npmrc, no copy");
    fs::write(e.home.join(".npmrc"), "fund=false\n").unwrap();
    let p = e.resolve();
    assert_eq!(p.sanitized.len(), 1);
    assert_eq!(p.sanitized[0].path, e.home.join(".npmrc"));
    assert_eq!(p.access_for(&e.home.join(".npmrc")), Access::Deny);
    // Shown whole with allow_read, hidden whole with your own deny, or a hidden home.
    e.user(r#"{"allow_read": ["~/.npmrc"]}"#);
    assert!(e.resolve().sanitized.is_empty());
    e.user(r#"{"deny_read": ["~/.npmrc"]}"#);
    assert!(e.resolve().sanitized.is_empty());
    e.user(r#"{"hide_home": true}"#);
    assert!(e.resolve().sanitized.is_empty());
}
