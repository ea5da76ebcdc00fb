//! The 8250 UART (COM1) on vm-superio, with its interrupt on an irqfd. Its output goes to
//! the configured console sink; the monitor also watches it for the kernel's last words
//! ("reboot: Power down", "reboot: System halted", "Kernel panic - not syncing"): an
//! ACPI-less guest can't power itself off any other way, and a panic must not look like a
//! clean exit.

use super::BusDevice;
use std::io::{self, Write};
use std::sync::Arc;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Raises the UART's interrupt line through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Watches console output line by line for the kernel's shutdown and panic messages.
pub struct ConsoleOut {
    sink: Box<dyn Write + Send>,
    line: Vec<u8>,
    exit: Arc<crate::ExitSignal>,
    pub(crate) bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// The longest line the watcher keeps; the rest of a longer line is ignored.
const MAX_LINE: usize = 512;

impl ConsoleOut {
    /// Output to `sink`, reporting shutdowns and panics through `exit`.
    pub fn new(sink: Box<dyn Write + Send>, exit: Arc<crate::ExitSignal>) -> ConsoleOut {
        ConsoleOut {
            sink,
            line: Vec::with_capacity(MAX_LINE),
            exit,
            bytes: Default::default(),
        }
    }

    fn end_of_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        let line = line.trim_end_matches('\r');
        if let Some(i) = line.find("Kernel panic - not syncing: ") {
            let why = &line[i + "Kernel panic - not syncing: ".len()..];
            self.exit
                .set(crate::VmExit::failed(format!("guest kernel panic: {why}")));
        } else if line.ends_with("reboot: Power down") || line.ends_with("reboot: System halted") {
            self.exit.set(crate::VmExit::ok("the guest powered off"));
        }
        self.line.clear();
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for &b in buf {
            if b == b'\n' {
                self.end_of_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        // A console that can't be written (closed pipe) must not stop the guest.
        let _ = self.sink.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.sink.flush();
        Ok(())
    }
}

/// COM1 on the port-I/O bus.
pub struct SerialDevice(pub Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut>);

impl SerialDevice {
    /// Queues console input for the guest; returns how many bytes fit.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.0.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

/// COM1's registers in a snapshot (vm-superio's `SerialState`, which has no serde form).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR in that order.
    pub regs: [u8; 9],
    /// Input not yet read by the guest.
    pub in_buffer: Vec<u8>,
}

impl SerialSnapshot {
    /// The registers of `s`.
    pub fn of(s: &vm_superio::serial::SerialState) -> SerialSnapshot {
        SerialSnapshot {
            regs: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer.clone(),
        }
    }

    /// vm-superio's form.
    pub fn to_state(&self) -> vm_superio::serial::SerialState {
        let r = self.regs;
        vm_superio::serial::SerialState {
            baud_divisor_low: r[0],
            baud_divisor_high: r[1],
            interrupt_enable: r[2],
            interrupt_identification: r[3],
            line_control: r[4],
            line_status: r[5],
            modem_control: r[6],
            modem_status: r[7],
            scratch: r[8],
            in_buffer: self.in_buffer.clone(),
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && offset < 8 {
            data[0] = self.0.read(offset as u8);
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && offset < 8 {
            let _ = self.0.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> (ConsoleOut, Arc<crate::ExitSignal>) {
        let exit = Arc::new(crate::ExitSignal::new().unwrap());
        (ConsoleOut::new(Box::new(io::sink()), exit.clone()), exit)
    }

    #[test]
    fn power_down_message_is_a_clean_exit() {
        let (mut c, exit) = console();
        c.write_all(b"[    1.0] reboot: Power ").unwrap();
        assert!(!exit.is_set());
        c.write_all(b"down\r\n").unwrap();
        assert_eq!(exit.take().unwrap().code, 0);
    }

    #[test]
    fn a_panic_is_a_failure_with_its_reason() {
        let (mut c, exit) = console();
        c.write_all(b"Kernel panic - not syncing: VFS: Unable to mount root fs\n")
            .unwrap();
        let e = exit.take().unwrap();
        assert_ne!(e.code, 0);
        assert!(e.reason.contains("Unable to mount root fs"), "{}", e.reason);
    }

    #[test]
    fn ordinary_output_and_huge_lines_change_nothing() {
        let (mut c, exit) = console();
        c.write_all(&vec![b'a'; 10_000]).unwrap();
        c.write_all(b"\nhello\n").unwrap();
        assert!(!exit.is_set());
    }

    #[test]
    fn the_uart_writes_bytes_to_the_console() {
        let (c, _exit) = console();
        let bytes = c.bytes.clone();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice(Serial::new(IrqTrigger(evt), c));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(bytes.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
