//! virtio-fs (virtio 1.2 §5.11) over vhost-user: the monitor owns the device's MMIO
//! transport, queues and interrupt; a backend process (virtiofsd) owns the file system and
//! serves the FUSE requests straight from the guest's memory, which it maps from the memfd
//! berth-vmm hands it with `SET_MEM_TABLE`.
//!
//! Why a separate backend: the FUSE server is the code a hostile guest attacks with every
//! request, so it runs in its own sandboxed process (virtiofsd's namespaces, pivot_root
//! into the shared directory and seccomp filter) rather than in the monitor; it opens
//! every path relative to the shared directory's fd, so neither `..` nor a symlink leads
//! out of it, and `--readonly` refuses writes whatever the guest's mount flags say.
//!
//! The monitor's part: the guest's queue kicks (ioeventfds, delivered by the event loop)
//! are forwarded to the backend's kick eventfds, and the backend's call eventfds raise the
//! device's interrupt with the used-ring bit set (virtio-mmio's interrupt status must say
//! why, so the call cannot go to KVM directly). If the backend hangs up, the device stops
//! answering and the monitor logs it; the guest sees its requests never complete, the host
//! is unaffected.

use super::{ids, Activation, Interrupt, Registrar, VirtioDevice, VIRTIO_F_VERSION_1};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Queue 0 is the high-priority queue (FORGET, INTERRUPT), queue 1 the one request queue.
const NUM_QUEUES: usize = 2;
/// Each queue's maximum size.
const QUEUE_SIZE: u16 = 1024;
/// The longest tag the config space holds.
pub const MAX_TAG_LEN: usize = 36;
/// Ring features the backend may implement (it is the one processing the rings).
const RING_FEATURES: u64 = (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX);

/// Errors setting up the device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag does not fit the config space.
    #[error("virtio-fs tag {0:?}: a tag is 1 to 36 bytes")]
    Tag(String),
    /// The backend's socket can't be reached or refused the handshake.
    #[error("virtio-fs backend {socket} (tag {tag}): {step}: {err}")]
    Backend {
        /// The socket.
        socket: String,
        /// The tag.
        tag: String,
        /// The vhost-user step that failed.
        step: &'static str,
        /// What vhost said.
        err: vhost::Error,
    },
    /// The backend lacks a feature the device needs.
    #[error("virtio-fs backend {socket} (tag {tag}) does not offer {what}")]
    Missing {
        /// The socket.
        socket: String,
        /// The tag.
        tag: String,
        /// The feature.
        what: &'static str,
    },
}

/// The config space: the tag (NUL-padded) and the number of request queues.
fn config_space(tag: &str) -> Vec<u8> {
    let mut c = vec![0u8; MAX_TAG_LEN + 4];
    c[..tag.len()].copy_from_slice(tag.as_bytes());
    c[MAX_TAG_LEN..].copy_from_slice(&((NUM_QUEUES - 1) as u32).to_le_bytes());
    c
}

/// A virtio-fs device served by a vhost-user backend.
pub struct Fs {
    tag: String,
    config: Vec<u8>,
    frontend: Frontend,
    /// Virtio features the backend offers (without the vhost-user-only bit).
    offered: u64,
    /// Whether the backend speaks vhost-user protocol features (rings start disabled).
    protocol: bool,
    running: Option<Running>,
    broken: bool,
}

struct Running {
    kicks: Vec<Option<EventFd>>,
    calls: Vec<(usize, EventFd)>,
    irq: Arc<Interrupt>,
    registrar: Registrar,
}

impl Fs {
    /// Connects to the backend listening on `socket` and reads what it offers.
    pub fn connect(socket: &Path, tag: &str) -> Result<Fs, FsError> {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(FsError::Tag(tag.to_owned()));
        }
        let err = |step| {
            let socket = socket.display().to_string();
            let tag = tag.to_owned();
            move |err| FsError::Backend {
                socket,
                tag,
                step,
                err,
            }
        };
        let mut frontend = Frontend::connect(socket, NUM_QUEUES as u64).map_err(err("connect"))?;
        frontend.set_owner().map_err(err("SET_OWNER"))?;
        let features = frontend.get_features().map_err(err("GET_FEATURES"))?;
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol = features & proto_bit != 0;
        if features & VIRTIO_F_VERSION_1 == 0 {
            return Err(FsError::Missing {
                socket: socket.display().to_string(),
                tag: tag.to_owned(),
                what: "VIRTIO_F_VERSION_1",
            });
        }
        if protocol {
            let pf = frontend
                .get_protocol_features()
                .map_err(err("GET_PROTOCOL_FEATURES"))?;
            let wanted =
                pf & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
            frontend
                .set_protocol_features(wanted)
                .map_err(err("SET_PROTOCOL_FEATURES"))?;
        }
        Ok(Fs {
            tag: tag.to_owned(),
            config: config_space(tag),
            frontend,
            offered: features & (VIRTIO_F_VERSION_1 | RING_FEATURES),
            protocol,
            running: None,
            broken: false,
        })
    }

    /// Hands the rings to the backend.
    fn start(&mut self, a: &Activation) -> Result<Running, String> {
        let e = |step: &str| {
            let tag = self.tag.clone();
            let step = step.to_owned();
            move |err: vhost::Error| format!("virtio-fs {tag}: {step}: {err}")
        };
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let acked = (a.acked_features & self.offered) | if self.protocol { proto_bit } else { 0 };
        self.frontend
            .set_features(acked)
            .map_err(e("SET_FEATURES"))?;
        let regions = a
            .mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(e("guest memory is not shared (no memfd)"))?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(e("SET_MEM_TABLE"))?;
        let host = |gpa: u64| -> Result<u64, String> {
            a.mem
                .get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|_| {
                    format!(
                        "virtio-fs {}: a ring at {gpa:#x} is outside guest memory",
                        self.tag
                    )
                })
        };
        let mut kicks = Vec::new();
        let mut calls = Vec::new();
        for (i, q) in a.queues.iter().enumerate() {
            if !q.ready() {
                kicks.push(None);
                continue;
            }
            let cfg = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: host(q.desc_table())?,
                used_ring_addr: host(q.used_ring())?,
                avail_ring_addr: host(q.avail_ring())?,
                log_addr: None,
            };
            let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(|x| x.to_string())?;
            let call = EventFd::new(libc::EFD_NONBLOCK).map_err(|x| x.to_string())?;
            self.frontend
                .set_vring_num(i, q.size())
                .map_err(e("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_addr(i, &cfg)
                .map_err(e("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(i, 0)
                .map_err(e("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(i, &call)
                .map_err(e("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(i, &kick)
                .map_err(e("SET_VRING_KICK"))?;
            if self.protocol {
                self.frontend
                    .set_vring_enable(i, true)
                    .map_err(e("SET_VRING_ENABLE"))?;
            }
            kicks.push(Some(kick));
            calls.push((i, call));
        }
        // Watched only once the backend took every ring: a failed start leaves nothing
        // in the event loop. A hang-up of the backend is reported on its socket.
        let mut watched = Vec::new();
        let fds = calls
            .iter()
            .map(|(_, c)| (c.as_raw_fd(), EventSet::IN))
            .chain([(self.frontend.as_raw_fd(), EventSet::empty())]);
        for (fd, ev) in fds {
            if let Err(x) = a.registrar.add(fd, ev) {
                for w in watched {
                    a.registrar.remove(w);
                }
                return Err(x.to_string());
            }
            watched.push(fd);
        }
        Ok(Running {
            kicks,
            calls,
            irq: a.interrupt.clone(),
            registrar: a.registrar.clone(),
        })
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            for (_, c) in &r.calls {
                r.registrar.remove(c.as_raw_fd());
            }
            r.registrar.remove(self.frontend.as_raw_fd());
            if !self.broken {
                for (i, _) in &r.calls {
                    if self.protocol {
                        let _ = self.frontend.set_vring_enable(*i, false);
                    }
                    // GET_VRING_BASE stops the ring in the backend.
                    let _ = self.frontend.get_vring_base(*i);
                }
            }
        }
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        ids::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), String> {
        if self.broken {
            return Err(format!("virtio-fs {}: its backend is gone", self.tag));
        }
        self.stop();
        let r = self.start(&a)?;
        self.running = Some(r);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) {
        if let Some(Some(k)) = self.running.as_ref().and_then(|r| r.kicks.get(index)) {
            let _ = k.write(1);
        }
    }

    fn process_event(&mut self, fd: RawFd, events: EventSet) {
        let Some(r) = self.running.as_ref() else {
            return;
        };
        if fd == self.frontend.as_raw_fd() {
            if events.intersects(EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP) {
                eprintln!(
                    "berth-vmm: virtio-fs {}: the backend hung up; the share stops answering",
                    self.tag
                );
                self.broken = true;
                self.stop();
            }
            return;
        }
        if let Some((_, c)) = r.calls.iter().find(|(_, c)| c.as_raw_fd() == fd) {
            if c.read().is_ok() {
                r.irq.signal_used();
            }
        }
    }

    fn reset(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_space_holds_the_tag_and_one_request_queue() {
        let c = config_space("berth0");
        assert_eq!(&c[..6], b"berth0");
        assert!(c[6..MAX_TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(u32::from_le_bytes(c[36..40].try_into().unwrap()), 1);
    }

    #[test]
    fn a_missing_backend_or_a_bad_tag_is_refused_by_name() {
        let e = Fs::connect(Path::new("/nonexistent/fs.sock"), "data")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent/fs.sock") && e.contains("tag data"),
            "{e}"
        );
        let e = Fs::connect(Path::new("/x"), &"t".repeat(37))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("1 to 36 bytes"), "{e}");
    }
}
