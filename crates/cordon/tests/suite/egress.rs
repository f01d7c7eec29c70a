//! The egress broker against real upstream servers on the host's loopback
//! (common/upstream.rs): plain HTTP, HTTPS with a test CA, HTTP/2, a server-sent
//! event stream, a WebSocket, a git smart-HTTP server. Inside cordon, clients reach
//! them by name (`web.test`, mapped with `--resolve NAME:127.0.0.1`, allowed with
//! `--allow-domain NAME:PORT` since the servers use random ports), with no proxy
//! variables: curl, `git clone`, Python's urllib, Node's fetch. Every test asserts an
//! effect on the host: what the upstream saw (a request, a header, a message) or that
//! it saw nothing at all.
//!
//! What the tests need: curl, git, python3 and busybox on the system PATH
//! (common::PATH); node for the fetch test (skipped with a note when absent);
//! loopback TCP. Run as root they run twice, as root and as the ordinary user
//! `cordon-test` (see common/mod.rs). The `upstream_*` tests exercise the servers
//! without cordon and must always pass; the others need the broker.
//!
//! `cargo test -p cordon --test egress` (as root for both variants).

use crate::common;

use common::upstream::{Upstream, test_ca};
use common::*;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------------
// Clients, written into the workspace and run inside (or on the host as controls)
// ---------------------------------------------------------------------------------

/// `python3 fetch.py URL [HEADER: VALUE]...`: one GET with urllib; prints the
/// status and body, or `failed URL ...` (exit 1).
const PY_FETCH: &str = r#"
import sys, urllib.request
url = sys.argv[1]
req = urllib.request.Request(url)
for h in sys.argv[2:]:
    k, v = h.split(": ", 1)
    req.add_header(k, v)
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        print("STATUS", r.status)
        print(r.read().decode())
except Exception as e:
    print("failed", url, type(e).__name__, e)
    sys.exit(1)
"#;

/// `node fetch.js URL [HEADER: VALUE]...`: the same with Node's fetch.
const NODE_FETCH: &str = r#"
const [url, ...hdrs] = process.argv.slice(2);
const headers = Object.fromEntries(hdrs.map((h) => h.split(": ")));
fetch(url, { headers })
  .then(async (r) => { console.log("STATUS", r.status); console.log(await r.text()); })
  .catch((e) => { console.log("failed", url, e.message, e.cause ? String(e.cause.code || e.cause.message) : ""); process.exit(1); });
"#;

/// `python3 sse.py EVENTS_URL ACK_URL`: reads the first event while the stream is
/// open, then calls the ack URL, then reads the rest (see upstream.rs).
const PY_SSE: &str = r#"
import sys, urllib.request
url, ack = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=60) as r:
    first = r.readline().decode().strip()
    print("FIRST", first, flush=True)
    urllib.request.urlopen(ack, timeout=20).read()
    rest = r.read().decode()
    print("REST", " | ".join(l for l in rest.splitlines() if l))
"#;

/// `python3 ws.py ws[s]://HOST:PORT/ws MESSAGE`: a WebSocket handshake, one text
/// message, its echo (`ECHO MESSAGE`), a close.
const PY_WS: &str = r#"
import base64, hashlib, os, socket, ssl, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
msg = sys.argv[2].encode()
port = u.port or (443 if u.scheme == "wss" else 80)
s = socket.create_connection((u.hostname, port), timeout=20)
if u.scheme == "wss":
    s = ssl.create_default_context().wrap_socket(s, server_hostname=u.hostname)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (u.path, u.hostname, port, key)).encode())
f = s.makefile("rb")
print("HANDSHAKE", f.readline().decode().strip(), flush=True)
want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
while True:
    line = f.readline()
    if line in (b"\r\n", b"\n", b""):
        break
    if line.lower().startswith(b"sec-websocket-accept:"):
        print("ACCEPT", "ok" if line.split(b":", 1)[1].strip().decode() == want else "wrong")
def send(op, payload):
    mask = os.urandom(4)
    s.sendall(bytes([0x80 | op, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
send(1, msg)
head = f.read(2)
print("ECHO", f.read(head[1] & 0x7f).decode(), flush=True)
send(8, b"")
"#;

/// `python3 connect.py tcp:HOST:PORT udp:HOST:PORT ...`: prints `CONNECTED T` when a
/// TCP connection opens (and sends `hello`), `SENT T` after a datagram, `failed T`.
const PY_CONNECT: &str = r#"
import socket, sys
for t in sys.argv[1:]:
    kind, _, addr = t.partition(":")
    host, port = addr.rsplit(":", 1)
    try:
        if kind == "tcp":
            s = socket.create_connection((host, int(port)), timeout=3)
            s.sendall(b"hello")
            print("CONNECTED", t, flush=True)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"ping", (host, int(port)))
            print("SENT", t, flush=True)
    except OSError as e:
        print("failed", t, e, flush=True)
"#;

/// `python3 stub.py NAME PORT`: asks the nameserver of /etc/resolv.conf for NAME's
/// A records itself (so /etc/hosts cannot answer first), then sends
/// `GET / Host: NAME:PORT` to each address; prints `ANSWERS ...` and `RESPONSE ...`
/// or `failed ...`.
const PY_STUB: &str = r#"
import socket, struct, sys
name, port = sys.argv[1], int(sys.argv[2])
ns = next((l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")), "127.0.0.1")
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET6 if ":" in ns else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
try:
    s.sendto(q, (ns, 53))
    resp = s.recv(4096)
except OSError as e:
    print("ANSWERS none:", e)
    sys.exit(0)
count, i, addrs = struct.unpack(">H", resp[6:8])[0], 12, []
while resp[i] != 0:
    i += resp[i] + 1
i += 5
for _ in range(count):
    if resp[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while resp[i] != 0:
            i += resp[i] + 1
        i += 1
    typ, _, _, rdlen = struct.unpack(">HHIH", resp[i:i + 10])
    i += 10
    if typ == 1 and rdlen == 4:
        addrs.append(socket.inet_ntoa(resp[i:i + 4]))
    i += rdlen
print("ANSWERS", " ".join(addrs) or "none", flush=True)
for a in addrs:
    try:
        c = socket.create_connection((a, port), timeout=5)
        c.sendall(("GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (name, port)).encode())
        data = b""
        while True:
            d = c.recv(4096)
            if not d:
                break
            data += d
        print("RESPONSE", data.decode(errors="replace").replace("\r\n", " | "))
    except OSError as e:
        print("failed", a, e)
"#;

const CLIENTS: &[(&str, &str)] = &[
    ("fetch.py", PY_FETCH),
    ("fetch.js", NODE_FETCH),
    ("sse.py", PY_SSE),
    ("ws.py", PY_WS),
    ("connect.py", PY_CONNECT),
    ("stub.py", PY_STUB),
];

/// The cordon options that make `ups` reachable by name, plus `--upstream-ca` (the
/// test CA) and `extra`.
fn net_opts(ups: &[&Upstream], extra: &[&str]) -> Vec<String> {
    let mut opts: Vec<String> = ups.iter().flat_map(|u| u.allow_flags()).collect();
    opts.push("--upstream-ca".into());
    opts.push(test_ca().path_str());
    opts.extend(extra.iter().map(|s| s.to_string()));
    opts
}

/// Runs `sh -c SCRIPT` inside cordon with [`net_opts`] and the environment `env`,
/// in a workspace holding the client scripts ([`CLIENTS`]).
fn inside_env(
    fx: &Fixture,
    ups: &[&Upstream],
    extra: &[&str],
    env: &[(&str, &str)],
    script: &str,
) -> Output {
    for (file, src) in CLIENTS {
        fx.write(&fx.work.join(file), src);
    }
    let opts = net_opts(ups, extra);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let mut cmd = fx.sh_cmd_with(&opts, script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd, None, RUN_DEADLINE)
}

fn inside(fx: &Fixture, ups: &[&Upstream], extra: &[&str], script: &str) -> Output {
    inside_env(fx, ups, extra, &[], script)
}

/// Runs `sh -c SCRIPT` on the host (no cordon) in a temp dir holding the clients,
/// trusting the test CA: the servers' self-tests.
fn on_host(script: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    for (file, src) in CLIENTS {
        std::fs::write(dir.path().join(file), src).unwrap();
    }
    let ca = test_ca().path_str();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("SSL_CERT_FILE", &ca)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("GIT_SSL_CAINFO", &ca)
        .env("CURL_CA_BUNDLE", &ca);
    run_cmd(cmd, None, RUN_DEADLINE)
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .env("PATH", PATH)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host's own non-loopback IPv4 address, if it has one.
fn host_ipv4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => Some(a),
        _ => None,
    }
}

fn any_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

/// Asserts that `up` received exactly one request for `target` per client in
/// `agents` (user-agent prefixes), i.e. that each client's request arrived.
fn assert_saw_agents(up: &Upstream, target: &str, agents: &[&str]) {
    for agent in agents {
        let n = up
            .requests()
            .iter()
            .filter(|r| r.target == target)
            .filter(|r| r.header("user-agent").is_some_and(|a| a.starts_with(agent)))
            .count();
        assert!(
            n >= 1,
            "no request for {target} from {agent} reached the upstream\n{}",
            up.report()
        );
    }
}

// ---------------------------------------------------------------------------------
// The servers themselves, without cordon (these pass without a broker)
// ---------------------------------------------------------------------------------

#[test]
fn upstream_http_https_and_h2_answer_from_the_host() {
    let web = Upstream::http("web.test");
    let tls = Upstream::https("tls.test");
    let h2 = Upstream::h2_only("h2.test");
    let resolve = |u: &Upstream| format!("--resolve {}:127.0.0.1", u.host_port());
    let script = format!(
        "curl -sS {} {}; curl -sS --http1.1 {} {}; curl -sS --http2 {} {}; \
         python3 fetch.py https://127.0.0.1:{}/",
        resolve(&web),
        web.url("/"),
        resolve(&tls),
        tls.url("/"),
        resolve(&h2),
        h2.url("/"),
        tls.port(),
    );
    let out = on_host(&script);
    out.assert_success()
        .assert_stdout_contains("hello from web.test over HTTP/1.1")
        .assert_stdout_contains("hello from tls.test over HTTP/1.1")
        .assert_stdout_contains("hello from h2.test over HTTP/2.0");
    assert_eq!(web.connections(), 1, "{}", web.report());
    assert_eq!(h2.requests()[0].version, "HTTP/2.0", "{}", h2.report());
    assert_saw_agents(&tls, "/", &["curl/", "Python-urllib/"]);
    if have("node") {
        let out = on_host(&format!("node fetch.js https://127.0.0.1:{}/", tls.port()));
        out.assert_success()
            .assert_stdout_contains("hello from tls.test");
        assert_saw_agents(&tls, "/", &["node"]);
    }
}

#[test]
fn upstream_sse_and_websocket_work_from_the_host() {
    let tls = Upstream::https("tls.test");
    let web = Upstream::http("web.test");
    let out = on_host(&format!(
        "python3 sse.py https://127.0.0.1:{p}/events?n=4 https://127.0.0.1:{p}/ack; \
         curl -sSN https://127.0.0.1:{p}/events?n=3 | {{ IFS= read -r first; echo \"CURL-FIRST $first\"; \
         curl -sS https://127.0.0.1:{p}/ack >/dev/null; cat; }}; \
         python3 ws.py wss://127.0.0.1:{p}/ws over-tls; python3 ws.py ws://127.0.0.1:{w}/ws over-plain",
        p = tls.port(),
        w = web.port(),
    ));
    out.assert_success()
        .assert_stdout_contains("FIRST data: event 0")
        .assert_stdout_contains("REST data: event 1 | data: event 2 | data: event 3")
        .assert_stdout_contains("CURL-FIRST data: event 0")
        .assert_stdout_contains("data: event 2")
        .assert_stdout_contains("HANDSHAKE HTTP/1.1 101")
        .assert_stdout_contains("ACCEPT ok")
        .assert_stdout_contains("ECHO over-tls")
        .assert_stdout_contains("ECHO over-plain")
        .assert_not_printed("no ack");
    assert_eq!(tls.sse_outcomes(), (2, 0), "{}", tls.report());
    assert_eq!(tls.messages(), vec![b"over-tls".to_vec()]);
    assert_eq!(web.messages(), vec![b"over-plain".to_vec()]);
}

#[test]
fn upstream_git_smart_http_clones_from_the_host() {
    let git = Upstream::git("git.test");
    let out = on_host(&format!(
        "git -c http.curloptResolve={}:127.0.0.1 clone -q {} clone && cat clone/README",
        git.host_port(),
        git.url("/repo.git")
    ));
    out.assert_success()
        .assert_stdout_contains(git.repo_marker.as_deref().unwrap());
    assert!(
        git.requests()
            .iter()
            .any(|r| r.target == "/repo.git/info/refs?service=git-upload-pack"),
        "{}",
        git.report()
    );
}

#[test]
fn upstream_raw_tcp_and_udp_record_from_the_host() {
    let raw = Upstream::raw_tcp(any_addr());
    let udp = Upstream::udp(any_addr());
    let out = on_host(&format!(
        "python3 connect.py tcp:127.0.0.1:{} udp:127.0.0.1:{}",
        raw.port(),
        udp.port()
    ));
    out.assert_success();
    assert_eq!(raw.wait_connections(1, Duration::from_secs(5)), 1);
    assert_eq!(udp.wait_connections(1, Duration::from_secs(5)), 1);
    assert_eq!(udp.messages(), vec![b"ping".to_vec()]);
}

// ---------------------------------------------------------------------------------
// Allowed names work, with every client, with no proxy variables
// ---------------------------------------------------------------------------------

#[test]
fn allowed_names_work_with_curl_python_and_node() {
    let node = have("node");
    if !node {
        eprintln!("note: node is not installed: the Node fetch part is skipped");
    }
    for_each_user("allowed_names_work_with_curl_python_and_node", |fx| {
        let web = Upstream::http("web.test");
        let tls = Upstream::https("tls.test");
        // The proxy variables are set for programs that prefer a proxy; unset,
        // every client must still work (Node's fetch ignores them anyway).
        let mut script = String::from(
            "test \"$HTTPS_PROXY\" && echo PROXY-VARS-SET; \
             unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; \
             env | grep -i '_proxy=' || echo NO-PROXY-VARS; ",
        );
        for u in [&web, &tls] {
            script.push_str(&format!(
                "curl -sS {url}; python3 fetch.py {url}; ",
                url = u.url("/")
            ));
            if node {
                script.push_str(&format!("node fetch.js {}; ", u.url("/")));
            }
        }
        let out = inside(fx, &[&web, &tls], &[], &script);
        out.assert_success()
            .assert_stdout_contains("PROXY-VARS-SET")
            .assert_stdout_contains("NO-PROXY-VARS")
            .assert_not_printed("failed");
        let clients = if node { 3 } else { 2 };
        for name in ["web.test", "tls.test"] {
            // curl may negotiate HTTP/2 where TLS passes through: either will do.
            let hello = format!("hello from {name} over HTTP/");
            assert_eq!(
                out.stdout_str().matches(&hello).count(),
                clients,
                "not every client got {hello:?}\n{out}"
            );
        }
        let mut agents = vec!["curl/", "Python-urllib/"];
        if node {
            agents.push("node");
        }
        assert_saw_agents(&web, "/", &agents);
        assert_saw_agents(&tls, "/", &agents);
        // The broker forwarded the name the client asked for.
        assert!(
            web.requests()
                .iter()
                .all(|r| r.header("host") == Some(web.host_port().as_str())),
            "{}",
            web.report()
        );
    });
}

#[test]
fn http2_works_end_to_end() {
    for_each_user("http2_works_end_to_end", |fx| {
        let h2 = Upstream::h2_only("h2.test");
        let out = inside(
            fx,
            &[&h2],
            &[],
            &format!("curl -sS --http2 {}", h2.url("/")),
        );
        out.assert_success()
            .assert_stdout_contains("hello from h2.test over HTTP/2.0");
        let reqs = h2.requests();
        assert_eq!(reqs.len(), 1, "{}", h2.report());
        assert_eq!(reqs[0].version, "HTTP/2.0");
        assert_eq!(reqs[0].header(":authority"), Some(h2.host_port().as_str()));
    });
}

#[test]
fn server_sent_events_stream_without_buffering() {
    for_each_user("server_sent_events_stream_without_buffering", |fx| {
        let tls = Upstream::https("tls.test");
        let web = Upstream::http("web.test");
        // Each client reads event 0, then asks /ack: the server sends the rest only
        // then. Through a buffering broker event 0 arrives only when the body ends,
        // SSE_ACK_WAIT later, and the server counts the stream as unacknowledged.
        let script = format!(
            "python3 sse.py {e} {a}; \
             curl -sSN {e2} | {{ IFS= read -r first; echo \"CURL-FIRST $first\"; curl -sS {a2} >/dev/null; cat; }}",
            e = tls.url("/events?n=4"),
            a = tls.url("/ack"),
            e2 = web.url("/events?n=3"),
            a2 = web.url("/ack"),
        );
        let out = inside(fx, &[&tls, &web], &[], &script);
        out.assert_success()
            .assert_stdout_contains("FIRST data: event 0")
            .assert_stdout_contains("REST data: event 1 | data: event 2 | data: event 3")
            .assert_stdout_contains("CURL-FIRST data: event 0")
            .assert_not_printed("no ack");
        assert_eq!(
            tls.sse_outcomes(),
            (1, 0),
            "HTTPS stream buffered\n{}",
            tls.report()
        );
        assert_eq!(
            web.sse_outcomes(),
            (1, 0),
            "HTTP stream buffered\n{}",
            web.report()
        );
    });
}

#[test]
fn websocket_echo_over_http_and_https() {
    for_each_user("websocket_echo_over_http_and_https", |fx| {
        let tls = Upstream::https("tls.test");
        let web = Upstream::http("web.test");
        let script = format!(
            "python3 ws.py {} through-tls; python3 ws.py {} through-plain",
            tls.url("/ws").replacen("https", "wss", 1),
            web.url("/ws").replacen("http", "ws", 1),
        );
        let out = inside(fx, &[&tls, &web], &[], &script);
        out.assert_success()
            .assert_stdout_contains("ACCEPT ok")
            .assert_stdout_contains("ECHO through-tls")
            .assert_stdout_contains("ECHO through-plain");
        assert_eq!(
            tls.messages(),
            vec![b"through-tls".to_vec()],
            "{}",
            tls.report()
        );
        assert_eq!(
            web.messages(),
            vec![b"through-plain".to_vec()],
            "{}",
            web.report()
        );
    });
}

#[test]
fn git_clone_over_smart_https() {
    for_each_user("git_clone_over_smart_https", |fx| {
        let git = Upstream::git("git.test");
        let out = inside(
            fx,
            &[&git],
            &[],
            // Through the proxy the variables name, then with no proxy at all.
            &format!(
                "git clone -q {url} clone && cat clone/README && \
                 unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY && \
                 git clone -q {url} direct && cat direct/README",
                url = git.url("/repo.git")
            ),
        );
        let marker = git.repo_marker.as_deref().unwrap();
        out.assert_success();
        assert_eq!(
            out.stdout_str().matches(marker).count(),
            2,
            "both clones should have worked\n{out}"
        );
        assert!(
            git.requests()
                .iter()
                .any(|r| r.target == "/repo.git/info/refs?service=git-upload-pack"),
            "{}",
            git.report()
        );
        assert!(
            git.requests().iter().any(|r| r.method == "POST"),
            "no git-upload-pack POST\n{}",
            git.report()
        );
    });
}

// ---------------------------------------------------------------------------------
// What must not get out
// ---------------------------------------------------------------------------------

/// The `cordon:` lines of stderr that mention `host`.
fn refusal_lines(out: &Output, host: &str) -> Vec<String> {
    out.stderr_str()
        .lines()
        .filter(|l| l.starts_with("cordon:") && l.contains(host))
        .map(str::to_string)
        .collect()
}

#[test]
fn denied_name_fails_and_reaches_nothing() {
    for_each_user("denied_name_fails_and_reaches_nothing", |fx| {
        let ok = Upstream::http("ok.test");
        let denied = Upstream::http("denied.test");
        // denied.test is known to cordon (--resolve) but not allowed.
        let resolve = format!("denied.test:{}", denied.addr.ip());
        let out = inside(
            fx,
            &[&ok],
            &["--resolve", &resolve],
            &format!(
                "curl -sS -f {}; echo denied-rc=$?; python3 fetch.py {}; curl -sS {}",
                denied.url("/"),
                denied.url("/"),
                ok.url("/"),
            ),
        );
        out.assert_stdout_contains("hello from ok.test")
            .assert_not_printed("denied-rc=0")
            .assert_not_printed("hello from denied.test");
        denied.assert_untouched("a name that was not allowed");
        let lines = refusal_lines(&out, "denied.test");
        assert_eq!(
            lines.len(),
            1,
            "want one cordon: line naming denied.test\n{out}"
        );
        assert!(
            lines[0].contains("--allow-domain denied.test"),
            "the line does not name the flag that allows the host\n{out}"
        );
        assert!(refusal_lines(&out, "ok.test").is_empty(), "{out}");
        // Every decision is in the audit log, as JSON lines.
        let log = std::fs::read_to_string(fx.home.join(".local/state/cordon/audit.jsonl"))
            .expect("the audit log");
        let decisions: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let about = |host: &str, allowed: bool| {
            decisions
                .iter()
                .any(|d| d["host"] == host && d["allowed"] == allowed)
        };
        assert!(
            about("denied.test", false),
            "no refusal of denied.test logged:\n{log}"
        );
        assert!(
            about("ok.test", true),
            "no allowed connection to ok.test logged:\n{log}"
        );
    });
}

#[test]
fn deny_domain_wins_over_allow_domain() {
    for_each_user("deny_domain_wins_over_allow_domain", |fx| {
        let ok = Upstream::http("ok.test");
        let web = Upstream::https("web.test");
        let out = inside(
            fx,
            &[&ok, &web],
            &["--deny-domain", "web.test"],
            &format!(
                "curl -sS {}; echo web-rc=$?; curl -sS {}",
                web.url("/"),
                ok.url("/")
            ),
        );
        out.assert_stdout_contains("hello from ok.test")
            .assert_not_printed("web-rc=0")
            .assert_not_printed("hello from web.test");
        web.assert_untouched("a name both allowed and denied");
    });
}

#[test]
fn allowed_name_resolving_to_a_private_address_fails() {
    for_each_user("allowed_name_resolving_to_a_private_address_fails", |fx| {
        // The host's resolver maps localhost to 127.0.0.1, where the upstream
        // listens; only --resolve may name a private address. stub.py asks the
        // sandbox's DNS itself, so that /etc/hosts inside cannot answer first.
        let local = Upstream::http("localhost");
        let web = Upstream::http("web.test");
        let allow = format!("localhost:{}", local.port());
        let out = inside(
            fx,
            &[&web],
            &["--allow-domain", &allow],
            &format!(
                "python3 stub.py localhost {}; curl -sS {}; echo local-rc=$?; python3 stub.py web.test {}",
                local.port(),
                local.url("/"),
                web.port()
            ),
        );
        // Control: the same client reaches a name that --resolve maps to loopback.
        out.assert_stdout_contains("hello from web.test")
            .assert_not_printed("hello from localhost")
            .assert_not_printed("local-rc=0");
        local.assert_untouched("an allowed name the host resolves to 127.0.0.1");
    });
}

#[test]
fn raw_tcp_other_ports_literal_ips_and_udp_go_nowhere() {
    for_each_user("raw_tcp_other_ports_literal_ips_and_udp_go_nowhere", |fx| {
        let web = Upstream::http("web.test");
        let raw = Upstream::raw_tcp(any_addr());
        let udp = Upstream::udp(any_addr());
        let mut hosts = vec!["127.0.0.1".to_string(), "web.test".to_string()];
        hosts.extend(host_ipv4().map(|a| a.to_string()));
        let mut targets = Vec::new();
        for h in &hosts {
            targets.push(format!("tcp:{h}:{}", raw.port()));
            targets.push(format!("udp:{h}:{}", udp.port()));
        }
        // The allowed web port by literal address: the host's own and loopback.
        for h in hosts.iter().filter(|h| *h != "web.test") {
            targets.push(format!("tcp:{h}:{}", web.port()));
        }
        // Control: without cordon every target on the host's addresses is reached.
        let control: Vec<&String> = targets.iter().filter(|t| !t.contains("web.test")).collect();
        let control_args: Vec<String> = control.iter().map(|t| t.to_string()).collect();
        on_host(&format!("python3 connect.py {}", control_args.join(" "))).assert_success();
        let want_raw = hosts.len() - 1;
        assert_eq!(
            raw.wait_connections(want_raw, Duration::from_secs(5)),
            want_raw
        );
        assert_eq!(
            udp.wait_connections(want_raw, Duration::from_secs(5)),
            want_raw
        );
        let (raw_before, udp_before, web_before) =
            (raw.connections(), udp.connections(), web.connections());

        let out = inside(
            fx,
            &[&web],
            &[],
            &format!(
                "getent hosts web.test && echo DNS-OK; python3 connect.py {}",
                targets.join(" ")
            ),
        );
        // DNS (UDP to the stub) works; nothing else does.
        out.assert_stdout_contains("DNS-OK")
            .assert_not_printed("CONNECTED");
        std::thread::sleep(common::upstream::SETTLE);
        assert_eq!(
            raw.connections(),
            raw_before,
            "raw TCP reached\n{out}\n{}",
            raw.report()
        );
        assert_eq!(
            udp.connections(),
            udp_before,
            "UDP reached\n{out}\n{}",
            udp.report()
        );
        assert_eq!(
            web.connections(),
            web_before,
            "literal IP reached\n{}",
            web.report()
        );
    });
}

#[test]
fn busybox_nc_cannot_reach_literal_ips_or_other_ports() {
    for_each_user("busybox_nc_cannot_reach_literal_ips_or_other_ports", |fx| {
        let web = Upstream::http("web.test");
        let raw = Upstream::raw_tcp(any_addr());
        let mut script = format!(
            "echo hi | busybox nc -w 3 web.test {p}; echo hi | busybox nc -w 3 127.0.0.1 {p}; ",
            p = raw.port()
        );
        if let Some(ip) = host_ipv4() {
            script.push_str(&format!(
                "echo hi | busybox nc -w 3 {ip} {}; echo hi | busybox nc -w 3 {ip} {}; ",
                raw.port(),
                web.port()
            ));
        }
        script.push_str(&format!("curl -sS {}", web.url("/")));
        let out = inside(fx, &[&web], &[], &script);
        // Control in the same run: the allowed name and port work.
        out.assert_stdout_contains("hello from web.test");
        raw.assert_untouched("busybox nc to another port or a literal IP");
        assert_eq!(web.connections(), 1, "{}", web.report());
    });
}

// ---------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------

#[test]
fn secret_reaches_only_its_host_and_never_the_sandbox() {
    for_each_user("secret_reaches_only_its_host_and_never_the_sandbox", |fx| {
        // web.test holds the secret (TLS terminated with cordon's CA); other.test
        // (plain HTTP, headers visible to the broker) and pass.test (TLS passed
        // through) are allowed but not scoped.
        let web = Upstream::https("web.test");
        let other = Upstream::http("other.test");
        let pass = Upstream::https("pass.test");
        let value = format!("s3cr3t-value-{}", random_hex(12));
        let script = format!(
            r#"echo "PLACEHOLDER=$MY_TOKEN"
for v in SSL_CERT_FILE NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO; do
  eval f=\$$v; test -s "$f" && echo "TRUST-OK $v"
done
env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline | tr '\0' '\n'
grep -ras s3cr3t-value /etc /tmp "$HOME" /run /dev/shm . /proc/[0-9]*/environ /proc/[0-9]*/cmdline
curl -sS -H "Authorization: Bearer $MY_TOKEN" {web}; echo web-rc=$?
python3 fetch.py {web} "Authorization: Bearer $MY_TOKEN"
curl -sS -f -H "Authorization: Bearer $MY_TOKEN" {other}; echo other-rc=$?
curl -sS -H "Authorization: Bearer $MY_TOKEN" {pass}; echo pass-rc=$?
cat "$HOME/.local/share/cordon/ca/ca.key"; cat "$HOME/.local/share/cordon/ca/ca.pem"
true"#,
            web = web.url("/"),
            other = other.url("/"),
            pass = pass.url("/"),
        );
        let secret = "MY_TOKEN=web.test".to_string();
        let out = inside_env(
            fx,
            &[&web, &other, &pass],
            &["--secret", &secret],
            &[("MY_TOKEN", &value)],
            &script,
        );
        assert_absent(&out, &value);
        // cordon's CA exists on the host (TLS to web.test was terminated with it),
        // and its key never enters the sandbox: the whole directory is denied.
        let ca_dir = fx.home.join(".local/share/cordon/ca");
        let key = std::fs::read_to_string(ca_dir.join("ca.key")).expect("the CA key on the host");
        assert!(key.contains("PRIVATE KEY"));
        out.assert_not_printed("PRIVATE KEY")
            .assert_not_printed("BEGIN CERTIFICATE");
        let placeholder = out
            .stdout_str()
            .lines()
            .find_map(|l| l.strip_prefix("PLACEHOLDER=").map(str::to_string))
            .unwrap_or_default();
        assert!(
            !placeholder.is_empty(),
            "MY_TOKEN holds no placeholder inside\n{out}"
        );
        for v in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            out.assert_stdout_contains(&format!("TRUST-OK {v}"));
        }
        // The scoped host got the real value, from curl and from Python, and never
        // the placeholder.
        out.assert_stdout_contains("web-rc=0");
        assert_eq!(
            out.stdout_str().matches("hello from web.test").count(),
            2,
            "{out}"
        );
        let bearer = format!("Bearer {value}");
        assert_eq!(
            web.requests()
                .iter()
                .filter(|r| r.header("authorization") == Some(bearer.as_str()))
                .count(),
            2,
            "the scoped host did not get the real value twice\n{}",
            web.report()
        );
        assert!(!web.saw_bytes(&placeholder), "{}", web.report());
        // A request carrying the placeholder to another host is refused.
        out.assert_not_printed("other-rc=0")
            .assert_not_printed("hello from other.test");
        other.assert_untouched("a request carrying the placeholder to an unscoped host");
        // Whatever happens to passed-through TLS, the value never reaches it.
        assert!(!pass.saw_bytes(&value), "{}", pass.report());
        assert!(!other.saw_bytes(&value), "{}", other.report());
    });
}

#[test]
fn allow_local_reaches_one_host_service_and_no_other() {
    for_each_user("allow_local_reaches_one_host_service_and_no_other", |fx| {
        // An ollama-like service on the host's loopback, and another one that is
        // not named: only the first is reachable, at 127.0.0.1 and at the
        // documented name, with its port unchanged.
        let service = Upstream::http("service.local");
        let other = Upstream::http("other.local");
        let local = format!("127.0.0.1:{}", service.port());
        let script = format!(
            "unset http_proxy HTTP_PROXY; \
             curl -sS http://127.0.0.1:{p}/; curl -sS http://host.cordon.internal:{p}/; \
             curl -sS -m 5 http://127.0.0.1:{o}/; echo other-rc=$?",
            p = service.port(),
            o = other.port(),
        );
        let out = inside(fx, &[], &["--allow-local", &local], &script);
        assert_eq!(
            out.stdout_str().matches("hello from service.local").count(),
            2,
            "the local service was not reached at both addresses\n{out}"
        );
        out.assert_not_printed("other-rc=0")
            .assert_not_printed("hello from other.local");
        other.assert_untouched("a host service that --allow-local did not name");
    });
}
