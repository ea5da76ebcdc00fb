//! virtio-pmem (virtio 1.2 §5.19), read-only: a host file the guest sees as persistent
//! memory at a guest-physical address, outside its RAM. With DAX the guest maps the file's
//! pages straight into its processes: every microVM reading the same image shares one
//! host page cache, and nothing is copied into guest RAM (docs/boot.md).
//!
//! The file is mapped read-only into the monitor and registered with KVM as a read-only
//! memory slot: a guest write to it exits to the monitor, which drops it, so no guest can
//! change what the others see. Flush requests (the driver's fsync) have nothing to write
//! back and succeed.

use super::{ids, Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};

/// The device's size granule: the guest hot-adds the region in 2 MiB subsections.
pub const ALIGN: u64 = 2 << 20;

/// Request type: flush (the only one defined).
const REQ_FLUSH: u32 = 0;
/// Response: done.
const RESP_OK: u32 = 0;
/// Response: failed.
const RESP_EIO: u32 = 1;

/// Errors opening a pmem image.
#[derive(Debug, thiserror::Error)]
pub enum PmemError {
    /// The file could not be opened or mapped.
    #[error("pmem image {path}: {err}")]
    Io {
        /// The image.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The file's size is not a positive multiple of 2 MiB.
    #[error("pmem image {path}: size {size} is not a positive multiple of 2 MiB (pad it, e.g. truncate -s %2M)")]
    Size {
        /// The image.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
}

/// A read-only mapping of the image, unmapped when the device goes.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this struct; moving it to another
// thread is sound (nothing in the monitor writes through it).
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are exactly what mmap returned, and the monitor holds no
        // reference into them. The VM's read-only memory slot may outlive the mapping (a
        // build that fails after this device drops it before the VM): KVM follows the
        // unmap through its MMU notifier and never writes through a read-only slot.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// The pmem device.
pub struct Pmem {
    map: Mapping,
    gpa: u64,
    state: Option<(GuestMemoryMmap, Queue, Arc<Interrupt>)>,
}

impl Pmem {
    /// Maps the image at `path` read-only; the guest will see it at `gpa`.
    pub fn open(path: &Path, gpa: u64) -> Result<Pmem, PmemError> {
        let io = |err| PmemError::Io {
            path: path.display().to_string(),
            err,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size == 0 || !size.is_multiple_of(ALIGN) {
            return Err(PmemError::Size {
                path: path.display().to_string(),
                size,
            });
        }
        // SAFETY: a new read-only private mapping of an open file; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(Pmem {
            map: Mapping {
                addr,
                len: size as usize,
            },
            gpa,
            state: None,
        })
    }

    /// (guest-physical address, host address, length) for KVM's read-only memory slot.
    pub fn region(&self) -> (u64, u64, u64) {
        (self.gpa, self.map.addr as u64, self.map.len as u64)
    }
}

impl VirtioDevice for Pmem {
    fn device_type(&self) -> u32 {
        ids::PMEM
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_pmem_config { le64 start; le64 size; }
        let mut cfg = [0u8; 16];
        cfg[..8].copy_from_slice(&self.gpa.to_le_bytes());
        cfg[8..].copy_from_slice(&(self.map.len as u64).to_le_bytes());
        data.fill(0);
        if let Some(src) = cfg.get(offset as usize..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }
    fn activate(&mut self, a: Activation) -> Result<(), String> {
        let q = a.queues.into_iter().next().ok_or("no queue")?;
        self.state = Some((a.mem, q, a.interrupt));
        Ok(())
    }
    fn process_queue(&mut self, _index: usize) {
        let Some((mem, q, irq)) = self.state.as_mut() else {
            return;
        };
        super::serve_queue(q, mem, irq, |chain| {
            // One readable descriptor with the request type, one writable with the answer.
            let mut kind = None;
            let mut answer = None;
            for d in chain {
                if d.is_write_only() {
                    if d.len() >= 4 {
                        answer.get_or_insert(d.addr());
                    }
                } else if d.len() >= 4 {
                    kind = mem.read_obj::<u32>(d.addr()).ok().map(u32::from_le);
                }
            }
            let ret = match kind {
                Some(REQ_FLUSH) => RESP_OK,
                _ => RESP_EIO,
            };
            match answer {
                Some(addr) if mem.write_obj(ret.to_le(), addr).is_ok() => 4,
                _ => 0,
            }
        });
    }
    fn reset(&mut self) {
        self.state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    /// Removes the test's directory when dropped.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn image(size: u64) -> (Dir, std::path::PathBuf) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-pmem-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("img");
        let f = File::create(&p).unwrap();
        if size > 4106 {
            std::os::unix::fs::FileExt::write_all_at(&f, b"erofs here", 4096).unwrap();
        }
        f.set_len(size).unwrap();
        (Dir(dir), p)
    }

    #[test]
    fn the_guest_sees_the_images_address_and_size_and_its_bytes_are_mapped() {
        let (_d, p) = image(4 << 20);
        let dev = Pmem::open(&p, 0x1_0000_0000).unwrap();
        let mut cfg = [0u8; 16];
        dev.read_config(0, &mut cfg);
        assert_eq!(
            u64::from_le_bytes(cfg[..8].try_into().unwrap()),
            0x1_0000_0000
        );
        assert_eq!(u64::from_le_bytes(cfg[8..].try_into().unwrap()), 4 << 20);
        let mut size = [0u8; 8];
        dev.read_config(8, &mut size);
        assert_eq!(u64::from_le_bytes(size), 4 << 20);
        let (gpa, host, len) = dev.region();
        assert_eq!((gpa, len), (0x1_0000_0000, 4 << 20));
        // SAFETY: `host` maps `len` readable bytes for as long as `dev` lives.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len as usize) };
        assert_eq!(&bytes[4096..4106], b"erofs here");
    }

    #[test]
    fn an_image_not_a_multiple_of_2_mib_is_refused_naming_the_size() {
        let (_d, p) = image(4096 * 3);
        let e = Pmem::open(&p, 0x1_0000_0000).err().unwrap().to_string();
        assert!(e.contains("size 12288") && e.contains("2 MiB"), "{e}");
        let (_d, p) = image(0);
        assert!(Pmem::open(&p, 0x1_0000_0000).is_err());
        let e = Pmem::open(Path::new("/nonexistent/img"), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/img"), "{e}");
    }

    fn request(kind: u32) -> u32 {
        let (_d, p) = image(2 << 20);
        let m = mem();
        m.write_obj(kind.to_le(), GuestAddress(0x10_0000)).unwrap();
        m.write_obj(0xffff_ffffu32, GuestAddress(0x10_1000))
            .unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                0x10_0000,
                4,
                VRING_DESC_F_NEXT as u16,
                1,
            )),
            RawDescriptor::from(SplitDescriptor::new(
                0x10_1000,
                4,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
        ];
        vq.build_desc_chain(&descs).unwrap();
        let mut dev = Pmem::open(&p, 0x1_0000_0000).unwrap();
        let q: Queue = vq.create_queue().unwrap();
        let a = activation(&m, vec![q]);
        let irq = a.interrupt.clone();
        dev.activate(a).unwrap();
        dev.process_queue(0);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 4);
        assert_eq!(irq.status(), 1);
        u32::from_le(m.read_obj(GuestAddress(0x10_1000)).unwrap())
    }

    #[test]
    fn a_flush_succeeds_and_an_unknown_request_fails() {
        assert_eq!(request(REQ_FLUSH), RESP_OK);
        assert_eq!(request(7), RESP_EIO);
    }
}
