//! The report pipe: a failure before exec, as one status byte and a message, from
//! the supervisor or the command to the launcher. A successful exec closes the
//! pipe (it is close-on-exec) with nothing written.

use std::os::fd::{AsRawFd, BorrowedFd};

pub fn report_and_exit(report: BorrowedFd<'_>, status: u8, message: &str) -> ! {
    let mut bytes = Vec::with_capacity(message.len() + 1);
    bytes.push(status);
    bytes.extend_from_slice(message.as_bytes());
    unsafe {
        libc::write(report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
        libc::_exit(status as libc::c_int)
    }
}
