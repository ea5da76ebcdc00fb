//! Guest physical memory layout (x86_64). Every address the monitor writes into the guest
//! before boot is named here.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_9000  PML4 (identity map, 1 GiB of 2 MiB pages)
//! 0x0000_0520  IDT (empty)              0x0000_a000  PDPT
//! 0x0000_7000  zero page (boot_params)  0x0000_b000  PD
//! 0x0000_8ff0  boot stack pointer       0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA)          0x0010_0000  kernel (high memory)
//! ...          RAM up to MMIO_GAP_START (3 GiB), the rest above 4 GiB
//! 0xd000_0000  virtio-mmio devices, 4 KiB each
//! 0xfec0_0000  IOAPIC                   0xfee0_0000  local APIC
//! ```

/// Global descriptor table.
pub const GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty; the kernel installs its own).
pub const IDT_START: u64 = 0x520;
/// The zero page: Linux `boot_params`.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 of the boot page tables.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table of the boot page tables.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory of the boot page tables (512 x 2 MiB = 1 GiB identity map).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum kernel command line length, NUL included (Linux's COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory, where the kernel is loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Where a virtio-pmem image of a guest with `memory_mib` of RAM goes: above its RAM and
/// after the previous image's end (if any), 1 GiB aligned (memory sections of its own,
/// never shared with RAM or another image).
pub fn pmem_address(memory_mib: u64, previous_end: Option<u64>) -> u64 {
    const GIB: u64 = 1 << 30;
    let size = memory_mib << 20;
    let ram_end = if size <= MMIO_GAP_START {
        MMIO_GAP_END
    } else {
        MMIO_GAP_END + (size - MMIO_GAP_START)
    };
    previous_end.unwrap_or(ram_end).max(ram_end).div_ceil(GIB) * GIB
}

/// Start of the 32-bit MMIO gap: RAM never overlaps [MMIO_GAP_START, 4 GiB).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 1 << 32;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC registers.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// KVM's TSS (three pages) just below the BIOS area, as on real hardware.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Serial port (COM1) I/O ports and IRQ.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// i8042 keyboard controller ports: data 0x60 .. command/status 0x64.
pub const I8042_PORT: u16 = 0x60;
/// The keyboard's interrupt line.
pub const KBD_IRQ: u32 = 1;
/// Interrupt lines 5..=23 go to virtio devices.
pub const FIRST_VIRTIO_IRQ: u32 = 5;
/// Last IOAPIC pin.
pub const LAST_IRQ: u32 = 23;
/// Most vCPUs berth supports (the MP table and CPUID topology stay simple below this).
pub const MAX_VCPUS: u8 = 32;

#[cfg(test)]
mod tests {
    #[test]
    fn pmem_images_sit_above_ram_one_gib_aligned() {
        assert_eq!(super::pmem_address(256, None), 4 << 30);
        assert_eq!(
            super::pmem_address(256, Some((4 << 30) + (6 << 20))),
            5 << 30
        );
        // 4 GiB of RAM: 3 below the gap, 1 from 4 GiB: RAM ends at 5 GiB.
        assert_eq!(super::pmem_address(4096, None), 5 << 30);
        assert_eq!(super::pmem_address(4097, None), 6 << 30);
    }
}
