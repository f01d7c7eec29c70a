//! Running processes with a deadline: a hung test is a failing test, and output
//! pipes that stay open after the process exited mean something outlived it.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// PATH given to cordon (and so to the sandbox): system directories only, so that
/// every user finds the same python3, git and node.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The longest any single cordon run may take before the test fails as hung.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// What a finished process produced.
pub struct Output {
    /// What was run, for messages.
    pub what: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr_str())
    }

    /// The exit status; panics if the process died of a signal.
    pub fn status(&self) -> i32 {
        match self.code {
            Some(c) => c,
            None => panic!("{self}\nprocess died of signal {:?}", self.signal),
        }
    }

    pub fn assert_status(&self, expected: i32) -> &Self {
        assert_eq!(self.code, Some(expected), "unexpected exit status\n{self}");
        self
    }

    pub fn assert_success(&self) -> &Self {
        self.assert_status(0)
    }

    pub fn assert_failure(&self) -> &Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a failure exit status\n{self}"
        );
        self
    }

    /// Asserts that stdout contains `needle`.
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout_str().contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr_str().contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }

    /// Asserts that `needle` appears in neither stdout nor stderr.
    pub fn assert_not_printed(&self, needle: &str) -> &Self {
        assert!(
            !self.all().contains(needle),
            "{needle:?} was printed\n{self}"
        );
        self
    }
}

fn clip(bytes: &[u8]) -> String {
    const MAX: usize = 6000;
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= MAX {
        s.into_owned()
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… [{} bytes in all]", &s[..cut], bytes.len())
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- {}", self.what)?;
        writeln!(
            f,
            "--- exit code {:?}, signal {:?}, {:?}",
            self.code, self.signal, self.elapsed
        )?;
        writeln!(f, "--- stdout:\n{}", clip(&self.stdout))?;
        write!(f, "--- stderr:\n{}", clip(&self.stderr))
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A readable description of a command.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&format!("{:?}", a.to_string_lossy()));
    }
    s
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// The backend the suites run against: `$CORDON_TEST_BACKEND` where it is
/// set; else `vm` in the VM rerun (the test binary `vm_suite`, which holds the
/// attack and functional suites again), else `os`.
/// Decided once per test process (every cordon run and deadline asks).
pub fn test_backend() -> &'static str {
    static BACKEND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| {
        if let Ok(named) = std::env::var("CORDON_TEST_BACKEND") {
            return named;
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let binary = exe.file_name().unwrap_or_default().to_string_lossy();
        // cargo names a test binary `<target>-<hash>`.
        if binary.starts_with("vm_suite-") || binary == "vm_suite" {
            "vm".into()
        } else {
            "os".into()
        }
    })
}

/// Whether the suites run against the VM backend ([`test_backend`]), whose
/// sandbox's processes are the guest's, not the host's.
pub fn in_vm() -> bool {
    test_backend() == "vm"
}

/// How many times longer a command may take under the backend the suites run
/// against (`$CORDON_TEST_BACKEND`): a VM guest under TCG (emulated CPU) starts a
/// process 20-100 times slower than the host does, and a test script that starts a
/// hundred (`cat` of each secret) takes tens of seconds there, not a hang.
pub fn backend_slowdown() -> u32 {
    if in_vm() { 5 } else { 1 }
}

/// Waits for `child` at most `deadline` (times [`backend_slowdown`]); kills it
/// (SIGKILL) and panics after that.
pub fn wait_deadline(
    child: &mut Child,
    deadline: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = deadline * backend_slowdown();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hung: {what} did not finish within {deadline:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `cmd` with stdin, stdout and stderr on /dev/null: a process the test
/// watches from outside rather than reads.
pub fn spawn_quiet(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&cmd)))
}

/// Runs `cmd` with `stdin` as its input, collecting stdout and stderr, with a deadline.
/// Once the process has exited, its output pipes must close promptly: a pipe held
/// open means a process outlived it, and fails the test.
pub fn run_cmd(mut cmd: Command, stdin: Option<Vec<u8>>, deadline: Duration) -> Output {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let out_rx = spawn_reader(child.stdout.take().unwrap());
    let err_rx = spawn_reader(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, deadline, &what);
    let elapsed = start.elapsed();
    let grace = Duration::from_secs(10);
    let stdout = out_rx.recv_timeout(grace).unwrap_or_else(|_| {
        panic!("{what}: exited, but its stdout stayed open for {grace:?}: a process outlived it")
    });
    let stderr = err_rx.recv_timeout(grace).unwrap_or_else(|_| {
        panic!("{what}: exited, but its stderr stayed open for {grace:?}: a process outlived it")
    });
    Output {
        what,
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        elapsed,
    }
}
