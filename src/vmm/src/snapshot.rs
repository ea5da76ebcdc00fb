//! Snapshots: a paused guest written to a directory, and a monitor started from one
//! instead of booting (docs/snapshots.md).
//!
//! A snapshot is two files: `memory`, the guest's RAM (a sparse file: pages of zeros are
//! holes), which a restored monitor maps copy-on-write, so that every guest started from it
//! shares its pages in the host's page cache; and `state.json`, the vCPUs' registers, the
//! in-kernel irqchip, PIT and clock, the devices' transports, COM1 and the i8042. It is
//! restored only by the same build of berth-vmm on the same host: the KVM structures are
//! kept as KVM gave them.

use crate::devices::i8042::I8042State;
use crate::devices::serial::SerialSnapshot;
use crate::devices::virtio::TransportState;
use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "state.json";
/// The memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// The format written; a snapshot of another format is refused.
pub const FORMAT: u32 = 1;

const PAGE: usize = 4096;

/// Errors taking or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A KVM call failed.
    #[error("snapshot: {what}: {err}")]
    Kvm {
        /// The call.
        what: &'static str,
        /// Why.
        err: kvm_ioctls::Error,
    },
    /// A file could not be read or written.
    #[error("snapshot: {0}: {1}")]
    Io(String, std::io::Error),
    /// The snapshot does not fit this monitor's configuration, or is damaged.
    #[error("snapshot: {0}")]
    Invalid(String),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |err| SnapshotError::Kvm { what, err }
}

/// One vCPU's registers.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    lapic: kvm_lapic_state,
    mp_state: kvm_mp_state,
    events: kvm_vcpu_events,
    /// (index, value) of every MSR KVM would read.
    msrs: Vec<(u32, u64)>,
}

/// The VM's in-kernel devices and clock.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

/// A range of guest RAM and where it is in the memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamRange {
    /// Guest physical address.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
    /// Offset in the memory file.
    pub offset: u64,
}

/// A whole snapshot's state (`state.json`).
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    /// [`FORMAT`].
    pub format: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Every vCPU.
    pub vcpus: Vec<VcpuState>,
    /// irqchip, PIT, clock.
    pub vm: VmState,
    /// Each virtio-mmio slot in order; `None` for an empty one.
    pub slots: Vec<Option<TransportState>>,
    /// The virtio-pmem images' (address, length), in the order of their devices.
    pub pmem: Vec<(u64, u64)>,
    /// COM1.
    pub serial: SerialSnapshot,
    /// The i8042.
    pub i8042: I8042State,
    /// Guest RAM in the memory file.
    pub ram: Vec<RamRange>,
    /// What a restore must give the guest again.
    pub depends: Dependencies,
}

/// What a snapshot's guest depends on besides its memory and devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependencies {
    /// The host's CPU as KVM shows it.
    pub host: HostIdentity,
    /// The files the guest was started with ([`file_identity`]): the kernel, then each
    /// pmem image; a restore must name the same files.
    pub files: Vec<String>,
    /// The configuration's own `cmdline` (appended to berth's).
    pub cmdline: String,
}

/// What a restored guest relies on from the host it was snapshot on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// KVM's TSC frequency for the guest (kHz): the guest calibrated its clock with it.
    pub tsc_khz: u32,
    /// Each vCPU's CPUID as the guest saw it at boot (it chose its code paths by it).
    pub cpuid: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
}

/// A file's identity for a snapshot: replaced or changed, it no longer matches.
pub fn file_identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) => format!(
            "{}:{}:{}:{}:{}.{}",
            p.display(),
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(e) => format!("{}: {e}", p.display()),
    }
}

impl Snapshot {
    /// Refuses a restore that would not give the guest what it had (`now`): another host
    /// CPU or TSC, other files, another command line.
    pub fn check(&self, now: &Dependencies) -> Result<(), SnapshotError> {
        let (was, host, files) = (&self.depends, &now.host, &now.files);
        if was.host.tsc_khz != host.tsc_khz {
            return Err(SnapshotError::Invalid(format!(
                "taken with a TSC of {} kHz, this host's is {} kHz (another host or boot)",
                was.host.tsc_khz, host.tsc_khz
            )));
        }
        if was.host.cpuid != host.cpuid {
            return Err(SnapshotError::Invalid(
                "taken on a host whose CPU (CPUID) differs from this one's".into(),
            ));
        }
        if files.get(..was.files.len()) != Some(&was.files[..]) {
            return Err(SnapshotError::Invalid(format!(
                "taken with the kernel and images {:?}; this configuration has {:?} (the same files, unchanged, are needed)",
                was.files, files
            )));
        }
        if was.cmdline != now.cmdline {
            return Err(SnapshotError::Invalid(format!(
                "taken with cmdline {:?}, this configuration has {:?} (a restored guest keeps its boot's)",
                was.cmdline, now.cmdline
            )));
        }
        Ok(())
    }

    /// Reads `dir`'s state file.
    pub fn read(dir: &Path) -> Result<Snapshot, SnapshotError> {
        let p = dir.join(STATE_FILE);
        let text = std::fs::read(&p).map_err(|e| SnapshotError::Io(p.display().to_string(), e))?;
        let s: Snapshot = serde_json::from_slice(&text).map_err(|e| {
            SnapshotError::Invalid(format!("{}: not a complete snapshot ({e})", p.display()))
        })?;
        if s.format != FORMAT {
            return Err(SnapshotError::Invalid(format!(
                "{}: format {}, this berth-vmm reads format {FORMAT}",
                p.display(),
                s.format
            )));
        }
        Ok(s)
    }
}

/// The files a monitor started with `snapshot_to` writes, opened before its jail.
pub struct SnapshotFiles {
    /// The directory (for messages).
    pub dir: std::path::PathBuf,
    state: File,
    memory: File,
}

impl SnapshotFiles {
    /// Creates (or truncates) the two files in `dir`, readable by their owner only: the
    /// memory is the guest's.
    pub fn create(dir: &Path, memory_bytes: u64) -> Result<SnapshotFiles, SnapshotError> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |name: &str| {
            let p = dir.join(name);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| SnapshotError::Io(p.display().to_string(), e))
        };
        let memory = open(MEMORY_FILE)?;
        memory
            .set_len(memory_bytes)
            .map_err(|e| SnapshotError::Io(format!("{}/{MEMORY_FILE}", dir.display()), e))?;
        Ok(SnapshotFiles {
            dir: dir.to_path_buf(),
            state: open(STATE_FILE)?,
            memory,
        })
    }

    /// Writes guest RAM (pages that are not all zeros; the rest stay holes), then the
    /// state with the RAM's layout added: a state file that parses is a whole snapshot.
    pub fn write(&self, mem: &GuestMemoryMmap, mut s: Snapshot) -> Result<u64, SnapshotError> {
        let io = |e| SnapshotError::Io(format!("{}/{MEMORY_FILE}", self.dir.display()), e);
        let mut offset = 0u64;
        let mut written = 0u64;
        s.ram.clear();
        for r in mem.iter() {
            let len = r.len() as usize;
            let host = r.as_ptr();
            let mut i = 0;
            while i < len {
                // SAFETY: `host..host + len` is this region's mapping, alive as long as
                // `mem`; the vCPUs are paused, so nothing writes it while it is read.
                let page = unsafe { std::slice::from_raw_parts(host.add(i), PAGE.min(len - i)) };
                if !is_zero(page) {
                    self.memory
                        .write_all_at(page, offset + i as u64)
                        .map_err(io)?;
                    written += page.len() as u64;
                }
                i += PAGE;
            }
            s.ram.push(RamRange {
                gpa: r.start_addr().0,
                len: len as u64,
                offset,
            });
            offset += len as u64;
        }
        let text = serde_json::to_vec(&s)
            .map_err(|e| SnapshotError::Invalid(format!("encoding the state: {e}")))?;
        self.state
            .write_all_at(&text, 0)
            .map_err(|e| SnapshotError::Io(format!("{}/{STATE_FILE}", self.dir.display()), e))?;
        Ok(written)
    }
}

/// Whether `page` (at most a page) is all zeros; glibc's memcmp against a page of zeros.
fn is_zero(page: &[u8]) -> bool {
    static ZERO: [u8; PAGE] = [0; PAGE];
    // SAFETY: both pointers are valid for `page.len()` bytes (at most PAGE).
    unsafe {
        libc::memcmp(
            page.as_ptr() as *const libc::c_void,
            ZERO.as_ptr() as *const libc::c_void,
            page.len().min(PAGE),
        ) == 0
    }
}

/// Maps the snapshot's memory file copy-on-write over guest RAM (`mem`, just created and
/// not yet seen by KVM or any device).
pub fn map_memory(
    mem: &GuestMemoryMmap,
    dir: &Path,
    ram: &[RamRange],
) -> Result<(), SnapshotError> {
    let p = dir.join(MEMORY_FILE);
    let file = File::open(&p).map_err(|e| SnapshotError::Io(p.display().to_string(), e))?;
    let size = file
        .metadata()
        .map_err(|e| SnapshotError::Io(p.display().to_string(), e))?
        .len();
    let regions: Vec<_> = mem.iter().collect();
    if regions.len() != ram.len() {
        return Err(SnapshotError::Invalid(format!(
            "the snapshot has {} RAM ranges, this guest {}",
            ram.len(),
            regions.len()
        )));
    }
    for (r, want) in regions.iter().zip(ram) {
        if r.start_addr().0 != want.gpa || r.len() != want.len || want.offset + want.len > size {
            return Err(SnapshotError::Invalid(format!(
                "RAM at {:#x} ({} bytes) does not match the snapshot's {:#x} ({} bytes at {} of {size})",
                r.start_addr().0,
                r.len(),
                want.gpa,
                want.len,
                want.offset
            )));
        }
        // SAFETY: the target range is exactly this region's own mapping, which nothing
        // uses yet; MAP_FIXED replaces it with a private mapping of the file, of the
        // same size and protection, so every pointer to the region stays valid.
        let p = unsafe {
            libc::mmap(
                r.as_ptr() as *mut libc::c_void,
                want.len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                want.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED || p as *mut u8 != r.as_ptr() {
            return Err(SnapshotError::Io(
                format!("mapping {}", dir.join(MEMORY_FILE).display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// The MTRRs: KVM keeps them per vCPU but leaves them out of its MSR index list (QEMU
/// saves them itself too): the default type, the fixed ranges, the variable pairs.
const MTRR_MSRS: [u32; 28] = [
    0x2ff, 0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f, 0x200,
    0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207, 0x208, 0x209, 0x20a, 0x20b, 0x20c, 0x20d,
    0x20e, 0x20f,
];

/// The MSRs a snapshot saves: KVM's index list and the MTRRs (each read only if KVM can).
pub fn msrs_to_save(index_list: &[u32]) -> Vec<u32> {
    let mut v = index_list.to_vec();
    for m in MTRR_MSRS {
        if !v.contains(&m) {
            v.push(m);
        }
    }
    v
}

/// Saves a vCPU's registers. It must be out of KVM_RUN and stay out (paused): first a
/// KVM_RUN with `immediate_exit` completes an I/O exit the vCPU thread handled but KVM
/// has not finished, as KVM's documentation asks before reading state.
pub fn save_vcpu(fd: &mut VcpuFd, msr_list: &[u32]) -> Result<VcpuState, SnapshotError> {
    fd.set_kvm_immediate_exit(1);
    let r = fd.run().map(|_| ()).map_err(|e| e.errno());
    fd.set_kvm_immediate_exit(0);
    match r {
        Err(libc::EINTR) | Err(libc::EAGAIN) => {}
        Ok(()) => {
            return Err(SnapshotError::Invalid(
                "a paused vCPU ran on (KVM_RUN with immediate_exit returned an exit)".into(),
            ))
        }
        Err(e) => {
            return Err(SnapshotError::Kvm {
                what: "KVM_RUN (immediate exit)",
                err: kvm_ioctls::Error::new(e),
            })
        }
    }
    // MSRs one at a time: KVM stops a batch at the first it cannot read.
    let mut msrs = Vec::new();
    for &index in msr_list {
        let mut m = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|_| SnapshotError::Invalid("an MSR buffer".into()))?;
        if fd.get_msrs(&mut m).map_err(kvm("KVM_GET_MSRS"))? == 1 {
            msrs.push((index, m.as_slice()[0].data));
        }
    }
    // MP state first: reading it can complete a pending INIT/SIPI into the registers.
    let mp_state = fd.get_mp_state().map_err(kvm("KVM_GET_MP_STATE"))?;
    Ok(VcpuState {
        regs: fd.get_regs().map_err(kvm("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?,
        debugregs: fd.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS"))?,
        lapic: fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?,
        mp_state,
        events: fd.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?,
        msrs,
    })
}

/// Restores a vCPU's registers (its CPUID already set), in Firecracker's order.
pub fn restore_vcpu(fd: &VcpuFd, s: &VcpuState) -> Result<(), SnapshotError> {
    fd.set_mp_state(s.mp_state)
        .map_err(kvm("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(kvm("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs).map_err(kvm("KVM_SET_SREGS"))?;
    // SAFETY: the buffer is a whole kvm_xsave as KVM_GET_XSAVE gave it on this host; KVM
    // reads no more than its fixed size (no extended AMX state is enabled).
    unsafe { fd.set_xsave(&s.xsave) }.map_err(kvm("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&s.xcrs).map_err(kvm("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&s.debugregs)
        .map_err(kvm("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&s.lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    for chunk in entries.chunks(64) {
        let m = Msrs::from_entries(chunk)
            .map_err(|_| SnapshotError::Invalid("an MSR buffer".into()))?;
        let n = fd.set_msrs(&m).map_err(kvm("KVM_SET_MSRS"))?;
        if n != chunk.len() {
            return Err(SnapshotError::Invalid(format!(
                "KVM refused MSR {:#x} it had read",
                chunk[n].index
            )));
        }
    }
    fd.set_vcpu_events(&s.events)
        .map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

/// Saves the irqchip, the PIT and the clock.
pub fn save_vm(vm: &VmFd) -> Result<VmState, SnapshotError> {
    let chip = |id| {
        let mut c = kvm_irqchip {
            chip_id: id,
            ..Default::default()
        };
        vm.get_irqchip(&mut c)
            .map(|()| c)
            .map_err(kvm("KVM_GET_IRQCHIP"))
    };
    let mut clock = vm.get_clock().map_err(kvm("KVM_GET_CLOCK"))?;
    // Only the value is restored (KVM_SET_CLOCK takes no flags from a GET).
    clock.flags = 0;
    Ok(VmState {
        pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
        pit: vm.get_pit2().map_err(kvm("KVM_GET_PIT2"))?,
        clock,
    })
}

/// Restores the irqchip, the PIT and the clock (the guest's clock goes on from where it
/// was paused; the agent sets the wall clock after a restore).
pub fn restore_vm(vm: &VmFd, s: &VmState) -> Result<(), SnapshotError> {
    vm.set_pit2(&s.pit).map_err(kvm("KVM_SET_PIT2"))?;
    vm.set_clock(&s.clock).map_err(kvm("KVM_SET_CLOCK"))?;
    for c in [&s.pic_master, &s.pic_slave, &s.ioapic] {
        vm.set_irqchip(c).map_err(kvm("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

/// Which device goes in which slot of a restored guest: each of the snapshot's devices
/// takes the first configured device of its type (in configuration order), and the
/// remaining configured devices fill its empty slots in order. `types` are the
/// configured devices' types; the result holds an index into them per slot.
pub fn assign_slots(
    types: &[u32],
    slots: &[Option<TransportState>],
) -> Result<Vec<Option<usize>>, SnapshotError> {
    let mut used = vec![false; types.len()];
    let mut out = Vec::with_capacity(slots.len());
    for (i, slot) in slots.iter().enumerate() {
        match slot {
            Some(t) => {
                let Some(k) = (0..types.len()).find(|&k| !used[k] && types[k] == t.device_type)
                else {
                    return Err(SnapshotError::Invalid(format!(
                        "the snapshot's slot {i} holds a virtio device of type {} that this configuration does not have",
                        t.device_type
                    )));
                };
                used[k] = true;
                out.push(Some(k));
            }
            None => out.push(None),
        }
    }
    let empty = out.iter().filter(|s| s.is_none()).count();
    let mut rest = (0..types.len()).filter(|&k| !used[k]);
    for s in out.iter_mut().filter(|s| s.is_none()) {
        *s = rest.next();
    }
    let left = rest.count();
    if left > 0 {
        return Err(SnapshotError::Invalid(format!(
            "{} more virtio devices than the snapshot's {empty} empty slots",
            left
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(t: u32) -> Option<TransportState> {
        Some(TransportState {
            device_type: t,
            status: 15,
            driver_features: 0,
            config_generation: 0,
            interrupt_status: 0,
            active: true,
            queues: vec![],
            device: serde_json::Value::Null,
        })
    }

    #[test]
    fn the_mtrrs_are_saved_besides_kvms_list_once() {
        let v = msrs_to_save(&[0x10, 0x2ff]);
        assert_eq!(v.len(), 1 + MTRR_MSRS.len());
        assert_eq!(v.iter().filter(|&&m| m == 0x2ff).count(), 1);
        assert!(v.contains(&0x20f) && v.contains(&0x250) && v.contains(&0x10));
    }

    #[test]
    fn snapshot_devices_keep_their_slots_and_new_ones_fill_the_empty_slots() {
        use crate::devices::virtio::ids::*;
        // Snapshot: agent pmem, vsock, rng, balloon, then three empty slots.
        let slots = vec![
            slot(PMEM),
            slot(VSOCK),
            slot(RNG),
            slot(BALLOON),
            None,
            None,
            None,
        ];
        // Configured: agent pmem, image pmem, a NIC, vsock, rng, balloon.
        let types = [PMEM, PMEM, NET, VSOCK, RNG, BALLOON];
        let got = assign_slots(&types, &slots).unwrap();
        assert_eq!(
            got,
            vec![Some(0), Some(3), Some(4), Some(5), Some(1), Some(2), None]
        );
    }

    #[test]
    fn a_missing_device_or_too_many_new_ones_are_refused_with_the_reason() {
        use crate::devices::virtio::ids::*;
        let slots = vec![slot(PMEM), slot(VSOCK), None];
        let e = assign_slots(&[VSOCK, NET], &slots).unwrap_err().to_string();
        assert!(e.contains("slot 0") && e.contains("type 27"), "{e}");
        let e = assign_slots(&[PMEM, VSOCK, NET, NET], &slots)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 more virtio devices than the snapshot's 1 empty slots"),
            "{e}"
        );
    }

    /// A snapshot of a 1 MiB guest with nothing in it.
    fn sample() -> Snapshot {
        Snapshot {
            format: FORMAT,
            memory_mib: 1,
            vcpus: vec![],
            vm: VmState {
                pic_master: Default::default(),
                pic_slave: Default::default(),
                ioapic: Default::default(),
                pit: Default::default(),
                clock: Default::default(),
            },
            slots: vec![None],
            pmem: vec![],
            serial: Default::default(),
            i8042: Default::default(),
            ram: vec![],
            depends: Dependencies {
                host: HostIdentity {
                    tsc_khz: 1,
                    cpuid: vec![],
                },
                files: vec![],
                cmdline: String::new(),
            },
        }
    }

    #[test]
    fn a_restore_on_another_host_or_with_other_files_or_cmdline_is_refused() {
        let was = Dependencies {
            host: HostIdentity {
                tsc_khz: 2_000_000,
                cpuid: vec![vec![Default::default()]],
            },
            files: vec!["kernel:1".into(), "agent:2".into()],
            cmdline: "berth_trace=1".into(),
        };
        let s = Snapshot {
            depends: was.clone(),
            ..sample()
        };
        // The same, with one more image (the container's disk).
        let mut now = was.clone();
        now.files.push("image:3".into());
        s.check(&now).unwrap();
        let mut other_tsc = now.clone();
        other_tsc.host.tsc_khz = 2_000_001;
        let e = s.check(&other_tsc).unwrap_err().to_string();
        assert!(e.contains("TSC"), "{e}");
        let mut other_cpu = now.clone();
        other_cpu.host.cpuid = vec![];
        let e = s.check(&other_cpu).unwrap_err().to_string();
        assert!(e.contains("CPUID"), "{e}");
        let mut changed = now.clone();
        changed.files = vec!["kernel:1".into(), "agent:9".into()];
        let e = s.check(&changed).unwrap_err().to_string();
        assert!(e.contains("the same files"), "{e}");
        let mut other_cmdline = now.clone();
        other_cmdline.cmdline = String::new();
        let e = s.check(&other_cmdline).unwrap_err().to_string();
        assert!(e.contains("cmdline"), "{e}");
    }

    #[test]
    fn memory_is_written_sparse_and_maps_back_copy_on_write() {
        use vm_memory::{Bytes, GuestAddress};
        let dir = std::env::temp_dir().join(format!("berth-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_obj(0xdead_beefu32, GuestAddress(0x3000)).unwrap();
        let files = SnapshotFiles::create(&dir, 1 << 20).unwrap();
        let s = sample();
        assert_eq!(files.write(&mem, s).unwrap(), 4096, "one page is not zeros");
        let back = Snapshot::read(&dir).unwrap();
        assert_eq!(
            back.ram,
            vec![RamRange {
                gpa: 0,
                len: 1 << 20,
                offset: 0
            }]
        );
        let restored = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        map_memory(&restored, &dir, &back.ram).unwrap();
        assert_eq!(
            restored.read_obj::<u32>(GuestAddress(0x3000)).unwrap(),
            0xdead_beef
        );
        restored.write_obj(1u32, GuestAddress(0x3000)).unwrap();
        let again = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        map_memory(&again, &dir, &back.ram).unwrap();
        assert_eq!(
            again.read_obj::<u32>(GuestAddress(0x3000)).unwrap(),
            0xdead_beef,
            "a guest's writes stay its own"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
