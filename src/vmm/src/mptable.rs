//! The Intel MultiProcessor Specification table (v1.4): how an ACPI-less guest finds its
//! vCPUs, the IOAPIC and the interrupt routing. Written into the EBDA.

use crate::layout::{APIC_ADDR, EBDA_START, IOAPIC_ADDR, LAST_IRQ};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// Too many vCPUs for the space reserved.
    #[error("{0} vCPUs do not fit in the MP table")]
    TooManyCpus(u8),
    /// Writing guest memory failed.
    #[error("writing the MP table into guest memory failed")]
    Memory,
}

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MPC_SPEC: u8 = 4;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP floating pointer and configuration table for `cpus` vCPUs, to be placed at
/// `base`.
pub fn build(cpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > crate::layout::MAX_VCPUS {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    for cpu in 0..cpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(cpu);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 });
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for irq in 0..=LAST_IRQ as u8 {
        entries.extend_from_slice(&[ENTRY_INTSRC, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);

    let entry_count = cpus as u16 + 2 + (LAST_IRQ as u16 + 1) + 2;
    let table_base = base + 16;
    // Configuration table header (44 bytes).
    let mut hdr = Vec::with_capacity(44);
    hdr.extend_from_slice(b"PCMP");
    hdr.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    hdr.push(MPC_SPEC);
    hdr.push(0); // checksum
    hdr.extend_from_slice(b"BERTH   ");
    hdr.extend_from_slice(b"MICROVM     ");
    hdr.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    hdr.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    hdr.extend_from_slice(&entry_count.to_le_bytes());
    hdr.extend_from_slice(&APIC_ADDR.to_le_bytes());
    hdr.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved
    let mut table = hdr;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    // Floating pointer structure (16 bytes).
    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_base as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(MPC_SPEC);
    fp.push(0); // checksum
    fp.extend_from_slice(&[0u8; 5]);
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    Ok(fp)
}

/// Writes the MP table for `cpus` vCPUs at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MpTableError> {
    let bytes = build(cpus, EBDA_START)?;
    if EBDA_START + bytes.len() as u64 > 0xa0000 {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|_| MpTableError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_zero_and_pointers_line_up() {
        let t = build(2, EBDA_START).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(ptr, EBDA_START + 16);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // Two processors, the first one the BSP.
        assert_eq!(table[44], ENTRY_PROCESSOR);
        assert_eq!(table[44 + 3], CPU_ENABLED | CPU_BOOTPROCESSOR);
        assert_eq!(table[64 + 1], 1);
    }

    #[test]
    fn the_largest_table_fits_in_the_ebda() {
        let t = build(crate::layout::MAX_VCPUS, EBDA_START).unwrap();
        assert!(EBDA_START + t.len() as u64 <= 0xa0000);
        assert!(build(0, EBDA_START).is_err());
        assert!(build(33, EBDA_START).is_err());
    }
}
