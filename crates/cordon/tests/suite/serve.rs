//! `cordon serve` through the real sandbox: the protocol of docs/serve.md spoken to
//! a live session, and the attacks a tool call can make, each asserted on the
//! host. Every test runs as root and as the ordinary user `cordon-test`.

use crate::common;

use common::serve::Session;
use common::upstream::Upstream;
use common::{Fixture, for_each_user, in_vm, random_hex};
use cordon_tools::protocol::Base64;
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// The text of a `read` result's base64 `data` ("" for none).
fn base64_text(result: &Value) -> String {
    serde_json::from_value::<Base64>(result["data"].clone())
        .map(|data| String::from_utf8_lossy(&data.0).into_owned())
        .unwrap_or_default()
}

#[test]
fn exec_read_write_and_the_session_persists() {
    for_each_user("serve_exec_read_write_and_the_session_persists", |fx| {
        let mut s = Session::start(fx, &[]);
        let (result, out) = s.exec("echo hello; echo err >&2; exit 3");
        assert_eq!(result["result"]["exitCode"], 3, "{result}");
        assert_eq!(out, "hello\n");

        let path = fx.work.join("notes/a.txt");
        s.ok("write", json!({"path": path, "content": "first\n"}));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let read = s.ok("read", json!({"path": "notes/a.txt"}));
        assert_eq!(base64_text(&read), "first\n");

        // /tmp and background processes live as long as the session.
        // A duration no other process on the machine is likely to sleep for.
        let sleeper = format!("sleep 3{}", common::random_u32(10_000, 80_000));
        s.exec(&format!(
            "echo kept > /tmp/state; {sleeper} & echo $! > /tmp/bg"
        ));
        let (_, out) = s.exec("cat /tmp/state; kill -0 $(cat /tmp/bg) && echo alive");
        assert_eq!(out, "kept\nalive\n");
        let status = s.close();
        assert!(status.success(), "cordon serve ended with {status}");
        // Nothing of the session is left on the host.
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&ps.stdout)
                .lines()
                .any(|l| l == sleeper),
            "a background process outlived the session"
        );
    });
}

/// `status` reports the layers the backend lists for the session (what `cordon
/// policy --json` prints for the same options), and each claim holds for a
/// command the session runs: a namespace listed is not the host's and one not
/// listed is the host's (`--net host` shares the host's network, so `net` is not
/// listed); seccomp, no_new_privs and the empty capability sets as
/// /proc/self/status shows them; Landlock at the kernel's ABI. In the VM
/// backend the namespaces are QEMU's sandbox's (the guest's command has the
/// guest kernel's, whose first namespaces have the host's inode numbers), and
/// `--net host` is refused (`a_host_network_session_answers_allow_domain_with_why`).
#[test]
fn status_reports_the_layers_in_force() {
    for_each_user("serve_status_reports_the_layers_in_force", |fx| {
        for opts in [&[][..], &["--net", "none"], &["--net", "host"]] {
            if in_vm() && opts.contains(&"host") {
                continue;
            }
            let mut s = Session::start(fx, opts);
            let layers = s.ok("status", json!({}))["layers"].clone();
            assert_eq!(layers, fx.policy_json(opts)["layers"], "{opts:?}");
            let claimed: Vec<&str> = layers["namespaces"]
                .as_array()
                .unwrap_or_else(|| panic!("no namespaces: {layers}"))
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            for (name, file) in [
                ("user", "user"),
                ("mount", "mnt"),
                ("pid", "pid"),
                ("net", "net"),
                ("ipc", "ipc"),
                ("uts", "uts"),
                ("cgroup", "cgroup"),
            ] {
                let host = std::fs::read_link(format!("/proc/self/ns/{file}")).unwrap();
                let inside = if in_vm() {
                    let (result, _) = s.exec("true");
                    assert_eq!(result["result"]["exitCode"], 0, "{result}");
                    let qemu = common::vm::qemu_below(s.child.id());
                    let qemu = qemu.first().expect("no QEMU below cordon serve");
                    let ns = std::fs::read_link(format!("/proc/{qemu}/ns/{file}")).unwrap();
                    ns.to_string_lossy().into_owned()
                } else {
                    let (result, inside) = s.exec(&format!("readlink /proc/self/ns/{file}"));
                    assert_eq!(result["result"]["exitCode"], 0, "{result}");
                    inside
                };
                let own = inside.trim() != host.to_string_lossy();
                assert_eq!(
                    own,
                    claimed.contains(&name),
                    "{opts:?}: the {name} namespace is {inside:?} inside, {host:?} outside; status says {layers}"
                );
            }
            let (_, status) = s.exec("cat /proc/self/status");
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no {name} in /proc/self/status: {status}"))
                    .to_string()
            };
            assert_eq!(layers["seccomp"], field("Seccomp:") == "2", "{status}");
            assert_eq!(
                layers["no_new_privs"],
                field("NoNewPrivs:") == "1",
                "{status}"
            );
            let no_capabilities = ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"]
                .iter()
                .all(|set| field(set) == "0000000000000000");
            assert_eq!(
                layers["capabilities"] == "none",
                no_capabilities,
                "{status}"
            );
            // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
            let abi = unsafe {
                libc::syscall(
                    libc::SYS_landlock_create_ruleset,
                    std::ptr::null::<libc::c_void>(),
                    0usize,
                    1u32,
                )
            };
            assert_eq!(layers["landlock"], abi.max(0), "{layers}");
        }
    });
}

/// `status` reports the layers docs/serve.md shows (its example, with the
/// kernel's Landlock ABI for the example's), and the same backend.
#[test]
fn status_layers_are_those_docs_serve_md_shows() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/serve.md"),
    )
    .unwrap();
    let example = doc
        .split("```json\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("a closed code block")])
        .find(|b| b.contains("\"layers\""))
        .expect("docs/serve.md shows a status with its layers");
    let example: Value = serde_json::from_str(example).unwrap();
    for_each_user("serve_status_layers_are_documented", |fx| {
        let mut s = Session::start(fx, &[]);
        let status = s.ok("status", json!({}));
        let mut documented = example["layers"].clone();
        let real = &status["layers"];
        assert!(
            real["landlock"].is_u64() && documented["landlock"].is_u64(),
            "landlock is the ABI version: {real} / {documented}"
        );
        documented["landlock"] = real["landlock"].clone();
        if in_vm() {
            // The VM's layer before the OS sandbox's (QEMU's), which are the docs'.
            assert!(
                ["tcg", "kvm"].contains(&real["vm"].as_str().unwrap_or("")),
                "{real}"
            );
            documented["vm"] = real["vm"].clone();
            assert_eq!(status["backend"], "vm");
        } else {
            assert_eq!(status["backend"], example["backend"]);
        }
        assert_eq!(real, &documented, "the layers serve sends, and the docs'");
        drop(s);
    });
}

#[test]
fn secrets_are_refused_with_the_rule_named_in_every_path_form() {
    for_each_user("serve_secrets_are_refused", |fx| {
        let secret = fx.home.join(".ssh/id_rsa");
        fx.symlink(&secret, &fx.work.join("innocent"));
        fx.symlink(&fx.home.join(".ssh"), &fx.work.join("dotssh"));
        let mut s = Session::start(fx, &[]);
        let mut seen = String::new();
        for path in [
            secret.display().to_string(),
            "innocent".to_string(),
            "dotssh/id_rsa".to_string(),
            format!("{}/../home/.ssh/id_rsa", fx.work.display()),
        ] {
            let reply = s.call("read", json!({"path": path}));
            seen.push_str(&reply.to_string());
            assert_eq!(reply["error"]["code"], 1, "read {path}: {reply}");
            let rule = reply["error"]["data"]["rule"].as_str().unwrap_or("");
            assert!(rule.contains(".ssh"), "the rule is not named: {reply}");
        }
        let grep = s.call("grep", json!({"pattern": "CRDNMARK", "path": fx.home}));
        seen.push_str(&grep.to_string());
        let (_, out) = s.exec(&format!("cat {} innocent dotssh/id_rsa", secret.display()));
        seen.push_str(&out);
        assert!(!seen.contains(&fx.marker), "a secret leaked: {seen}");
        drop(s);
    });
}

#[test]
fn protected_and_outside_writes_are_refused_and_leave_no_trace() {
    for_each_user("serve_protected_and_outside_writes", |fx| {
        let mut s = Session::start(fx, &[]);
        for path in [
            fx.work.join(".git/hooks/post-checkout"),
            fx.work.join(".pi/extensions/evil.ts"),
            fx.outside.join("planted"),
            fx.home.join(".bashrc"),
        ] {
            let reply = s.call(
                "write",
                json!({"path": path, "content": "#!/bin/sh\necho pwned\n"}),
            );
            assert_eq!(
                reply["error"]["code"],
                1,
                "write {}: {reply}",
                path.display()
            );
            let planted = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!planted.contains("pwned"), "{} was written", path.display());
        }
        let mkdir = s.call("mkdir", json!({"path": fx.work.join(".git/hooks/sub")}));
        assert_eq!(mkdir["error"]["code"], 1, "mkdir in .git/hooks: {mkdir}");
        drop(s);
        assert!(!fx.work.join(".git/hooks/post-checkout").exists());
        assert!(!fx.work.join(".pi/extensions/evil.ts").exists());
        assert!(!fx.outside.join("planted").exists());
    });
}

#[test]
fn file_operations_through_mounts_obey_them_as_exec_does() {
    for_each_user("serve_mounts", |fx| {
        // A repository of the user's, with a file the policy hides, mounted
        // read-write; another directory mounted read-only at a target in /tmp
        // (a scratch dir, writable but for the mount).
        let rw_src = fx.root.join("datasets");
        fx.write(&rw_src.join("f"), "dataset-original\n");
        fx.write(&rw_src.join(".git/HEAD"), "ref: refs/heads/main\n");
        fx.mkdir(&rw_src.join(".git/hooks"));
        let private = rw_src.join("private");
        fx.write(&private, &fx.secret_content("datasets/private"));
        let ro_src = fx.root.join("reference");
        fx.write(&ro_src.join("f"), "reference-original\n");
        let rw = format!("/cordon-test-data-{}", random_hex(4));
        let ro = format!("/tmp/cordon-test-ref-{}", random_hex(4));
        let mut s = Session::start(
            fx,
            &[
                "--mount",
                &format!("{}:{rw}:rw", rw_src.display()),
                "--mount",
                &format!("{}:{ro}:ro", ro_src.display()),
                "--deny-read",
                &private.display().to_string(),
            ],
        );
        let refused = |s: &mut Session, method: &str, params: Value, rule: &str| {
            let reply = s.call(method, params.clone());
            assert_eq!(reply["error"]["code"], 1, "{method} {params}: {reply}");
            let named = reply["error"]["data"]["rule"].as_str().unwrap_or("");
            assert!(
                named.contains(rule),
                "{method} {params}: not {rule}: {reply}"
            );
            reply.to_string()
        };

        // Read-write: lands in the source, as the invoking user.
        s.ok(
            "write",
            json!({"path": format!("{rw}/new"), "content": "made-by-serve\n"}),
        );
        s.ok(
            "write",
            json!({"path": format!("{rw}/f"), "content": "changed\n"}),
        );
        s.ok("mkdir", json!({"path": format!("{rw}/dir/sub")}));
        let made = rw_src.join("new");
        assert_eq!(std::fs::read_to_string(&made).unwrap(), "made-by-serve\n");
        assert_eq!(
            std::fs::read_to_string(rw_src.join("f")).unwrap(),
            "changed\n"
        );
        for path in [&made, &rw_src.join("dir/sub")] {
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (fx.user.uid, fx.user.gid),
                "{}",
                path.display()
            );
        }

        // Read-only: refused naming the mount; the host is unchanged.
        let read = s.ok("read", json!({"path": format!("{ro}/f")}));
        assert_eq!(base64_text(&read), "reference-original\n");
        for path in [format!("{ro}/f"), format!("{ro}/new")] {
            refused(
                &mut s,
                "write",
                json!({"path": path, "content": "pwned\n"}),
                &ro,
            );
        }
        refused(&mut s, "mkdir", json!({"path": format!("{ro}/d")}), &ro);
        assert_eq!(
            std::fs::read_to_string(ro_src.join("f")).unwrap(),
            "reference-original\n"
        );
        let listed: Vec<_> = std::fs::read_dir(&ro_src).unwrap().flatten().collect();
        assert_eq!(listed.len(), 1, "the read-only source changed: {listed:?}");

        // Protected below the read-write source: refused through the target too.
        let hook = format!("{rw}/.git/hooks/pre-commit");
        refused(
            &mut s,
            "write",
            json!({"path": hook, "content": "#!/bin/sh\n"}),
            ".git/hooks",
        );
        refused(
            &mut s,
            "mkdir",
            json!({"path": format!("{rw}/.git/hooks/d")}),
            ".git/hooks",
        );
        refused(
            &mut s,
            "write",
            json!({"path": format!("{rw}/.git/config"), "content": "x"}),
            ".git/config",
        );
        assert!(!rw_src.join(".git/hooks/pre-commit").exists());
        assert!(!rw_src.join(".git/hooks/d").exists());
        // (A placeholder, empty, stands for the missing config while the session lives.)
        let config = std::fs::read_to_string(rw_src.join(".git/config")).unwrap_or_default();
        assert_eq!(config, "", "the protected .git/config was written");

        // Hidden below the source: refused through the target, and out of walks.
        let mut seen = refused(
            &mut s,
            "read",
            json!({"path": format!("{rw}/private")}),
            "private",
        );
        seen.push_str(&refused(
            &mut s,
            "stat",
            json!({"path": format!("{rw}/private")}),
            "private",
        ));
        let grep = s.ok(
            "grep",
            json!({"pattern": "CRDNMARK", "path": rw, "hidden": true}),
        );
        assert_eq!(grep["matches"], json!([]), "{grep}");
        let find = s.ok("find", json!({"pattern": "*", "path": rw}));
        seen.push_str(&find.to_string());
        assert!(!find["paths"].to_string().contains("private"), "{find}");
        let status = s.ok("status", json!({}));
        assert!(
            status["policy"]["writable"]
                .as_array()
                .unwrap()
                .contains(&json!(rw)),
            "{status}"
        );
        assert!(!seen.contains(&fx.marker), "a hidden file leaked: {seen}");
        drop(s);
    });
}

#[test]
fn a_symlink_swapped_during_reads_never_reaches_the_secret() {
    for_each_user("serve_symlink_race", |fx| {
        // A directory in the workspace is swapped again and again for a symlink to
        // ~/.ssh while reads of dir/id_rsa run: every read sees the decoy, an
        // error, or nothing, never the secret.
        let dir = fx.work.join("dir");
        fx.write(&dir.join("id_rsa"), "decoy\n");
        let mut s = Session::start(fx, &[]);
        // A read in a VM under TCG takes milliseconds: windows it can fit in.
        let pause = if in_vm() {
            Duration::from_millis(40)
        } else {
            Duration::from_micros(300)
        };
        let swapper = {
            let dir = dir.clone();
            let ssh = fx.home.join(".ssh");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            let handle = std::thread::spawn(move || {
                let real = dir.with_file_name("dir.real");
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::rename(&dir, &real);
                    let _ = std::os::unix::fs::symlink(&ssh, &dir);
                    std::thread::sleep(pause);
                    let _ = std::fs::remove_file(&dir);
                    let _ = std::fs::rename(&real, &dir);
                    std::thread::sleep(pause);
                }
            });
            (stop, handle)
        };
        let mut seen = String::new();
        for _ in 0..300 {
            let reply = s.call("read", json!({"path": dir.join("id_rsa")}));
            seen.push_str(&base64_text(&reply["result"]));
            seen.push_str(&reply["error"].to_string());
        }
        swapper.0.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.1.join().unwrap();
        assert!(seen.contains("decoy"), "the reads never succeeded");
        assert!(
            seen.contains("\"code\""),
            "no read ever met the symlink: the race did not happen"
        );
        assert!(!seen.contains(&fx.marker), "a read reached the secret");
        drop(s);
    });
}

#[test]
fn network_is_refused_and_the_host_listener_sees_nothing() {
    for_each_user("serve_network_refused", |fx| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut s = Session::start(fx, &[]);
        let (result, _) = s.exec(&format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
        ));
        assert_ne!(result["result"]["exitCode"], 0, "{result}");
        assert!(
            listener.accept().is_err(),
            "the host listener saw a connection"
        );
        drop(s);
    });
}

#[test]
fn cancel_and_timeout_kill_the_command_and_the_server_stays_up() {
    for_each_user("serve_cancel_and_timeout", |fx| {
        let mut s = Session::start(fx, &[]);
        let slow = s.send("exec", json!({"command": "sleep 60"}));
        // Other requests are served while it runs.
        let started = Instant::now();
        s.ok("exists", json!({"path": "README"}));
        assert!(started.elapsed() < Duration::from_secs(5));
        let cancel = s.ok("cancel", json!({"id": slow}));
        assert_eq!(cancel["cancelled"], true);
        let result = s.response(slow);
        assert_eq!(result["result"]["cancelled"], true, "{result}");
        let timed = s.ok("exec", json!({"command": "sleep 60", "timeout": 0.5}));
        assert_eq!(timed["timedOut"], true, "{timed}");
        // A command that crashes does not take the server down.
        let (crashed, _) = s.exec("kill -SEGV $$");
        assert_eq!(crashed["result"]["signal"], "SIGSEGV", "{crashed}");
        let (after, out) = s.exec("echo still-here");
        assert_eq!(after["result"]["exitCode"], 0);
        assert_eq!(out, "still-here\n");
        drop(s);
    });
}

#[test]
fn allow_domain_widens_the_session_and_commands_cannot_reach_the_broker() {
    for_each_user("serve_allow_domain", |fx| {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = upstream.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in upstream.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut stream, &mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nwidened\n",
                );
            }
        });
        // The session starts with another name on that port, so it has a listener.
        let other = format!("other.test:{port}");
        let resolve = "web.test:127.0.0.1";
        let mut s = Session::start(fx, &["--allow-domain", &other, "--resolve", resolve]);
        let fetch = format!("curl -fsS -m 5 --noproxy '*' http://web.test:{port}/");
        let (before, out) = s.exec(&fetch);
        assert_ne!(
            before["result"]["exitCode"], 0,
            "reached before it was allowed: {out}"
        );
        let allowed = s.ok("allowDomain", json!({"domain": format!("web.test:{port}")}));
        assert_eq!(allowed["allowed"], format!("web.test:{port}"));
        let (after, out) = s.exec(&fetch);
        assert_eq!(after["result"]["exitCode"], 0, "{after}");
        assert_eq!(out, "widened\n");
        // A port that had no listener from the start cannot be opened later.
        let refused = s.call("allowDomain", json!({"domain": "web.test:1"}));
        assert!(refused.get("error").is_some(), "{refused}");
        assert_commands_cannot_reach_the_broker(&mut s);
        // status lists the broker's refusals (evil.test's lookup) with the agent's own.
        let status = s.ok("status", json!({}));
        let denials = status["denials"].as_array().cloned().unwrap_or_default();
        assert!(
            denials
                .iter()
                .any(|d| d["op"] == "network"
                    && d["path"].as_str().unwrap_or("").contains("evil.test")),
            "no network refusal in status: {status}"
        );
        drop(s);
    });
}

/// The commands a session runs hold no descriptor beyond stdio, and cannot look
/// into the agent (it is not dumpable) to borrow its control stream to the
/// host: writing an allow request to each of its descriptors reaches nothing.
fn assert_commands_cannot_reach_the_broker(s: &mut Session) {
    assert_commands_cannot_reach_the_control_stream(s);
    let (_, out) = s.exec("getent hosts evil.test && echo LEAK dns; true");
    assert!(!out.contains("LEAK"), "an allow request got through: {out}");
}

/// The control stream exists in every session, whatever its network mode: no
/// command holds it or reaches it through the agent's descriptors.
fn assert_commands_cannot_reach_the_control_stream(s: &mut Session) {
    let (_, fds) = s.exec("ls /proc/self/fd");
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "ls's own fds: {fds}"
    );
    let (_, out) = s.exec(
        "for f in /proc/$PPID/fd/*; do \
           echo '{\"allow\":\"evil.test\"}' 2>/dev/null > $f && echo LEAK $f; \
           readlink $f 2>/dev/null && echo LEAK $f; \
         done; true",
    );
    assert!(
        !out.contains("LEAK"),
        "a command reached the agent's descriptors: {out}"
    );
}

/// The audit log's lines (JSON) for `fx`'s user.
fn audit_lines(fx: &Fixture) -> Vec<Value> {
    std::fs::read_to_string(fx.home.join(".local/state/cordon/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Reaches `name` three ways from inside (through the HTTP proxy the environment
/// names, directly on port 80, and by the upstream's address) and looks it up;
/// returns each command's output.
fn try_to_reach(s: &mut Session, name: &str, ip: &str) -> String {
    let mut all = String::new();
    for command in [
        format!("getent hosts {name} && echo RESOLVED"),
        format!("curl -fsS -m 5 http://{name}/ && echo FETCHED-PROXY"),
        format!("curl -fsS -m 5 --noproxy '*' http://{name}/ && echo FETCHED-DIRECT"),
        format!("curl -fsS -m 5 --noproxy '*' http://{ip}/ && echo FETCHED-ADDRESS"),
    ] {
        let (_, out) = s.exec(&command);
        all.push_str(&out);
    }
    all
}

/// A session started with nothing allowed and no `--net` has the network off
/// (DNS answers no name, the host's upstream sees nothing, by name or address),
/// yet its broker runs: `allowDomain` opens the one name, for the rest of the
/// session, and the audit log records it with who asked; `status` lists it.
#[test]
fn a_default_session_is_closed_until_allow_domain_opens_a_name() {
    for_each_user("serve_default_widens", |fx| {
        let up = Upstream::http_on_port_80("web.test");
        let ip = up.addr.ip().to_string();
        let mut s = Session::start(fx, &["--resolve", &format!("web.test:{ip}")]);
        let status = s.ok("status", json!({}));
        assert_eq!(status["policy"]["net"], "allowlist", "{status}");
        assert_eq!(status["policy"]["allowDomains"], json!([]), "{status}");
        let before = try_to_reach(&mut s, "web.test", &ip);
        assert!(
            !before.contains("RESOLVED") && !before.contains("FETCHED"),
            "reached before it was allowed: {before}"
        );
        assert_eq!(
            up.connections(),
            0,
            "the upstream saw a connection: {before}"
        );
        assert_commands_cannot_reach_the_broker(&mut s);

        let origin = format!("the user agreed in test {}", random_hex(4));
        let allowed = s.ok(
            "allowDomain",
            json!({"domain": "web.test", "origin": origin}),
        );
        assert_eq!(allowed["allowed"], "web.test");
        let after = try_to_reach(&mut s, "web.test", &ip);
        for reached in ["RESOLVED", "FETCHED-PROXY", "FETCHED-DIRECT"] {
            assert!(after.contains(reached), "{reached} missing: {after}");
        }
        assert!(after.contains("hello from web.test"), "{after}");
        // The name, not its address; and no other name.
        assert!(!after.contains("FETCHED-ADDRESS"), "{after}");
        assert_eq!(up.requests().len(), 2, "{}", up.report());
        let other = try_to_reach(&mut s, "other.test", &ip);
        assert!(
            !other.contains("RESOLVED") && !other.contains("FETCHED"),
            "{other}"
        );
        assert_eq!(up.requests().len(), 2, "{}", up.report());

        let status = s.ok("status", json!({}));
        let listed = &status["policy"]["allowDomains"];
        assert_eq!(listed[0]["domain"], "web.test", "{status}");
        assert!(
            listed[0]["origin"].as_str().unwrap_or("").contains(&origin),
            "{status}"
        );
        let widened: Vec<Value> = audit_lines(fx)
            .into_iter()
            .filter(|l| l["event"] == "allow_domain")
            .collect();
        assert!(
            widened.iter().any(|l| l["host"] == "web.test"
                && l["allowed"] == true
                && l["reason"].as_str().unwrap_or("").contains(&origin)),
            "no widening with its origin in the audit log: {widened:?}"
        );
        drop(s);
    });
}

/// A session whose network was turned off on purpose (`--net none`, `"net":
/// "none"` in the user's config or in the project's) stays off: `allowDomain` is
/// refused by the host control endpoint with an error naming that setting and
/// the fix, `status` lists no allowed domain, and nothing reaches the host's
/// upstream. The positive control: the same request in a session without that
/// setting does reach it.
#[test]
fn an_explicit_net_none_stays_closed_and_allow_domain_names_it() {
    for_each_user("serve_net_none_stays_closed", |fx| {
        let up = Upstream::http_on_port_80("web.test");
        let ip = up.addr.ip().to_string();
        let resolve = format!("web.test:{ip}");
        let user_config = fx.root.join("config.json");
        fx.write(&user_config, r#"{"net": "none"}"#);
        let user_config = user_config.to_string_lossy().into_owned();
        let project_config = fx.work.join(".cordon.json");
        let cases: [(&[&str], &str, &str); 3] = [
            (&["--net", "none"], "", "--net none"),
            (
                &["--config", &user_config],
                "",
                "\"net\": \"none\" of the user config",
            ),
            (
                &[],
                r#"{"net": "none"}"#,
                "\"net\": \"none\" of the project config",
            ),
        ];
        for (opts, project, named) in cases {
            if project.is_empty() {
                let _ = std::fs::remove_file(&project_config);
            } else {
                fx.write(&project_config, project);
            }
            let mut args = opts.to_vec();
            args.extend(["--resolve", &resolve]);
            let mut s = Session::start(fx, &args);
            let reply = s.call("allowDomain", json!({"domain": "web.test"}));
            let message = reply["error"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains(&format!("off by {named}"))
                    && message.contains("and stays off")
                    && message.contains("start one without that setting"),
                "{opts:?} {project}: {reply}"
            );
            let status = s.ok("status", json!({}));
            assert_eq!(status["policy"]["net"], "none", "{status}");
            assert_eq!(status["policy"]["allowDomains"], json!([]), "{status}");
            let tried = try_to_reach(&mut s, "web.test", &ip);
            assert!(
                !tried.contains("RESOLVED") && !tried.contains("FETCHED"),
                "{tried}"
            );
            assert_eq!(up.connections(), 0, "{opts:?} {project}: {tried}");
            drop(s);
        }
        let _ = std::fs::remove_file(&project_config);
        let mut s = Session::start(fx, &["--resolve", &resolve]);
        s.ok("allowDomain", json!({"domain": "web.test"}));
        let (_, out) = s.exec("curl -fsS -m 5 http://web.test/");
        assert!(out.contains("hello from web.test"), "{out}");
        assert!(up.connections() > 0, "{}", up.report());
        drop(s);
    });
}

/// A session with the host's network (`--net host`, or `"net": "host"` in the
/// user's config) has no allowlist: `allowDomain` is answered by the host
/// control endpoint with an error naming the setting and saying every name is
/// reachable already, and `status` (from the same endpoint) lists no allowed
/// domain and the mode. The message's claim is checked too: a listener on the
/// host's loopback is reached from inside. Commands reach the control stream no
/// more than in any session.
#[test]
fn a_host_network_session_answers_allow_domain_with_why() {
    for_each_user("serve_net_host_allow_domain", |fx| {
        let user_config = fx.root.join("config.json");
        fx.write(&user_config, r#"{"net": "host"}"#);
        let user_config = user_config.to_string_lossy().into_owned();
        let cases: [(&[&str], &str); 2] = [
            (&["--net", "host"], "(--net host)"),
            (
                &["--config", &user_config],
                "(\"net\": \"host\" of the user config",
            ),
        ];
        for (opts, named) in cases {
            if in_vm() {
                // The VM backend has no host network: serve refuses to start.
                let mut args = vec!["serve"];
                args.extend_from_slice(opts);
                fx.cordon(&args)
                    .assert_status(69)
                    .assert_stderr_contains("the vm backend has no --net host");
                continue;
            }
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut s = Session::start(fx, opts);
            let reply = s.call("allowDomain", json!({"domain": "web.test"}));
            assert_eq!(reply["error"]["code"], 3, "{reply}");
            let message = reply["error"]["message"].as_str().unwrap_or("");
            assert!(
                message
                    .starts_with("allowDomain web.test: this session has the host's whole network")
                    && message.contains(named)
                    && message.contains("every name is already reachable"),
                "{opts:?}: {reply}"
            );
            let status = s.ok("status", json!({}));
            assert_eq!(status["policy"]["net"], "host", "{status}");
            assert_eq!(status["policy"]["allowDomains"], json!([]), "{status}");
            let (result, out) = s.exec(&format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
            ));
            assert_eq!(result["result"]["exitCode"], 0, "{opts:?}: {result} {out}");
            listener.set_nonblocking(true).unwrap();
            assert!(listener.accept().is_ok(), "{opts:?}: the host saw nothing");
            assert_commands_cannot_reach_the_control_stream(&mut s);
            drop(s);
        }
    });
}

/// The agent's control stream carries what the client sends (`allowDomain`'s
/// domain and origin) to the host control endpoint: a request longer than the
/// endpoint reads (4096 bytes) is refused there, at once, and the session goes
/// on. The positive control: the next `allowDomain` is done, `status` lists it
/// (with the first 200 characters of a long origin), and the name is reached.
#[test]
fn an_overlong_control_request_is_refused_and_the_session_goes_on() {
    for_each_user("serve_overlong_control_request", |fx| {
        let up = Upstream::http_on_port_80("web.test");
        let ip = up.addr.ip().to_string();
        let mut s = Session::start(fx, &["--resolve", &format!("web.test:{ip}")]);
        let long = "a".repeat(100_000);
        for params in [
            json!({"domain": format!("{long}.test")}),
            json!({"domain": "web.test", "origin": long}),
        ] {
            let reply = s.call("allowDomain", params);
            let message = reply["error"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains("request too long (at most 4096 bytes)"),
                "{}",
                &message[..message.len().min(300)]
            );
        }
        let status = s.ok("status", json!({}));
        assert_eq!(status["policy"]["allowDomains"], json!([]), "{status}");
        let (_, out) = s.exec("curl -fsS -m 5 http://web.test/");
        assert!(!out.contains("hello from web.test"), "{out}");

        let origin = format!("the test {}", "o".repeat(1000));
        let allowed = s.ok(
            "allowDomain",
            json!({"domain": "web.test", "origin": origin}),
        );
        assert_eq!(allowed["allowed"], "web.test");
        let status = s.ok("status", json!({}));
        let listed = &status["policy"]["allowDomains"];
        assert_eq!(listed[0]["domain"], "web.test", "{status}");
        let kept = format!("this session: allowDomain, {}", &origin[..200]);
        assert_eq!(listed[0]["origin"], kept, "{status}");
        let (_, out) = s.exec("curl -fsS -m 5 http://web.test/");
        assert!(out.contains("hello from web.test"), "{out}");
        drop(s);
    });
}

#[test]
fn killing_the_server_ends_every_sandboxed_process() {
    for_each_user("serve_killed", |fx| {
        let mut s = Session::start(fx, &[]);
        if in_vm() {
            // The sandboxed processes are the guest's: QEMU goes with the server.
            s.send("exec", json!({"command": "sleep 60"}));
            let qemu = common::vm::wait_for_qemu_below(s.child.id(), Duration::from_secs(60));
            assert!(!qemu.is_empty(), "no QEMU below cordon serve");
            let _ = s.child.kill();
            let left = common::vm::qemu_left_after(&qemu, Duration::from_secs(10));
            assert!(left.is_empty(), "QEMU {left:?} outlived the killed server");
            drop(s);
            return;
        }
        let marker = format!("sleep 3{}", common::random_u32(10_000, 80_000));
        s.exec(&format!(
            "setsid {marker} > /dev/null 2>&1 < /dev/null & echo started"
        ));
        let running = || {
            let ps = std::process::Command::new("ps")
                .args(["-eo", "args"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .any(|l| l == marker)
        };
        // The exec ends with its shell; the detached sleep may exec a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(running(), "the background process did not start");
        let _ = s.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!running(), "a sandboxed process outlived the killed server");
        drop(s);
    });
}
