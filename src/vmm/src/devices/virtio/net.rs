//! virtio-net backed by an existing host tap device. No offloads: every frame carries a
//! 12-byte virtio-net header, which the tap (IFF_VNET_HDR) reads and writes as is.

use super::{ids, read_config_bytes, Activation, RxTx, VirtioDevice, VIRTIO_F_VERSION_1};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};

use virtio_queue::QueueT;

use vmm_sys_util::epoll::EventSet;

const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// virtio_net_hdr_v1 (with num_buffers).
const VNET_HDR_LEN: usize = 12;
/// Largest frame: 64 KiB of payload plus the Ethernet and virtio headers.
const MAX_FRAME: usize = 65562 + VNET_HDR_LEN;
const RX: usize = 0;
const TX: usize = 1;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Errors opening the tap.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No such interface, or not a tap.
    #[error(
        "tap {0}: no such tap device on this host (create it first: ip tuntap add {0} mode tap)"
    )]
    NoTap(String),
    /// The tap can't be attached.
    #[error("tap {tap}: {what}: {err}")]
    Tap {
        /// The name.
        tap: String,
        /// The step.
        what: &'static str,
        /// Why.
        err: std::io::Error,
    },
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac));
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens the existing tap `name` with virtio-net headers.
fn open_tap(name: &str) -> Result<File, NetError> {
    // TUNSETIFF would create a missing tap: check it exists first, in this process's
    // network namespace (not through /sys, which shows the namespace of whoever mounted
    // it). TUNSETIFF refuses a device of another kind with EINVAL.
    let cname = std::ffi::CString::new(name).map_err(|_| NetError::NoTap(name.to_owned()))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || index == 0 {
        return Err(NetError::NoTap(name.to_owned()));
    }
    let err = |what| {
        let tap = name.to_owned();
        move |err| NetError::Tap { tap, what, err }
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(err("opening /dev/net/tun"))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `req` is a properly sized ifreq that lives across the call; the fd is open.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(err("TUNSETIFF")(std::io::Error::last_os_error()));
    }
    let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETVNETHDRSZ, &size) } < 0 {
        return Err(err("TUNSETVNETHDRSZ")(std::io::Error::last_os_error()));
    }
    Ok(f)
}

use std::os::unix::fs::OpenOptionsExt;

/// A virtio network card.
pub struct Net {
    tap: File,
    config: [u8; 6],
    state: Option<RxTx>,
    /// A frame read from the tap that found no guest buffer yet.
    pending: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl Net {
    /// Attaches to the existing tap `name`.
    pub fn open(name: &str, mac: [u8; 6]) -> Result<Net, NetError> {
        Ok(Net::with_tap(open_tap(name)?, mac))
    }

    /// A device on an already opened tap-like file (a tap, or a socket in tests).
    pub fn with_tap(tap: File, mac: [u8; 6]) -> Net {
        Net {
            tap,
            config: mac,
            state: None,
            pending: None,
            buf: vec![0u8; MAX_FRAME],
        }
    }

    /// Moves frames from the tap into guest receive buffers while both last.
    fn receive(&mut self) {
        let Some(a) = self.state.as_mut() else { return };
        let mut used = false;
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.tap.read(&mut self.buf) {
                    Ok(n) if n >= VNET_HDR_LEN => {
                        let mut f = self.buf[..n].to_vec();
                        f[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
                        f
                    }
                    Ok(_) => continue,
                    Err(_) => break, // EAGAIN: drained
                },
            };
            let Some(chain) = super::pop(&mut a.rx, &a.mem, &a.irq) else {
                // No buffer: keep the frame and stop watching the tap until the guest
                // adds buffers.
                self.pending = Some(frame);
                a.registrar
                    .modify(self.tap.as_raw_fd(), EventSet::empty())
                    .ok();
                break;
            };
            let head = chain.head_index();
            let len = match chain.writer(&a.mem) {
                Ok(mut w) if w.available_bytes() >= frame.len() => match w.write_all(&frame) {
                    Ok(()) => frame.len() as u32,
                    Err(_) => 0,
                },
                _ => 0, // too small or bad memory: the frame is dropped
            };
            let _ = a.rx.add_used(&a.mem, head, len);
            used = true;
        }
        if used && a.rx.needs_notification(&a.mem).unwrap_or(true) {
            a.irq.signal_used();
        }
    }

    fn transmit(&mut self) {
        let Some(a) = self.state.as_mut() else { return };
        let mut used = false;
        while let Some(chain) = super::pop(&mut a.tx, &a.mem, &a.irq) {
            let head = chain.head_index();
            if let Ok(r) = chain.reader(&a.mem) {
                let mut frame = Vec::new();
                let ok = r.take(MAX_FRAME as u64 + 1).read_to_end(&mut frame).is_ok();
                if ok && frame.len() > VNET_HDR_LEN && frame.len() <= MAX_FRAME {
                    // A full tap queue drops the frame, as a real NIC would.
                    let _ = self.tap.write(&frame);
                }
            }
            let _ = a.tx.add_used(&a.mem, head, 0);
            used = true;
        }
        if used && a.tx.needs_notification(&a.mem).unwrap_or(true) {
            a.irq.signal_used();
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        ids::NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }
    fn activate(&mut self, a: Activation) -> Result<(), String> {
        let active = RxTx::take(a, "virtio-net")?;
        active
            .registrar
            .add(self.tap.as_raw_fd(), EventSet::IN)
            .map_err(|e| format!("watching the tap: {e}"))?;
        self.state = Some(active);
        Ok(())
    }
    fn process_queue(&mut self, index: usize) {
        match index {
            RX => {
                if let Some(a) = &self.state {
                    a.registrar.modify(self.tap.as_raw_fd(), EventSet::IN).ok();
                }
                self.receive()
            }
            TX => self.transmit(),
            _ => {}
        }
    }
    fn process_event(&mut self, fd: RawFd, _events: EventSet) {
        if fd == self.tap.as_raw_fd() {
            self.receive();
        }
    }
    fn reset(&mut self) {
        if let Some(a) = self.state.take() {
            a.registrar.remove(self.tap.as_raw_fd());
        }
        self.pending = None;
    }
}

/// A connected pair standing in for a tap in tests.
#[cfg(test)]
fn socketpair() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    use std::os::unix::io::FromRawFd;
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn d(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
    }

    #[test]
    fn missing_taps_are_refused_without_creating_one() {
        let e = Net::open("berthnosuch0", random_mac())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no such tap device"), "{e}");
        assert!(!std::path::Path::new("/sys/class/net/berthnosuch0").exists());
        assert!(Net::open("../lo", random_mac()).is_err());
    }

    #[test]
    fn frames_cross_both_ways() {
        let m = mem();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let (tap, host) = socketpair();
        let mut dev = Net::with_tap(tap, [2, 0, 0, 0, 0, 1]);
        // Guest → host.
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(b"ethernet-frame-from-guest");
        m.write_slice(&frame, GuestAddress(0x10_0000)).unwrap();
        txq.build_desc_chain(&[d(0x10_0000, frame.len() as u32, 0)])
            .unwrap();
        // A receive buffer.
        rxq.build_desc_chain(&[d(0x20_0000, 2048, VRING_DESC_F_WRITE)])
            .unwrap();
        dev.activate(activation(
            &m,
            vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
        ))
        .unwrap();
        dev.process_queue(TX);
        let mut got = vec![0u8; 100];
        let n = (&host).read(&mut got).unwrap();
        assert_eq!(&got[..n], &frame[..]);
        // Host → guest.
        let mut inbound = vec![0u8; VNET_HDR_LEN];
        inbound.extend_from_slice(b"reply");
        (&host).write_all(&inbound).unwrap();
        dev.process_event(dev.tap.as_raw_fd(), EventSet::IN);
        let used = rxq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(used.len() as usize, inbound.len());
        let mut buf = vec![0u8; inbound.len()];
        m.read_slice(&mut buf, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(&buf[VNET_HDR_LEN..], b"reply");
        assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 1);
    }

    #[test]
    fn a_frame_waits_for_a_receive_buffer() {
        let m = mem();
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let (tap, host) = socketpair();
        let mut dev = Net::with_tap(tap, [2, 0, 0, 0, 0, 1]);
        dev.activate(activation(
            &m,
            vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
        ))
        .unwrap();
        (&host).write_all(&[0u8; 64]).unwrap();
        dev.process_event(dev.tap.as_raw_fd(), EventSet::IN);
        assert!(dev.pending.is_some());
        assert_eq!(rxq.used().idx().load(), 0);
    }
}
