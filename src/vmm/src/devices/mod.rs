//! Devices: the port-I/O and MMIO buses, the legacy devices (8250 UART, i8042) and virtio.

pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

/// A device on a bus: accesses arrive as offsets into its window.
pub trait BusDevice: Send {
    /// A guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared bus device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Two devices claim overlapping windows.
    #[error("bus window {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Window start.
        base: u64,
        /// Window length.
        len: u64,
    },
}

/// A port-I/O or MMIO bus: sorted, non-overlapping device windows.
#[derive(Default)]
pub struct Bus {
    windows: Vec<(u64, u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Adds `dev` at `[base, base+len)`.
    pub fn insert(&mut self, dev: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overlap { base, len })?;
        if self
            .windows
            .iter()
            .any(|(b, l, _)| base < b + l && *b < end)
        {
            return Err(BusError::Overlap { base, len });
        }
        self.windows.push((base, len, dev));
        self.windows.sort_by_key(|w| w.0);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let i = self.windows.partition_point(|w| w.0 <= addr);
        let (base, len, dev) = self.windows.get(i.checked_sub(1)?)?;
        (addr < base + len).then(|| (addr - base, dev))
    }

    /// Dispatches a read; unclaimed addresses read as all ones, like an empty bus.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((off, dev)) => dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(off, data),
            None => data.fill(0xff),
        }
    }

    /// Dispatches a write; writes to unclaimed addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((off, dev)) = self.find(addr) {
            dev.lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(off, data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, u8)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn accesses_reach_the_right_device_at_the_right_offset() {
        let a = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = Bus::new();
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        let mut d = [0u8; 1];
        bus.read(0x3fa, &mut d);
        assert_eq!(d, [2]);
        bus.read(0x400, &mut d);
        assert_eq!(d, [0xff]);
        bus.write(0x3ff, &[9]);
        bus.write(0x3f7, &[1]);
        assert_eq!(a.lock().unwrap().0, vec![(7, 9)]);
    }

    #[test]
    fn overlapping_windows_are_refused() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Echo(vec![]))), 0x10, 0x10)
            .unwrap();
        assert!(bus
            .insert(Arc::new(Mutex::new(Echo(vec![]))), 0x1f, 2)
            .is_err());
        assert!(bus
            .insert(Arc::new(Mutex::new(Echo(vec![]))), 0x20, 2)
            .is_ok());
        assert!(bus
            .insert(Arc::new(Mutex::new(Echo(vec![]))), u64::MAX, 2)
            .is_err());
    }
}
