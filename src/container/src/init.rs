//! `--init`: a minimal init as the container's PID 1, as Docker's `docker-init` (tini) is.
//! It forwards the signals it gets to the workload, reaps every orphan that is handed to
//! it, and exits with the workload's status (128 + the signal when a signal ended it).
//!
//! berth needs no init binary inside the container's root: the container's setup process
//! (the agent, forked, already inside the container's namespaces, root and confinement)
//! forks once more just before the exec. The child execs the workload; the parent stays
//! as PID 1 and runs [`supervise`]. Its command line is the agent's, renamed `init` (its
//! `comm`, as `ps` shows it).
//!
//! Signals are taken with `sigtimedwait` with every forwardable signal blocked, as tini
//! does: a blocked signal is never dropped by the kernel's rule that a namespace's init
//! ignores signals it has no handler for, so `docker stop` (SIGTERM from the parent
//! namespace) and `docker kill -s HUP` reach the workload.

use std::os::unix::io::RawFd;

/// Signals the init does not forward: faults that concern the init itself, and the
/// terminal's stop signals (the workload has its own process group on a terminal).
const NOT_FORWARDED: [i32; 9] = [
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// The set of signals the init takes and forwards, plus SIGCHLD.
fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in NOT_FORWARDED {
            libc::sigdelset(&mut set, s);
        }
        set
    }
}

/// Blocks the signals the init will take, before it forks the workload: none arrives
/// unhandled in between. Returns the set.
pub fn block_signals() -> libc::sigset_t {
    let set = forwarded_set();
    // SAFETY: sets the calling thread's mask from an initialized set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

/// In the workload's child, before its exec: its own process group (the terminal's
/// foreground group when stdin is a terminal, so ^C reaches it once, not through the
/// init too), and no signal blocked.
pub fn prepare_child(tty: bool) {
    // SAFETY: setpgid/tcsetpgrp/signal take integers. SIGTTOU is ignored around
    // tcsetpgrp (it is not in the blocked set), so taking the terminal from a background
    // group does not stop us; its default comes back, and the mask is cleared, for the
    // workload.
    unsafe {
        libc::setpgid(0, 0);
        if tty {
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            libc::tcsetpgrp(0, libc::getpid());
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Closes every fd from `from` up: the init holds none of the setup's pipes, so the agent
/// sees the workload's exec (or its failure) on them alone.
pub fn close_from(from: RawFd) {
    // SAFETY: close_range closes fds this process owns; nothing here uses them again.
    unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0u32) };
}

/// PID 1's loop: forwards signals to `child`, reaps everything, and exits with the
/// child's status once it is gone. Never returns.
pub fn supervise(child: libc::pid_t, set: &libc::sigset_t) -> ! {
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"init".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut status: Option<i32> = None;
    loop {
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: an initialized set, a zeroed siginfo to write to, a valid timeout.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigtimedwait(set, &mut info, &timeout)
        };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(child, sig) };
        }
        // Reap whatever has exited (SIGCHLD, or a timeout: a missed one costs a second).
        loop {
            let mut st = 0;
            // SAFETY: waitpid writes the status into `st`.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                status = Some(crate::reaper::exit_status(st));
            }
        }
        if let Some(code) = status {
            // SAFETY: _exit ends the process without running the agent's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_and_terminal_stops_are_not_forwarded() {
        let set = forwarded_set();
        // SAFETY: sigismember reads an initialized set.
        let has = |s| unsafe { libc::sigismember(&set, s) } == 1;
        assert!(has(libc::SIGTERM) && has(libc::SIGHUP) && has(libc::SIGCHLD));
        assert!(has(libc::SIGUSR1) && has(libc::SIGINT) && has(libc::SIGWINCH));
        for s in NOT_FORWARDED {
            assert!(!has(s), "signal {s}");
        }
    }
}
