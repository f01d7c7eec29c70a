//! Starting the sandboxed command from the supervisor: `clone(CLONE_VM |
//! CLONE_VFORK)` on a stack of its own, as posix_spawn does, so nothing is copied
//! and the supervisor waits only until exec. The command inherits the supervisor's
//! confinement (capabilities, Landlock, seccomp); in the child, between clone and
//! exec: terminal, signals, limits, working directory, then exec.
//!
//! The child shares the supervisor's memory, so everything it needs is built
//! beforehand ([`Spawn::new`]) and the success path makes raw system calls only:
//! no allocation, no locks. Failure paths format a message and exit.

use crate::launch::Prepared;
use crate::report::report_and_exit;
use crate::signals;
use crate::terminal::Pty;
use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;

/// Stack of the command's process until it execs.
const CHILD_STACK: usize = 256 * 1024;

pub(crate) struct Spawn<'a> {
    prepared: &'a Prepared,
    pty: Option<&'a Pty>,
    report: BorrowedFd<'a>,
    /// Paths to try, in order: the program itself if it has a slash, else PATH's.
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl<'a> Spawn<'a> {
    pub fn new(prepared: &'a Prepared, pty: Option<&'a Pty>, report: BorrowedFd<'a>) -> Spawn<'a> {
        let program = prepared.argv[0].as_bytes();
        let candidates = if program.contains(&b'/') {
            vec![prepared.argv[0].clone()]
        } else {
            prepared
                .path_dirs
                .iter()
                .filter_map(|dir| CString::new([dir.as_slice(), b"/", program].concat()).ok())
                .collect()
        };
        Spawn {
            prepared,
            pty,
            report,
            candidates,
            argv: cordon_spawn::pointers(&prepared.argv),
            envp: cordon_spawn::pointers(&prepared.envp),
        }
    }

    /// Starts the command; returns its pid once it has exec'd (or failed).
    pub fn start(&self) -> io::Result<libc::pid_t> {
        // On the heap: only the pages the child touches are faulted in, where a
        // frame this large would be probed page by page.
        let mut stack = vec![MaybeUninit::uninit(); CHILD_STACK];
        // SAFETY: `child_main` makes raw system calls only until exec, except on
        // failure paths, which run while this single-threaded supervisor is
        // suspended; `self` outlives the child's use of it.
        unsafe {
            cordon_spawn::clone_vfork(
                &mut stack,
                child_main,
                self as *const Spawn as *mut libc::c_void,
            )
        }
    }
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Spawn` borrowed by `start`, which is suspended
    // (CLONE_VFORK) until this process execs or exits.
    let spawn = unsafe { &*(arg as *const Spawn) };
    exec(spawn)
}

/// Allocating here is sound: the supervisor is single-threaded and suspended until
/// this process exits, so nothing else touches the shared heap meanwhile.
fn fail(spawn: &Spawn, what: &str, error: io::Error) -> ! {
    report_and_exit(spawn.report, 125, &format!("{what}: {error}"))
}

fn exec(spawn: &Spawn) -> ! {
    let prepared = spawn.prepared;
    if let Some(pty) = spawn.pty {
        if let Err(e) = pty.attach_slave() {
            fail(spawn, "cannot attach the terminal", e);
        }
    }
    signals::reset_for_exec();
    if let Err(e) = crate::limits::apply_rlimits(&prepared.rlimits) {
        report_and_exit(
            spawn.report,
            125,
            &format!("cannot apply resource limits: {e}"),
        );
    }
    if let Err(e) = rustix::process::chdir(prepared.cwd.as_c_str()) {
        let what = format!(
            "cannot enter {} inside the sandbox",
            prepared.cwd.to_string_lossy()
        );
        fail(spawn, &what, e.into());
    }
    // Close every inherited descriptor but stdio at exec: a stray fd to a host
    // directory would reach around the view.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing now; it only
    // marks descriptors close-on-exec, so no descriptor this process (or the
    // supervisor sharing its memory) still uses is invalidated before exec. It
    // takes no pointers. (rustix has no close_range.)
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // Except those the caller hands to the command on purpose.
    for fd in &prepared.pass_fds {
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty());
    }
    let (status, message) = exec_search(spawn);
    report_and_exit(spawn.report, status, &message)
}

/// execvpe over the prebuilt candidates. Returns only on failure: 126 when a
/// candidate exists but cannot be executed, 127 when none exists.
fn exec_search(spawn: &Spawn) -> (u8, String) {
    if let Some(fd) = &spawn.prepared.exec_fd {
        // SAFETY: execveat reads a NUL-terminated empty path (a literal) and the
        // NULL-terminated argv and envp arrays, built before the clone, whose
        // strings `prepared` owns and keeps alive while this child runs (the
        // supervisor is suspended until exec); `fd` is a descriptor the
        // supervisor holds. On success nothing of this process remains; on
        // failure it returns having written nothing. (rustix offers execveat
        // only behind its unstable runtime feature.)
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd.as_raw_fd(),
                c"".as_ptr(),
                spawn.argv.as_ptr(),
                spawn.envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        return (
            126,
            format!(
                "{}: cannot execute: {}",
                shown(spawn),
                io::Error::last_os_error()
            ),
        );
    }
    let mut denied = None;
    for candidate in &spawn.candidates {
        // SAFETY: as for execveat above: a NUL-terminated path and NULL-terminated
        // arrays of NUL-terminated strings, all alive until exec or return.
        unsafe { libc::execve(candidate.as_ptr(), spawn.argv.as_ptr(), spawn.envp.as_ptr()) };
        match crate::sys::errno() {
            libc::ENOENT | libc::ENOTDIR => continue,
            libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR => {
                denied.get_or_insert(io::Error::last_os_error());
            }
            _ => {
                return (
                    126,
                    format!("{}: {}", shown(spawn), io::Error::last_os_error()),
                );
            }
        }
    }
    match denied {
        Some(e) => (126, format!("{}: cannot execute: {e}", shown(spawn))),
        None => (
            127,
            format!("{}: command not found inside the sandbox", shown(spawn)),
        ),
    }
}

fn shown(spawn: &Spawn) -> String {
    spawn.prepared.argv[0].to_string_lossy().into_owned()
}
