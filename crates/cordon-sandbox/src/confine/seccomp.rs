//! The seccomp filter: a deny list over an allow-by-default program.
//!
//! Refused with EPERM: mount and namespace syscalls, keyctl, bpf,
//! perf_event_open, kexec, module loading, TIOCSTI/TIOCLINUX, AF_UNIX sockets,
//! and every number from x32's bit up (x32's calls would otherwise slip past a
//! deny list);
//! with ENOSYS where callers are expected to fall back: clone3 (whose flags a
//! filter cannot read) and io_uring. A foreign architecture kills the process.
//!
//! The program is compiled here, as a binary search over the syscall numbers,
//! rather than by seccompiler, which emits one linear chain (225 instructions
//! for this list, plus a second program for ENOSYS): when a filter is installed
//! the kernel runs it against every syscall number to cache the ones it always
//! allows, under a lock with interrupts off, so the install costs in proportion
//! to the path an allowed syscall takes through the filter. A search takes about
//! 7 comparisons where the chain took 70 (and so does every syscall the cache
//! does not answer).

use crate::error::SandboxError;
use cordon_policy::Switches;

/// The filter compiled on the host side, installed by the sandboxed process just
/// before exec (no allocation then).
#[derive(Debug, Clone)]
pub struct SeccompPlan {
    program: Vec<libc::sock_filter>,
}

const CLONE_NEW_FLAGS: [u32; 8] = [
    libc::CLONE_NEWNS as u32,
    libc::CLONE_NEWCGROUP as u32,
    libc::CLONE_NEWUTS as u32,
    libc::CLONE_NEWIPC as u32,
    libc::CLONE_NEWUSER as u32,
    libc::CLONE_NEWPID as u32,
    libc::CLONE_NEWNET as u32,
    0x80, // CLONE_NEWTIME (unshare only)
];

/// Always refused.
const DENIED: &[i64] = &[
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_open_by_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_syslog,
    libc::SYS_iopl,
    libc::SYS_ioperm,
];

/// Refused unless the policy allows nested user namespaces. unshare(2) is refused
/// whole: its other uses (CLONE_FS, CLONE_FILES) are rare.
const NAMESPACE_SYSCALLS: &[i64] = &[
    libc::SYS_unshare,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_setns,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
];

/// Answered with ENOSYS: callers fall back to an older call.
const FALL_BACK: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

/// When a syscall is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum When {
    Always,
    /// The low 32 bits of argument `arg` equal one of `values`.
    ArgIs {
        arg: u8,
        values: Vec<u32>,
    },
    /// The low 32 bits of argument `arg` have a bit of `mask` set.
    ArgHasBit {
        arg: u8,
        mask: u32,
    },
}

/// One syscall the filter refuses, when, and with which errno.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    nr: u32,
    when: When,
    errno: u16,
}

impl SeccompPlan {
    /// `pinned`: the sandbox's CPU affinity is its CPU limit, so it may not
    /// change it (`sched_setaffinity` is refused).
    pub fn build(switches: &Switches, pinned: bool) -> Result<SeccompPlan, SandboxError> {
        let refusals = refusals(switches, pinned);
        Ok(SeccompPlan {
            program: compile(&refusals)?,
        })
    }

    /// Installs the filter on the calling thread. Requires no_new_privs.
    pub fn install(&self) -> std::io::Result<()> {
        crate::sys::install_seccomp(&self.program)
    }
}

/// What the policy refuses, sorted by syscall number.
fn refusals(switches: &Switches, pinned: bool) -> Vec<Refusal> {
    let always = |nr: i64, errno: i32| Refusal {
        nr: nr as u32,
        when: When::Always,
        errno: errno as u16,
    };
    let mut out: Vec<Refusal> = DENIED.iter().map(|&nr| always(nr, libc::EPERM)).collect();
    out.extend(FALL_BACK.iter().map(|&nr| always(nr, libc::ENOSYS)));
    if pinned {
        out.push(always(libc::SYS_sched_setaffinity, libc::EPERM));
    }
    if !switches.nested_userns.value {
        out.extend(NAMESPACE_SYSCALLS.iter().map(|&nr| always(nr, libc::EPERM)));
        // clone(2) reads only the low 32 bits of its flags, where these live.
        out.push(Refusal {
            nr: libc::SYS_clone as u32,
            when: When::ArgHasBit {
                arg: 0,
                mask: CLONE_NEW_FLAGS.iter().fold(0, |m, f| m | f),
            },
            errno: libc::EPERM as u16,
        });
    }
    // ioctl's request is an unsigned int: its low 32 bits.
    out.push(Refusal {
        nr: libc::SYS_ioctl as u32,
        when: When::ArgIs {
            arg: 1,
            values: vec![TIOCSTI, TIOCLINUX],
        },
        errno: libc::EPERM as u16,
    });
    if !switches.unix_sockets.value {
        out.push(Refusal {
            nr: libc::SYS_socket as u32,
            when: When::ArgIs {
                arg: 0,
                values: vec![libc::AF_UNIX as u32],
            },
            errno: libc::EPERM as u16,
        });
    }
    out.sort_by_key(|r| r.nr);
    out.dedup_by_key(|r| r.nr);
    out
}

// Classic BPF, as seccomp runs it.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_low(arg: u8) -> u32 {
    16 + 8 * arg as u32
}
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const fn ret_errno(errno: u16) -> u32 {
    libc::SECCOMP_RET_ERRNO | errno as u32
}
/// At most this many syscalls are compared one after another; more are split.
const LINEAR: usize = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A forward jump; offsets count the instructions skipped.
fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Result<libc::sock_filter, SandboxError> {
    let offset = |n: usize| u8::try_from(n).map_err(|_| SandboxError::SeccompTooLong);
    Ok(libc::sock_filter {
        code,
        jt: offset(jt)?,
        jf: offset(jf)?,
        k,
    })
}

/// The whole program: the architecture check, the x32 guard, then the search.
fn compile(refusals: &[Refusal]) -> Result<Vec<libc::sock_filter>, SandboxError> {
    let mut program = vec![
        stmt(BPF_LD_W_ABS, ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0)?,
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1)?,
        stmt(BPF_RET_K, ret_errno(libc::EPERM as u16)),
    ];
    program.extend(search(refusals)?);
    Ok(program)
}

/// A search over `refusals` (sorted by number) with the syscall number in the
/// accumulator: each refused syscall's check where it is found, else allowed.
fn search(refusals: &[Refusal]) -> Result<Vec<libc::sock_filter>, SandboxError> {
    if refusals.len() <= LINEAR {
        let mut out = Vec::new();
        for refusal in refusals {
            let check = check(refusal)?;
            out.push(jump(BPF_JEQ_K, refusal.nr, 0, check.len())?);
            out.extend(check);
        }
        out.push(stmt(BPF_RET_K, RET_ALLOW));
        return Ok(out);
    }
    let (below, from) = refusals.split_at(refusals.len() / 2);
    let below = search(below)?;
    let from_code = search(from)?;
    let mut out = vec![jump(BPF_JGE_K, from[0].nr, below.len(), 0)?];
    out.extend(below);
    out.extend(from_code);
    Ok(out)
}

/// What runs once the syscall is found: every path ends in a return, so the
/// accumulator (which an argument check overwrites) is never read as the number
/// again.
fn check(refusal: &Refusal) -> Result<Vec<libc::sock_filter>, SandboxError> {
    let refuse = stmt(BPF_RET_K, ret_errno(refusal.errno));
    let allow = stmt(BPF_RET_K, RET_ALLOW);
    Ok(match &refusal.when {
        When::Always => vec![refuse],
        When::ArgIs { arg, values } => {
            let mut out = vec![stmt(BPF_LD_W_ABS, arg_low(*arg))];
            for (i, value) in values.iter().enumerate() {
                // Past the other comparisons and the allow, to the refusal.
                out.push(jump(BPF_JEQ_K, *value, values.len() - i, 0)?);
            }
            out.extend([allow, refuse]);
            out
        }
        When::ArgHasBit { arg, mask } => vec![
            stmt(BPF_LD_W_ABS, arg_low(*arg)),
            jump(BPF_JSET_K, *mask, 1, 0)?,
            allow,
            refuse,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_policy::{Origin, Sourced};

    fn switches(nested: bool, unix: bool) -> Switches {
        Switches {
            nested_userns: Sourced::new(nested, Origin::Default),
            unix_sockets: Sourced::new(unix, Origin::Default),
        }
    }

    /// A call as seccomp sees it.
    struct Call {
        arch: u32,
        nr: u32,
        args: [u64; 6],
    }

    /// Runs `program` on `call` as the kernel would (the instructions this
    /// module emits; any other is a failure), checking every jump stays inside:
    /// the verdict, and how many instructions ran.
    fn run(program: &[libc::sock_filter], call: &Call) -> (u32, usize) {
        let load = |offset: u32| -> u32 {
            match offset {
                NR => call.nr,
                ARCH => call.arch,
                o if (16..64).contains(&o) && o % 8 == 0 => call.args[(o as usize - 16) / 8] as u32,
                o => panic!("load of offset {o}"),
            }
        };
        let (mut pc, mut acc, mut ran) = (0usize, 0u32, 0usize);
        loop {
            ran += 1;
            let insn = program.get(pc).expect("ran off the program's end");
            let taken = |cond: bool| pc + 1 + usize::from(if cond { insn.jt } else { insn.jf });
            pc = match insn.code {
                BPF_LD_W_ABS => {
                    acc = load(insn.k);
                    pc + 1
                }
                BPF_JEQ_K => taken(acc == insn.k),
                BPF_JGE_K => taken(acc >= insn.k),
                BPF_JSET_K => taken(acc & insn.k != 0),
                BPF_RET_K => return (insn.k, ran),
                code => panic!("instruction {code:#x}"),
            };
        }
    }

    /// What the filter must answer, from the lists above, written out plainly.
    fn expected(call: &Call, nested: bool, unix: bool, pinned: bool) -> u32 {
        let nr = i64::from(call.nr);
        let low = |i: usize| call.args[i] as u32;
        let eperm = ret_errno(libc::EPERM as u16);
        if call.arch != AUDIT_ARCH_X86_64 {
            RET_KILL_PROCESS
        } else if call.nr >= X32_SYSCALL_BIT
            || DENIED.contains(&nr)
            || (pinned && nr == libc::SYS_sched_setaffinity)
            || (!nested && NAMESPACE_SYSCALLS.contains(&nr))
            || (!nested && nr == libc::SYS_clone && CLONE_NEW_FLAGS.iter().any(|f| low(0) & f != 0))
            || (nr == libc::SYS_ioctl && [TIOCSTI, TIOCLINUX].contains(&low(1)))
            || (!unix && nr == libc::SYS_socket && low(0) == libc::AF_UNIX as u32)
        {
            eperm
        } else if FALL_BACK.contains(&nr) {
            ret_errno(libc::ENOSYS as u16)
        } else {
            RET_ALLOW
        }
    }

    /// Every syscall number (and x32's, and beyond), with arguments that do and
    /// do not match each argument check (high bits too, which the checks ignore
    /// as the kernel does), under every combination of the switches.
    #[test]
    fn the_program_answers_as_the_lists_say_for_every_call() {
        let flag_args: Vec<u64> = CLONE_NEW_FLAGS.iter().map(|&f| u64::from(f)).collect();
        let mut args_list: Vec<u64> = vec![
            0,
            u64::from(libc::SIGCHLD as u32),
            u64::from(TIOCSTI),
            u64::from(TIOCLINUX),
            u64::from(TIOCSTI) | 1 << 32,
            1 << 40,
            libc::AF_UNIX as u64,
            libc::AF_INET as u64,
            (libc::AF_UNIX as u64) | 1 << 33,
            0x5413,
            u64::MAX,
        ];
        args_list.extend(flag_args);
        let mut numbers: Vec<u32> = (0..1100).collect();
        numbers.extend([X32_SYSCALL_BIT, X32_SYSCALL_BIT | 1, u32::MAX, 0x8000_0000]);
        let mut checked = 0;
        for (nested, unix, pinned) in [
            (false, false, false),
            (true, true, true),
            (false, true, true),
            (true, false, false),
        ] {
            let program = SeccompPlan::build(&switches(nested, unix), pinned)
                .unwrap()
                .program;
            for &nr in &numbers {
                for &a in &args_list {
                    for arch in [AUDIT_ARCH_X86_64, 0x4000_0003 /* i386 */] {
                        // The value in each argument slot the checks read.
                        let call = Call {
                            arch,
                            nr,
                            args: [a, a, 0, 0, 0, 0],
                        };
                        assert_eq!(
                            run(&program, &call).0,
                            expected(&call, nested, unix, pinned),
                            "nr {nr} args {a:#x} arch {arch:#x} nested {nested} unix {unix} pinned {pinned}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }

    /// The program is short: an allowed syscall takes about log2 of the list's
    /// comparisons, not one per refused syscall.
    #[test]
    fn an_allowed_syscall_takes_a_short_path() {
        let program = SeccompPlan::build(&switches(false, false), true)
            .unwrap()
            .program;
        assert!(program.len() < 150, "{} instructions", program.len());
        let steps = |nr: u32| {
            let call = Call {
                arch: AUDIT_ARCH_X86_64,
                nr,
                args: [0; 6],
            };
            let (verdict, ran) = run(&program, &call);
            assert_eq!(verdict, RET_ALLOW, "nr {nr}");
            ran
        };
        for nr in [libc::SYS_read, libc::SYS_openat, libc::SYS_getpid, 400] {
            assert!(
                steps(nr as u32) <= 16,
                "nr {nr}: {} steps",
                steps(nr as u32)
            );
        }
    }
}
