//! AF_VSOCK listening socket (std has no vsock support).

use std::os::unix::io::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// Listens on vsock `port` (any CID). The returned listener is a vsock socket wrapped as a
/// UnixListener: accept/read/write work the same on it.
pub fn listen(port: u32) -> std::io::Result<UnixListener> {
    // SAFETY: a plain socket call; the fd is checked and then owned.
    let fd: RawFd =
        unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; zeroed is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: `addr` is a valid sockaddr_vm of the given size.
    let r = unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen on a bound socket.
    if unsafe { libc::listen(fd, 128) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(UnixListener::from(owned))
}

/// Accepts one connection from a vsock listener.
pub fn accept(l: &UnixListener) -> std::io::Result<UnixStream> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: accept4 with null address pointers on a listening socket.
    let fd = unsafe {
        libc::accept4(
            l.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by accept4 and is owned here.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}
