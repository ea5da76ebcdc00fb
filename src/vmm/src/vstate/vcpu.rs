//! vCPU setup (CPUID, MSRs, FPU, registers, long mode, LAPIC) and the vCPU run loop.

use crate::devices::Bus;
use crate::layout::*;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {id}: {what} failed: {err}")]
    Kvm {
        /// vCPU index.
        id: u8,
        /// Which ioctl.
        what: &'static str,
        /// Why.
        err: kvm_ioctls::Error,
    },
    /// Writing the boot page tables or GDT failed.
    #[error("writing {0} into guest memory failed")]
    Memory(&'static str),
}

fn kvm(id: u8, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |err| VcpuError::Kvm { id, what, err }
}

// CPUID bits.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Per-vCPU CPUID: KVM's supported set with this vCPU's APIC ID and the topology filled in.
pub fn vcpu_cpuid(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            1 => {
                e.ebx =
                    (u32::from(id) << 24) | (u32::from(count) << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= LEAF1_ECX_HYPERVISOR | LEAF1_ECX_TSC_DEADLINE;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            // Extended topology: x2APIC ID of this vCPU on every sub-leaf.
            0xb | 0x1f => e.edx = u32::from(id),
            // Deterministic cache parameters: cores per package.
            4 => {
                e.eax = (e.eax & 0x03ff_ffff) | ((u32::from(count).saturating_sub(1) & 0x3f) << 26);
            }
            _ => {}
        }
    }
    cpuid
}

/// Model-specific registers set at boot.
fn boot_msrs() -> Msrs {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;
    let entries = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    Msrs::from_entries(&entries).expect("a fixed, small MSR list")
}

/// A GDT entry from flags, base and limit.
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The segment a GDT entry describes, as KVM wants it.
fn segment(entry: u64, index: u8) -> kvm_segment {
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: {
            let l = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
            if (entry >> 55) & 1 == 1 {
                (l << 12) | 0xfff
            } else {
                l
            }
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
    }
}

/// Writes the GDT, an empty IDT and identity page tables for the first GiB.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), VcpuError> {
    let gdt = boot_gdt();
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_START + (i as u64) * 8))
            .map_err(|_| VcpuError::Memory("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(|_| VcpuError::Memory("IDT"))?;
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
        .map_err(|_| VcpuError::Memory("PML4"))?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))
        .map_err(|_| VcpuError::Memory("PDPT"))?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))
            .map_err(|_| VcpuError::Memory("PD"))?;
    }
    Ok(())
}

/// Null, 64-bit code, data and TSS descriptors.
fn boot_gdt() -> [u64; 4] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// Configures a vCPU for the 64-bit Linux boot protocol. Only the boot vCPU gets registers;
/// the others wait for INIT/SIPI in the in-kernel LAPIC.
pub fn configure(
    fd: &VcpuFd,
    id: u8,
    cpuid: &CpuId,
    entry: Option<GuestAddress>,
) -> Result<(), VcpuError> {
    fd.set_cpuid2(cpuid).map_err(kvm(id, "KVM_SET_CPUID2"))?;
    let msrs = boot_msrs();
    let n = fd.set_msrs(&msrs).map_err(kvm(id, "KVM_SET_MSRS"))?;
    if n != msrs.as_slice().len() {
        return Err(VcpuError::Kvm {
            id,
            what: "KVM_SET_MSRS (not all MSRs taken)",
            err: kvm_ioctls::Error::new(libc::EINVAL),
        });
    }
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    fd.set_fpu(&fpu).map_err(kvm(id, "KVM_SET_FPU"))?;
    set_lint(fd, id)?;
    let Some(entry) = entry else { return Ok(()) };

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    };
    fd.set_regs(&regs).map_err(kvm(id, "KVM_SET_REGS"))?;

    let mut sregs = fd.get_sregs().map_err(kvm(id, "KVM_GET_SREGS"))?;
    let gdt = boot_gdt();
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    let tss = segment(gdt[3], 3);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    const CR0_PE: u64 = 1;
    const CR0_ET: u64 = 1 << 4;
    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const EFER_LME: u64 = 1 << 8;
    const EFER_LMA: u64 = 1 << 10;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    fd.set_sregs(&sregs).map_err(kvm(id, "KVM_SET_SREGS"))?;
    Ok(())
}

/// LINT0 delivers ExtINT (the PIC), LINT1 delivers NMI, as a BIOS would leave them.
fn set_lint(fd: &VcpuFd, id: u8) -> Result<(), VcpuError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = fd.get_lapic().map_err(kvm(id, "KVM_GET_LAPIC"))?;
    for (reg, mode) in [(APIC_LVT0, MODE_EXTINT), (APIC_LVT1, MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let v = u32::from_le_bytes(bytes);
        let v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    fd.set_lapic(&lapic).map_err(kvm(id, "KVM_SET_LAPIC"))
}

/// Pausing and resuming the vCPUs: a pause sets a flag and kicks every vCPU thread out of
/// KVM_RUN with a signal until all of them are parked.
pub struct Control {
    paused: AtomicBool,
    parked: AtomicUsize,
    count: usize,
    lock: Mutex<()>,
    cv: Condvar,
    threads: Mutex<Vec<libc::pthread_t>>,
    /// Incremented for each snapshot: every parked vCPU saves its registers once per
    /// round.
    save_round: std::sync::atomic::AtomicU64,
    /// The MSRs a snapshot saves (KVM_GET_MSR_INDEX_LIST), when snapshots are enabled.
    msr_list: Vec<u32>,
    /// Each vCPU's saved registers, by id.
    saved: Mutex<Vec<Option<Result<crate::snapshot::VcpuState, String>>>>,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of the kick signal, without SA_RESTART, so that KVM_RUN
/// returns EINTR.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
}

impl Control {
    /// Control of `count` vCPUs.
    pub fn new(count: usize, msr_list: Vec<u32>) -> Control {
        Control {
            paused: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            count,
            lock: Mutex::new(()),
            cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            save_round: std::sync::atomic::AtomicU64::new(0),
            msr_list,
            saved: Mutex::new(Vec::new()),
        }
    }

    /// Pauses a running VM, then has each parked vCPU save its registers: all of them
    /// are out of the guest before any is read, so no interrupt one sends another is
    /// half in the saved state. Their states by id, or why not (the VM is then resumed
    /// if this call paused it).
    pub fn pause_and_save(&self) -> Result<Vec<crate::snapshot::VcpuState>, String> {
        if self.is_paused() {
            return Err("the VM is paused; resume it first".into());
        }
        if !self.pause() {
            self.resume();
            return Err("the vCPUs did not stop within a second".into());
        }
        {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) =
                (0..self.count).map(|_| None).collect();
            self.save_round.fetch_add(1, Ordering::SeqCst);
            self.cv.notify_all();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let done = self
                .saved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .all(Option::is_some);
            if done || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let saved = std::mem::take(&mut *self.saved.lock().unwrap_or_else(|e| e.into_inner()));
        let r: Result<Vec<_>, String> = saved
            .into_iter()
            .enumerate()
            .map(|(id, s)| match s {
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err(format!("vCPU {id}: {e}")),
                None => Err(format!("vCPU {id} did not save its registers")),
            })
            .collect();
        if r.is_err() {
            self.resume();
        }
        r
    }

    /// In a parked vCPU: saves its registers for the snapshot round under way.
    fn save(&self, fd: &mut VcpuFd, id: u8) {
        let s = crate::snapshot::save_vcpu(fd, &self.msr_list).map_err(|e| e.to_string());
        if let Some(slot) = self
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(usize::from(id))
        {
            *slot = Some(s);
        }
    }

    /// Records the vCPU threads to kick.
    pub fn set_threads<T>(&self, handles: &[std::thread::JoinHandle<T>]) {
        use std::os::unix::thread::JoinHandleExt;
        *self.threads.lock().unwrap_or_else(|e| e.into_inner()) =
            handles.iter().map(|h| h.as_pthread_t()).collect();
    }

    /// Stops every vCPU; true once all are parked (within about a second).
    pub fn pause(&self) -> bool {
        self.paused.store(true, Ordering::SeqCst);
        for _ in 0..1000 {
            if self.parked.load(Ordering::SeqCst) == self.count {
                return true;
            }
            for t in self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                // SAFETY: the thread handles are of live vCPU threads (they never exit
                // before the process does); the signal has a handler installed.
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.parked.load(Ordering::SeqCst) == self.count
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.paused.store(false, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// Whether the VM is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn park_if_paused(&self, fd: &mut VcpuFd, id: u8) {
        if !self.paused.load(Ordering::SeqCst) {
            return;
        }
        let mut round = self.save_round.load(Ordering::SeqCst);
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.fetch_add(1, Ordering::SeqCst);
        while self.paused.load(Ordering::SeqCst) {
            let now = self.save_round.load(Ordering::SeqCst);
            if now != round {
                // Saved outside the lock: the others save at the same time.
                round = now;
                drop(g);
                self.save(fd, id);
                g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a vCPU stopped running the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked for a reset or power-off (i8042, or a KVM system event).
    GuestShutdown,
    /// The guest can't continue; the string says why.
    Failed(String),
}

/// Runs a vCPU until the guest stops it. Port and MMIO accesses go to the buses.
pub fn run(
    mut fd: VcpuFd,
    id: u8,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    stats: Arc<crate::Stats>,
    exit: Arc<crate::ExitSignal>,
    ctl: Arc<Control>,
) -> VcpuStop {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        ctl.park_if_paused(&mut fd, id);
        let r = fd.run();
        stats.vcpu_exits.fetch_add(1, Relaxed);
        match r {
            Ok(VcpuExit::IoIn(port, data)) => pio.read(u64::from(port), data),
            Ok(VcpuExit::IoOut(port, data)) => pio.write(u64::from(port), data),
            Ok(VcpuExit::MmioRead(addr, data)) => mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => mmio.write(addr, data),
            Ok(VcpuExit::Hlt) => return VcpuStop::GuestShutdown,
            Ok(VcpuExit::Shutdown) => {
                return VcpuStop::Failed(format!(
                    "vCPU {id}: guest triple fault (KVM_EXIT_SHUTDOWN)"
                ))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
                const KVM_SYSTEM_EVENT_RESET: u32 = 2;
                match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => {
                        return VcpuStop::GuestShutdown
                    }
                    other => return VcpuStop::Failed(format!("vCPU {id}: system event {other}")),
                }
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return VcpuStop::Failed(format!(
                    "vCPU {id}: KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
                ))
            }
            Ok(VcpuExit::InternalError) => {
                return VcpuStop::Failed(format!(
                    "vCPU {id}: KVM internal error (emulation failure)"
                ))
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => return VcpuStop::Failed(format!("vCPU {id}: unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
            }
            Err(e) => return VcpuStop::Failed(format!("vCPU {id}: KVM_RUN failed: {e}")),
        }
        if exit.is_set() {
            return VcpuStop::GuestShutdown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_segments_decode_as_long_mode_code_and_flat_data() {
        let g = boot_gdt();
        let code = segment(g[1], 1);
        assert_eq!((code.l, code.db, code.present, code.selector), (1, 0, 1, 8));
        assert_eq!(code.limit, 0xffff_ffff);
        let data = segment(g[2], 2);
        assert_eq!((data.l, data.db, data.type_, data.selector), (0, 1, 3, 16));
        assert_eq!(segment(g[0], 0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        write_boot_tables(&m).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pde_last: u64 = m.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(pde_last, (511 << 21) | 0x83);
    }
}
