//! PID 1 duties inside a microVM: the guest's basic mounts, cgroup2 with controllers
//! delegated to containers, loopback, and the final reboot.

use std::ffi::CString;
use std::path::Path;

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    let (s, t, f) = (
        CString::new(source)?,
        CString::new(target)?,
        CString::new(fstype)?,
    );
    let d = data.map(CString::new).transpose()?;
    // SAFETY: NUL-terminated strings (or null data) valid for the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()) as *const libc::c_void,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(std::io::Error::new(
                e.kind(),
                format!("mounting {fstype} at {target}: {e}"),
            ));
        }
    }
    Ok(())
}

/// Leaves the boot root (the read-only erofs image, or the initramfs) for a tmpfs root
/// (switch_root): the guest's own directories must be writable, and containers enter
/// their roots with pivot_root, which the kernel refuses from the initial rootfs.
fn leave_initramfs() -> std::io::Result<()> {
    mount("tmpfs", "/newroot", "tmpfs", 0, Some("mode=0755"))?;
    std::env::set_current_dir("/newroot")?;
    let (dot, slash) = (CString::new(".")?, CString::new("/")?);
    // SAFETY: NUL-terminated paths; MS_MOVE takes no data.
    let r = unsafe {
        libc::mount(
            dot.as_ptr(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::other(format!("moving the new root: {e}")));
    }
    // SAFETY: chroot to the current directory (the moved tmpfs).
    if unsafe { libc::chroot(dot.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

/// Mounts /proc, /sys, /dev (+pts, shm), /run, /tmp and cgroup2, and enables the
/// memory, pids, cpu and cpuset controllers for containers.
pub fn setup_guest() -> std::io::Result<()> {
    leave_initramfs()?;
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", nosuid, None)?;
    mount("sysfs", "/sys", "sysfs", nosuid, None)?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, None)?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620"),
    )?;
    mount("shm", "/dev/shm", "tmpfs", nosuid, None)?;
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None)?;
    let ctl = Path::new("/sys/fs/cgroup/cgroup.subtree_control");
    for c in ["memory", "pids", "cpu", "cpuset"] {
        let _ = std::fs::write(ctl, format!("+{c}"));
    }
    Ok(())
}

/// With `berth_trace` on the kernel command line (1; 2 adds [`crate::steps`]; the kernel
/// hands it to PID 1 as an environment variable; berthd adds it when it traces boots), one
/// line on the console:
/// a start-up step and the guest's time since boot, for docs/boot.md's phases.
pub fn trace(step: &str) {
    if std::process::id() == 1 && std::env::var_os("berth_trace").is_some() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        eprintln!(
            "berth-agent: trace {}.{:06} {step}",
            ts.tv_sec,
            ts.tv_nsec / 1000
        );
    }
}

/// Syncs and reboots: with the guest's `reboot=k` the monitor sees the reset and exits 0.
pub fn power_off() -> ! {
    crate::steps::flush();
    // SAFETY: sync and reboot take no pointers; reboot does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1)
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Blocks SIGINT (Ctrl+Alt+Del, once the kernel's own handling is turned off) and
/// SIGTERM in this thread and the threads it starts; [`on_shutdown_signal`] waits for
/// them.
pub fn block_shutdown_signals() {
    let set = shutdown_signals();
    // SAFETY: `set` is initialized; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: RB_DISABLE_CAD only changes what Ctrl+Alt+Del does: signal PID 1 instead of
    // rebooting at once.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// A graceful shutdown (the monitor's `shutdown`, i.e. Ctrl+Alt+Del): stop every
/// container, then power off.
pub fn on_shutdown_signal(agent: std::sync::Arc<crate::server::Agent>) {
    let spawned = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            let set = shutdown_signals();
            let mut sig = 0;
            // SAFETY: sigwait reads `set` and writes the signal number into `sig`.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            eprintln!("berth-agent: signal {sig}: stopping every container and powering off");
            agent.stop_all();
            power_off();
        });
    if spawned.is_err() {
        eprintln!("berth-agent: cannot start the shutdown thread");
    }
}
