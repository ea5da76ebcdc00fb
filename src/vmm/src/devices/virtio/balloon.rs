//! virtio-balloon with free page reporting only (virtio 1.2 §5.5.6.7): the guest kernel
//! reports blocks of memory it has freed, and the monitor hands their host pages back
//! (`madvise(MADV_DONTNEED)`, or a hole punched in the memfd when guest RAM is shared with
//! virtiofsd). Memory a guest touched while booting (the initramfs it unpacked, its init
//! sections) and later freed then stops counting against the host. The balloon itself
//! never inflates: its target stays 0 pages, so the guest keeps all the memory it was
//! given; pages the driver puts on the inflate or deflate queue anyway are handed back
//! untouched.
//!
//! A reported page is free in the guest: when the guest uses it again it reads zeros (or,
//! over a file-backed copy-on-write mapping such as the kernel's, the file's bytes), which
//! a free page may hold. Nothing outside the guest's own RAM can be named: every range is
//! checked against guest memory before the host touches it.

use super::{ids, Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::Stats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Feature bit: the device takes free page reports (VIRTIO_BALLOON_F_FREE_PAGE_REPORTING).
pub const F_FREE_PAGE_REPORTING: u64 = 1 << 5;

/// Inflate, deflate, and (with the feature, the only other one negotiated) reporting.
const QUEUE_SIZES: [u16; 3] = [64, 64, 32];
/// The reporting queue's index when only free page reporting is negotiated.
const REPORTING: usize = 2;
const PAGE: u64 = 4096;

/// The balloon device.
pub struct Balloon {
    state: Option<(GuestMemoryMmap, Vec<Queue>, Arc<Interrupt>)>,
    /// The monitor's counters: bytes given back go to `reported_free`.
    stats: Arc<Stats>,
}

impl Balloon {
    /// A balloon that takes free page reports and counts the bytes it gives back.
    pub fn new(stats: Arc<Stats>) -> Balloon {
        Balloon { state: None, stats }
    }
}

/// Gives the host pages behind guest range `[addr, addr + len)` back: false (nothing
/// done) unless the range is page aligned and lies inside one region of guest RAM.
pub fn discard(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    if len == 0 || !addr.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
        return false;
    }
    let Some(region) = mem.find_region(GuestAddress(addr)) else {
        return false;
    };
    let offset = addr - region.start_addr().raw_value();
    if offset.checked_add(len).is_none_or(|end| end > region.len()) {
        return false;
    }
    let Ok(host) = mem.get_host_address(GuestAddress(addr)) else {
        return false;
    };
    match region.file_offset() {
        // Shared guest RAM (a memfd virtiofsd maps too): MADV_DONTNEED would only drop
        // this process's mapping of the pages; the hole frees them.
        Some(fo) => {
            use std::os::unix::io::AsRawFd;
            // SAFETY: fallocate on the memfd that backs this region; the range lies inside
            // the region (checked above), which the guest declared free.
            let r = unsafe {
                libc::fallocate(
                    fo.file().as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (fo.start() + offset) as libc::off_t,
                    len as libc::off_t,
                )
            };
            r == 0
        }
        None => {
            // SAFETY: [host, host + len) lies inside a guest memory mapping this process
            // owns (checked above); MADV_DONTNEED drops its pages, leaving the mapping in
            // place (KVM follows through its MMU notifier). No Rust reference points into
            // guest memory.
            let r = unsafe {
                libc::madvise(host as *mut libc::c_void, len as usize, libc::MADV_DONTNEED)
            };
            r == 0
        }
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        ids::BALLOON
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_FREE_PAGE_REPORTING
    }
    /// `num_pages` (the target) and `actual`: both 0, always.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&[0u8; 8], offset, data);
    }
    fn activate(&mut self, a: Activation) -> Result<(), String> {
        self.state = Some((a.mem, a.queues, a.interrupt));
        Ok(())
    }
    fn process_queue(&mut self, index: usize) {
        let Some((mem, queues, irq)) = self.state.as_mut() else {
            return;
        };
        let Some(q) = queues.get_mut(index) else {
            return;
        };
        let stats = &self.stats;
        super::serve_queue(q, mem, irq, |chain| {
            if index == REPORTING {
                for d in chain {
                    if d.is_write_only() && discard(mem, d.addr().raw_value(), u64::from(d.len())) {
                        stats
                            .reported_free
                            .fetch_add(u64::from(d.len()), Ordering::Relaxed);
                    }
                }
            }
            0
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
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueT;
    use vm_memory::Bytes;

    /// The three queues, the last one the mock's.
    fn activate(
        dev: &mut Balloon,
        m: &GuestMemoryMmap,
        vq: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Arc<Interrupt> {
        let idle = || Queue::new(64).unwrap();
        let a = activation(m, vec![idle(), idle(), vq.create_queue().unwrap()]);
        let irq = a.interrupt.clone();
        dev.activate(a).unwrap();
        irq
    }

    fn writable(addr: u64, len: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(
            addr,
            len,
            VRING_DESC_F_WRITE as u16,
            0,
        ))
    }

    #[test]
    fn a_reported_range_reads_back_as_zeros_and_is_counted() {
        let m = mem();
        m.write_slice(&[0xaa; 8192], GuestAddress(0x20_0000))
            .unwrap();
        m.write_slice(&[0xbb; 4096], GuestAddress(0x30_0000))
            .unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[writable(0x20_0000, 8192), writable(0x30_0000, 4096)])
            .unwrap();
        let stats = Arc::new(Stats::default());
        let mut dev = Balloon::new(stats.clone());
        let irq = activate(&mut dev, &m, &vq);
        dev.process_queue(REPORTING);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(irq.status(), 1);
        assert_eq!(stats.reported_free.load(Ordering::Relaxed), 12288);
        let mut got = [1u8; 8192];
        m.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(got, [0u8; 8192]);
        m.read_slice(&mut got[..4096], GuestAddress(0x30_0000))
            .unwrap();
        assert_eq!(got[..4096], [0u8; 4096]);
    }

    #[test]
    fn ranges_outside_guest_memory_or_unaligned_are_left_alone() {
        let m = mem();
        m.write_slice(&[0xcc; 4096], GuestAddress(0x40_0000))
            .unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        let end = m.last_addr().raw_value() + 1;
        vq.build_desc_chain(&[
            writable(0x40_0001, 4096),
            writable(0x40_0000, 100),
            writable(end - 4096, 8192),
            writable(0xffff_0000_0000, 4096),
        ])
        .unwrap();
        let stats = Arc::new(Stats::default());
        let mut dev = Balloon::new(stats.clone());
        activate(&mut dev, &m, &vq);
        dev.process_queue(REPORTING);
        assert_eq!(
            vq.used().idx().load(),
            1,
            "the buffer is handed back all the same"
        );
        assert_eq!(stats.reported_free.load(Ordering::Relaxed), 0);
        let mut got = [0u8; 4096];
        m.read_slice(&mut got, GuestAddress(0x40_0000)).unwrap();
        assert_eq!(got, [0xcc; 4096]);
    }

    #[test]
    fn the_target_is_always_zero_pages() {
        let dev = Balloon::new(Arc::default());
        let mut cfg = [0xffu8; 8];
        dev.read_config(0, &mut cfg);
        assert_eq!(cfg, [0u8; 8]);
        assert_ne!(dev.features() & F_FREE_PAGE_REPORTING, 0);
    }
}
