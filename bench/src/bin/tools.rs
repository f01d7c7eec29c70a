//! `bench/tools`: the latency of pi's tool operations through `cordon serve`.
//!
//! Starts one `cordon serve --workspace TREE` session on a real source tree of at
//! least 10,000 files and sends it one request at a time over its pipes, timing
//! each round trip (serialising the request, the server's work, parsing the
//! response, and decoding base64 for `read`). Next to it, interleaved round-robin
//! in the same run so noise hits all alike:
//!
//! - pi's local implementations of read, write, edit and ls: Node's fs/promises,
//!   called exactly as pi's tools call them, timed in-process by a long-lived Node
//!   process (bench/tools.js, embedded);
//! - the same operations with Rust's std::fs in this process (a yardstick);
//! - `fd` and `rg --files` for find, `rg` for grep (pi's own find and grep run fd
//!   and rg), each a fresh process whose whole output is read;
//! - a bare spawn of /bin/true, and `bash -c /bin/true` (pi's local bash), for exec.
//!
//! Prints min/median/p90 per contender and a table of the targets: exec of
//! /bin/true at most 1 ms median; grep and find no slower than rg and fd; read and
//! write within 1.25x of the local tool (Node).

use clap::Parser;
use cordon_bench::{
    Stats, at_least_one, busy_window, cpu_model, exit_code, find_cordon, find_in_path, invocation,
    kernel_release, loadavg, main_with, noisy, nproc, percent, verdict,
};
use cordon_tools::client::Client;
use cordon_tools::protocol::{
    Empty, Exec, ExecParams, Exists, Find, FindParams, Grep, GrepParams, Method, PathParams, Read,
    ReadParams, Readdir, Ready, Stat, Status, Write as WriteFile, WriteParams,
};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tree must hold at least this many files.
const MIN_FILES: usize = 10_000;
/// exec of /bin/true: at most this median (ms).
const EXEC_TARGET_MS: f64 = 1.0;
/// read and write: at most this multiple of the local tool's median.
const LOCAL_RATIO_TARGET: f64 = 1.25;
/// The read and write target: cordon within LOCAL_RATIO_TARGET of node (contender 1).
const WITHIN_LOCAL: Target = Target::Ratio {
    peer: 1,
    max: LOCAL_RATIO_TARGET,
};
/// Where the default tree is built and cached (not /tmp: the sandbox has its own).
const DEFAULT_BASE: &str = "/var/tmp/cordon-bench-tools";
/// The size of the file read, written and edited (bytes, about).
const FILE_SIZE: std::ops::RangeInclusive<u64> = 9_500..=10_500;
/// No result limit, in effect, for find and grep.
const NO_LIMIT: u64 = 100_000_000;
/// pi's ls lists at most this many entries (and stats each).
const LS_LIMIT: usize = 500;

/// pi's local tools: Node's fs/promises as pi's read/write/edit/ls use it.
const NODE_SCRIPT: &str = include_str!("../../tools.js");

/// Times read, write, edit, ls, find, grep and exec through one `cordon serve`
/// session on a source tree of at least 10,000 files, next to pi's local
/// implementations (Node's fs/promises), std::fs, and rg/fd on the same tree,
/// interleaved in one run.
#[derive(Parser)]
#[command(name = "bench/tools", bin_name = "bench/tools")]
struct Options {
    /// the tree (the server's workspace); default: crate sources from
    /// ~/.cargo/registry/src copied (sorted, whole crates in name order until 10,000
    /// files) to /var/tmp/cordon-bench-tools/tree and reused by later runs. A scratch
    /// directory .bench-scratch is made in it for the writes and removed at the end.
    #[arg(long, value_name = "DIR")]
    tree: Option<PathBuf>,
    /// timed rounds of read, write, edit, readdir and exec (default 200)
    #[arg(long, value_name = "N", default_value = "200", hide_default_value = true, value_parser = at_least_one::<usize>)]
    iterations: usize,
    /// timed rounds of find and grep, and of pi's ls (default 20)
    #[arg(long, value_name = "N", default_value = "20", hide_default_value = true, value_parser = at_least_one::<usize>)]
    search_iterations: usize,
    /// untimed rounds first (default 3)
    #[arg(long, value_name = "N", default_value_t = 3, hide_default_value = true)]
    warmup: usize,
    /// the cordon binary (default: next to this binary)
    #[arg(long, value_name = "PATH")]
    cordon: Option<PathBuf>,
    /// node (default: node from PATH)
    #[arg(long, value_name = "PATH")]
    node: Option<PathBuf>,
    /// ripgrep (default: rg from PATH)
    #[arg(long, value_name = "PATH")]
    rg: Option<PathBuf>,
    /// fd (default: fd or fdfind from PATH)
    #[arg(long, value_name = "PATH")]
    fd: Option<PathBuf>,
    /// exit with status 1 if a target is missed
    #[arg(long)]
    strict: bool,
}

// ---------------------------------------------------------------------------
// The tree

/// Files, directories and bytes under `dir`, not following symlinks, leaving out
/// hidden entries of `dir` itself: `.git`, the scratch directory, and the empty
/// placeholders (.cordon.json, .pi, .idea, .vscode) cordon creates in a workspace.
fn tree_stats(dir: &Path, skip_hidden_root: bool) -> (usize, usize, u64) {
    let (mut files, mut dirs, mut bytes) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if skip_hidden_root && d == dir && e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if ft.is_dir() {
                dirs += 1;
                stack.push(e.path());
            } else if ft.is_file() {
                files += 1;
                bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (files, dirs, bytes)
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Copies `src` to `dst` (new) in sorted order: directories, regular files, symlinks.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dst)?;
    for e in sorted_entries(src)? {
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Crate sources in cargo's registry, by name (the first of each name in sorted
/// index order).
fn registry_crates() -> Result<Vec<(OsString, PathBuf)>, String> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let src = cargo_home.join("registry/src");
    let mut crates: Vec<(OsString, PathBuf)> = Vec::new();
    for index in sorted_entries(&src).map_err(|e| format!("{}: {e}", src.display()))? {
        for c in sorted_entries(&index.path()).unwrap_or_default() {
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                crates.push((c.file_name(), c.path()));
            }
        }
    }
    crates.sort_by(|a, b| a.0.cmp(&b.0));
    crates.dedup_by(|a, b| a.0 == b.0);
    Ok(crates)
}

/// The default tree: whole crates from the registry in name order until there are
/// at least MIN_FILES files, copied once and reused as long as it exists (the
/// registry changes as builds fetch crates; tree.manifest lists the crates). A
/// git repository (no commits) so rg and fd honour the crates' .gitignore files as
/// the server does.
fn default_tree() -> Result<PathBuf, String> {
    let base = PathBuf::from(DEFAULT_BASE);
    let tree = base.join("tree");
    let manifest_path = base.join("tree.manifest");
    if tree.is_dir() && manifest_path.is_file() {
        return Ok(tree);
    }
    let mut manifest = String::new();
    let mut chosen = Vec::new();
    let mut files = 0;
    for (name, path) in registry_crates()? {
        if files >= MIN_FILES {
            break;
        }
        files += tree_stats(&path, false).0;
        let _ = writeln!(manifest, "{}", name.to_string_lossy());
        chosen.push((name, path));
    }
    if files < MIN_FILES {
        return Err(format!(
            "cargo's registry holds only {files} files of crate sources (need {MIN_FILES}); pass --tree DIR"
        ));
    }
    eprintln!(
        "bench/tools: copying {} crates ({files} files) to {}...",
        chosen.len(),
        tree.display()
    );
    std::fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let _ = std::fs::remove_file(&manifest_path);
    let _ = std::fs::remove_dir_all(&tree);
    let partial = base.join("tree.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    for (name, path) in &chosen {
        copy_tree(path, &partial.join(name))
            .map_err(|e| format!("copy {}: {e}", path.display()))?;
    }
    let git = Command::new("git")
        .args(["init", "--quiet"])
        .arg(&partial)
        .stdout(Stdio::null())
        .status();
    if !git.is_ok_and(|s| s.success()) {
        eprintln!(
            "bench/tools: `git init` failed; rg and fd will ignore .gitignore files the server honours"
        );
    }
    std::fs::rename(&partial, &tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    std::fs::write(&manifest_path, &manifest)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    Ok(tree)
}

/// The first (sorted) non-hidden `.rs` file of about 10 KB that is UTF-8.
fn pick_file(dir: &Path) -> Option<PathBuf> {
    for e in sorted_entries(dir).ok()? {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(p) = pick_file(&e.path()) {
                return Some(p);
            }
        } else if ft.is_file()
            && name.to_string_lossy().ends_with(".rs")
            && e.metadata().is_ok_and(|m| FILE_SIZE.contains(&m.len()))
            && std::fs::read_to_string(e.path()).is_ok()
        {
            return Some(e.path());
        }
    }
    None
}

const SCRATCH: &str = ".bench-scratch";

// ---------------------------------------------------------------------------
// Clients

/// One `cordon serve` session, one request at a time.
struct Serve {
    child: Child,
    client: Client<BufReader<ChildStdout>, ChildStdin>,
    stderr: Arc<Mutex<String>>,
    ready: Ready,
}

impl Serve {
    fn start(cordon: &Path, tree: &Path) -> Result<Serve, String> {
        let mut child = Command::new(cordon)
            .arg("serve")
            .arg("--workspace")
            .arg(tree)
            .current_dir(tree)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cordon.display()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (Some(mut pipe), Some(stdin), Some(stdout)) =
            (child.stderr.take(), child.stdin.take(), child.stdout.take())
        else {
            return Err("cordon serve started without its pipes".into());
        };
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut client = Client::new(BufReader::new(stdout), stdin);
        let ready = client.ready().map_err(|e| {
            std::thread::sleep(Duration::from_millis(100));
            let said = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
            format!("cordon serve: {e}: {}", said.trim())
        })?;
        Ok(Serve {
            child,
            client,
            stderr,
            ready,
        })
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_string()
    }

    /// One request, and its result.
    fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, String> {
        self.client.call::<M>(params).map_err(|e| {
            std::thread::sleep(Duration::from_millis(100));
            format!("cordon serve: {} failed: {e}: {}", M::NAME, self.stderr())
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bench/tools.js in a long-lived node: pi's local operations, timed in-process.
struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Node {
    fn start(node: &Path) -> Result<Node, String> {
        let mut child = Command::new(node)
            .arg("-e")
            .arg(NODE_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", node.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("node started without its pipes".into());
        };
        Ok(Node {
            stdin,
            stdout: BufReader::new(stdout),
            child,
        })
    }

    /// One operation; its time as node measured it, and its count.
    fn op(&mut self, req: Value) -> Result<(Duration, u64), String> {
        let mut line = req.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .map_err(|e| format!("node: cannot send: {e}"))?;
        let mut reply = String::new();
        if self
            .stdout
            .read_line(&mut reply)
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("node ended".into());
        }
        let v: Value = serde_json::from_str(&reply).map_err(|e| format!("node: {e}: {reply}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!(
                "node: {}: {}",
                req["op"],
                e.as_str().unwrap_or("?")
            ));
        }
        let ns = v["ns"].as_u64().ok_or_else(|| format!("node: {reply}"))?;
        Ok((Duration::from_nanos(ns), v["n"].as_u64().unwrap_or(0)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Operations and contenders

type Run<'a> = Box<dyn FnMut() -> Result<(Duration, u64), String> + 'a>;

struct Contender<'a> {
    name: String,
    run: Run<'a>,
    samples: Vec<f64>,
    /// The count of the first timed run (files, matches, bytes), to compare.
    count: Option<u64>,
}

enum Target {
    /// cordon's median at most this (ms).
    MaxMs(f64),
    /// cordon's median at most `max` times that of the contender at `peer`.
    Ratio { peer: usize, max: f64 },
    /// No target: for information.
    None,
}

struct Op<'a> {
    name: String,
    detail: String,
    iterations: usize,
    /// Contender 0 is cordon.
    contenders: Vec<Contender<'a>>,
    targets: Vec<Target>,
    /// What a count is, when the counts must agree.
    count_label: Option<&'static str>,
    /// Why the counts may differ, printed when they do.
    count_note: Option<String>,
}

impl<'a> Op<'a> {
    fn new(name: &str, detail: String, iterations: usize) -> Op<'a> {
        Op {
            name: name.into(),
            detail,
            iterations,
            contenders: Vec::new(),
            targets: Vec::new(),
            count_label: None,
            count_note: None,
        }
    }

    fn with(mut self, name: impl Into<String>, run: Run<'a>) -> Op<'a> {
        self.contenders.push(Contender {
            name: name.into(),
            run,
            samples: Vec::with_capacity(self.iterations),
            count: None,
        });
        self
    }

    /// Holds cordon (contender 0) to `target`.
    fn target(mut self, target: Target) -> Op<'a> {
        self.targets.push(target);
        self
    }

    /// The counts must agree; `label` says what they count.
    fn counting(mut self, label: &'static str) -> Op<'a> {
        self.count_label = Some(label);
        self
    }

    fn round(&mut self, reverse: bool, timed: bool) -> Result<(), String> {
        let n = self.contenders.len();
        for k in 0..n {
            let c = &mut self.contenders[if reverse { n - 1 - k } else { k }];
            let (t, count) = (c.run)().map_err(|e| format!("{}: {}: {e}", self.name, c.name))?;
            if timed {
                c.samples.push(t.as_secs_f64() * 1e3);
                c.count.get_or_insert(count);
            }
        }
        Ok(())
    }
}

/// A process run to its end with stdout read whole; its time and output lines.
fn process(argv: &[OsString]) -> Result<(Duration, u64), String> {
    let start = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
    let t = start.elapsed();
    // rg exits 1 when nothing matched.
    if !(out.status.success() || out.status.code() == Some(1)) {
        return Err(format!("{argv:?} failed: {}", out.status));
    }
    Ok((t, out.stdout.iter().filter(|&&b| b == b'\n').count() as u64))
}

fn spawn_true(argv: &[&str]) -> Result<(Duration, u64), String> {
    let start = Instant::now();
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let t = start.elapsed();
    if !status.success() {
        return Err(format!("{argv:?}: {status}"));
    }
    Ok((t, 0))
}

fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Atomic write as the server does it (temporary file, fsync, rename), locally.
fn atomic_write(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn main() -> ExitCode {
    main_with("bench/tools", real_main)
}

fn real_main() -> Result<ExitCode, String> {
    let options = Options::parse();
    let cordon = find_cordon(options.cordon.as_deref())?;
    let node = options
        .node
        .clone()
        .or_else(|| find_in_path(&["node"]))
        .ok_or("node not found in PATH (pass --node PATH)")?;
    let rg = options
        .rg
        .clone()
        .or_else(|| find_in_path(&["rg"]))
        .ok_or("rg not found in PATH (install ripgrep, e.g. `apt-get install -y ripgrep`)")?;
    let fd = options
        .fd
        .clone()
        .or_else(|| find_in_path(&["fd", "fdfind"]))
        .ok_or("fd not found in PATH (install fd-find, e.g. `apt-get install -y fd-find`)")?;
    let tree = match &options.tree {
        Some(t) => t.clone(),
        None => default_tree()?,
    };
    let tree = std::fs::canonicalize(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    if tree.starts_with("/tmp") {
        return Err(format!(
            "{}: the tree must not be under /tmp (the sandbox has a private /tmp)",
            tree.display()
        ));
    }
    let scratch = tree.join(SCRATCH);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let result = bench(&options, &cordon, &node, &rg, &fd, &tree, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let (text, missed) = result?;
    print!("{text}");
    Ok(exit_code(options.strict, missed))
}

fn bench(
    options: &Options,
    cordon: &Path,
    node_bin: &Path,
    rg: &Path,
    fd: &Path,
    tree: &Path,
    scratch: &Path,
) -> Result<(String, bool), String> {
    let (files, dirs, bytes) = tree_stats(tree, true);
    if files < MIN_FILES {
        eprintln!(
            "bench/tools: warning: {} holds {files} files, fewer than {MIN_FILES}",
            tree.display()
        );
    }
    let file = pick_file(tree).ok_or_else(|| {
        format!(
            "no UTF-8 .rs file of {}..{} bytes in {}",
            FILE_SIZE.start(),
            FILE_SIZE.end(),
            tree.display()
        )
    })?;
    let content = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let size = content.len() as u64;
    let p = |name: &str| scratch.join(name);
    let edit_start = format!("{content}\n// bench/tools edit 0\n");
    for who in ["cordon", "node", "std"] {
        std::fs::write(p(&format!("edit-{who}.rs")), &edit_start).map_err(|e| e.to_string())?;
    }
    let s = |p: &Path| p.to_string_lossy().into_owned();

    let serve = RefCell::new(Serve::start(cordon, tree)?);
    let status = serve.borrow_mut().call::<Status>(&Empty {})?;
    let node = RefCell::new(Node::start(node_bin)?);
    let n = options.iterations;
    let ns = options.search_iterations;

    let mut ops: Vec<Op> = Vec::new();

    // read
    {
        let (f1, f2, f3) = (s(&file), s(&file), file.clone());
        let (serve, node) = (&serve, &node);
        ops.push(
            Op::new(
                "read",
                format!(
                    "{} ({size} bytes), whole",
                    s(file.strip_prefix(tree).unwrap_or(&file))
                ),
                n,
            )
            .with(
                "cordon serve: read",
                Box::new(move || {
                    let t = Instant::now();
                    let r = serve.borrow_mut().call::<Read>(&ReadParams {
                        path: f1.clone(),
                        ..ReadParams::default()
                    })?;
                    let t = t.elapsed();
                    Ok((t, r.data.0.len() as u64))
                }),
            )
            .with(
                "node fs/promises readFile (pi)",
                Box::new(move || node.borrow_mut().op(json!({"op": "read", "path": f2}))),
            )
            .with(
                "std::fs::read",
                Box::new(move || {
                    let t = Instant::now();
                    let d = std::fs::read(&f3).map_err(|e| e.to_string())?;
                    Ok((t.elapsed(), d.len() as u64))
                }),
            )
            .target(WITHIN_LOCAL)
            .counting("bytes"),
        );
    }

    // write
    {
        let (serve, node) = (&serve, &node);
        let (c1, c2, c3, c4) = (&content, &content, &content, &content);
        let (w1, w2, w3, w4) = (
            s(&p("write-cordon.rs")),
            s(&p("write-node.rs")),
            p("write-std.rs"),
            p("write-atomic.rs"),
        );
        ops.push(
            Op::new(
                "write",
                format!("{size} bytes, a new version of an existing file"),
                n,
            )
            .with(
                "cordon serve: write (atomic, fsync)",
                Box::new(move || {
                    let t = Instant::now();
                    let r = serve.borrow_mut().call::<WriteFile>(&WriteParams {
                        path: w1.clone(),
                        content: Some(c1.clone()),
                        data: None,
                    })?;
                    Ok((t.elapsed(), r.bytes))
                }),
            )
            .with(
                "node fs/promises writeFile (pi)",
                Box::new(move || {
                    node.borrow_mut()
                        .op(json!({"op": "write", "path": w2, "content": c2}))
                }),
            )
            .with(
                "std::fs::write",
                Box::new(move || {
                    let t = Instant::now();
                    std::fs::write(&w3, c3).map_err(|e| e.to_string())?;
                    Ok((t.elapsed(), c3.len() as u64))
                }),
            )
            .with(
                "std tmp+fsync+rename (yardstick)",
                Box::new(move || {
                    let t = Instant::now();
                    atomic_write(&w4, c4.as_bytes()).map_err(|e| e.to_string())?;
                    Ok((t.elapsed(), c4.len() as u64))
                }),
            )
            .target(WITHIN_LOCAL)
            .counting("bytes"),
        );
    }

    // edit: pi's edit (access, read, replace, write) with each side's operations.
    {
        let (serve, node) = (&serve, &node);
        let (e1, e2, e3) = (
            s(&p("edit-cordon.rs")),
            s(&p("edit-node.rs")),
            p("edit-std.rs"),
        );
        let (mut i1, mut i2, mut i3) = (0u64, 0u64, 0u64);
        let marker = |i: u64| format!("// bench/tools edit {i}\n");
        ops.push(
            Op::new(
                "edit",
                "the same file + a marker line; one replacement (exists + read + write)".into(),
                n,
            )
            .with(
                "cordon serve: exists+read+write",
                Box::new(move || {
                    let t = Instant::now();
                    let mut sv = serve.borrow_mut();
                    let path = PathParams { path: e1.clone() };
                    if !sv.call::<Exists>(&path)?.exists {
                        return Err(format!("{e1} does not exist"));
                    }
                    let r = sv.call::<Read>(&ReadParams {
                        path: e1.clone(),
                        ..ReadParams::default()
                    })?;
                    let text = String::from_utf8(r.data.into_vec()).map_err(|e| e.to_string())?;
                    let (old, new) = (marker(i1), marker(i1 + 1));
                    if !text.contains(&old) {
                        return Err(format!("{old:?} not in {e1}"));
                    }
                    let out = text.replacen(&old, &new, 1);
                    let w = sv.call::<WriteFile>(&WriteParams {
                        path: e1.clone(),
                        content: Some(out),
                        data: None,
                    })?;
                    i1 += 1;
                    Ok((t.elapsed(), w.bytes))
                }),
            )
            .with(
                "node access+readFile+writeFile (pi)",
                Box::new(move || {
                    let r = node.borrow_mut().op(
                        json!({"op": "edit", "path": e2, "old": marker(i2), "new": marker(i2 + 1)}),
                    );
                    i2 += 1;
                    r
                }),
            )
            .with(
                "std metadata+read+write",
                Box::new(move || {
                    let t = Instant::now();
                    std::fs::metadata(&e3).map_err(|e| e.to_string())?;
                    let text = std::fs::read_to_string(&e3).map_err(|e| e.to_string())?;
                    let (old, new) = (marker(i3), marker(i3 + 1));
                    if !text.contains(&old) {
                        return Err(format!("{old:?} not in {}", e3.display()));
                    }
                    let out = text.replacen(&old, &new, 1);
                    std::fs::write(&e3, &out).map_err(|e| e.to_string())?;
                    i3 += 1;
                    Ok((t.elapsed(), out.len() as u64))
                }),
            )
            .target(Target::None)
            .counting("bytes"),
        );
    }

    // ls (1): one readdir with types.
    let entries = std::fs::read_dir(tree).map_err(|e| e.to_string())?.count();
    {
        let (serve, node) = (&serve, &node);
        let (d1, d2, d3) = (s(tree), s(tree), tree.to_path_buf());
        ops.push(
            Op::new(
                "ls: readdir",
                format!("the tree's root ({entries} entries), one readdir with types"),
                n,
            )
            .with(
                "cordon serve: readdir",
                Box::new(move || {
                    let t = Instant::now();
                    let r = serve
                        .borrow_mut()
                        .call::<Readdir>(&PathParams { path: d1.clone() })?;
                    Ok((t.elapsed(), r.entries.len() as u64))
                }),
            )
            .with(
                "node readdir withFileTypes",
                Box::new(move || node.borrow_mut().op(json!({"op": "readdir", "path": d2}))),
            )
            .with(
                "std::fs::read_dir + file_type",
                Box::new(move || {
                    let t = Instant::now();
                    let mut v: Vec<(OsString, bool)> = std::fs::read_dir(&d3)
                        .map_err(|e| e.to_string())?
                        .filter_map(|e| {
                            let e = e.ok()?;
                            Some((e.file_name(), e.file_type().ok()?.is_dir()))
                        })
                        .collect();
                    v.sort();
                    Ok((t.elapsed(), v.len() as u64))
                }),
            )
            .target(Target::None)
            .counting("entries"),
        );
    }

    // ls (2): pi's ls as the extension runs it: exists, stat, readdir; the stat of
    // each entry is answered from readdir's types (integrations/pi), so it costs no
    // request. Node's side stats every entry, as pi's local ls does.
    {
        let (serve, node) = (&serve, &node);
        let (d1, d2) = (tree.to_path_buf(), s(tree));
        ops.push(
            Op::new(
                "ls: pi's ls",
                format!(
                    "the tree's root: exists + stat + readdir + a stat per entry (3 requests; {} stats from readdir)",
                    entries.min(LS_LIMIT)
                ),
                ns,
            )
            .with(
                "cordon serve: pi's ls ops",
                Box::new(move || {
                    let t = Instant::now();
                    let mut sv = serve.borrow_mut();
                    let dir = PathParams { path: s(&d1) };
                    sv.call::<Exists>(&dir)?;
                    sv.call::<Stat>(&dir)?;
                    let r = sv.call::<Readdir>(&dir)?;
                    let names: Vec<String> = r.entries.into_iter().map(|e| e.name).collect();
                    Ok((t.elapsed(), names.len() as u64))
                }),
            )
            .with(
                "node: pi's ls (fs/promises)",
                Box::new(move || node.borrow_mut().op(json!({"op": "ls", "path": d2}))),
            )
            .target(Target::None)
            .counting("entries"),
        );
    }

    // find
    for (pattern, fd_glob) in [("**/*.rs", "*.rs"), ("*.toml", "*.toml")] {
        let serve = &serve;
        let t = tree.as_os_str().to_os_string();
        let fd_argv: Vec<OsString> = vec![
            fd.into(),
            "--glob".into(),
            "--color=never".into(),
            "--type".into(),
            "f".into(),
            fd_glob.into(),
            t.clone(),
        ];
        let rg_argv: Vec<OsString> = vec![
            rg.into(),
            "--files".into(),
            "--color=never".into(),
            "-g".into(),
            fd_glob.into(),
            t.clone(),
        ];
        let fd_line = format!("fd --glob --type f '{fd_glob}' TREE");
        let rg_line = format!("rg --files -g '{fd_glob}' TREE");
        let op = Op::new(&format!("find {pattern}"), "the whole tree".into(), ns)
            .with(
                format!("cordon serve: find {pattern}"),
                Box::new(move || {
                    let t = Instant::now();
                    let r = serve.borrow_mut().call::<Find>(&FindParams {
                        pattern: pattern.into(),
                        limit: Some(NO_LIMIT),
                        ..FindParams::default()
                    })?;
                    if r.truncated {
                        return Err("truncated".into());
                    }
                    Ok((t.elapsed(), r.paths.len() as u64))
                }),
            )
            .with(fd_line, Box::new(move || process(&fd_argv)))
            .with(rg_line, Box::new(move || process(&rg_argv)))
            .target(Target::Ratio { peer: 1, max: 1.0 })
            .target(Target::Ratio { peer: 2, max: 1.0 })
            .counting("files");
        ops.push(Op {
            count_note: Some(format!(
                "rg's -g globs are overrides, which also let hidden files through: rg lists hidden\n        files matching '{fd_glob}' (e.g. .rustfmt.toml) that the server (hidden=false) and fd leave out"
            )),
            ..op
        });
    }

    // grep
    for (pattern, literal) in [(r"fn\s+\w+_new", false), ("unsafe impl", true)] {
        let serve = &serve;
        let t = tree.as_os_str().to_os_string();
        let mut argv: Vec<OsString> = vec![rg.into(), "-n".into(), "--color=never".into()];
        if literal {
            argv.push("-F".into());
        }
        argv.extend(["--".into(), pattern.into(), t]);
        let rg_line = format!("rg -n{} '{pattern}' TREE", if literal { " -F" } else { "" });
        let op = Op::new(
            &format!("grep {pattern}"),
            format!(
                "{}, the whole tree, every match",
                if literal { "literal" } else { "regex" }
            ),
            ns,
        )
        .with(
            format!(
                "cordon serve: grep{}",
                if literal { " literal" } else { "" }
            ),
            Box::new(move || {
                let t = Instant::now();
                let r = serve.borrow_mut().call::<Grep>(&GrepParams {
                    pattern: pattern.into(),
                    literal: Some(literal),
                    limit: Some(NO_LIMIT),
                    ..GrepParams::default()
                })?;
                if r.truncated {
                    return Err("truncated".into());
                }
                Ok((t.elapsed(), r.matches.len() as u64))
            }),
        )
        .with(rg_line, Box::new(move || process(&argv)));
        ops.push(
            op.target(Target::Ratio { peer: 1, max: 1.0 })
                .counting("matching lines"),
        );
    }

    // exec
    {
        let serve = &serve;
        let op = Op::new("exec /bin/true", "one command, to its exit".into(), n)
            .with(
                "cordon serve: exec",
                Box::new(move || {
                    let t = Instant::now();
                    let r = serve.borrow_mut().call::<Exec>(&ExecParams {
                        command: "/bin/true".into(),
                        ..ExecParams::default()
                    })?;
                    let t = t.elapsed();
                    if r.exit_code != Some(0) {
                        return Err(format!("exec /bin/true: {r:?}"));
                    }
                    Ok((t, 0))
                }),
            )
            .with(
                "bare spawn of /bin/true",
                Box::new(|| spawn_true(&["/bin/true"])),
            )
            .with(
                "bash -c /bin/true (pi's local bash)",
                Box::new(|| spawn_true(&["/bin/bash", "-c", "/bin/true"])),
            );
        ops.push(op.target(Target::MaxMs(EXEC_TARGET_MS)));
    }

    // Warm-up, then timed rounds. Every op runs its contenders once per round, in
    // turn (reversed every other round); an op with fewer iterations than the run
    // has rounds is spread evenly over it.
    let rounds = ops.iter().map(|o| o.iterations).max().unwrap_or(1);
    eprintln!(
        "bench/tools: {} warm-up and {rounds} timed rounds...",
        options.warmup
    );
    for w in 0..options.warmup {
        for op in &mut ops {
            op.round(w % 2 == 1, false)?;
        }
    }
    // A quiet second before and after: how busy is the machine without us?
    let busy_before = busy_window(Duration::from_secs(1));
    let load_start = loadavg();
    let start = Instant::now();
    for r in 0..rounds {
        for op in &mut ops {
            let k = op.iterations;
            if (r + 1) * k / rounds > r * k / rounds {
                op.round(r % 2 == 1, true)?;
            }
        }
    }
    let wall = start.elapsed();
    let load_end = loadavg();
    let busy_after = busy_window(Duration::from_secs(1));

    // The report.
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bench/tools: pi's tool operations through `cordon serve`, next to local tools"
    );
    let _ = writeln!(o, "command:    {}", invocation("bench/tools"));
    let _ = writeln!(
        o,
        "machine:    {} CPUs, {}, Linux {}; load {load_start} -> {load_end}",
        nproc(),
        cpu_model(),
        kernel_release()
    );
    let _ = writeln!(
        o,
        "busy:       {} of all CPUs in a quiet second before the run, {} after (while this bench slept){}",
        percent(busy_before),
        percent(busy_after),
        if noisy(&[busy_before, busy_after]) {
            "\n            NOISY: something else ran on the machine; the times are inflated"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "tree:       {} — {files} files, {dirs} directories, {:.1} MiB (without hidden entries at its root)",
        tree.display(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    let _ = writeln!(
        o,
        "cordon:     {} serve --workspace TREE (backend {}, layers {})",
        cordon.display(),
        serve.borrow().ready.backend,
        status.layers
    );
    let _ = writeln!(
        o,
        "peers:      node {} (bench/tools.js: fs/promises as pi calls it, timed in-process); {}; {}",
        version(node_bin),
        version(rg),
        version(fd)
    );
    let _ = writeln!(
        o,
        "timing:     cordon = a request's round trip over the pipes (serialise, serve, parse, base64-decode),\n            node and std = the operation in-process, rg/fd/bash = spawn to exit with stdout read;\n            {n} rounds of read/write/edit/readdir/exec, {ns} of find/grep/pi's ls, interleaved; wall {:.1} s",
        wall.as_secs_f64()
    );

    let mut summary = Vec::new();
    let mut missed = false;
    for op in &ops {
        let _ = writeln!(o, "\n{}: {}", op.name, op.detail);
        let _ = writeln!(
            o,
            "  {:<40} {:>5} {:>10} {:>10} {:>10} {:>11} {:>10}",
            "contender", "n", "min ms", "median ms", "p90 ms", "cordon/this", "count"
        );
        let st: Vec<Stats> = op
            .contenders
            .iter()
            .map(|c| Stats::of(&c.samples))
            .collect();
        for (c, s) in op.contenders.iter().zip(&st) {
            let ratio = st[0].median / s.median;
            let _ = writeln!(
                o,
                "  {:<40} {:>5} {:>10.3} {:>10.3} {:>10.3} {:>11} {:>10}",
                c.name,
                c.samples.len(),
                s.min,
                s.median,
                s.p90,
                format!("{ratio:.2}x"),
                c.count.map_or("".into(), |n| n.to_string())
            );
        }
        if let Some(label) = op.count_label {
            let counts: Vec<Option<u64>> = op.contenders.iter().map(|c| c.count).collect();
            if counts.iter().any(|c| *c != counts[0]) {
                let _ = writeln!(
                    o,
                    "  note: the {label} differ between contenders (see the count column){}",
                    op.count_note
                        .as_deref()
                        .map_or(String::new(), |n| format!(":\n        {n}"))
                );
            }
        }
        for t in &op.targets {
            let (peer, target, pass, ratio) = match *t {
                Target::MaxMs(ms) => (
                    format!("{} {:.3}", short(&op.contenders[1].name), st[1].median),
                    format!("<= {ms} ms"),
                    Some(st[0].median <= ms),
                    format!("{:.2}x", st[0].median / st[1].median),
                ),
                Target::Ratio { peer, max } => {
                    let r = st[0].median / st[peer].median;
                    (
                        format!(
                            "{} {:.3}",
                            short(&op.contenders[peer].name),
                            st[peer].median
                        ),
                        format!("<= {max}x"),
                        Some(r <= max),
                        format!("{r:.2}x"),
                    )
                }
                Target::None => {
                    let r = st[0].median / st[1].median;
                    (
                        format!("{} {:.3}", short(&op.contenders[1].name), st[1].median),
                        "(none)".into(),
                        None,
                        format!("{r:.2}x"),
                    )
                }
            };
            missed |= pass == Some(false);
            summary.push((
                op.name.clone(),
                st[0].median,
                st[0].p90,
                peer,
                ratio,
                target,
                pass,
            ));
        }
    }

    let _ = writeln!(o, "\nsummary (medians, ms; ratio = cordon / peer):");
    let _ = writeln!(
        o,
        "  {:<22} {:>9} {:>9}  {:<28} {:>8}  {:<10} result",
        "op", "cordon", "p90", "peer", "ratio", "target"
    );
    for (name, median, p90, peer, ratio, target, pass) in summary {
        let _ = writeln!(
            o,
            "  {:<22} {:>9.3} {:>9.3}  {:<28} {:>8}  {:<10} {}",
            name,
            median,
            p90,
            peer,
            ratio,
            target,
            pass.map_or("-", verdict)
        );
    }
    Ok((o, missed))
}

/// A contender's name, short enough for the summary.
fn short(name: &str) -> String {
    let first = name.split([' ', ':']).next().unwrap_or(name);
    match first {
        "bare" => "bare spawn".into(),
        "rg" if name.contains("--files") => "rg --files".into(),
        _ => first.into(),
    }
}
