//! virtio-rng: fills the guest's buffers from the host's /dev/urandom.

use super::{ids, Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Largest request served at once.
const MAX_CHUNK: usize = 64 * 1024;

/// The entropy device.
pub struct Rng {
    urandom: File,
    state: Option<(GuestMemoryMmap, Queue, Arc<Interrupt>)>,
}

impl Rng {
    /// Opens /dev/urandom.
    pub fn new() -> std::io::Result<Rng> {
        Ok(Rng {
            urandom: File::open("/dev/urandom")?,
            state: None,
        })
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        ids::RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
        let urandom = &mut self.urandom;
        let mut buf = vec![0u8; MAX_CHUNK];
        super::serve_queue(q, mem, irq, |chain| match chain.writer(mem) {
            Ok(mut w) => {
                let n = w.available_bytes().min(MAX_CHUNK);
                if urandom.read_exact(&mut buf[..n]).is_ok() && w.write_all(&buf[..n]).is_ok() {
                    n as u32
                } else {
                    0
                }
            }
            Err(_) => 0, // a chain pointing outside guest memory: hand it back empty
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
    use vm_memory::{Bytes, GuestAddress};

    fn activate(
        dev: &mut Rng,
        m: &GuestMemoryMmap,
        vq: &MockSplitQueue<GuestMemoryMmap>,
    ) -> Arc<Interrupt> {
        let q: Queue = vq.create_queue().unwrap();
        let a = activation(m, vec![q]);
        let irq = a.interrupt.clone();
        dev.activate(a).unwrap();
        irq
    }

    #[test]
    fn fills_a_writable_buffer_with_random_bytes() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let d = RawDescriptor::from(SplitDescriptor::new(
            0x10_0000,
            64,
            VRING_DESC_F_WRITE as u16,
            0,
        ));
        vq.build_desc_chain(&[d]).unwrap();
        let mut dev = Rng::new().unwrap();
        let irq = activate(&mut dev, &m, &vq);
        dev.process_queue(0);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 64);
        let mut got = [0u8; 64];
        m.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_ne!(got, [0u8; 64]);
        assert_eq!(irq.status(), 1);
    }

    #[test]
    fn a_buffer_outside_guest_memory_is_returned_empty() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let d = RawDescriptor::from(SplitDescriptor::new(
            0xffff_0000_0000,
            64,
            VRING_DESC_F_WRITE as u16,
            0,
        ));
        vq.build_desc_chain(&[d]).unwrap();
        let mut dev = Rng::new().unwrap();
        activate(&mut dev, &m, &vq);
        dev.process_queue(0);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
    }
}
