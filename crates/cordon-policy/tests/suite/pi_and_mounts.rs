//! The `pi` section of the config files and mounts, resolved against real files.

use cordon_policy::{Access, BackendChoice, Flags, Origin, PiMode, Policy, PolicyError, Sourced};
use cordon_test_support::PolicyEnv;
use std::fs;
use std::path::PathBuf;

/// A [`PolicyEnv`] whose home has `datasets/` to mount and `.ssh/` to hide.
fn env() -> PolicyEnv {
    let e = PolicyEnv::new();
    for d in ["datasets", ".ssh"] {
        fs::create_dir_all(e.home.join(d)).unwrap();
    }
    e
}

/// The policy of `cordon pi` (with nothing pi itself adds).
fn pi(e: &PolicyEnv) -> Result<Policy, PolicyError> {
    e.resolve_with(Flags {
        pi: Some(PiMode::default()),
        ..Flags::default()
    })
}

const PI_SECTION: &str = r#"{
  "memory": "8G",
  "pi": {
    "backend": "vm",
    "memory": "4G",
    "cpus": 2,
    "mount": [{"source": "~/datasets", "target": "/data", "mode": "ro"},
              "${HOME}/datasets:/data-rw:rw"],
    "allow_domain": ["example.com"],
    "secret": ["MY_TOKEN=api.example.com"]
  }
}"#;

#[test]
fn the_pi_section_applies_to_cordon_pi_only() {
    let e = env();
    e.user(PI_SECTION);
    let plain = e.resolve_with(Flags::default()).unwrap();
    assert_eq!(plain.limits.memory.as_ref().unwrap().value, 8 << 30);
    assert!(plain.mounts.is_empty() && plain.network.allow.is_empty());
    assert!(plain.network.secrets.is_empty());
    assert_eq!(plain.backend.value, BackendChoice::Os);

    let pi = pi(&e).unwrap();
    let section = Origin::UserPiConfig {
        file: e.user_config_path(),
    };
    // pi itself in the VM, the other runs on the OS backend.
    assert_eq!(pi.backend, Sourced::new(BackendChoice::Vm, section.clone()));
    let memory = pi.limits.memory.as_ref().unwrap();
    assert_eq!((memory.value, &memory.origin), (4 << 30, &section));
    assert_eq!(pi.limits.cpus.as_ref().unwrap().value, 2.0);
    assert_eq!(pi.network.allow[0].origin, section);
    assert_eq!(pi.network.secrets[0].name, "MY_TOKEN");
    let datasets = e.home.join("datasets");
    let mounts: Vec<_> = pi
        .mounts
        .iter()
        .map(|m| (m.source.clone(), m.target.clone(), m.writable))
        .collect();
    assert_eq!(
        mounts,
        vec![
            (datasets.clone(), PathBuf::from("/data"), false),
            (datasets.clone(), PathBuf::from("/data-rw"), true),
        ]
    );
    // An rw mount's source is a writable root, with its protected paths.
    assert_eq!(pi.access_for(&datasets), Access::Write);
    assert_eq!(pi.access_for(&datasets.join(".git/hooks")), Access::Read);
    // A flag beats the section.
    let flagged = e
        .resolve_with(Flags {
            pi: Some(PiMode::default()),
            memory: Some("1G".into()),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(flagged.limits.memory.unwrap().value, 1 << 30);
}

#[test]
fn a_project_pi_section_may_only_tighten() {
    let e = env();
    e.user(PI_SECTION);
    e.project(
        r#"{"pi": {"memory": "2G", "cpus": 4, "allow_domain": ["evil.com"],
                   "mount": ["/:/host:rw"], "secret": ["MY_TOKEN=evil.com"]}}"#,
    );
    let pi = pi(&e).unwrap();
    assert_eq!(pi.limits.memory.as_ref().unwrap().value, 2 << 30);
    assert_eq!(pi.limits.cpus.as_ref().unwrap().value, 2.0);
    assert!(
        pi.network
            .allow
            .iter()
            .all(|r| r.pattern.to_string() != "evil.com")
    );
    assert_eq!(pi.mounts.len(), 2);
    assert_eq!(
        pi.network.secrets[0].hosts[0].to_string(),
        "api.example.com"
    );
    let warnings = pi.warnings.join("\n");
    for field in ["pi.cpus", "pi.allow_domain", "pi.mount", "pi.secret"] {
        assert!(
            warnings.contains(&format!("ignored \"{field}\"")),
            "{warnings}"
        );
    }
    // Outside pi mode, the project's pi section does nothing.
    let plain = e.resolve_with(Flags::default()).unwrap();
    assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
    // A top-level mount in a project config is ignored too.
    e.project(r#"{"mount": ["/:/host"]}"#);
    let plain = e.resolve_with(Flags::default()).unwrap();
    assert!(plain.mounts.is_empty());
    assert!(
        plain.warnings[0].contains("ignored \"mount\""),
        "{:?}",
        plain.warnings
    );
}

#[test]
fn unknown_fields_in_the_pi_section_name_field_and_file() {
    let e = env();
    e.user("{\"pi\": {\n  \"memroy\": \"4G\"}}");
    let msg = pi(&e).unwrap_err().to_string();
    assert!(
        msg.contains("unknown field \"memroy\", did you mean \"memory\"?"),
        "{msg}"
    );
    assert!(
        msg.contains(&e.user_config_path().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("line 2"), "{msg}");
    for (json, want) in [
        (r#"{"pi": {"pi": {}}}"#, "cannot hold another \"pi\""),
        (
            r#"{"pi": {"mount": [{"source": "/a"}]}}"#,
            "missing field `target`",
        ),
        (
            r#"{"pi": {"mount": [{"source": "/a", "target": "/b", "mode": "rx"}]}}"#,
            "invalid mode",
        ),
        (
            r#"{"pi": {"mount": [{"source": "/a", "target": "/b", "x": 1}]}}"#,
            "unknown field",
        ),
        (r#"{"mount": ["/a"]}"#, "expected SOURCE:TARGET"),
        (r#"{"mount": ["/a:relative"]}"#, "must be an absolute path"),
    ] {
        e.user(json);
        let msg = pi(&e).unwrap_err().to_string();
        assert!(msg.contains(want), "{json}: {msg}");
        assert!(
            msg.contains(&e.user_config_path().display().to_string()),
            "{msg}"
        );
    }
}

fn mount_err(e: &PolicyEnv, arg: &str) -> String {
    e.resolve_with(Flags {
        mount: vec![arg.to_string()],
        ..Flags::default()
    })
    .unwrap_err()
    .to_string()
}

#[test]
fn mounts_never_loosen_the_policy() {
    let e = env();
    let home = e.home.display().to_string();
    let ws = e.ws.display().to_string();
    // A hidden source is refused, naming the rule.
    let msg = mount_err(&e, &format!("{home}/.ssh:/data"));
    assert!(msg.starts_with("flag --mount: mount "), "{msg}");
    assert!(
        msg.contains(&format!(
            "the source lies in the hidden path {home}/.ssh (built-in default)"
        )),
        "{msg}"
    );
    fs::write(e.home.join(".ssh/id_rsa"), "KEY").unwrap();
    let msg = mount_err(&e, &format!("{home}/.ssh/id_rsa:/data/key"));
    assert!(msg.contains("hidden path"), "{msg}");
    // A target in a hidden or protected path, or over one, or over the workspace.
    for (arg, want) in [
        (
            format!("{home}/datasets:{home}/.ssh:rw"),
            "the target lies in the hidden path",
        ),
        (
            format!("{home}/datasets:{ws}/.git/hooks:rw"),
            "the target lies in the protected path",
        ),
        (format!("{home}/datasets:{home}"), "the target would cover"),
        (format!("{home}/datasets:/"), "cannot be /"),
        (format!("{home}/datasets:/proc/x"), "cannot be /"),
        (format!("{home}/datasets:/tmp"), "private /tmp"),
        (format!("{ws}/.git:/data:rw"), "the source does not exist"),
        ("/dev/null:/data/null".to_string(), "/proc or /dev"),
    ] {
        let msg = mount_err(&e, &arg);
        assert!(msg.contains(want), "{arg}: {msg}");
    }
    // An rw source inside a protected path is refused (it would make it writable).
    fs::create_dir_all(e.ws.join(".git/hooks")).unwrap();
    let msg = mount_err(&e, &format!("{ws}/.git/hooks:/data:rw"));
    assert!(
        msg.contains("may not be inside the protected path"),
        "{msg}"
    );
    // Read-only, it is only shown (read-only) elsewhere.
    let p = e
        .resolve_with(Flags {
            mount: vec![format!("{ws}/.git/hooks:/data")],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.mounts[0].target, PathBuf::from("/data"));
    // A later mount at the same target replaces the earlier one.
    let p = e
        .resolve_with(Flags {
            mount: vec![
                format!("{home}/datasets:/data"),
                format!("{home}/datasets:/data:rw"),
            ],
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(p.mounts.len(), 1);
    assert!(p.mounts[0].writable);
}

#[test]
fn cordon_pis_own_writable_dirs_protect_nothing_but_the_workspace_still_does() {
    let env = env();
    let sessions = env.home.join(".pi/agent/sessions");
    fs::create_dir_all(&sessions).unwrap();
    let policy = env
        .resolve_with(Flags {
            pi: Some(PiMode {
                allow_write: vec![(sessions.clone(), "pi's sessions".into())],
                ..PiMode::default()
            }),
            ..Flags::default()
        })
        .unwrap();
    assert_eq!(policy.access_for(&sessions), Access::Write);
    let protected_under = |root: &PathBuf| {
        policy
            .rules
            .iter()
            .filter(|r| r.path.starts_with(root) && r.path != *root)
            .count()
    };
    assert_eq!(protected_under(&sessions), 0, "{:#?}", policy.rules);
    assert_eq!(policy.access_for(&env.ws.join(".git/hooks")), Access::Read);
    assert!(protected_under(&env.ws) > 0);
}
