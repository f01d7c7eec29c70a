//! The seccomp filter: a deny list over an allow-by-default program.
//!
//! Two stacked filters: the first answers EPERM (mount and namespace syscalls,
//! keyctl, bpf, perf_event_open, kexec, module loading, TIOCSTI/TIOCLINUX, AF_UNIX
//! sockets); the second answers ENOSYS where callers are expected to fall back
//! (clone3, whose flags a filter cannot read, and io_uring). The first also refuses
//! every x32 syscall number, which would otherwise slip past a deny list.

use crate::error::SandboxError;
use cordon_policy::Switches;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

/// Filters compiled on the host side, installed by the sandboxed process just
/// before exec (no allocation then).
#[derive(Debug, Clone)]
pub struct SeccompPlan {
    programs: Vec<BpfProgram>,
}

const CLONE_NEW_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
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
/// whole: its other uses (CLONE_FS, CLONE_FILES) are rare, and a shorter filter is
/// compiled faster for every sandbox.
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

const FALL_BACK: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn arch() -> TargetArch {
    TargetArch::x86_64
}

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    Ok(SeccompCondition::new(arg, len, op, value)?)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    Ok(SeccompRule::new(conditions)?)
}

/// One rule per namespace flag: the syscall is refused if any of them is set.
/// The flags all live in the low 32 bits, and clone(2) reads only those.
fn any_new_namespace_flag(arg: u8) -> Result<Vec<SeccompRule>, SandboxError> {
    CLONE_NEW_FLAGS
        .iter()
        .map(|&flag| {
            rule(vec![cond(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect()
}

impl SeccompPlan {
    /// `pinned`: the sandbox's CPU affinity is its CPU limit, so it may not
    /// change it (`sched_setaffinity` is refused).
    pub fn build(switches: &Switches, pinned: bool) -> Result<SeccompPlan, SandboxError> {
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        if pinned {
            denied.insert(libc::SYS_sched_setaffinity, Vec::new());
        }
        if !switches.nested_userns.value {
            denied.extend(NAMESPACE_SYSCALLS.iter().map(|&nr| (nr, Vec::new())));
            denied.insert(libc::SYS_clone, any_new_namespace_flag(0)?);
        }
        denied.insert(
            libc::SYS_ioctl,
            [TIOCSTI, TIOCLINUX]
                .iter()
                .map(|&cmd| {
                    rule(vec![cond(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        cmd,
                    )?])
                })
                .collect::<Result<_, _>>()?,
        );
        if !switches.unix_sockets.value {
            denied.insert(
                libc::SYS_socket,
                vec![rule(vec![cond(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::AF_UNIX as u64,
                )?])?],
            );
        }
        let fall_back = FALL_BACK.iter().map(|&nr| (nr, Vec::new())).collect();
        let mut first = compile(denied, libc::EPERM)?;
        refuse_x32(&mut first);
        let second = compile(fall_back, libc::ENOSYS)?;
        Ok(SeccompPlan {
            programs: vec![first, second],
        })
    }

    /// Installs the filters on the calling thread. Requires no_new_privs.
    pub fn install(&self) -> std::io::Result<()> {
        self.programs
            .iter()
            .try_for_each(|program| crate::sys::install_seccomp(as_libc(program)))
    }
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch(),
    )?;
    Ok(BpfProgram::try_from(filter)?)
}

/// Inserts, right after seccompiler's 3-instruction architecture check, a check that
/// refuses syscall numbers with the x32 bit. No jump crosses the insertion point.
fn refuse_x32(program: &mut BpfProgram) {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    let guard = [
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
    ];
    program.splice(3..3, guard);
}

// The cast in `as_libc` relies on these: same size and alignment.
const _: () = {
    assert!(size_of::<seccompiler::sock_filter>() == size_of::<libc::sock_filter>());
    assert!(align_of::<seccompiler::sock_filter>() == align_of::<libc::sock_filter>());
};

fn as_libc(program: &BpfProgram) -> &[libc::sock_filter] {
    // SAFETY: seccompiler::sock_filter is #[repr(C)] with the same fields in the
    // same order and types as libc's (u16, u8, u8, u32: the kernel's struct
    // sock_filter), so the two have one layout (size and alignment checked
    // above) and every bit pattern of one is valid for the other. The slice
    // borrows `program` for its lifetime and keeps its length.
    unsafe { std::slice::from_raw_parts(program.as_ptr().cast(), program.len()) }
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

    #[test]
    fn builds_two_programs_with_the_x32_guard_after_the_arch_check() {
        let plan = SeccompPlan::build(&switches(false, false), false).unwrap();
        assert_eq!(plan.programs.len(), 2);
        let first = &plan.programs[0];
        assert_eq!(first[1].code, 0x15, "arch check jump stays in place");
        assert_eq!(first[4].k, X32_SYSCALL_BIT);
    }

    #[test]
    fn switches_shrink_the_first_program() {
        let strict = SeccompPlan::build(&switches(false, false), false).unwrap();
        let loose = SeccompPlan::build(&switches(true, true), false).unwrap();
        assert!(loose.programs[0].len() < strict.programs[0].len());
    }
}
