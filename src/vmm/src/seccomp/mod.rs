//! The monitor's seccomp filters: one per kind of thread, built with `seccompiler`, each
//! allowing only the system calls (and, for `ioctl`, `mmap`, `mprotect` and `socket`,
//! the arguments) that thread makes once the guest runs.
//!
//! - [`Thread::Main`]: the event loop (virtqueues, vsock and control sockets, signals).
//! - [`Thread::Vcpu`]: `KVM_RUN` and the port-I/O and MMIO exits it handles (a device's
//!   activation runs here too: a write to its status register).
//! - [`Thread::Waiter`]: the jail's outer process, which only waits for the monitor and
//!   passes signals on (see [`crate::jail`]).
//!
//! A forbidden call stops the whole monitor: the filter traps it, and the `SIGSYS`
//! handler writes one line naming the thread and the call to stderr, then exits with
//! 128+31 (what a kill by `SIGSYS` reads as). [`Mode::Log`] (`--seccomp-log`, for
//! development) lets every call through and has the kernel log the ones the filter would
//! have stopped (`audit: type=1326 ... comm="vcpu0" syscall=N`, in `dmesg`).
//!
//! Each thread installs its own filter before the guest runs its first instruction: the
//! vCPU threads before they wait for the start, the main thread after it has started
//! them (no thread is started after that) and before it lets them go.

mod names;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::cell::Cell;
use std::collections::BTreeMap;

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules (a bug in this module).
    #[error("building the {0} seccomp filter: {1}")]
    Build(&'static str, seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("installing the {0} seccomp filter: {1}")]
    Install(&'static str, seccompiler::Error),
    /// The SIGSYS handler.
    #[error("installing the seccomp SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// What a call outside the filter does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Stop the monitor with a line naming the thread and the call (the default).
    #[default]
    Kill,
    /// Let it through and have the kernel log it (development only).
    Log,
}

/// The kinds of thread, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// The event loop.
    Main,
    /// A vCPU.
    Vcpu,
    /// The jail's outer process.
    Waiter,
}

impl Thread {
    fn name(self) -> &'static str {
        match self {
            Thread::Main => "main",
            Thread::Vcpu => "vCPU",
            Thread::Waiter => "waiter",
        }
    }
}

/// What the filters allow besides each thread's fixed set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The monitor runs outside a jail, so it removes its own sockets at exit (`unlink`):
    /// in a jail they are out of its reach, and its caller removes them.
    pub unjailed: bool,
    /// The monitor can be asked for a snapshot (`snapshot_to`): the vCPUs read their
    /// registers, the main thread the irqchip, PIT and clock, and writes the files it
    /// opened before the jail.
    pub snapshot: bool,
}

/// `_IOC(dir, 0xAE, nr, size)` for KVM's ioctls whose argument is a `T`.
const fn kvm_ioc<T>(dir: u64, nr: u64) -> u64 {
    (dir << 30) | ((std::mem::size_of::<T>() as u64) << 16) | (0xae << 8) | nr
}
const IOR: u64 = 2;
const IOWR: u64 = 3;
/// What a vCPU thread reads for a snapshot (linux/kvm.h).
const KVM_VCPU_SNAPSHOT: [u64; 9] = [
    kvm_ioc::<kvm_bindings::kvm_regs>(IOR, 0x81),
    kvm_ioc::<kvm_bindings::kvm_sregs>(IOR, 0x83),
    kvm_ioc::<kvm_bindings::kvm_msrs>(IOWR, 0x88),
    kvm_ioc::<kvm_bindings::kvm_lapic_state>(IOR, 0x8e),
    kvm_ioc::<kvm_bindings::kvm_mp_state>(IOR, 0x98),
    kvm_ioc::<kvm_bindings::kvm_vcpu_events>(IOR, 0x9f),
    kvm_ioc::<kvm_bindings::kvm_debugregs>(IOR, 0xa1),
    kvm_ioc::<kvm_bindings::kvm_xsave>(IOR, 0xa4),
    kvm_ioc::<kvm_bindings::kvm_xcrs>(IOR, 0xa6),
];
/// What the main thread reads for a snapshot.
const KVM_VM_SNAPSHOT: [u64; 3] = [
    kvm_ioc::<kvm_bindings::kvm_irqchip>(IOWR, 0x62),
    kvm_ioc::<kvm_bindings::kvm_pit_state2>(IOR, 0x9f),
    kvm_ioc::<kvm_bindings::kvm_clock_data>(IOR, 0x7c),
];

// KVM and tty ioctl numbers (from linux/kvm.h and asm-generic/ioctls.h).
const KVM_RUN: u64 = 0xae80;
const FIONBIO: u64 = 0x5421;
const FIOCLEX: u64 = 0x5451;

fn cond(arg: u8, len: Len, op: Op, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, op, value).expect("argument index is below 6")
}

fn rule(conds: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conds).expect("a rule has at least one condition")
}

/// `ioctl(fd, request, ...)` with one of `requests`.
fn ioctls(requests: &[u64]) -> Vec<SeccompRule> {
    requests
        .iter()
        .map(|r| rule(vec![cond(1, Len::Dword, Op::Eq, *r)]))
        .collect()
}

/// `mmap`/`mprotect` without `PROT_EXEC`: no new executable memory, ever.
fn no_exec(prot_arg: u8) -> Vec<SeccompRule> {
    vec![rule(vec![cond(
        prot_arg,
        Len::Dword,
        Op::MaskedEq(libc::PROT_EXEC as u64),
        0,
    )])]
}

/// The calls every monitor thread makes: memory allocation, locks, reads and writes on
/// the descriptors it already holds, signal returns, thread and process exit.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_madvise,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // A device's activation registers its descriptors with the event loop, and a
    // vhost-user backend is told about guest memory over its socket.
    libc::SYS_epoll_ctl,
    libc::SYS_eventfd2,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
];

/// The rules for one kind of thread.
fn rules(thread: Thread, opts: Options) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut allow = |calls: &[i64]| {
        for c in calls {
            m.insert(*c, Vec::new());
        }
    };
    match thread {
        Thread::Waiter => allow(&[
            libc::SYS_wait4,
            libc::SYS_waitid,
            libc::SYS_kill,
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_write,
            libc::SYS_restart_syscall,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ]),
        Thread::Main => {
            allow(COMMON);
            allow(&[
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                // The vsock and control sockets: accepting host connections, and guest
                // connections bridged to `<uds>_<port>` (Unix sockets only, below).
                libc::SYS_accept4,
                libc::SYS_connect,
                libc::SYS_shutdown,
                libc::SYS_setsockopt,
                libc::SYS_getsockopt,
            ]);
            if opts.unjailed {
                allow(&[libc::SYS_unlink, libc::SYS_unlinkat]);
            }
        }
        Thread::Vcpu => allow(COMMON),
    }
    if thread != Thread::Waiter {
        m.insert(libc::SYS_mmap, no_exec(2));
        m.insert(libc::SYS_mprotect, no_exec(2));
    }
    if thread != Thread::Waiter {
        // Signals to this process's own threads only: pausing the vCPUs, and abort()
        // raising SIGABRT on a panic (the release build aborts on panic).
        let own = u64::from(std::process::id());
        m.insert(
            libc::SYS_tgkill,
            vec![rule(vec![cond(0, Len::Dword, Op::Eq, own)])],
        );
    }
    match thread {
        Thread::Main => {
            let mut allowed = vec![FIONBIO, FIOCLEX];
            if opts.snapshot {
                allowed.extend(KVM_VM_SNAPSHOT);
            }
            m.insert(libc::SYS_ioctl, ioctls(&allowed));
            // Free page reporting over memfd guest RAM: holes only, size kept.
            m.insert(
                libc::SYS_fallocate,
                vec![rule(vec![cond(
                    1,
                    Len::Dword,
                    Op::Eq,
                    (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64,
                )])],
            );
            m.insert(
                libc::SYS_socket,
                vec![rule(vec![cond(
                    0,
                    Len::Dword,
                    Op::Eq,
                    libc::AF_UNIX as u64,
                )])],
            );
        }
        Thread::Vcpu => {
            let mut allowed = vec![KVM_RUN, FIONBIO];
            if opts.snapshot {
                allowed.extend(KVM_VCPU_SNAPSHOT);
            }
            m.insert(libc::SYS_ioctl, ioctls(&allowed));
        }
        Thread::Waiter => {}
    }
    m
}

/// The compiled filter for one kind of thread.
pub fn filter(thread: Thread, mode: Mode, opts: Options) -> Result<BpfProgram, SeccompError> {
    let mismatch = match mode {
        Mode::Kill => SeccompAction::Trap,
        Mode::Log => SeccompAction::Log,
    };
    let f = SeccompFilter::new(
        rules(thread, opts),
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(thread.name(), e))?;
    f.try_into()
        .map_err(|e| SeccompError::Build(thread.name(), e))
}

thread_local! {
    /// The calling thread's name for the log line (set before its filter goes in; read
    /// by the signal handler, so it is a plain constant-initialised cell).
    static NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// Installs `thread`'s filter on the calling thread (and the process-wide `SIGSYS`
/// handler that reports a trapped call). `name` is what the log line calls the thread.
pub fn install(thread: Thread, name: &str, mode: Mode, opts: Options) -> Result<(), SeccompError> {
    let prog = filter(thread, mode, opts)?;
    let mut n = [0u8; 16];
    let len = name.len().min(15);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    NAME.with(|c| c.set(n));
    install_handler()?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Install(thread.name(), e))
}

fn install_handler() -> Result<(), SeccompError> {
    // SAFETY: sigaction is plain data; zeroed is a valid empty mask and no flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa` is initialised; the handler only calls async-signal-safe functions.
    if unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) } != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The name of system call `nr` on x86_64.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    names::NAMES
        .binary_search_by_key(&nr, |(n, _)| *n)
        .ok()
        .map(|i| names::NAMES[i].1)
}

/// Exit status after a forbidden call: what a kill by SIGSYS reads as.
pub const EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// A fixed buffer the handler formats into (no allocation in a signal handler).
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn number(&mut self, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The offset of `si_syscall` in the kernel's `siginfo_t` for SIGSYS (after the three
/// int header fields and padding: `_sifields._sigsys` = { call_addr: ptr, syscall: int,
/// arch: uint }).
const SI_SYSCALL_OFFSET: usize = 16 + 8;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for SIGSYS
    // from seccomp, `si_syscall` is the int at SI_SYSCALL_OFFSET.
    let nr = unsafe { *((info as *const u8).add(SI_SYSCALL_OFFSET) as *const i32) } as u32;
    let mut line = Line {
        buf: [0; 192],
        len: 0,
    };
    line.push(b"berth-vmm: seccomp: thread ");
    let name = NAME.with(|c| c.get());
    let n = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    line.push(if n == 0 { b"?" } else { &name[..n] });
    line.push(b" made the forbidden system call ");
    match syscall_name(nr) {
        Some(s) => {
            line.push(s.as_bytes());
            line.push(b" (");
            line.number(nr);
            line.push(b")");
        }
        None => line.number(nr),
    }
    line.push(b": the monitor stops\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe and allowed by every filter;
    // `line.buf` holds `line.len` initialised bytes.
    unsafe {
        libc::write(2, line.buf.as_ptr() as *const libc::c_void, line.len);
        libc::_exit(EXIT_STATUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_and_known() {
        assert!(names::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(syscall_name(59), Some("execve"));
        assert_eq!(syscall_name(257), Some("openat"));
        assert_eq!(syscall_name(100_000), None);
    }

    #[test]
    fn every_filter_compiles_and_leaves_out_what_a_monitor_never_needs() {
        for t in [Thread::Main, Thread::Vcpu, Thread::Waiter] {
            for mode in [Mode::Kill, Mode::Log] {
                filter(t, mode, Options::default()).unwrap();
            }
            let r = rules(t, Options::default());
            for forbidden in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_open,
                libc::SYS_openat,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_fork,
                libc::SYS_ptrace,
                libc::SYS_mount,
                libc::SYS_unlink,
                libc::SYS_setuid,
                libc::SYS_bpf,
            ] {
                assert!(!r.contains_key(&forbidden), "{t:?} allows {forbidden}");
            }
        }
        assert!(rules(
            Thread::Main,
            Options {
                unjailed: true,
                snapshot: false
            }
        )
        .contains_key(&libc::SYS_unlink));
        // Only the vCPU runs the guest; only the main thread accepts connections.
        assert!(!rules(Thread::Main, Options::default())[&libc::SYS_ioctl]
            .iter()
            .any(|r| format!("{r:?}").contains(&KVM_RUN.to_string())));
        assert!(!rules(Thread::Vcpu, Options::default()).contains_key(&libc::SYS_accept4));
    }

    /// The filters work on a real thread: allowed calls go through, a forbidden one
    /// comes back as the trap (here an errno-returning twin of the filter, so that the
    /// test process survives to check it).
    #[test]
    fn a_thread_under_the_vcpu_rules_cannot_open_a_file() {
        let h = std::thread::spawn(|| {
            let f = SeccompFilter::new(
                rules(Thread::Vcpu, Options::default()),
                SeccompAction::Errno(libc::EPERM as u32),
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .unwrap();
            let prog: BpfProgram = f.try_into().unwrap();
            seccompiler::apply_filter(&prog).unwrap();
            let opened = std::fs::File::open("/etc/hostname").map(|_| ());
            // SAFETY: an anonymous mapping asked for with PROT_EXEC, unmapped if granted.
            let exec_map = unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p != libc::MAP_FAILED {
                    libc::munmap(p, 4096);
                }
                p != libc::MAP_FAILED
            };
            let v = vec![0u8; 1 << 20];
            (opened.map_err(|e| e.raw_os_error()), exec_map, v.len())
        });
        let (opened, exec_map, allocated) = h.join().unwrap();
        assert_eq!(opened, Err(Some(libc::EPERM)));
        assert!(!exec_map, "PROT_EXEC mappings are refused");
        assert_eq!(allocated, 1 << 20, "allocation still works");
    }
}
