//! PID 1 of the sandbox. It finishes the sandbox from inside (identity maps, the
//! view, hostname, loopback), confines itself, starts the command, then reaps,
//! forwards signals and, for `shell`, relays the terminal. When the command ends,
//! it kills and reaps everything else left in the sandbox, reports the command's
//! status to the launcher, and exits.

use crate::command::Spawn;
use crate::confine::{caps, landlock};
use crate::launch::{Prepared, Terminal};
use crate::netns::NetworkMaker;
use crate::report::{report_and_exit, report_exit, report_stop};
use crate::signals::{self, SignalFd, forwardable};
use crate::terminal::{self, Pty};
use crate::waiter::decode_status;
use crate::{sys, view};
use cordon_policy::NetMode;
use rustix::process::{DumpableBehavior, Signal, WaitOptions};
use rustix::stdio::{stdin, stdout};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub(crate) fn main(prepared: &Prepared, report: OwnedFd, go: OwnedFd) -> ! {
    match run(prepared, report.as_fd(), go) {
        Ok(status) => exit(status),
        Err(e) => report_and_exit(report.as_fd(), 125, &e.to_string()),
    }
}

fn run(
    prepared: &Prepared,
    report: BorrowedFd<'_>,
    go: OwnedFd,
) -> Result<i32, crate::SandboxError> {
    // Die with the launcher; if it died before this, `go` reads end-of-file below.
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let network = match prepared.net {
        NetMode::None | NetMode::Allowlist => {
            Some(NetworkMaker::start(prepared.egress.as_ref()).map_err(|e| {
                crate::SandboxError::io("cannot start making the network namespace", e)
            })?)
        }
        NetMode::Host => None,
    };
    let mut go = GoAhead::new(go);
    finish_sandbox(prepared, &mut go)?;
    if let Some(network) = network {
        network.join().map_err(|e| {
            crate::SandboxError::io("cannot make the sandbox's network namespace", e)
        })?;
    }
    let ruleset = if prepared.landlock {
        Some(landlock::build(
            &prepared.writable,
            crate::view::writable_dev(&prepared.view),
            prepared.exec_fd.as_ref().map(|fd| fd.as_fd()),
            &prepared.pass_fds,
        )?)
    } else {
        None
    };
    let pty = match prepared.terminal {
        Terminal::Pty => {
            let mut pty = Pty::open()
                .map_err(|e| crate::SandboxError::io("cannot open a pseudo-terminal", e))?;
            pty.lead_session().map_err(|e| {
                crate::SandboxError::io("cannot make the pseudo-terminal's session", e)
            })?;
            Some(pty)
        }
        Terminal::Inherit => None,
    };
    let signals =
        SignalFd::block_forwardable().map_err(|e| crate::SandboxError::io("signals", e))?;
    go.wait();
    // Before seccomp, which then refuses the sandbox any change of it.
    if let Some(cpus) = prepared.affinity {
        crate::limits::restrict_affinity(cpus)
            .map_err(|e| crate::SandboxError::Affinity(e.into()))?;
    }
    confine_self(prepared, ruleset)?;
    let command_pid = Spawn::new(prepared, pty.as_ref(), report)
        .start()
        .map_err(|e| crate::SandboxError::io("cannot start the command", e))?;
    // Done here, while the command runs, rather than on the way to starting it.
    set_process_title(b"cordon-supervisor");
    let status = supervise(command_pid, &signals, pty.as_ref(), report)
        .map_err(|e| crate::SandboxError::io("supervising", e))?;
    empty_the_sandbox();
    report_exit(report, status.clamp(0, 255) as u8);
    Ok(status)
}

/// Ends this process at once with `status`.
fn exit(status: i32) -> ! {
    // SAFETY: _exit(2) takes no pointers and does not return. It is chosen over
    // `std::process::exit` on purpose: this process was forked from the
    // launcher, whose atexit handlers and unflushed stdio buffers it must not
    // run or write a second time. (rustix has no stable exit call.)
    unsafe { libc::_exit(status) }
}

/// The sandbox's own setup, done from inside its namespaces.
fn finish_sandbox(prepared: &Prepared, go: &mut GoAhead) -> Result<(), crate::SandboxError> {
    map_identity(prepared)
        .map_err(|e| crate::SandboxError::io("cannot map the user into the sandbox", e))?;
    view::build::enter(&prepared.view, &mut || go.wait())?;
    if let Some(excludes) = &prepared.git_excludes {
        excludes.write();
    }
    let _ = rustix::system::sethostname(b"cordon");
    // Not dumpable: the command and its children (same uid) cannot ptrace this
    // process or read its memory.
    let _ = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable);
    Ok(())
}

/// Replaces this process's command line (a copy of the launcher's, shown in
/// /proc/PID/cmdline) with `title`: the command's arguments are the command's
/// business, and this process may be seen exiting just after cordon returned.
fn set_process_title(title: &[u8]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return;
    };
    let fields: Vec<&str> = after_name.split(' ').collect();
    // arg_start and arg_end are fields 48 and 49 of the whole line.
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(45).map(|f| f.parse::<usize>()),
        fields.get(46).map(|f| f.parse::<usize>()),
    ) else {
        return;
    };
    if end <= start {
        return;
    }
    // SAFETY: [start, end) is this process's own argument area, mapped and writable
    // (the top of the initial stack); nothing reads it after Rust's startup copied it.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    area.fill(0);
    let n = title.len().min(area.len() - 1);
    area[..n].copy_from_slice(&title[..n]);
}

/// Kills and reaps every process left in the sandbox but this one, daemons
/// included, so the launcher may return as soon as it has the status.
fn empty_the_sandbox() {
    loop {
        // As PID 1, kill(-1) reaches every other process of the namespace.
        // SAFETY: kill(2) takes no pointers and this process installed no signal
        // handlers that could run; it is called through libc because rustix's
        // kill takes a positive pid or group, not -1 ("every process").
        unsafe { libc::kill(-1, libc::SIGKILL) };
        match rustix::process::wait(WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) | Ok(None) => return, // ECHILD: nobody left
            Ok(Some(_)) => {}
        }
    }
}

/// Applies the confinement layers to the supervisor itself, which needs none of
/// its powers once the sandbox is built; the command inherits them all (a
/// process started by clone keeps its parent's seccomp filters, Landlock domain,
/// capabilities and no_new_privs).
fn confine_self(prepared: &Prepared, ruleset: Option<OwnedFd>) -> Result<(), crate::SandboxError> {
    caps::drop_all().map_err(|e| crate::SandboxError::io("cannot drop capabilities", e))?;
    if let Some(ruleset) = ruleset {
        landlock::restrict_self(ruleset.as_fd()).map_err(crate::SandboxError::LandlockRestrict)?;
    }
    prepared
        .seccomp
        .install()
        .map_err(|e| crate::SandboxError::io("cannot install the seccomp filter", e))
}

/// The launcher's go-ahead: the placeholders exist and the sandbox's cgroup is
/// ready. Waited for once; if the launcher is gone, the supervisor exits.
struct GoAhead {
    fd: OwnedFd,
    received: bool,
}

impl GoAhead {
    fn new(fd: OwnedFd) -> GoAhead {
        GoAhead {
            fd,
            received: false,
        }
    }

    fn wait(&mut self) {
        let mut byte = [0u8; 1];
        while !self.received {
            match rustix::io::read(&self.fd, &mut byte) {
                Ok(1) => self.received = true,
                Err(rustix::io::Errno::INTR) => continue,
                _ => exit(125),
            }
        }
    }
}

/// Maps the invoking user and group to themselves, so files made in the workspace
/// belong to the invoking user on the host.
fn map_identity(prepared: &Prepared) -> io::Result<()> {
    sys::write_file(c"/proc/self/setgroups", b"deny")?;
    sys::write_file(c"/proc/self/uid_map", prepared.uid_map.as_bytes())?;
    sys::write_file(c"/proc/self/gid_map", prepared.gid_map.as_bytes())
}

/// Reaps every child (PID 1 inherits orphans), forwards signals the launcher
/// passes on, relays the terminal; returns the command's status once it ends.
///
/// With a pty, a stop of the command is reported to the launcher, and the relay
/// pauses until the launcher continues the sandbox (SIGCONT): meanwhile the host
/// shell owns the terminal, and its input is not the sandbox's.
fn supervise(
    command: libc::pid_t,
    signals: &SignalFd,
    pty: Option<&Pty>,
    report: BorrowedFd<'_>,
) -> io::Result<i32> {
    if let Some(pty) = pty {
        pty.copy_window_size();
        terminal::make_raw(stdin());
    }
    let mut stdin_open = pty.is_some();
    let mut stopped = false;
    loop {
        // The signalfd, then with a pty (not stopped) its master and cordon's own
        // terminal. (Without a pty only the first is polled; the second slot
        // holds the signalfd again, unused.)
        let master = pty.map_or(signals.as_fd(), |p| p.master.as_fd());
        let mut fds = [
            sys::readable(signals.as_fd()),
            sys::readable(master),
            sys::readable(stdin()),
        ];
        let count = match pty {
            None => 1,
            Some(_) if stopped => 1,
            Some(_) if stdin_open => 3,
            Some(_) => 2,
        };
        sys::poll(&mut fds[..count], -1)?;
        if let Some(pty) = pty.filter(|_| count > 1) {
            if sys::ready(&fds[1]) {
                terminal::pump(pty.master.as_fd(), stdout());
            }
            if count > 2 && sys::ready(&fds[2]) {
                stdin_open = terminal::pump(stdin(), pty.master.as_fd());
                if !stdin_open {
                    // cordon's terminal is gone: hang up the sandbox's session, as a
                    // terminal emulator does when its window closes.
                    signals::send(-command, libc::SIGHUP);
                }
            }
        }
        while let Some(info) = signals.read()? {
            match info.signo {
                libc::SIGCHLD => {}
                libc::SIGWINCH => {
                    if let Some(pty) = pty {
                        pty.copy_window_size();
                    }
                }
                // The launcher was continued: so is the command's group, with the
                // relay.
                libc::SIGCONT => {
                    if let Some(pty) = pty {
                        pty.copy_window_size();
                        stopped = false;
                        signals::send(-command, libc::SIGCONT);
                    }
                }
                // With a pty the command leads a process group that no terminal
                // signal of cordon's reaches: pass every signal to that group.
                signo if pty.is_some() => signals::send(-command, signo),
                signo if forwardable(&info) => signals::send(command, signo),
                _ => {}
            }
        }
        match reap_all(command, pty.is_some()) {
            Reaped::Exited(status) => {
                if let Some(pty) = pty {
                    terminal::drain_ready(pty.master.as_fd());
                }
                return Ok(status);
            }
            Reaped::Stopped if !stopped => {
                // What the command wrote before it stopped (restoring the
                // terminal's screen) reaches the terminal before the launcher
                // hands it back to the shell.
                if let Some(pty) = pty {
                    terminal::drain_ready(pty.master.as_fd());
                }
                stopped = true;
                report_stop(report);
            }
            _ => {}
        }
    }
}

enum Reaped {
    Running,
    Stopped,
    Exited(i32),
}

/// Reaps every exited child; says whether the command was among them, or (when
/// `job_control`) whether it has stopped.
fn reap_all(command: libc::pid_t, job_control: bool) -> Reaped {
    let mut result = Reaped::Running;
    let flags = if job_control {
        WaitOptions::NOHANG | WaitOptions::UNTRACED
    } else {
        WaitOptions::NOHANG
    };
    loop {
        let Ok(Some((pid, status))) = rustix::process::wait(flags) else {
            return result;
        };
        if pid.as_raw_pid() == command {
            if status.stopped() {
                if !matches!(result, Reaped::Exited(_)) {
                    result = Reaped::Stopped;
                }
            } else {
                result = Reaped::Exited(decode_status(status));
            }
        }
    }
}
