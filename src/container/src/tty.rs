//! Pseudo-terminals for containers started with a TTY.

use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// A new pty: the master (kept by the agent) and the slave (the process's terminal).
pub struct Pty {
    /// The agent's end.
    pub master: OwnedFd,
    /// The process's end.
    pub slave: OwnedFd,
    /// The slave's path (for /dev/console).
    pub path: PathBuf,
}

/// Opens a pty with close-on-exec on both ends.
pub fn open() -> std::io::Result<Pty> {
    let (mut m, mut s) = (0, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: openpty writes two fds and the slave's name (< 128 bytes) into valid buffers;
    // the termios and winsize arguments may be null.
    if unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            name.as_mut_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    for fd in [&master, &slave] {
        // SAFETY: F_SETFD on an open fd.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: openpty NUL-terminated the name.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Ok(Pty {
        master,
        slave,
        path: PathBuf::from(path.to_string_lossy().into_owned()),
    })
}

/// Sets a terminal's size.
pub fn resize(master: &impl AsRawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
