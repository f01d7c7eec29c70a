//! Pseudo-terminals a test opens, to run a program on a terminal and read what
//! it shows.

use crate::process::describe;
use crate::users::{User, running_as_root};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pseudo-terminal opened by the test: the master stays with the test, the slave
/// becomes a child's controlling terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// Everything read from the master so far.
    pub seen: Vec<u8>,
}

impl Pty {
    pub fn open(rows: u16, cols: u16) -> Pty {
        let mut master: RawFd = -1;
        let mut slave: RawFd = -1;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the live locals and reads the
        // window size from one; the NULL name and termios ask it for nothing else.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both are open descriptors that nothing
        // else owns: each is owned here once.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let cloexec = rustix::io::FdFlags::CLOEXEC;
        rustix::io::fcntl_setfd(&master, cloexec).expect("FD_CLOEXEC on the pty master");
        rustix::io::fcntl_setfd(&slave, cloexec).expect("FD_CLOEXEC on the pty slave");
        Pty {
            master,
            slave,
            seen: Vec::new(),
        }
    }

    /// Gives the slave to `user` (as a login would), so the user's programs may use it.
    pub fn give_to(&self, user: &User) {
        if running_as_root() {
            let _ = rustix::fs::fchown(
                &self.slave,
                Some(rustix::process::Uid::from_raw(user.uid)),
                Some(rustix::process::Gid::from_raw(user.gid)),
            );
        }
    }

    /// Makes `cmd` run on the slave: stdin/stdout/stderr, a new session, and the slave
    /// as its controlling terminal.
    pub fn attach(&self, cmd: &mut Command) {
        let stdio = || Stdio::from(self.slave.try_clone().expect("dup the pty slave"));
        cmd.stdin(stdio()).stdout(stdio()).stderr(stdio());
        // SAFETY: the closure runs in the forked child before exec and makes two
        // system calls only: no allocation, no lock another thread could hold.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                Ok(())
            });
        }
    }

    pub fn send(&self, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            let n = rustix::io::write(&self.master, &bytes[off..]).expect("write to pty master");
            assert!(n > 0, "write to pty master: nothing written");
            off += n;
        }
    }

    /// Reads what is available within `wait` (at least one poll).
    /// Returns false when the master reports end of file (every slave closed).
    pub fn pump(&mut self, wait: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut pfd = [PollFd::new(&self.master, PollFlags::IN)];
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        if !matches!(rustix::event::poll(&mut pfd, Some(&timeout)), Ok(n) if n > 0) {
            return true;
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(n) if n > 0 => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads until `needle` appears in the output after byte offset `from`; returns
    /// the offset just past it. Panics (with the transcript) after `timeout`.
    pub fn expect_from(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = find(&self.seen[from.min(self.seen.len())..], needle.as_bytes()) {
                return from + i + needle.len();
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                panic!(
                    "terminal: {needle:?} did not appear within {timeout:?}; transcript after offset {from}:\n{}",
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
                );
            }
            if !self.pump(left.min(Duration::from_millis(100))) {
                panic!(
                    "terminal closed before {needle:?} appeared; transcript:\n{}",
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
                );
            }
        }
    }

    /// Reads until the end of the output is `needle` (a prompt waiting for input).
    pub fn expect_end(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let tail = &self.seen[from.min(self.seen.len())..];
            if tail.ends_with(needle.as_bytes()) {
                return self.seen.len();
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                panic!(
                    "terminal: output did not end with {needle:?} within {timeout:?}; transcript:\n{}",
                    String::from_utf8_lossy(tail)
                );
            }
            if !self.pump(left.min(Duration::from_millis(100))) {
                panic!(
                    "terminal closed before {needle:?}; transcript:\n{}",
                    String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..])
                );
            }
        }
    }

    /// Drains output until the master reports end of file or `timeout` passes.
    pub fn drain(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if !self.pump(Duration::from_millis(50)) {
                return;
            }
        }
    }

    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

/// A program on a 24x80 pseudo-terminal of the test's (an interactive shell, say),
/// read as a transcript that expectations consume in order. Killed when dropped
/// if it still runs.
pub struct Terminal {
    pub pty: Pty,
    pub child: Child,
    /// Transcript offset already consumed by expectations.
    pub pos: usize,
    /// What the program shows when it waits for a line.
    prompt: &'static str,
    /// How long an expectation may wait.
    wait: Duration,
}

impl Terminal {
    /// Starts `cmd` on the terminal as `user`, and waits for its first `prompt`.
    pub fn start(mut cmd: Command, user: &User, prompt: &'static str, wait: Duration) -> Terminal {
        let pty = Pty::open(24, 80);
        pty.give_to(user);
        pty.attach(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&cmd)));
        let mut term = Terminal {
            pty,
            child,
            pos: 0,
            prompt,
            wait,
        };
        term.prompt();
        term
    }

    /// Waits for the prompt at the end of the output.
    pub fn prompt(&mut self) {
        self.pos = self.pty.expect_end(self.pos, self.prompt, self.wait);
    }

    /// Waits for `needle` after what earlier expectations consumed.
    pub fn expect(&mut self, needle: &str) {
        self.pos = self.pty.expect_from(self.pos, needle, self.wait);
    }

    /// Types `text` and Enter.
    pub fn line(&mut self, text: &str) {
        self.pty.send(format!("{text}\r").as_bytes());
    }

    pub fn transcript(&self) -> String {
        self.pty.transcript()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes waiting in a terminal's input queue (FIONREAD on the slave).
pub fn tty_input_pending(fd: &OwnedFd) -> i32 {
    rustix::io::ioctl_fionread(fd).expect("FIONREAD") as i32
}
