//! The effects a test asserts on the host: files and directories as they were,
//! secrets that never reached the output, processes that are gone; and the
//! clean-up that runs even when an assertion fails.

use crate::process::Output;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Asserts that `marker` (a secret's bytes) appears nowhere in what the sandbox printed.
pub fn assert_absent(out: &Output, marker: &str) {
    let found = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker.as_bytes());
    assert!(
        !found(&out.stdout) && !found(&out.stderr),
        "secret marker {marker:?} leaked into the sandbox's output\n{out}"
    );
}

/// What a path looks like on the host, to compare before and after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    pub exists: bool,
    pub kind: &'static str,
    pub mode: u32,
    pub ino: u64,
    pub mtime: (i64, i64),
    /// File content, directory entry names (sorted), or symlink target.
    pub content: Vec<u8>,
}

pub fn snapshot(path: &Path) -> Snapshot {
    match fs::symlink_metadata(path) {
        Err(_) => Snapshot {
            path: path.into(),
            exists: false,
            kind: "absent",
            mode: 0,
            ino: 0,
            mtime: (0, 0),
            content: Vec::new(),
        },
        Ok(m) => {
            let (kind, content) = if m.file_type().is_symlink() {
                (
                    "symlink",
                    fs::read_link(path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if m.is_dir() {
                let mut names: Vec<String> = fs::read_dir(path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                ("dir", names.join("\n").into_bytes())
            } else if m.is_file() {
                ("file", fs::read(path).unwrap_or_default())
            } else {
                ("other", Vec::new())
            };
            Snapshot {
                path: path.into(),
                exists: true,
                kind,
                mode: m.mode(),
                ino: m.ino(),
                mtime: (m.mtime(), m.mtime_nsec()),
                content,
            }
        }
    }
}

/// Snapshots of several paths, for [`assert_all_unchanged`].
pub fn snapshots<P: AsRef<Path>>(paths: &[P]) -> Vec<Snapshot> {
    paths.iter().map(|p| snapshot(p.as_ref())).collect()
}

/// Asserts that every path of `before` is on the host exactly as it was.
pub fn assert_all_unchanged(before: &[Snapshot]) {
    for b in before {
        assert_unchanged(&b.path, b);
    }
}

/// Asserts that `path` on the host is exactly as it was in `before`.
pub fn assert_unchanged(path: &Path, before: &Snapshot) {
    let now = snapshot(path);
    assert!(
        now == *before,
        "{} changed on the host:\nbefore: {} {:?} mode {:o} mtime {:?}\n{}\nafter:  {} {:?} mode {:o} mtime {:?}\n{}",
        path.display(),
        before.kind,
        before.ino,
        before.mode,
        before.mtime,
        String::from_utf8_lossy(&before.content),
        now.kind,
        now.ino,
        now.mode,
        now.mtime,
        String::from_utf8_lossy(&now.content)
    );
}

pub fn assert_not_exists(path: &Path) {
    assert!(
        fs::symlink_metadata(path).is_err(),
        "{} exists on the host but must not",
        path.display()
    );
}

/// The argv of process `pid` (empty for kernel threads and zombies).
pub fn argv_of(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Host processes whose argv contains `word` as one whole argument.
pub fn procs_with_arg(word: &str) -> Vec<(u32, Vec<String>)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let argv = argv_of(pid);
        if argv.iter().any(|a| a == word) {
            found.push((pid, argv));
        }
    }
    found
}

/// Polls until no host process has `word` as an argument, at most `within`.
/// Returns the survivors (empty when all are gone).
pub fn wait_gone(word: &str, within: Duration) -> Vec<(u32, Vec<String>)> {
    let start = Instant::now();
    loop {
        let left = procs_with_arg(word);
        if left.is_empty() || start.elapsed() > within {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until a host process has `word` as an argument, at most `within`.
pub fn wait_present(word: &str, within: Duration) -> Vec<(u32, Vec<String>)> {
    let start = Instant::now();
    loop {
        let found = procs_with_arg(word);
        if !found.is_empty() || start.elapsed() > within {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills leftover processes (after a test found some), so one failure does not
/// leak into other tests.
pub fn kill_all(procs: &[(u32, Vec<String>)]) {
    for (pid, _) in procs {
        if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The host process state letter of `pid` (R, S, T, t, Z ...), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Runs a closure when dropped, also when the test panics: host clean-up that must
/// happen even after a failed assertion (files an escape may have made, mounts,
/// kernel settings to put back).
pub struct Defer<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
