//! Guest memory: mappings around the MMIO gap, registered with KVM. Anonymous by default;
//! a memfd (shared, so that a vhost-user backend such as virtiofsd can map it too) when the
//! microVM has a device served by another process.

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Asked for no memory or more than the host has.
    #[error("memory_mib {asked} is invalid: {why}")]
    Size {
        /// MiB asked for.
        asked: u64,
        /// Why it can't be had.
        why: String,
    },
    /// mmap failed.
    #[error("cannot allocate {mib} MiB of guest memory: {0}", mib = .1)]
    Alloc(vm_memory::mmap::FromRangesError, u64),
    /// The memfd backing shared memory could not be made.
    #[error("cannot create shared guest memory: {0}")]
    Memfd(std::io::Error),
    /// KVM refused a memory slot.
    #[error("KVM_SET_USER_MEMORY_REGION failed: {0}")]
    Register(kvm_ioctls::Error),
}

/// The guest RAM ranges for `mib` MiB: below the MMIO gap, and the rest from 4 GiB up.
pub fn ram_ranges(mib: u64) -> Vec<(GuestAddress, usize)> {
    let size = mib << 20;
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// MemTotal of this host in MiB, if /proc/meminfo says.
fn host_mem_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Allocates guest memory, refusing sizes the host can't back. `shared`: backed by one
/// memfd (each range at its own offset) that other processes can map.
pub fn create(mib: u64, shared: bool) -> Result<GuestMemoryMmap, MemoryError> {
    if mib < 16 {
        return Err(MemoryError::Size {
            asked: mib,
            why: "a guest needs at least 16 MiB".into(),
        });
    }
    if let Some(host) = host_mem_mib() {
        if mib > host {
            return Err(MemoryError::Size {
                asked: mib,
                why: format!("this host has only {host} MiB of memory"),
            });
        }
    }
    let m = if shared {
        let file = memfd(mib << 20).map_err(MemoryError::Memfd)?;
        let mut offset = 0u64;
        let mut ranges = Vec::new();
        for (addr, len) in ram_ranges(mib) {
            let f = file.try_clone().map_err(MemoryError::Memfd)?;
            ranges.push((addr, len, Some(vm_memory::FileOffset::new(f, offset))));
            offset += len as u64;
        }
        GuestMemoryMmap::from_ranges_with_files(ranges)
    } else {
        GuestMemoryMmap::from_ranges(&ram_ranges(mib))
    }
    .map_err(|e| MemoryError::Alloc(e, mib))?;
    no_huge_pages(&m);
    Ok(m)
}

/// Backs guest RAM with 4 KiB pages only. With transparent huge pages (the host's
/// default may be "always"), the first guest touch anywhere in a 2 MiB block makes the
/// whole block resident: an idle guest's scattered pages cost 18 of its 21 MiB that way.
/// Free page reporting then cannot return a partly used block either (docs/boot.md).
fn no_huge_pages(m: &GuestMemoryMmap) {
    for r in m.iter() {
        // SAFETY: madvise on a whole mapping this GuestMemoryMmap owns; MADV_NOHUGEPAGE
        // changes how it is backed, never its contents. Failure (no THP support) is harmless.
        unsafe {
            libc::madvise(
                r.as_ptr().cast::<libc::c_void>(),
                r.len() as usize,
                libc::MADV_NOHUGEPAGE,
            )
        };
    }
}

/// An anonymous, sealed-size memory file of `size` bytes.
fn memfd(size: u64) -> std::io::Result<std::fs::File> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: the name is a NUL-terminated literal; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"berth-guest-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(size)?;
    // The guest's RAM never changes size: seal it so that no process it is shared with can
    // shrink it under the monitor (a SIGBUS).
    // SAFETY: F_ADD_SEALS on an fd this function owns, with a plain flags argument.
    let r = unsafe {
        libc::fcntl(
            std::os::unix::io::AsRawFd::as_raw_fd(&file),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// `KVM_SET_USER_MEMORY_REGION` = `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_ae46;

/// Registers a read-only memory slot: `len` bytes at host address `host`, seen by the guest
/// at `gpa`. The guest reads them directly; its writes exit to the monitor, which drops them
/// (no device claims the address).
pub fn register_read_only(
    vm: &VmFd,
    slot: u32,
    gpa: u64,
    host: u64,
    len: u64,
) -> Result<(), MemoryError> {
    let r = kvm_userspace_memory_region {
        slot,
        // Guest writes to the slot exit to the monitor as MMIO writes.
        flags: kvm_bindings::KVM_MEM_READONLY,
        guest_phys_addr: gpa,
        memory_size: len,
        userspace_addr: host,
    };
    // SAFETY: KVM reads one kvm_userspace_memory_region. The mapping [host, host+len) is
    // owned by the device that asked for the slot; if it goes first (a failed build), KVM
    // sees the unmap through its MMU notifier, and a read-only slot is never written.
    unsafe { vm.set_user_memory_region(r) }.map_err(MemoryError::Register)
}

/// Registers `mem` with the VM on a helper thread, so that the (on some hosts slow) slot
/// setup overlaps with loading the guest. Join the handle before the first KVM_RUN.
pub fn register_in_background(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
) -> Result<std::thread::JoinHandle<Result<(), MemoryError>>, MemoryError> {
    use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
    let mut regions = Vec::new();
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| MemoryError::Register(kvm_ioctls::Error::new(libc::EFAULT)))?;
        regions.push(kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        });
    }
    // SAFETY: dup of a valid, open VM fd; the result is checked and then owned.
    let fd = unsafe { libc::dup(vm.as_raw_fd()) };
    if fd < 0 {
        return Err(MemoryError::Register(kvm_ioctls::Error::last()));
    }
    // SAFETY: `fd` was just created by dup and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::thread::Builder::new()
        .name("memslots".into())
        .spawn(move || {
            let t0 = std::time::Instant::now();
            for r in regions {
                // SAFETY: KVM_SET_USER_MEMORY_REGION reads one kvm_userspace_memory_region
                // through the pointer; the region is a live mapping owned by the guest
                // memory, which outlives the VM.
                if unsafe { libc::ioctl(fd.as_raw_fd(), KVM_SET_USER_MEMORY_REGION, &r) } < 0 {
                    return Err(MemoryError::Register(kvm_ioctls::Error::last()));
                }
            }
            if std::env::var_os("BERTH_VMM_TRACE").is_some() {
                eprintln!("berth-vmm: memslot-ioctl-us {}", t0.elapsed().as_micros());
            }
            Ok(())
        })
        .map_err(|e| {
            MemoryError::Register(kvm_ioctls::Error::new(
                e.raw_os_error().unwrap_or(libc::EAGAIN),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn shared_memory_is_one_file_at_consecutive_offsets() {
        let m = create(32, true).unwrap();
        let r = m.iter().next().unwrap();
        let fo = r.file_offset().expect("a file-backed region");
        assert_eq!(fo.start(), 0);
        assert_eq!(fo.file().metadata().unwrap().len(), 32 << 20);
        m.write_obj(0xabcd_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xabcd);
        // Sealed: the file can't shrink under the guest.
        assert!(fo.file().set_len(4096).is_err());
    }

    #[test]
    fn small_guests_fit_below_the_gap() {
        assert_eq!(ram_ranges(128), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn big_guests_skip_the_mmio_gap() {
        let r = ram_ranges(4096);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[0].1 + r[1].1, 4096 << 20);
    }

    #[test]
    fn absurd_sizes_are_refused_with_the_reason() {
        let e = create(1 << 30, false).unwrap_err().to_string();
        assert!(e.contains("this host has only"), "{e}");
        let e = create(1, true).unwrap_err().to_string();
        assert!(e.contains("at least 16 MiB"), "{e}");
    }
}
