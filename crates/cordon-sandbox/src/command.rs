//! The last steps of the sandboxed command's process, between the supervisor's
//! fork and exec: terminal, signals, limits, working directory, then the
//! confinement layers (capabilities, Landlock, seccomp), then exec.

use crate::confine::caps;
use crate::launch::Prepared;
use crate::report::report_and_exit;
use crate::signals;
use crate::terminal::Pty;
use landlock::RulesetCreated;
use std::ffi::CString;
use std::os::fd::BorrowedFd;

pub(crate) fn exec(
    prepared: &Prepared,
    ruleset: Option<RulesetCreated>,
    pty: Option<&Pty>,
    report: BorrowedFd<'_>,
) -> ! {
    let fail = |what: &str, e: std::io::Error| -> ! {
        report_and_exit(report, 125, &format!("{what}: {e}"))
    };
    if let Some(pty) = pty {
        pty.attach_slave()
            .unwrap_or_else(|e| fail("cannot attach the terminal", e));
    }
    signals::reset_for_exec();
    if let Err(e) = crate::limits::apply_rlimits(&prepared.limits) {
        report_and_exit(report, 125, &format!("cannot apply resource limits: {e}"));
    }
    if unsafe { libc::chdir(prepared.cwd.as_ptr()) } == -1 {
        fail(
            &format!(
                "cannot enter {} inside the sandbox",
                prepared.cwd.to_string_lossy()
            ),
            std::io::Error::last_os_error(),
        );
    }
    caps::drop_all().unwrap_or_else(|e| fail("cannot drop capabilities", e));
    if let Some(ruleset) = ruleset {
        if let Err(e) = ruleset.restrict_self() {
            report_and_exit(report, 125, &format!("cannot enforce Landlock: {e}"));
        }
    }
    prepared
        .seccomp
        .install()
        .unwrap_or_else(|e| fail("cannot install the seccomp filter", e));
    // Close every inherited descriptor but stdio at exec: a stray fd to a host
    // directory would reach around the view.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let (status, message) = exec_search(prepared);
    report_and_exit(report, status, &message)
}

/// execvpe: the program as a path if it has a slash, else searched in the
/// sandbox's PATH. Returns only on failure: 126 not executable, 127 not found.
fn exec_search(prepared: &Prepared) -> (u8, String) {
    let program = prepared.argv[0].as_bytes();
    let shown = String::from_utf8_lossy(program).into_owned();
    let mut argv: Vec<*const libc::c_char> = prepared.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prepared.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let candidates: Vec<CString> = if program.contains(&b'/') {
        vec![prepared.argv[0].clone()]
    } else {
        prepared
            .path_dirs
            .iter()
            .filter_map(|dir| {
                let mut path = dir.clone();
                path.push(b'/');
                path.extend_from_slice(program);
                CString::new(path).ok()
            })
            .collect()
    };
    let mut denied = None;
    for candidate in &candidates {
        unsafe { libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        match crate::sys::errno() {
            libc::ENOENT | libc::ENOTDIR => continue,
            libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR => {
                denied.get_or_insert(std::io::Error::last_os_error());
            }
            _ => {
                return (126, format!("{shown}: {}", std::io::Error::last_os_error()));
            }
        }
    }
    match denied {
        Some(e) => (126, format!("{shown}: cannot execute: {e}")),
        None => (
            127,
            format!("{shown}: command not found inside the sandbox"),
        ),
    }
}
