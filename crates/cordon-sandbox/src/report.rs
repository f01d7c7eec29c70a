//! The report pipe, from the sandbox's processes to the launcher. Two records:
//! - `F status len message`: a failure before exec (from the supervisor, status 125,
//!   or from the command's process, 126/127), then that process exits;
//! - `X status`: the command has ended with this status and every other process
//!   of the sandbox has been killed and reaped; only the supervisor is left, exiting;
//! - `S`: the command, on a pty, has stopped (job control: the launcher stops too,
//!   and continues the sandbox when it is continued).
//!
//! A successful exec closes the command's copy of the pipe (close-on-exec) with
//! nothing written.

use std::os::fd::BorrowedFd;

const FAILED: u8 = b'F';
const EXITED: u8 = b'X';
const STOPPED: u8 = b'S';

/// What the launcher learned from the pipe.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The first failure reported, with its status.
    pub failure: Option<(i32, String)>,
    /// The command's exit status, once the supervisor has cleaned up after it.
    pub exited: Option<i32>,
    /// How many times the command has stopped so far.
    pub stops: usize,
}

fn write_all(fd: BorrowedFd<'_>, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
    }
}

/// Reports a failure and exits with `status`.
pub fn report_and_exit(report: BorrowedFd<'_>, status: u8, message: &str) -> ! {
    let message = &message.as_bytes()[..message.len().min(60_000)];
    let mut bytes = Vec::with_capacity(message.len() + 6);
    bytes.extend_from_slice(&[FAILED, status]);
    bytes.extend_from_slice(&(message.len() as u32).to_le_bytes());
    bytes.extend_from_slice(message);
    write_all(report, &bytes);
    // SAFETY: _exit(2) takes no pointers and does not return. It is right here
    // where `exit` is not: the caller is a process forked or vfork-cloned from
    // another (the supervisor from the launcher, the command from the
    // supervisor, sharing its memory), and must run none of that process's
    // atexit handlers nor flush its stdio buffers. (rustix has no stable exit.)
    unsafe { libc::_exit(status as libc::c_int) }
}

/// Reports the command's exit status (the sandbox is already empty).
pub fn report_exit(report: BorrowedFd<'_>, status: u8) {
    write_all(report, &[EXITED, status]);
}

/// Reports that the command has stopped.
pub fn report_stop(report: BorrowedFd<'_>) {
    write_all(report, &[STOPPED]);
}

impl Report {
    /// Parses the records in `bytes`; an incomplete record at the end is ignored.
    pub fn parse(bytes: &[u8]) -> Report {
        let mut report = Report::default();
        let mut rest = bytes;
        loop {
            match rest {
                [STOPPED, tail @ ..] => {
                    report.stops += 1;
                    rest = tail;
                }
                [EXITED, status, tail @ ..] => {
                    report.exited = Some(*status as i32);
                    rest = tail;
                }
                [FAILED, status, a, b, c, d, tail @ ..] => {
                    let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
                    let Some(message) = tail.get(..len) else {
                        return report;
                    };
                    report.failure.get_or_insert((
                        *status as i32,
                        String::from_utf8_lossy(message).into_owned(),
                    ));
                    rest = &tail[len..];
                }
                _ => return report,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_failure_then_exit_and_ignores_a_torn_tail() {
        let mut bytes = vec![FAILED, 127, 3, 0, 0, 0];
        bytes.extend_from_slice(b"abc");
        bytes.extend_from_slice(&[STOPPED, STOPPED, EXITED, 127, FAILED, 1]);
        let report = Report::parse(&bytes);
        assert_eq!(report.failure, Some((127, "abc".to_string())));
        assert_eq!(report.exited, Some(127));
        assert_eq!(report.stops, 2);
    }

    #[test]
    fn a_message_cut_short_is_not_reported() {
        let report = Report::parse(&[FAILED, 125, 9, 0, 0, 0, b'x']);
        assert_eq!(report, Report::default());
    }
}
