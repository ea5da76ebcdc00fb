//! virtio-blk backed by a host file: read, write, flush and get-id. A read-only disk
//! offers VIRTIO_BLK_F_RO and fails any write that reaches it with an I/O error.

use super::{ids, read_config_bytes, Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// Sector size in the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of a device ID string.
const ID_BYTES: usize = 20;
/// Largest single request served (a guest can't make the monitor allocate more).
const MAX_REQUEST: usize = 4 << 20;

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file can't be opened.
    #[error("disk {path}: {err}")]
    Open {
        /// The path given.
        path: String,
        /// Why.
        err: std::io::Error,
    },
}

/// A virtio block device.
pub struct Block {
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; ID_BYTES],
    config: [u8; 8],
    state: Option<(GuestMemoryMmap, Queue, Arc<Interrupt>)>,
    /// Bytes read and written by the guest.
    pub bytes: Arc<(AtomicU64, AtomicU64)>,
}

impl Block {
    /// Opens `path` as a disk.
    pub fn open(path: &Path, read_only: bool, index: usize) -> Result<Block, BlockError> {
        let err = |err| BlockError::Open {
            path: path.display().to_string(),
            err,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if meta.is_dir() {
            return Err(err(std::io::Error::from_raw_os_error(libc::EISDIR)));
        }
        let sectors = meta.len() / SECTOR_SIZE;
        let mut id = [0u8; ID_BYTES];
        let name = format!("berth-disk{index}");
        id[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Block {
            file,
            read_only,
            sectors,
            id,
            config: sectors.to_le_bytes(),
            state: None,
            bytes: Default::default(),
        })
    }

    /// Serves one request; returns the status byte and the bytes written to the guest.
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        r: &mut impl Read,
        data_len: usize,
        w: &mut impl Write,
    ) -> (u8, u32) {
        let offset = sector.checked_mul(SECTOR_SIZE);
        let in_range = |len: usize| {
            offset.is_some_and(|o| {
                o.checked_add(len as u64)
                    .is_some_and(|end| end <= self.sectors * SECTOR_SIZE)
            })
        };
        match kind {
            VIRTIO_BLK_T_IN => {
                if data_len > MAX_REQUEST || !in_range(data_len) {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let mut buf = vec![0u8; data_len];
                if self
                    .file
                    .read_exact_at(&mut buf, offset.unwrap_or(0))
                    .is_err()
                    || w.write_all(&buf).is_err()
                {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                self.bytes.0.fetch_add(data_len as u64, Ordering::Relaxed);
                (VIRTIO_BLK_S_OK, data_len as u32)
            }
            VIRTIO_BLK_T_OUT => {
                let mut buf = Vec::new();
                if self.read_only {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                if r.take(MAX_REQUEST as u64 + 1)
                    .read_to_end(&mut buf)
                    .is_err()
                    || buf.len() > MAX_REQUEST
                    || !in_range(buf.len())
                    || self.file.write_all_at(&buf, offset.unwrap_or(0)).is_err()
                {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                self.bytes.1.fetch_add(buf.len() as u64, Ordering::Relaxed);
                (VIRTIO_BLK_S_OK, 0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only || self.file.sync_data().is_ok() {
                    (VIRTIO_BLK_S_OK, 0)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = data_len.min(ID_BYTES);
                if w.write_all(&self.id[..n]).is_err() {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                (VIRTIO_BLK_S_OK, n as u32)
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        ids::BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | if self.read_only { VIRTIO_BLK_F_RO } else { 0 }
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data)
    }
    fn activate(&mut self, a: Activation) -> Result<(), String> {
        let q = a.queues.into_iter().next().ok_or("no queue")?;
        self.state = Some((a.mem, q, a.interrupt));
        Ok(())
    }
    fn process_queue(&mut self, _index: usize) {
        let Some((mem, mut q, irq)) = self.state.take() else {
            return;
        };
        let mut used = false;
        while let Some(chain) = super::pop(&mut q, &mem, &irq) {
            let head = chain.head_index();
            let len = self.serve_chain(&mem, chain);
            let _ = q.add_used(&mem, head, len);
            used = true;
        }
        if used && q.needs_notification(&mem).unwrap_or(true) {
            irq.signal_used();
        }
        self.state = Some((mem, q, irq));
    }
    fn reset(&mut self) {
        self.state = None;
    }
}

impl Block {
    /// Serves one descriptor chain; returns the used length. A malformed chain (no room for
    /// the header or status, memory outside the guest) is returned with length 0.
    fn serve_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        let (Ok(mut r), Ok(mut w)) = (chain.clone().reader(mem), chain.writer(mem)) else {
            return 0;
        };
        let Ok(hdr) = r.read_obj::<[u8; 16]>() else {
            return 0;
        };
        let kind = u32::from_le_bytes(hdr[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        let Some(data_len) = w.available_bytes().checked_sub(1) else {
            return 0;
        };
        let Ok(mut status_w) = w.split_at(data_len) else {
            return 0;
        };
        let (status, written) = self.request(kind, sector, &mut r, data_len, &mut w);
        if status_w.write_all(&[status]).is_err() {
            return 0;
        }
        written + 1
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    struct Rig {
        _dir: std::path::PathBuf,
        path: std::path::PathBuf,
        m: GuestMemoryMmap,
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("berth-blk-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let mut img = vec![0u8; 8 * 512];
        img[512..1024].fill(0xab);
        std::fs::write(&path, img).unwrap();
        Rig {
            _dir: dir,
            path,
            m: mem(),
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self._dir);
        }
    }

    fn d(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
    }

    /// Runs one request (header, optional data descriptor, status) and returns the status
    /// byte and the used length.
    fn run(rig: &Rig, ro: bool, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        let vq = MockSplitQueue::new(&rig.m, 16);
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        rig.m.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        rig.m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let mut descs = vec![d(HDR, 16, VRING_DESC_F_NEXT)];
        if let Some((len, write)) = data {
            descs.push(d(
                DATA,
                len,
                VRING_DESC_F_NEXT | if write { VRING_DESC_F_WRITE } else { 0 },
            ));
        }
        descs.push(d(STATUS, 1, VRING_DESC_F_WRITE));
        vq.build_desc_chain(&descs).unwrap();
        let mut dev = Block::open(&rig.path, ro, 0).unwrap();
        dev.activate(activation(&rig.m, vec![vq.create_queue().unwrap()]))
            .unwrap();
        dev.process_queue(0);
        let used = vq.used().ring().ref_at(0).unwrap().load();
        (rig.m.read_obj(GuestAddress(STATUS)).unwrap(), used.len())
    }

    #[test]
    fn reads_sectors_into_guest_memory() {
        let r = rig("read");
        assert_eq!(
            run(&r, false, VIRTIO_BLK_T_IN, 1, Some((512, true))),
            (VIRTIO_BLK_S_OK, 513)
        );
        let mut got = [0u8; 512];
        r.m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert!(got.iter().all(|b| *b == 0xab));
    }

    #[test]
    fn writes_reach_the_file() {
        let r = rig("write");
        r.m.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(
            run(&r, false, VIRTIO_BLK_T_OUT, 3, Some((512, false))).0,
            VIRTIO_BLK_S_OK
        );
        let img = std::fs::read(&r.path).unwrap();
        assert!(img[3 * 512..4 * 512].iter().all(|b| *b == 0x5a));
    }

    #[test]
    fn a_read_only_disk_fails_writes_with_an_io_error() {
        let r = rig("ro");
        assert_eq!(
            run(&r, true, VIRTIO_BLK_T_OUT, 0, Some((512, false))).0,
            VIRTIO_BLK_S_IOERR
        );
        assert!(std::fs::read(&r.path).unwrap()[..512]
            .iter()
            .all(|b| *b == 0));
        let dev = Block::open(&r.path, true, 0).unwrap();
        assert_ne!(dev.features() & VIRTIO_BLK_F_RO, 0);
    }

    #[test]
    fn requests_past_the_end_fail() {
        let r = rig("end");
        assert_eq!(
            run(&r, false, VIRTIO_BLK_T_IN, 7, Some((1024, true))).0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            run(&r, false, VIRTIO_BLK_T_IN, u64::MAX / 2, Some((512, true))).0,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn get_id_flush_and_unknown_types() {
        let r = rig("id");
        assert_eq!(
            run(&r, false, VIRTIO_BLK_T_GET_ID, 0, Some((20, true))),
            (VIRTIO_BLK_S_OK, 21)
        );
        let mut id = [0u8; 11];
        r.m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"berth-disk0");
        assert_eq!(
            run(&r, false, VIRTIO_BLK_T_FLUSH, 0, None).0,
            VIRTIO_BLK_S_OK
        );
        assert_eq!(run(&r, false, 99, 0, None).0, VIRTIO_BLK_S_UNSUPP);
    }

    #[test]
    fn a_chain_without_a_status_byte_is_returned_unused() {
        let r = rig("nostatus");
        let vq = MockSplitQueue::new(&r.m, 16);
        vq.build_desc_chain(&[d(HDR, 16, 0)]).unwrap();
        let mut dev = Block::open(&r.path, false, 0).unwrap();
        dev.activate(activation(&r.m, vec![vq.create_queue().unwrap()]))
            .unwrap();
        dev.process_queue(0);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
    }

    #[test]
    fn missing_and_directory_disks_are_clear_errors() {
        let e = Block::open(Path::new("/nonexistent.img"), true, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent.img") && e.contains("No such file"),
            "{e}"
        );
        let e = Block::open(Path::new("/"), true, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("directory"), "{e}");
    }
}
