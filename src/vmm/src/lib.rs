//! berth-vmm: the microVM monitor, one process per microVM.
//!
//! [`vm::Vm::build`] is the boot recipe, top to bottom: check the host, create the VM and
//! its memory, load the kernel and initramfs, put the devices on the buses, configure the
//! vCPUs; [`vm::Vm::run`] starts the vCPU threads and runs the event loop until the guest
//! stops (or is stopped), and reports why as a [`VmExit`].

pub mod boot;
pub mod cli;
pub mod config;
pub mod control;
pub mod devices;
pub mod jail;
pub mod layout;
pub mod mptable;
pub mod seccomp;
pub mod snapshot;
pub mod vm;
pub mod vstate;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use vmm_sys_util::eventfd::EventFd;

/// How and why a VM ended: the monitor's exit status and its one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// Process exit status: 0 for a clean guest shutdown.
    pub code: i32,
    /// One line for the log.
    pub reason: String,
}

impl VmExit {
    /// A clean stop.
    pub fn ok(reason: impl Into<String>) -> VmExit {
        VmExit {
            code: 0,
            reason: reason.into(),
        }
    }

    /// A failure (exit status 1).
    pub fn failed(reason: impl Into<String>) -> VmExit {
        VmExit {
            code: 1,
            reason: reason.into(),
        }
    }
}

/// The first reason the VM must stop, from whichever thread saw it, and an eventfd that
/// wakes the event loop.
pub struct ExitSignal {
    evt: EventFd,
    set: AtomicBool,
    exit: Mutex<Option<VmExit>>,
}

impl ExitSignal {
    /// A signal not yet raised.
    pub fn new() -> std::io::Result<ExitSignal> {
        Ok(ExitSignal {
            evt: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            set: AtomicBool::new(false),
            exit: Mutex::new(None),
        })
    }

    /// Records why the VM stops (the first reason wins) and wakes the event loop.
    pub fn set(&self, exit: VmExit) {
        let mut e = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(exit);
        }
        self.set.store(true, Ordering::SeqCst);
        let _ = self.evt.write(1);
    }

    /// Whether a stop was requested.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// The recorded reason.
    pub fn take(&self) -> Option<VmExit> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The eventfd the event loop waits on.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Counters reported by the control socket's `stats`.
#[derive(Default)]
pub struct Stats {
    /// vCPU exits to the monitor, all vCPUs.
    pub vcpu_exits: AtomicU64,
    /// Guest memory given back to the host through free page reporting, in bytes.
    pub reported_free: AtomicU64,
}
