//! Attacks on the egress broker's secrets (the class "secrets sent to a host they
//! are not scoped to, and secrets echoed back"), against real upstream servers on
//! the host's loopback (common/upstream.rs):
//!
//! - a request whose authority (URI, Host, `:authority`, SNI) names another host
//!   than the one its connection was allowed for must not reach the upstream, least
//!   of all with the secret swapped in: over terminated TLS, plain HTTP, the proxy
//!   listener (absolute form, keep-alive, CONNECT), HTTP/2;
//! - an upstream that echoes what it received must not hand the secret's value back
//!   into the sandbox: headers and bodies are scrubbed, a body cut in the middle of
//!   the value too, and a compressed body is refused;
//! - an allowed name that the host resolves to one of the host's own addresses is
//!   refused unless `--allow-local` names that address.
//!
//! Each test asserts what the upstream received (its log) or what the sandbox
//! printed, with a positive control: the consistent request does reach the
//! upstream with the real value; the echo server does echo without cordon; the
//! host's service is reached from the host and through `--allow-local`.
//!
//! `cargo test -p cordon --test egress_attacks` (as root for both users).

use crate::common;

use common::upstream::{Seen, Upstream, test_ca};
use common::*;
use std::net::Ipv4Addr;
use std::process::Command;

/// `python3 raw.py HOST PORT MODE REQUEST...`: one connection to HOST:PORT, then
/// each REQUEST sent as written (`\r\n` as text is a CRLF, `$TOK` is $MY_TOKEN) and
/// its response read; prints `RESP I STATUS-LINE` or `failed I ...`. MODE:
/// `plain`; `tls=SNI`; `connect=AUTHORITY` (a CONNECT first, then plain);
/// `connect-tls=AUTHORITY=SNI`.
const PY_RAW: &str = r#"
import os, socket, ssl, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = os.environ.get("MY_TOKEN", "")
reqs = [a.replace("\\r\\n", "\r\n").replace("$TOK", tok) for a in sys.argv[4:]]
def fail(i, e):
    print("failed", i, type(e).__name__, e, flush=True)
    sys.exit(0)
try:
    s = socket.create_connection((host, port), timeout=20)
    kind = mode.split("=")
    if kind[0].startswith("connect"):
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (kind[1], kind[1])).encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            b = s.recv(1)
            if not b:
                break
            head += b
        print("CONNECT", head.split(b"\r\n")[0].decode(), flush=True)
    sni = kind[-1] if kind[0] in ("tls", "connect-tls") else None
    if sni:
        s = ssl.create_default_context().wrap_socket(s, server_hostname=sni)
    f = s.makefile("rb")
except Exception as e:
    fail(0, e)
for i, r in enumerate(reqs, 1):
    try:
        s.sendall(r.encode())
        line = f.readline().decode(errors="replace").strip()
        if not line:
            raise EOFError("connection closed")
        headers = {}
        while True:
            l = f.readline()
            if l in (b"\r\n", b"\n", b""):
                break
            k, _, v = l.decode(errors="replace").partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = f.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                n = int(f.readline().strip() or b"0", 16)
                if n == 0:
                    f.readline()
                    break
                body += f.read(n)
                f.readline()
        print("RESP", i, line, "|", body.decode(errors="replace").strip()[:200], flush=True)
    except Exception as e:
        fail(i, e)
"#;

/// `node h2.js URL PATH AUTHORITY HOST`: one HTTP/2 request with `:authority`
/// AUTHORITY and a `host` header HOST (either may be `-` to leave it out), with
/// `authorization: Bearer $MY_TOKEN`; prints `H2 PATH STATUS` or `failed PATH ...`.
const NODE_H2: &str = r#"
const http2 = require("http2");
const [url, path, authority, host] = process.argv.slice(2);
const c = http2.connect(url);
c.on("error", (e) => { console.log("failed", path, e.message); process.exit(0); });
const headers = { ":path": path, authorization: "Bearer " + (process.env.MY_TOKEN || "") };
if (authority !== "-") headers[":authority"] = authority;
if (host !== "-") headers.host = host;
const req = c.request(headers);
req.on("response", (h) => console.log("H2", path, h[":status"]));
req.on("data", () => {});
req.on("end", () => c.close());
req.on("error", (e) => { console.log("failed", path, e.message); c.close(); });
req.end();
"#;

/// `python3 dnsget.py NAME PORT PATH`: asks the nameserver of /etc/resolv.conf for
/// NAME's A record itself (so /etc/hosts cannot answer first), then sends
/// `GET PATH` with `Host: NAME:PORT` to it; prints `ANSWER ADDR`, then
/// `RESPONSE STATUS-LINE` or `failed ...`.
const PY_DNSGET: &str = r#"
import socket, struct, sys
name, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ns = next((l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")), "127.0.0.1")
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
try:
    s.sendto(q, (ns, 53))
    resp = s.recv(4096)
except OSError as e:
    print("failed dns", e)
    sys.exit(0)
if struct.unpack(">H", resp[6:8])[0] == 0:
    print("failed dns: no answer")
    sys.exit(0)
addr = socket.inet_ntoa(resp[-4:])
print("ANSWER", addr, flush=True)
try:
    c = socket.create_connection((addr, port), timeout=10)
    c.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, name, port)).encode())
    data = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        data += d
    print("RESPONSE", data.decode(errors="replace").split("\r\n")[0] or "(nothing)")
except OSError as e:
    print("failed", e)
"#;

const CLIENTS: &[(&str, &str)] = &[
    ("raw.py", PY_RAW),
    ("h2.js", NODE_H2),
    ("dnsget.py", PY_DNSGET),
];

/// Runs `sh -c SCRIPT` inside cordon, with `ups` reachable by name, the test CA as
/// `--upstream-ca`, `extra` options and the environment `env`.
fn inside(
    fx: &Fixture,
    ups: &[&Upstream],
    extra: &[&str],
    env: &[(&str, &str)],
    script: &str,
) -> Output {
    for (file, src) in CLIENTS {
        fx.write(&fx.work.join(file), src);
    }
    let mut opts: Vec<String> = ups.iter().flat_map(|u| u.allow_flags()).collect();
    opts.push("--upstream-ca".into());
    opts.push(test_ca().path_str());
    opts.extend(extra.iter().map(|s| s.to_string()));
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let mut cmd = fx.sh_cmd_with(&opts, script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd, None, RUN_DEADLINE)
}

/// Runs `sh -c SCRIPT` on the host, without cordon, trusting the test CA, with the
/// clients in its directory and `env`: the positive controls.
fn on_host(env: &[(&str, &str)], script: &str) -> Output {
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
        .env("SSL_CERT_FILE", &ca)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("CURL_CA_BUNDLE", &ca);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd, None, RUN_DEADLINE)
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .env("PATH", PATH)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The requests `up` received for `target`.
fn for_target(up: &Upstream, target: &str) -> Vec<Seen> {
    up.requests()
        .into_iter()
        .filter(|r| r.target == target)
        .collect()
}

/// Every host a request named: its `:authority` and Host headers.
fn named_hosts(r: &Seen) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n == ":authority" || n == "host")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect()
}

/// A secret value for one test.
fn secret_value() -> String {
    format!("s3cr3t-value-{}", random_hex(12))
}

// ---------------------------------------------------------------------------------
// One consistent authority per request
// ---------------------------------------------------------------------------------

/// `up` never saw a request naming another host than its own, and saw none of
/// `refused` (paths), while each of `reached` (paths) arrived with the real value.
fn assert_authority_kept(up: &Upstream, value: &str, refused: &[&str], reached: &[&str]) {
    let me = up.name.as_str();
    for r in up.requests() {
        for h in named_hosts(&r) {
            let name = h
                .split(':')
                .next()
                .unwrap_or_default()
                .trim_end_matches('.');
            assert!(
                name == me,
                "{} reached the upstream naming {h}\n{}",
                r.target,
                up.report()
            );
        }
    }
    for path in refused {
        assert!(
            for_target(up, path).is_empty(),
            "the refused request {path} reached the upstream\n{}",
            up.report()
        );
    }
    let bearer = format!("Bearer {value}");
    for path in reached {
        let got = for_target(up, path);
        assert!(
            got.iter()
                .any(|r| r.header("authorization") == Some(bearer.as_str())),
            "control: {path} did not reach the upstream with the real value\n{}",
            up.report()
        );
    }
}

#[test]
fn upstream_takes_any_host_without_cordon() {
    // The control for the authority tests: the servers answer whatever host a
    // request names, so only the broker can stop a mismatching request.
    let api = Upstream::https("api.test");
    let h2 = Upstream::h2_only("h2api.test");
    let mut script = format!(
        "curl -sS --http1.1 -H 'Host: evil.test' https://127.0.0.1:{}/ctl-host; \
         python3 raw.py 127.0.0.1 {} tls=api.test 'GET https://api.test:{}/ctl-abs HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n'",
        api.port(),
        api.port(),
        api.port(),
    );
    if have("node") {
        script.push_str(&format!(
            "; node h2.js https://127.0.0.1:{p} /ctl-h2 h2api.test:{p} evil.test",
            p = h2.port()
        ));
    }
    let out = on_host(&[], &script);
    out.assert_success();
    for path in ["/ctl-host", "/ctl-abs"] {
        let got = for_target(&api, path);
        assert_eq!(
            got.first().and_then(|r| r.header("host")),
            Some("evil.test"),
            "{out}\n{}",
            api.report()
        );
    }
    if have("node") {
        let got = for_target(&h2, "/ctl-h2");
        assert!(
            got.first().is_some_and(|r| {
                r.header(":authority") == Some(format!("h2api.test:{}", h2.port()).as_str())
                    && r.header("host") == Some("evil.test")
            }),
            "{out}\n{}",
            h2.report()
        );
    }
}

#[test]
fn request_naming_another_host_never_reaches_the_upstream_over_tls() {
    for_each_user(
        "request_naming_another_host_never_reaches_the_upstream_over_tls",
        |fx| {
            let api = Upstream::https("api.test");
            let value = secret_value();
            let p = api.port();
            let auth = "Authorization: Bearer $TOK\\r\\n";
            let raw = |path: &str, line: &str, hosts: &str| {
                format!(
                    "python3 raw.py api.test {p} tls=api.test 'GET {line} HTTP/1.1\\r\\n{hosts}{auth}\\r\\n'; ",
                    line = line.replace("PATH", path)
                )
            };
            let mut script = String::new();
            // Refused: another host in Host, in the absolute URI, a wrong port,
            // two Host headers, Host vs URI, no Host at all in HTTP/1.1.
            script.push_str(&format!(
                "curl -sS -o /dev/null -w 'curl-host %{{http_code}}\\n' -H 'Host: evil.test' -H \"Authorization: Bearer $MY_TOKEN\" https://api.test:{p}/r-curl-host; "
            ));
            script.push_str(&raw("/r-host", "PATH", "Host: evil.test\\r\\n"));
            script.push_str(&raw(
                "/r-host-port",
                "PATH",
                &format!("Host: evil.test:{p}\\r\\n"),
            ));
            script.push_str(&raw(
                "/r-abs",
                &format!("https://api.test:{p}PATH"),
                "Host: evil.test\\r\\n",
            ));
            script.push_str(&raw(
                "/r-abs-other",
                &format!("https://evil.test:{p}PATH"),
                &format!("Host: api.test:{p}\\r\\n"),
            ));
            script.push_str(&raw("/r-port", "PATH", "Host: api.test:1\\r\\n"));
            script.push_str(&raw(
                "/r-dup",
                "PATH",
                &format!("Host: api.test:{p}\\r\\nHost: evil.test\\r\\n"),
            ));
            script.push_str(&raw(
                "/r-dup-same",
                "PATH",
                &format!("Host: api.test:{p}\\r\\nHost: api.test:{p}\\r\\n"),
            ));
            script.push_str(&raw("/r-nohost", "PATH", ""));
            // A second request on a kept-alive connection.
            script.push_str(&format!(
                "python3 raw.py api.test {p} tls=api.test 'GET /ok-first HTTP/1.1\\r\\nHost: api.test:{p}\\r\\n{auth}\\r\\n' \
                 'GET /r-second HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' ; "
            ));
            // Controls: consistent authorities, in every accepted spelling.
            script.push_str(&raw(
                "/ok-host",
                "PATH",
                &format!("Host: api.test:{p}\\r\\n"),
            ));
            script.push_str(&raw("/ok-noport", "PATH", "Host: api.test\\r\\n"));
            script.push_str(&raw(
                "/ok-case",
                "PATH",
                &format!("Host: API.Test.:{p}\\r\\n"),
            ));
            script.push_str(&raw(
                "/ok-abs",
                &format!("https://api.test:{p}PATH"),
                &format!("Host: api.test:{p}\\r\\n"),
            ));
            script.push_str(&raw(
                "/ok-abs-nohost",
                &format!("https://api.test:{p}PATH"),
                "",
            ));
            script.push_str(&format!(
                "python3 raw.py api.test {p} tls=api.test 'GET /ok-http10 HTTP/1.0\\r\\n{auth}\\r\\n'; "
            ));
            let secret = "MY_TOKEN=api.test".to_string();
            let out = inside(
                fx,
                &[&api],
                &["--secret", &secret],
                &[("MY_TOKEN", &value)],
                &script,
            );
            assert_absent(&out, &value);
            out.assert_stdout_contains("curl-host 421");
            assert_authority_kept(
                &api,
                &value,
                &[
                    "/r-curl-host",
                    "/r-host",
                    "/r-host-port",
                    "/r-abs",
                    "/r-abs-other",
                    "/r-port",
                    "/r-dup",
                    "/r-dup-same",
                    "/r-nohost",
                    "/r-second",
                ],
                &[
                    "/ok-first",
                    "/ok-host",
                    "/ok-noport",
                    "/ok-case",
                    "/ok-abs",
                    "/ok-abs-nohost",
                    "/ok-http10",
                ],
            );
            // The HTTP/1.0 request without Host went out with the connection's host.
            let http10 = for_target(&api, "/ok-http10");
            assert_eq!(
                http10[0].header("host"),
                Some(format!("api.test:{p}").as_str()),
                "{}",
                api.report()
            );
            for status in ["421", "400"] {
                assert!(
                    out.stdout_str()
                        .lines()
                        .any(|l| l.starts_with("RESP") && l.contains(&format!("HTTP/1.1 {status}"))),
                    "no request was refused with {status}\n{out}"
                );
            }
        },
    );
}

#[test]
fn request_naming_another_host_never_reaches_the_upstream_over_plain_http_and_the_proxy() {
    for_each_user(
        "request_naming_another_host_never_reaches_the_upstream_over_plain_http_and_the_proxy",
        |fx| {
            let web = Upstream::http("web.test");
            let api = Upstream::https("api.test");
            let value = secret_value();
            let (w, a) = (web.port(), api.port());
            let auth = "Authorization: Bearer $TOK\\r\\n";
            let script = format!(
                // Transparent plain HTTP (Host, absolute URI, keep-alive); the proxy
                // listener (absolute form, a second request on it); CONNECT to one
                // name, then requests for another.
                "python3 raw.py web.test {w} plain 'GET /r-host HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' \
                   'GET /ok-plain HTTP/1.1\\r\\nHost: web.test:{w}\\r\\n{auth}\\r\\n' \
                   'GET http://web.test:{w}/r-abs HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' \
                   'GET /r-after HTTP/1.1\\r\\nHost: evil.test:{w}\\r\\n{auth}\\r\\n'; \
                 python3 raw.py web.test {w} plain 'GET /ok-plain10 HTTP/1.0\\r\\n{auth}\\r\\n'; \
                 python3 raw.py 127.0.0.1 3128 plain 'GET http://web.test:{w}/r-proxy-first HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n'; \
                 python3 raw.py 127.0.0.1 3128 plain 'GET http://web.test:{w}/ok-proxy HTTP/1.1\\r\\nHost: web.test:{w}\\r\\n{auth}\\r\\n' \
                   'GET http://web.test:{w}/r-proxy-second HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' \
                   'GET http://evil.test:{w}/r-proxy-other HTTP/1.1\\r\\nHost: web.test:{w}\\r\\n{auth}\\r\\n'; \
                 python3 raw.py 127.0.0.1 3128 plain 'GET http://web.test:{w}/ok-proxy-nohost HTTP/1.1\\r\\n{auth}\\r\\n'; \
                 python3 raw.py 127.0.0.1 3128 connect=web.test:{w} 'GET /r-connect HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' \
                   'GET http://web.test:{w}/r-connect-abs HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' \
                   'GET /ok-connect HTTP/1.1\\r\\nHost: web.test:{w}\\r\\n{auth}\\r\\n'; \
                 python3 raw.py 127.0.0.1 3128 connect-tls=api.test:{a}=api.test 'GET /r-connect-tls HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n' \
                   'GET /ok-connect-tls HTTP/1.1\\r\\nHost: api.test:{a}\\r\\n{auth}\\r\\n'; \
                 python3 raw.py 127.0.0.1 3128 connect-tls=api.test:{a}=evil.test 'GET /r-connect-sni HTTP/1.1\\r\\nHost: evil.test\\r\\n{auth}\\r\\n'; \
                 true"
            );
            let secret = "MY_TOKEN=web.test,api.test".to_string();
            let out = inside(
                fx,
                &[&web, &api],
                &["--secret", &secret],
                &[("MY_TOKEN", &value)],
                &script,
            );
            assert_absent(&out, &value);
            assert_authority_kept(
                &web,
                &value,
                &[
                    "/r-host",
                    "/r-abs",
                    "/r-after",
                    "/r-proxy-first",
                    "/r-proxy-second",
                    "/r-proxy-other",
                    "/r-connect",
                    "/r-connect-abs",
                ],
                &[
                    "/ok-plain",
                    "/ok-plain10",
                    "/ok-proxy",
                    "/ok-proxy-nohost",
                    "/ok-connect",
                ],
            );
            assert_authority_kept(
                &api,
                &value,
                &["/r-connect-tls", "/r-connect-sni"],
                &["/ok-connect-tls"],
            );
        },
    );
}

#[test]
fn http2_request_naming_another_host_never_reaches_the_upstream() {
    for_each_user(
        "http2_request_naming_another_host_never_reaches_the_upstream",
        |fx| {
            let h2 = Upstream::h2_only("h2api.test");
            let value = secret_value();
            let p = h2.port();
            let curl = |path: &str, extra: &str| {
                format!(
                    "curl -sS --http2 -o /dev/null -w '{path} %{{http_code}} %{{http_version}}\\n' {extra} -H \"Authorization: Bearer $MY_TOKEN\" https://h2api.test:{p}{path}; "
                )
            };
            let mut script = String::new();
            // curl sends a Host header as :authority.
            script.push_str(&curl("/r-authority", "-H 'Host: evil.test'"));
            // The SNI names another host than the one connected to.
            script.push_str(&format!(
                "curl -sS --http2 -o /dev/null -w '/r-sni %{{http_code}}\\n' --connect-to evil.test:{p}:h2api.test:{p} -H \"Authorization: Bearer $MY_TOKEN\" https://evil.test:{p}/r-sni; "
            ));
            script.push_str(&curl("/ok-h2", ""));
            let node = have("node");
            if node {
                let url = format!("https://h2api.test:{p}");
                let me = format!("h2api.test:{p}");
                script.push_str(&format!(
                    "node h2.js {url} /r-both {me} evil.test; \
                     node h2.js {url} /r-host-only - evil.test; \
                     node h2.js {url} /r-evil-authority evil.test {me}; \
                     node h2.js {url} /ok-node-both {me} {me}; \
                     node h2.js {url} /ok-node {me} -; "
                ));
            } else {
                eprintln!("note: node is not installed: the :authority + host part is skipped");
            }
            let secret = "MY_TOKEN=h2api.test".to_string();
            let out = inside(
                fx,
                &[&h2],
                &["--secret", &secret],
                &[("MY_TOKEN", &value)],
                &script,
            );
            assert_absent(&out, &value);
            // Reached requests get the server's 404 for any path but `/`.
            out.assert_stdout_contains("/r-authority 421 2")
                .assert_stdout_contains("/ok-h2 404 2");
            let mut refused = vec!["/r-authority", "/r-sni"];
            let mut reached = vec!["/ok-h2"];
            if node {
                out.assert_stdout_contains("H2 /r-both 421")
                    .assert_stdout_contains("H2 /ok-node 404");
                refused.extend(["/r-both", "/r-host-only", "/r-evil-authority"]);
                reached.extend(["/ok-node-both", "/ok-node"]);
            }
            assert_authority_kept(&h2, &value, &refused, &reached);
            assert!(
                h2.requests().iter().all(|r| r.version == "HTTP/2.0"),
                "{}",
                h2.report()
            );
        },
    );
}

// ---------------------------------------------------------------------------------
// What an upstream echoes back
// ---------------------------------------------------------------------------------

/// The requests to the echo servers: HTTP/1.1 and HTTP/2 over terminated TLS,
/// plain HTTP, each whole and cut in the middle of the value, and a gzip body.
fn echo_script(tls: &Upstream, plain: &Upstream, token: &str) -> String {
    let hdrs = format!(
        "-H \"Origin: {token}\" -H \"Authorization: Bearer {token}\" -H \"X-Api-Key: {token}\""
    );
    let mut script = String::new();
    for (label, flags, url) in [
        ("h1", "--http1.1", tls.url("/echo")),
        ("h1-split", "--http1.1", tls.url("/echo?split=1")),
        ("h2", "--http2", tls.url("/echo")),
        ("h2-split", "--http2", tls.url("/echo?split=1")),
        ("plain", "", plain.url("/echo")),
        ("plain-split", "", plain.url("/echo?split=1")),
    ] {
        script.push_str(&format!(
            "echo '== {label}'; curl -sS -i {flags} {hdrs} {url}; "
        ));
    }
    script.push_str(&format!(
        "echo '== gzip'; curl -sS -i --compressed {hdrs} {}; echo '== end'",
        tls.url("/echo?gzip=1")
    ));
    script
}

#[test]
fn upstream_echo_shows_the_value_without_cordon() {
    let tls = Upstream::echo_https("echo.test");
    let plain = Upstream::echo_http("echoplain.test");
    let value = secret_value();
    let resolve = |u: &Upstream| format!("--resolve {}:127.0.0.1", u.host_port());
    let script = echo_script(&tls, &plain, &value).replace(
        "curl -sS",
        &format!("curl -sS {} {}", resolve(&tls), resolve(&plain)),
    );
    let out = on_host(&[], &script);
    out.assert_success();
    let text = out.stdout_str();
    for section in [
        "h1",
        "h1-split",
        "h2",
        "h2-split",
        "plain",
        "plain-split",
        "gzip",
    ] {
        let body = text
            .split(&format!("== {section}\n"))
            .nth(1)
            .and_then(|s| s.split("\n== ").next())
            .unwrap_or_default();
        assert!(
            body.contains(&format!("x-echo-origin: {value}"))
                && body.contains(&format!("authorization: Bearer {value}")),
            "{section}: no echo of the value in a header and in the body\n{out}"
        );
    }
}

#[test]
fn echoed_secret_never_reaches_the_sandbox() {
    for_each_user("echoed_secret_never_reaches_the_sandbox", |fx| {
        let tls = Upstream::echo_https("echo.test");
        let plain = Upstream::echo_http("echoplain.test");
        let value = secret_value();
        let script = echo_script(&tls, &plain, "$MY_TOKEN");
        let secret = "MY_TOKEN=echo.test,echoplain.test".to_string();
        let out = inside(
            fx,
            &[&tls, &plain],
            &["--secret", &secret],
            &[("MY_TOKEN", &value)],
            &script,
        );
        assert_absent(&out, &value);
        let mask = "*".repeat(value.len());
        let text = out.stdout_str();
        for section in ["h1", "h1-split", "h2", "h2-split", "plain", "plain-split"] {
            let body = text
                .split(&format!("== {section}\n"))
                .nth(1)
                .and_then(|s| s.split("\n== ").next())
                .unwrap_or_default();
            assert!(
                body.contains(&format!("x-echo-origin: {mask}"))
                    && body.contains(&format!("x-echo-x-api-key: {mask}"))
                    && body.contains(&format!("authorization: Bearer {mask}")),
                "{section}: the echo did not come back masked\n{out}"
            );
        }
        let gzip = text.split("== gzip\n").nth(1).unwrap_or_default();
        assert!(
            gzip.contains(" 502"),
            "the gzip body was not refused\n{out}"
        );
        // The upstreams did get the real value (the swap worked), asked for
        // identity.
        let bearer = format!("Bearer {value}");
        for up in [&tls, &plain] {
            let echoes = for_target(up, "/echo");
            assert!(!echoes.is_empty(), "{}", up.report());
            for r in up.requests() {
                assert_eq!(
                    r.header("authorization"),
                    Some(bearer.as_str()),
                    "{}",
                    up.report()
                );
                assert_eq!(r.header("origin"), Some(value.as_str()), "{}", up.report());
                assert_eq!(
                    r.header("accept-encoding"),
                    Some("identity"),
                    "{}",
                    up.report()
                );
            }
        }
        assert!(
            tls.requests().iter().any(|r| r.version == "HTTP/2.0"),
            "{}",
            tls.report()
        );
    });
}

// ---------------------------------------------------------------------------------
// The host's own addresses
// ---------------------------------------------------------------------------------

/// An address of the documentation range (public to cordon's address classes) that
/// the test puts on an interface (a veth) of a network namespace of its own.
const OWN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

#[test]
fn name_resolving_to_the_hosts_own_address_is_refused() {
    if !running_as_root() {
        eprintln!("note: skipped: the test makes a network and mount namespace (needs root)");
        return;
    }
    for_each_user("name_resolving_to_the_hosts_own_address_is_refused", |fx| {
        // A namespace of the test's own stands for the host: its interface holds
        // OWN_ADDR, a service listens on 0.0.0.0 there, and its /etc/hosts says
        // own.test lives at OWN_ADDR, so cordon's broker (running there, as the
        // user) resolves the allowed name to one of its host's addresses.
        for (file, src) in CLIENTS {
            fx.write(&fx.work.join(file), src);
        }
        let port = 20000 + random_u32(0, 20000);
        let hosts = fx.root.join("hosts");
        std::fs::write(
            &hosts,
            format!("127.0.0.1 localhost\n{OWN_ADDR} own.test\n"),
        )
        .unwrap();
        let log = fx.root.join("service.log");
        let cordon = cordon_bin();
        let run = |extra: &str, path: &str| {
            format!(
                "setpriv --reuid={uid} --regid={gid} --clear-groups env -i PATH={PATH} HOME={home} USER={user} \
                 {cordon} run --allow-domain own.test:{port} {extra} -- python3 dnsget.py own.test {port} {path}",
                uid = fx.user.uid,
                gid = fx.user.gid,
                home = fx.home.display(),
                user = fx.user.name,
                cordon = cordon.display(),
            )
        };
        let script = format!(
            "set -e; ip link set lo up; ip link add own0 type veth peer name own1; ip addr add {OWN_ADDR}/32 dev own0; ip link set own0 up; ip link set own1 up; \
             mount --bind {hosts} /etc/hosts; \
             python3 -u -m http.server --bind 0.0.0.0 {port} > {log} 2>&1 & \
             for i in $(seq 50); do python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)' {OWN_ADDR} {port} 2>/dev/null && break; sleep 0.1; done; \
             set +e; \
             echo '== control-host'; curl -sS -o /dev/null -w '%{{http_code}}\\n' http://own.test:{port}/control-host; \
             echo '== attack'; {attack}; \
             echo '== control-local'; {local}; echo '== end'",
            hosts = hosts.display(),
            log = log.display(),
            attack = run("", "/attack"),
            local = run(
                &format!("--allow-local {OWN_ADDR}:{port}"),
                "/control-local"
            ),
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .current_dir(&fx.work)
        .env_clear()
        .env("PATH", PATH);
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        let served = std::fs::read_to_string(&log).unwrap_or_default();
        // Controls: the service answers from the host itself, and through cordon
        // when --allow-local names its address.
        assert!(served.contains("GET /control-host"), "{out}\n{served}");
        assert!(
            served.contains("GET /control-local"),
            "--allow-local {OWN_ADDR}:{port} did not reach the service\n{out}\n{served}"
        );
        // The attack: the name was allowed and answered inside, and nothing
        // reached the service.
        let attack = out
            .stdout_str()
            .split("== attack\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(attack.contains("ANSWER 198.18."), "{out}");
        assert!(
            !served.contains("GET /attack"),
            "an allowed name resolving to the host's own address reached its service\n{out}\n{served}"
        );
        assert!(
            out.stderr_str().contains("an address of this host"),
            "no refusal naming the reason\n{out}"
        );
    });
}
