//! Starting a process the way posix_spawn does: `clone(CLONE_VM | CLONE_VFORK)` on
//! a stack the caller provides, so nothing is copied and the caller resumes once
//! the child has exec'd or exited. Used by the OS backend's supervisor to start the
//! sandboxed command (`cordon-sandbox`), and by the tool server to start each
//! `exec` (`cordon-tools`), which runs inside any backend and so must not link the
//! OS backend: this crate holds only the primitive both need.

use std::ffi::{CString, c_void};
use std::io;
use std::mem::MaybeUninit;

/// Runs `child(arg)` in a new process that shares this one's memory, on `stack`,
/// with every signal blocked (the child unblocks what it wants before exec), and
/// returns its pid once it has exec'd or exited. This thread's signal mask is
/// restored before returning.
///
/// # Safety
/// `child` runs in memory this process's other threads go on using: it must end
/// in exec or `_exit`, and before that allocate or lock nothing another thread
/// could hold. `arg` must stay valid for it, which it does for anything owned by
/// the caller's frame: the caller is suspended until the child has exec'd or exited.
pub unsafe fn clone_vfork(
    stack: &mut [MaybeUninit<u8>],
    child: extern "C" fn(*mut c_void) -> libc::c_int,
    arg: *mut c_void,
) -> io::Result<libc::pid_t> {
    // The stack grows down: pass its top, 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: sigset_t is plain bits, for which all-zero is a valid value.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pthread_sigmask overwrites it with the old mask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset writes only into the set it is given, a live local.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: this thread's own mask (other threads keep theirs), set from and
    // saved into live locals, and restored below whatever clone returns.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    // SAFETY: per this function's contract; CLONE_VFORK keeps this thread, and so
    // `stack` and `arg`, untouched until the child execs or exits.
    let pid = unsafe {
        libc::clone(
            child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid == -1 {
        return Err(clone_error);
    }
    Ok(pid)
}

/// The NUL-terminated array of pointers `execve` takes for `strings` (argv, envp),
/// built before the clone: the child must not allocate. The pointers borrow
/// `strings`, which must outlive the exec.
pub fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut v: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    v.push(std::ptr::null());
    v
}
