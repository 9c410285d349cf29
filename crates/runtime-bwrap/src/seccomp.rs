//! The seccomp filters every sandbox runs under, built in Rust and handed to bwrap by fd.
//!
//! Three programs, each loaded with `--add-seccomp-fd` (the kernel runs them all and the most
//! restrictive answer wins):
//!
//! 1. **EPERM** for calls that reach kernel attack surface or undo the jail: tracing other
//!    processes, keyrings, BPF, perf, userfaultfd, every mount API, namespace creation (also
//!    through `clone` flags), kexec and modules, terminal injection (`TIOCSTI`, `TIOCLINUX`),
//!    handle-based opens that bypass the mount tree, and similar.
//! 2. **ENOSYS** for `clone3` (its flags sit in memory a filter cannot read; libc falls back to
//!    `clone`, whose flags filter 1 checks) and for io_uring (a large, often-patched surface;
//!    libuv falls back to its thread pool).
//! 3. On x86_64, **ENOSYS** for the x32 ABI, whose syscall numbers would slip past filter 1.
//!
//! Syscalls of other architectures (i386 through `int 0x80` on x86_64) kill the process: the
//! filters check the audit architecture first.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use substrate_core::{Error, Result};

/// Namespace-creating `clone` flags (`CLONE_NEW*`).
const CLONE_NAMESPACE_FLAGS: [u64; 8] = [
    0x0000_0080, // CLONE_NEWTIME
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// `ioctl` requests that push input into, or reconfigure, a terminal the sandbox shares.
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// Syscalls refused with EPERM whatever their arguments.
fn refused_syscalls() -> Vec<i64> {
    let mut list = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
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
        libc::SYS_name_to_handle_at,
        libc::SYS_quotactl,
        libc::SYS_vhangup,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_kcmp,
        libc::SYS_lookup_dcookie,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib]);
    list.sort_unstable();
    list.dedup();
    list
}

/// Syscalls answered with ENOSYS so that callers fall back to something the filters can check.
fn absent_syscalls() -> Vec<i64> {
    vec![
        libc::SYS_clone3,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
}

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| Error::Unsupported {
        what: format!("seccomp filters on {}", std::env::consts::ARCH),
        reason: String::from("the bwrap runtime builds filters for x86_64, aarch64 and riscv64"),
    })
}

fn seccomp_error(e: impl std::fmt::Display) -> Error {
    Error::invalid("seccomp filter", e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conditions).map_err(seccomp_error)
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, len, op, value).map_err(seccomp_error)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<Vec<u8>> {
    let errno = u32::try_from(errno).map_err(seccomp_error)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch()?,
    )
    .map_err(seccomp_error)?;
    let program: BpfProgram = filter.try_into().map_err(seccomp_error)?;
    Ok(to_bytes(&program))
}

/// The raw `struct sock_filter` array bwrap reads from its seccomp fd.
fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for insn in program {
        out.extend_from_slice(&insn.code.to_ne_bytes());
        out.push(insn.jt);
        out.push(insn.jf);
        out.extend_from_slice(&insn.k.to_ne_bytes());
    }
    out
}

/// Filter 1: EPERM for the refused calls, namespace flags of `clone`, and terminal injection.
pub fn refuse_filter() -> Result<Vec<u8>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in refused_syscalls() {
        rules.insert(nr, Vec::new());
    }
    let mut clone_rules = Vec::new();
    for flag in CLONE_NAMESPACE_FLAGS {
        clone_rules.push(rule(vec![condition(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![condition(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                TIOCSTI,
            )?])?,
            rule(vec![condition(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                TIOCLINUX,
            )?])?,
        ],
    );
    compile(rules, libc::EPERM)
}

/// Filter 2: ENOSYS for `clone3` and io_uring.
pub fn absent_filter() -> Result<Vec<u8>> {
    let rules = absent_syscalls()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    compile(rules, libc::ENOSYS)
}

/// Filter 3 (x86_64 only): ENOSYS for every x32-ABI syscall number.
pub fn x32_filter() -> Option<Vec<u8>> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7FFF_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    // BPF opcodes: LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    let enosys = SECCOMP_RET_ERRNO | (libc::ENOSYS as u32);
    let program = [
        (LD_W_ABS, 0, 0, 4),              // A = seccomp_data.arch
        (JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // not x86_64 → allow (filter 1 kills it)
        (LD_W_ABS, 0, 0, 0),              // A = seccomp_data.nr
        (JGE_K, 0, 1, X32_SYSCALL_BIT),   // x32 number → ENOSYS
        (RET_K, 0, 0, enosys),
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ];
    let mut out = Vec::with_capacity(program.len() * 8);
    for (code, jt, jf, k) in program {
        out.extend_from_slice(&u16::to_ne_bytes(code));
        out.push(jt);
        out.push(jf);
        out.extend_from_slice(&u32::to_ne_bytes(k));
    }
    Some(out)
}

/// Every program, in the order bwrap loads them.
pub fn filters() -> Result<Vec<Vec<u8>>> {
    let mut all = vec![refuse_filter()?, absent_filter()?];
    all.extend(x32_filter());
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_to_whole_instructions() {
        for f in filters().unwrap() {
            assert!(!f.is_empty());
            assert_eq!(f.len() % 8, 0);
        }
    }

    #[test]
    fn the_refused_list_names_the_jail_breakers() {
        let list = refused_syscalls();
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_keyctl,
            libc::SYS_bpf,
        ] {
            assert!(list.contains(&nr), "{nr} missing");
        }
    }
}
