//! The VM backend's network (`--backend vm --net allowlist`) for real: the
//! guest has no network device but its loopback, whose broker sockets the
//! agent relays over the VM's channel to the same egress broker as the OS
//! backend's (docs/vm.md). Servers on the host's loopback (common/upstream.rs)
//! are named inside with `--resolve`, as in egress.rs; every test asserts what
//! reached them (or that nothing did) and what the audit log says.
//!
//! One boot per test and user (2–10 s under TCG), as root and as the ordinary
//! test user. Skipped, saying why, without QEMU or a kernel.

use crate::common;
use common::vm::{cache, missing};

use common::upstream::Upstream;
use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// `cordon run --backend vm OPTS -- sh -c SCRIPT NAME` as `fx`'s user, a
/// small VM; NAME (the script's `$0`) finds cordon's processes.
fn vm_cmd(fx: &Fixture, opts: &[String], script: &str, name: &str) -> Command {
    let mut args: Vec<String> = ["run", "--backend", "vm", "--vm-memory", "384M"]
        .map(String::from)
        .to_vec();
    args.extend_from_slice(opts);
    args.extend(["--", "sh", "-c", script, name].map(String::from));
    let mut cmd = fx.cordon_cmd(&args);
    cmd.env("XDG_CACHE_HOME", cache(fx));
    cmd
}

/// The host's first address other than loopback, if it has one.
fn host_address() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| a.parse::<Ipv4Addr>().is_ok_and(|a| !a.is_loopback()))
        .map(str::to_string)
}

/// The positive/negative pair through the broker, DNS, and no other way out:
/// an allowed name answers (a synthetic address) and is reached by name and
/// through the HTTP proxy the environment names (the upstream logs both); a
/// name not allowed gets no answer and no connection (the upstream never sees
/// it, the audit log names it); the guest has no interface but `lo`, and a
/// connection or a raw ICMP packet (as guest root) to the host's own
/// addresses, or to QEMU's user-network host (10.0.2.2), goes nowhere: a
/// listener on all of the host's addresses sees nothing. Positive control: the
/// host reaches that listener itself.
#[test]
fn the_guest_reaches_allowed_names_through_the_broker_and_nothing_else() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-net-broker", |fx| {
        let web = Upstream::http("web.test");
        let trap = Upstream::raw_tcp(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let port = web.port();
        let trap_port = trap.port();
        let hosts: Vec<String> = ["10.0.2.2".to_string()]
            .into_iter()
            .chain(host_address())
            .collect();
        // Not indented: the here-document's end and Python's blocks.
        let script = format!(
            r#"
echo "links: $(ls /sys/class/net | tr '\n' ' ')"
echo "resolv: $(grep nameserver /etc/resolv.conf)"
echo "HTTP_PROXY=$HTTP_PROXY"
echo "answer: $(getent hosts web.test)"
getent hosts denied.test || echo "no answer for denied.test"
curl -sS --noproxy '*' -m 30 -o /dev/null -w 'by-name %{{http_code}}\n' "http://web.test:{port}/?by-name"
curl -sS -m 30 -o /dev/null -w 'proxied %{{http_code}}\n' "http://web.test:{port}/?proxied"
curl -sS --noproxy '*' -m 5 http://denied.test:{port}/denied || echo "denied: failed"
curl -sS -m 5 -o /dev/null -w 'denied-proxied %{{http_code}}\n' http://denied.test:{port}/denied-proxied
for h in {hosts}; do
    curl -sS --noproxy '*' -m 3 http://$h:{trap_port}/host || echo "to $h: failed"
done
python3 - {hosts} <<'EOF'
import socket, sys
for host in sys.argv[1:]:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", (host, 0))
        print("RAW SENT", host)
    except OSError as e:
        print("raw to", host, "failed:", e)
EOF
"#,
            hosts = hosts.join(" "),
        );
        let mut cmd = vm_cmd(fx, &web.allow_flags(), &script, "vm-net");
        // Unconfined (a debug build's hook for tests): as guest root with
        // CAP_NET_RAW, as after an exploit of the guest's kernel, so that what
        // is tested is the network beneath the command's confinement (which
        // refuses the raw socket before it finds no route).
        cmd.env(cordon_vm::backend::UNCONFINED_GUEST_FOR_TESTS, "1");
        let out = run_cmd(cmd, None, Duration::from_secs(180));
        out.assert_success();
        // No network device but loopback.
        out.assert_stdout_contains("links: lo \n");
        // DNS and the proxy as the OS backend gives them.
        out.assert_stdout_contains("resolv: nameserver 127.0.0.1");
        out.assert_stdout_contains("HTTP_PROXY=http://127.0.0.1:3128");
        out.assert_stdout_contains("answer: 198.18.");
        out.assert_stdout_contains("no answer for denied.test");
        // The positive half: both requests reached the upstream.
        out.assert_stdout_contains("by-name 200")
            .assert_stdout_contains("proxied 200");
        let targets: Vec<String> = web.requests().into_iter().map(|r| r.target).collect();
        assert!(targets.iter().any(|t| t == "/?by-name"), "{}", web.report());
        assert!(
            targets.iter().any(|t| t.ends_with("/?proxied")),
            "{}",
            web.report()
        );
        // The negative half: nothing of the denied name reached anything.
        out.assert_stdout_contains("denied: failed");
        assert!(!web.saw_bytes("denied"), "{}", web.report());
        let audit = std::fs::read_to_string(fx.home.join(".local/state/cordon/audit.jsonl"))
            .expect("the audit log");
        assert!(
            audit
                .lines()
                .any(|l| l.contains("\"denied.test\"") && l.contains("\"allowed\":false")),
            "{audit}"
        );
        assert!(
            audit
                .lines()
                .any(|l| l.contains("\"web.test\"") && l.contains("\"allowed\":true")),
            "{audit}"
        );
        // No other way out.
        for h in &hosts {
            out.assert_stdout_contains(&format!("to {h}: failed"));
        }
        out.assert_not_printed("RAW SENT");
        if fx.user.is_root() {
            out.assert_stdout_contains("Network is unreachable");
        }
        trap.assert_untouched("a guest connection to a host address");
        // Positive control: the trap takes connections from the host.
        if let Some(host) = host_address() {
            let _ = std::net::TcpStream::connect((host.as_str(), trap_port)).unwrap();
            assert_eq!(trap.wait_connections(1, Duration::from_secs(5)), 1);
        }
    });
}

/// A server that writes to each connection until it fails, counting the bytes.
struct Pusher {
    port: u16,
    pushed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Pusher {
    fn start() -> Pusher {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pushed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pushed.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if s.load(SeqCst) {
                    return;
                }
                let p = p.clone();
                std::thread::spawn(move || {
                    let chunk = vec![b'x'; 64 << 10];
                    while let Ok(n) = stream.write(&chunk) {
                        p.fetch_add(n, SeqCst);
                    }
                });
            }
        });
        Pusher { port, pushed, stop }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A server that takes connections and never reads them, counting them.
fn sink() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            c.fetch_add(1, SeqCst);
            held.push(stream);
        }
    });
    (port, count)
}

/// The resident memory of cordon's own processes (QEMU's excluded: it holds
/// the guest's memory) whose command line holds `marker`, in KiB.
fn cordon_rss(marker: &str) -> u64 {
    procs_with_arg(marker)
        .into_iter()
        .filter(|(_, argv)| !argv.first().is_some_and(|a| a.contains("qemu")))
        .filter_map(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// What a guest can do to the host through its network costs the host bounded
/// memory: a connection whose guest program never reads while the upstream
/// writes as fast as it can (the upstream gets to write only what the buffers
/// and windows on the way hold, not the gigabytes loopback would carry in the
/// time), a program writing to an upstream that never reads (it blocks), and
/// 150 connections at once (at most 64 streams reach the broker; the others
/// are closed in the guest). cordon's memory stays within 64 MiB of its start
/// meanwhile, and the VM still serves afterwards. (A guest agent that breaks
/// its windows or sends frames for streams it did not open is refused: the
/// unit tests of cordon-vm's mux and vm modules.)
#[test]
fn a_guest_cannot_grow_the_hosts_memory_through_its_network() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-net-bounded", |fx| {
        let pusher = Pusher::start();
        let (sink_port, sunk) = sink();
        let marker = format!("bounded-{}", fx.user.label());
        let script = format!(
            r#"
python3 - <<'EOF'
import socket, time
s = socket.create_connection(("push.test", {push}), timeout=30)
s.recv(1)
print("READ ONE BYTE", flush=True)
time.sleep(8)
w = socket.create_connection(("sink.test", {sink}), timeout=30)
w.settimeout(5)
sent = 0
try:
    while sent < (1 << 30):
        sent += w.send(b"y" * 65536)
except OSError as e:
    print("writer blocked:", e, flush=True)
print("SENT", sent, flush=True)
conns = []
for i in range(150):
    try:
        conns.append(socket.create_connection(("sink.test", {sink}), timeout=10))
    except OSError as e:
        print("connect failed:", e)
time.sleep(3)
print("OPENED", len(conns), flush=True)
EOF
echo STILL SERVES
"#,
            push = pusher.port,
            sink = sink_port,
        );
        let opts: Vec<String> = [
            "--allow-domain",
            &format!("push.test:{}", pusher.port),
            "--resolve",
            "push.test:127.0.0.1",
            "--allow-domain",
            &format!("sink.test:{sink_port}"),
            "--resolve",
            "sink.test:127.0.0.1",
        ]
        .map(String::from)
        .to_vec();
        let mut cmd = vm_cmd(fx, &opts, &script, &marker);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut seen = seen.lock().unwrap();
                    seen.push_str(&line);
                    seen.push('\n');
                }
            })
        };
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // From the moment the guest's first connection is open (the VM booted,
        // its boot files assembled: those cost memory of their own).
        let start = Instant::now();
        let (mut first, mut most) = (0, 0);
        while child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(240), "the run hung");
            if seen.lock().unwrap().contains("READ ONE BYTE") {
                let rss = cordon_rss(&marker);
                if first == 0 {
                    first = rss;
                }
                most = most.max(rss);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let out = seen.lock().unwrap().clone();
        let err = err_reader.join().unwrap();
        let said = format!("stdout:\n{out}\nstderr:\n{err}");
        assert!(status.success(), "{status}: {said}");
        assert!(out.contains("READ ONE BYTE"), "{said}");
        assert!(out.contains("writer blocked"), "{said}");
        assert!(out.contains("OPENED 150"), "{said}");
        assert!(out.contains("STILL SERVES"), "{said}");
        let pushed = pusher.pushed.load(SeqCst);
        assert!(pushed < 32 << 20, "the upstream pushed {pushed} bytes");
        let sunk = sunk.load(SeqCst);
        assert!(
            (2..=64).contains(&sunk),
            "{sunk} connections reached the sink"
        );
        assert!(first > 0, "cordon's processes were not found");
        assert!(
            most < first + (64 << 10),
            "cordon grew from {first} KiB to {most} KiB: {said}"
        );
        eprintln!(
            "{}: pushed {pushed} bytes, {sunk} connections, cordon {first} -> {most} KiB",
            fx.user.label()
        );
    });
}

/// `cordon serve --backend vm`: the tool server in the guest reaches the host
/// control endpoint over the VM's channel. A session with nothing allowed
/// starts in `allowlist` with its broker running and no name reachable (the
/// upstream sees nothing); `allowDomain` opens the name for the rest of the
/// session (reached by name and through the proxy, the upstream logs both);
/// `status` is the host's: the VM, the network mode, the name allowed.
#[test]
fn serve_in_the_vm_widens_through_the_host_control_endpoint() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-net-serve", |fx| {
        let up = Upstream::http_on_port_80("web.test");
        let resolve = format!("web.test:{}", up.addr.ip());
        let mut cmd = fx.cordon_cmd(&[
            "serve",
            "--backend",
            "vm",
            "--vm-memory",
            "384M",
            "--resolve",
            &resolve,
        ]);
        cmd.env("XDG_CACHE_HOME", cache(fx));
        let mut s = common::serve::Session::spawn(cmd);
        let status = s.ok("status", serde_json::json!({}));
        assert_eq!(status["backend"], "vm", "{status}");
        assert_eq!(status["policy"]["net"], "allowlist", "{status}");
        assert_eq!(
            status["policy"]["allowDomains"],
            serde_json::json!([]),
            "{status}"
        );
        let fetch = "curl -sS -m 10 http://web.test/; echo; \
                     curl -sS -m 10 --noproxy '*' http://web.test/; echo";
        let (_, before) = s.exec(fetch);
        assert!(!before.contains("hello from web.test"), "{before}");
        assert_eq!(up.connections(), 0, "{}", up.report());
        let allowed = s.ok("allowDomain", serde_json::json!({"domain": "web.test"}));
        assert_eq!(allowed["allowed"], "web.test", "{allowed}");
        let (_, after) = s.exec(fetch);
        assert_eq!(after.matches("hello from web.test").count(), 2, "{after}");
        assert_eq!(up.requests().len(), 2, "{}", up.report());
        let status = s.ok("status", serde_json::json!({}));
        assert_eq!(
            status["policy"]["allowDomains"][0]["domain"], "web.test",
            "{status}"
        );
        assert!(s.close().success());
    });
}
