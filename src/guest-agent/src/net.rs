//! A microVM's network interfaces, configured by the agent before any workload runs:
//! address, netmask, MTU, up, and the default route, with the kernel's classic interface
//! ioctls (SIOCSIF*, SIOCADDRT). Six calls per interface need no netlink library in the
//! static agent, and no DHCP round trip on the boot path; berthd chose every value.

use berth_protocol::GuestInterface;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const SIOCSIFMTU: libc::c_ulong = 0x8922;
const SIOCADDRT: libc::c_ulong = 0x890b;
const SIOCSIFNAME: libc::c_ulong = 0x8923;
const IFF_UP: libc::c_short = 0x1;
const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

/// `struct ifreq`: a name and a 24-byte union (an address, flags or an MTU).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

/// `struct rtentry` (include/uapi/linux/route.h).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: libc::sockaddr,
    gateway: libc::sockaddr,
    genmask: libc::sockaddr,
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

/// A `sockaddr_in` for `a`, as the generic `sockaddr` the ioctls take.
fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data; the kernel reads
    // the family and interprets the rest as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn req(name: &str) -> IfReq {
    let mut r = IfReq {
        name: [0; 16],
        data: [0; 24],
    };
    let n = name.len().min(15);
    r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    r
}

fn ioctl<T>(fd: &OwnedFd, op: libc::c_ulong, arg: &mut T, what: &str) -> Result<(), String> {
    // SAFETY: `arg` is the structure `op` expects (ifreq or rtentry), valid and writable
    // for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), op, arg as *mut T) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_addr(fd: &OwnedFd, name: &str, op: libc::c_ulong, a: Ipv4Addr) -> Result<(), String> {
    let mut r = req(name);
    let sa = sockaddr(a);
    // SAFETY: sockaddr is 16 bytes of plain data, and data has room for 24.
    let bytes: [u8; 16] = unsafe { std::mem::transmute(sa) };
    r.data[..16].copy_from_slice(&bytes);
    ioctl(fd, op, &mut r, &format!("setting {name}'s address {a}"))
}

fn up(fd: &OwnedFd, name: &str) -> Result<(), String> {
    let mut r = req(name);
    ioctl(fd, SIOCGIFFLAGS, &mut r, &format!("reading {name}'s flags"))?;
    let flags = libc::c_short::from_ne_bytes([r.data[0], r.data[1]]) | IFF_UP;
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(fd, SIOCSIFFLAGS, &mut r, &format!("bringing {name} up"))
}

/// Renames a (down) interface.
fn rename(fd: &OwnedFd, from: &str, to: &str) -> Result<(), String> {
    let mut r = req(from);
    let n = to.len().min(15);
    r.data[..n].copy_from_slice(&to.as_bytes()[..n]);
    ioctl(fd, SIOCSIFNAME, &mut r, &format!("renaming {from} to {to}"))
}

/// The interface whose MAC address is `mac`.
fn name_of(mac: &str) -> Result<String, String> {
    let want = mac.trim().to_ascii_lowercase();
    let dir = std::fs::read_dir("/sys/class/net").map_err(|e| format!("/sys/class/net: {e}"))?;
    for e in dir.flatten() {
        let addr = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
        if addr.trim().eq_ignore_ascii_case(&want) {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    Err(format!("no network interface has the MAC address {mac}"))
}

/// The netmask of a prefix length.
fn netmask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0),
    )
}

/// Configures the interfaces and brings loopback up.
pub fn configure(ifs: &[GuestInterface]) -> Result<(), String> {
    if ifs.iter().filter(|i| i.gateway.is_some()).count() > 1 {
        return Err("only one interface can carry the default route".into());
    }
    // SAFETY: plain socket(2); the descriptor is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    up(&fd, "lo")?;
    // Named as berth recorded them (probe order may differ): through temporary names
    // first, so that two swapped names never collide.
    let mut names = Vec::new();
    for (n, i) in ifs.iter().enumerate() {
        let kernel = name_of(&i.mac)?;
        let want = if i.ifname.is_empty() {
            kernel.clone()
        } else {
            i.ifname.clone()
        };
        if want.len() > 15 || want.contains('/') {
            return Err(format!("bad interface name {want:?}"));
        }
        if kernel != want {
            let tmp = format!("berthtmp{n}");
            rename(&fd, &kernel, &tmp)?;
            names.push((Some(tmp), want));
        } else {
            names.push((None, want));
        }
    }
    for (tmp, want) in &names {
        if let Some(t) = tmp {
            rename(&fd, t, want)?;
        }
    }
    for (i, (_, name)) in ifs.iter().zip(names) {
        if i.prefix_len == 0 || i.prefix_len > 32 {
            return Err(format!("bad prefix length {}", i.prefix_len));
        }
        let mut r = req(&name);
        r.data[..4].copy_from_slice(&(i.mtu as libc::c_int).to_ne_bytes());
        ioctl(
            &fd,
            SIOCSIFMTU,
            &mut r,
            &format!("setting {name}'s MTU {}", i.mtu),
        )?;
        set_addr(&fd, &name, SIOCSIFADDR, i.address)?;
        set_addr(&fd, &name, SIOCSIFNETMASK, netmask(i.prefix_len))?;
        up(&fd, &name)?;
        if let Some(gw) = i.gateway {
            let any = sockaddr(Ipv4Addr::UNSPECIFIED);
            let mut rt = RtEntry {
                pad1: 0,
                dst: any,
                gateway: sockaddr(gw),
                genmask: any,
                flags: RTF_UP | RTF_GATEWAY,
                pad2: 0,
                pad3: 0,
                pad4: std::ptr::null_mut(),
                metric: 0,
                dev: std::ptr::null_mut(),
                mtu: 0,
                window: 0,
                irtt: 0,
            };
            ioctl(
                &fd,
                SIOCADDRT,
                &mut rt,
                &format!("adding the default route via {gw}"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_and_sockaddrs_are_what_the_kernel_reads() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        // SAFETY: sockaddr is 16 bytes of plain data.
        let b: [u8; 16] = unsafe { std::mem::transmute(sockaddr(Ipv4Addr::new(10, 1, 2, 3))) };
        assert_eq!(&b[..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&b[4..8], &[10, 1, 2, 3]);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert!(name_of("02:42:00:00:00:00:00").is_err());
    }
}
