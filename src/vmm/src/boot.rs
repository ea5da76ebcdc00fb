//! The x86_64 Linux boot protocol: load the kernel (vmlinux ELF or bzImage), the initramfs
//! and the command line, and fill in the zero page (`boot_params`) with an e820 map that
//! leaves out the EBDA and the MMIO gap.

use crate::layout::*;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, Elf, KernelLoader};
use std::fs::File;
use std::path::Path;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// e820 type of usable RAM.
const E820_RAM: u32 = 1;
/// `boot_params.hdr.boot_flag` magic.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `boot_params.hdr.header` magic ("HdrS").
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: undefined loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Kernel alignment the loader promises (16 MiB).
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Offset of the 64-bit entry point in a protected-mode bzImage kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Errors while loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file can't be opened.
    #[error("kernel {path}: {err}")]
    KernelOpen {
        /// The path given.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The kernel is neither a loadable ELF vmlinux nor a bzImage.
    #[error("kernel {path} is not a loadable x86_64 vmlinux (ELF) or bzImage: {why}")]
    KernelFormat {
        /// The path given.
        path: String,
        /// What the loaders said.
        why: String,
    },
    /// The initramfs can't be read.
    #[error("initrd {path}: {err}")]
    InitrdOpen {
        /// The path given.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The initramfs doesn't fit between the kernel and the end of low memory.
    #[error("initrd {path} ({size} bytes) does not fit in guest memory; give the VM more memory")]
    InitrdTooBig {
        /// The path given.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The command line is too long or malformed.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Writing into guest memory failed.
    #[error("writing {what} into guest memory: {err}")]
    Memory {
        /// What was being written.
        what: &'static str,
        /// Why.
        err: String,
    },
}

/// Where the kernel ended up and how to enter it.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage's setup header, if the kernel was a bzImage.
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// Loads a vmlinux ELF (preferred) or a bzImage into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let shown = path.display().to_string();
    let mut f = File::open(path).map_err(|err| BootError::KernelOpen {
        path: shown.clone(),
        err,
    })?;
    if let Some(k) = map_elf(mem, &f) {
        return Ok(k);
    }
    match Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => Ok(LoadedKernel {
            entry: r.kernel_load,
            end: r.kernel_end,
            setup_header: None,
        }),
        Err(elf_err) => match BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))) {
            Ok(r) => Ok(LoadedKernel {
                entry: r.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
                end: r.kernel_end,
                setup_header: r.setup_header,
            }),
            Err(bz_err) => Err(BootError::KernelFormat {
                path: shown,
                why: format!("as ELF: {elf_err}; as bzImage: {bz_err}"),
            }),
        },
    }
}

/// Maps `len` bytes of `file` at `offset` over guest memory at `addr`, copy-on-write: no
/// copy now, pages come from the page cache as the guest touches them. Only over anonymous
/// guest memory; false (the caller copies) over shared memory. The file must not
/// change in place while the VM runs (berth's kernel cache replaces files, never rewrites
/// them). `addr` and `offset` must be page aligned; `len` is rounded up to a page.
fn map_file(mem: &GuestMemoryMmap, file: &File, offset: u64, addr: u64, len: u64) -> bool {
    use std::os::unix::io::AsRawFd;
    let len = (len + PAGE - 1) & !(PAGE - 1);
    if !addr.is_multiple_of(PAGE) || !offset.is_multiple_of(PAGE) || len == 0 {
        return false;
    }
    // The whole range must be guest RAM inside one region.
    let (Some(region), Ok(host)) = (
        mem.find_region(GuestAddress(addr)),
        mem.get_host_address(GuestAddress(addr)),
    ) else {
        return false;
    };
    use vm_memory::GuestMemoryRegion;
    if addr + len > region.start_addr().raw_value() + region.len() {
        return false;
    }
    // Shared guest memory (a memfd a vhost-user backend maps too) must stay one memory:
    // private pages over it would be seen by the guest and not by the backend (a page the
    // guest later frees, then uses for I/O, would read and write different memory).
    if region.file_offset().is_some() {
        return false;
    }
    // SAFETY: [host, host+len) lies inside a guest memory mapping this process owns (checked
    // above); MAP_FIXED replaces those pages with a private file mapping of the same size
    // and protection, so the region stays valid for its owner and for KVM (which follows
    // the new pages through its MMU notifier).
    let r = unsafe {
        libc::mmap(
            host as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    r != libc::MAP_FAILED
}

const PAGE: u64 = 4096;

/// Fast path for a vmlinux ELF whose segments are page-aligned in the file as in memory (as
/// Linux links them): map each segment instead of copying ~10 MB. None when the file is
/// not such an ELF; linux-loader then handles it.
fn map_elf(mem: &GuestMemoryMmap, f: &File) -> Option<LoadedKernel> {
    use std::os::unix::fs::FileExt;
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0).ok()?;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at =
        |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    // 64-bit, little endian, executable, x86-64.
    if &eh[..4] != b"\x7fELF"
        || eh[4] != 2
        || eh[5] != 1
        || u16_at(&eh, 16) != 2
        || u16_at(&eh, 18) != 0x3e
    {
        return None;
    }
    let entry = u64_at(&eh, 24);
    let phoff = u64_at(&eh, 32);
    let (phentsize, phnum) = (u16_at(&eh, 54) as u64, u16_at(&eh, 56) as u64);
    if phentsize != 56 || phnum == 0 || phnum > 64 {
        return None;
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.read_exact_at(&mut ph, phoff).ok()?;
    let file_len = f.metadata().ok()?.len();
    let low_end = low_mem_end(mem);
    let mut segs = Vec::new();
    for p in ph.chunks(56) {
        const PT_LOAD: u32 = 1;
        if u32::from_le_bytes(p[0..4].try_into().ok()?) != PT_LOAD {
            continue;
        }
        let (offset, paddr, filesz, memsz) =
            (u64_at(p, 8), u64_at(p, 24), u64_at(p, 32), u64_at(p, 40));
        let end = paddr.checked_add(memsz)?;
        if paddr < HIMEM_START || end > low_end || offset % PAGE != paddr % PAGE || filesz > memsz {
            return None;
        }
        if offset.checked_add(filesz)? > file_len {
            return None;
        }
        segs.push((offset, paddr, filesz, memsz));
    }
    if segs.is_empty() || !segs.iter().any(|s| (s.1..s.1 + s.3).contains(&entry)) {
        return None;
    }
    let mut kernel_end = 0;
    for (offset, paddr, filesz, memsz) in segs {
        let (base, foff) = (paddr & !(PAGE - 1), offset & !(PAGE - 1));
        if filesz > 0 && !map_file(mem, f, foff, base, paddr + filesz - base) {
            return None;
        }
        // Zero the bss that shares the last mapped page with file bytes.
        let tail_end = ((paddr + filesz + PAGE - 1) & !(PAGE - 1)).min(paddr + memsz);
        if tail_end > paddr + filesz {
            let zeros = vec![0u8; (tail_end - paddr - filesz) as usize];
            mem.write_slice(&zeros, GuestAddress(paddr + filesz)).ok()?;
        }
        kernel_end = kernel_end.max(paddr + memsz);
    }
    Some(LoadedKernel {
        entry: GuestAddress(entry),
        end: kernel_end,
        setup_header: None,
    })
}

/// End of the RAM below the MMIO gap.
fn low_mem_end(mem: &GuestMemoryMmap) -> u64 {
    mem.last_addr().raw_value().min(MMIO_GAP_START - 1) + 1
}

/// Loads the initramfs at the top of low memory, page aligned. Returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<(GuestAddress, u64), BootError> {
    let shown = path.display().to_string();
    let open_err = |err| BootError::InitrdOpen {
        path: shown.clone(),
        err,
    };
    let f = File::open(path).map_err(open_err)?;
    let size = f.metadata().map_err(open_err)?.len();
    let top = low_mem_end(mem);
    let addr = top.checked_sub(size).map(|a| a & !(PAGE - 1));
    let addr = match addr {
        Some(a) if a >= kernel_end && a >= HIMEM_START => a,
        _ => return Err(BootError::InitrdTooBig { path: shown, size }),
    };
    if size > 0 && !map_file(mem, &f, 0, addr, size) {
        let data = std::fs::read(path).map_err(open_err)?;
        mem.write_slice(&data, GuestAddress(addr))
            .map_err(|e| BootError::Memory {
                what: "initrd",
                err: e.to_string(),
            })?;
    }
    Ok((GuestAddress(addr), size))
}

/// Builds the kernel command line: berth's defaults, then the device announcements, then
/// what the user appends.
pub fn build_cmdline(
    defaults: &str,
    devices: &[String],
    extra: &str,
) -> Result<Cmdline, BootError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    for part in std::iter::once(defaults)
        .chain(devices.iter().map(String::as_str))
        .chain(std::iter::once(extra))
    {
        let part = part.trim();
        if !part.is_empty() {
            c.insert_str(part)
                .map_err(|e| BootError::Cmdline(format!("{e} (at {part:?})")))?;
        }
    }
    Ok(c)
}

/// Writes the command line and the zero page.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<(GuestAddress, u64)>,
) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(|e| BootError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();

    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let mut e820 = Vec::new();
    e820.push((0, EBDA_START));
    let low_end = low_mem_end(mem);
    e820.push((HIMEM_START, low_end - HIMEM_START));
    let last = mem.last_addr().raw_value() + 1;
    if last > MMIO_GAP_END {
        e820.push((MMIO_GAP_END, last - MMIO_GAP_END));
    }
    for (i, (addr, size)) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = e820.len() as u8;

    let bp = BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem).map_err(|e| {
        BootError::Memory {
            what: "boot_params",
            err: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(mib: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&crate::vstate::memory::ram_ranges(mib)).unwrap()
    }

    #[test]
    fn cmdline_joins_defaults_devices_and_extra() {
        let c = build_cmdline(
            "console=ttyS0",
            &["virtio_mmio.device=4K@0xd0000000:5".into()],
            " quiet ",
        )
        .unwrap();
        let s = c.as_cstring().unwrap().into_string().unwrap();
        assert_eq!(s, "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 quiet");
    }

    #[test]
    fn cmdline_too_long_is_an_error() {
        let long = "x".repeat(CMDLINE_MAX_SIZE * 2);
        assert!(build_cmdline("a", &[], &long).is_err());
    }

    #[test]
    fn a_text_file_is_not_a_kernel() {
        let dir = std::env::temp_dir().join(format!("berth-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notakernel");
        std::fs::write(&p, vec![b'x'; 8192]).unwrap();
        let e = load_kernel(&mem(64), &p).unwrap_err().to_string();
        assert!(e.contains("not a loadable x86_64 vmlinux"), "{e}");
        let e = load_kernel(&mem(64), &dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory() {
        let m = mem(64);
        let dir = std::env::temp_dir().join(format!("berth-initrd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("initrd");
        std::fs::write(&p, vec![7u8; 10000]).unwrap();
        let (addr, size) = load_initrd(&m, &p, 0x20_0000).unwrap();
        assert_eq!(size, 10000);
        assert_eq!(addr.raw_value() & 0xfff, 0);
        assert!(addr.raw_value() + size <= 64 << 20);
        let big = dir.join("big");
        std::fs::write(&big, vec![0u8; 70 << 20]).unwrap();
        assert!(matches!(
            load_initrd(&m, &big, 0x20_0000),
            Err(BootError::InitrdTooBig { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn over_shared_memory_the_initrd_is_copied_into_the_memfd() {
        use std::os::unix::fs::FileExt;
        use vm_memory::GuestMemoryRegion;
        let m = crate::vstate::memory::create(64, true).unwrap();
        let dir = std::env::temp_dir().join(format!("berth-initrd-shm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("initrd");
        std::fs::write(&p, vec![9u8; 10000]).unwrap();
        let (addr, _) = load_initrd(&m, &p, 0x20_0000).unwrap();
        // What another process mapping the memfd sees: the initrd, not zeros.
        let region = m.iter().next().unwrap();
        let fo = region.file_offset().unwrap();
        let mut b = [0u8; 16];
        fo.file()
            .read_exact_at(&mut b, fo.start() + addr.raw_value())
            .unwrap();
        assert_eq!(b, [9u8; 16]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn e820_leaves_out_the_ebda_and_the_gap() {
        let m = mem(64);
        let k = LoadedKernel {
            entry: GuestAddress(0x100_0000),
            end: 0x200_0000,
            setup_header: None,
        };
        let c = build_cmdline("console=ttyS0", &[], "").unwrap();
        write_boot_params(&m, &k, &c, None).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(p.e820_entries, 2);
        let e0 = p.e820_table[0];
        let e1 = p.e820_table[1];
        assert_eq!((e0.addr, e0.size), (0, EBDA_START));
        assert_eq!({ e1.addr }, HIMEM_START);
        assert_eq!({ e1.addr } + { e1.size }, 64 << 20);
        let hdr = p.hdr;
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
    }
}
