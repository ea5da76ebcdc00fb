//! The i8042 keyboard controller: enough for Linux's i8042 and atkbd drivers (with
//! `i8042.dumbkbd`) to find a keyboard, so that the monitor can send Ctrl+Alt+Del (a
//! graceful shutdown request, as in Firecracker), and so that the guest can reset the
//! machine (`reboot=k` writes 0xFE to the command port), which ends the VM cleanly.

use super::BusDevice;
use std::collections::VecDeque;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;
const DATA_OFFSET: u64 = 0;

// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_INPUT: u8 = 0xc0;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
const CMD_WRITE_AUX_OUTBUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

// Status bits.
const SB_OUT_FULL: u8 = 0x01;
const SB_SYS: u8 = 0x04;
const SB_LAST_WAS_CMD: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

// Controller configuration byte bits.
const CTR_KBD_INT: u8 = 0x01;
const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;

// Keyboard answers.
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;

/// Scancode set 2 for Ctrl, Alt and Delete, press then release.
const CTRL_ALT_DEL: [u8; 12] = [
    0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14, 0x00,
];

/// Bytes the controller buffers for the guest before dropping new ones.
const BUF_MAX: usize = 64;

/// The controller's registers in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// Bytes waiting for the guest.
    pub buf: Vec<u8>,
    /// Controller configuration byte.
    pub ctr: u8,
    /// Status register.
    pub status: u8,
    /// A command waiting for its data byte.
    pub pending: Option<u8>,
    /// Output port.
    pub outp: u8,
}

/// The controller.
pub struct I8042 {
    exit: Arc<crate::ExitSignal>,
    irq: Option<EventFd>,
    buf: VecDeque<u8>,
    ctr: u8,
    status: u8,
    /// A command waiting for its data byte.
    pending: Option<u8>,
    outp: u8,
}

impl I8042 {
    /// A controller that reports a guest reset through `exit` and raises IRQ 1 through
    /// `irq`.
    pub fn new(exit: Arc<crate::ExitSignal>, irq: Option<EventFd>) -> I8042 {
        I8042 {
            exit,
            irq,
            buf: VecDeque::new(),
            ctr: CTR_KBD_INT | CTR_SYS,
            status: SB_SYS | SB_KBD_ENABLED,
            pending: None,
            outp: 0x01,
        }
    }

    /// The controller's registers, for a snapshot.
    pub fn state(&self) -> I8042State {
        I8042State {
            buf: self.buf.iter().copied().collect(),
            ctr: self.ctr,
            status: self.status,
            pending: self.pending,
            outp: self.outp,
        }
    }

    /// Takes a snapshot's registers (bytes beyond the buffer's size are dropped).
    pub fn restore(&mut self, s: &I8042State) {
        self.buf = s.buf.iter().copied().take(BUF_MAX).collect();
        self.ctr = s.ctr;
        self.status = s.status;
        self.pending = s.pending;
        self.outp = s.outp;
        self.interrupt();
    }

    fn push(&mut self, b: u8) {
        if self.buf.len() < BUF_MAX {
            self.buf.push_back(b);
        }
        self.interrupt();
    }

    fn interrupt(&self) {
        if self.ctr & CTR_KBD_INT != 0 && !self.buf.is_empty() {
            if let Some(irq) = &self.irq {
                let _ = irq.write(1);
            }
        }
    }

    /// Queues Ctrl+Alt+Del for the guest (a graceful shutdown request). False if the
    /// guest disabled its keyboard.
    pub fn ctrl_alt_del(&mut self) -> bool {
        if self.ctr & CTR_KBD_DISABLE != 0 {
            return false;
        }
        for b in CTRL_ALT_DEL.iter().take(11) {
            if self.buf.len() < BUF_MAX {
                self.buf.push_back(*b);
            }
        }
        self.interrupt();
        true
    }

    fn command(&mut self, cmd: u8) {
        self.status |= SB_LAST_WAS_CMD;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUTBUF | CMD_WRITE_AUX_OUTBUF
            | CMD_WRITE_AUX => self.pending = Some(cmd),
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST | CMD_AUX_TEST => self.push(0x00),
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLE,
            CMD_ENABLE_KBD => self.ctr &= !CTR_KBD_DISABLE,
            CMD_DISABLE_AUX | CMD_ENABLE_AUX => {}
            CMD_READ_INPUT => self.push(0x00),
            CMD_READ_OUTP => self.push(self.outp),
            CMD_RESET_CPU => self
                .exit
                .set(crate::VmExit::ok("the guest reset the machine (reboot)")),
            _ => {}
        }
    }

    fn data(&mut self, b: u8) {
        self.status &= !SB_LAST_WAS_CMD;
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => {
                self.ctr = b;
                self.interrupt();
            }
            Some(CMD_WRITE_OUTP) => self.outp = b,
            Some(CMD_WRITE_KBD_OUTBUF) => self.push(b),
            Some(_) => {} // aux port: no mouse
            // A keyboard command: acknowledge it (a reset also reports a passed self-test).
            None => {
                self.push(KBD_ACK);
                if b == 0xff {
                    self.push(KBD_SELF_TEST_OK);
                }
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            COMMAND_OFFSET => self.status | if self.buf.is_empty() { 0 } else { SB_OUT_FULL },
            DATA_OFFSET => {
                let v = self.buf.pop_front().unwrap_or(0);
                self.interrupt();
                v
            }
            _ => 0,
        };
        data.fill(0);
        if let Some(d) = data.first_mut() {
            *d = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&b) = data.first() else { return };
        match offset {
            COMMAND_OFFSET => self.command(b),
            DATA_OFFSET => self.data(b),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (I8042, Arc<crate::ExitSignal>) {
        let exit = Arc::new(crate::ExitSignal::new().unwrap());
        (I8042::new(exit.clone(), None), exit)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_ends_the_vm_cleanly() {
        let (mut dev, exit) = dev();
        dev.write(DATA_OFFSET, &[CMD_RESET_CPU]);
        assert!(!exit.is_set(), "a data-port write is not a reset");
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert!(exit.is_set());
        assert_eq!(exit.take().unwrap().code, 0);
    }

    #[test]
    fn the_linux_probe_sequence_is_answered() {
        let (mut d, _) = dev();
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & SB_OUT_FULL, 0);
        d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(rd(&mut d, COMMAND_OFFSET) & SB_OUT_FULL, 0);
        assert_eq!(rd(&mut d, DATA_OFFSET), 0x55);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        let ctr = rd(&mut d, DATA_OFFSET);
        assert_eq!(ctr, CTR_KBD_INT | CTR_SYS);
        d.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        d.write(DATA_OFFSET, &[0x45]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, DATA_OFFSET), 0x45);
        d.write(DATA_OFFSET, &[0xff]); // keyboard reset
        assert_eq!(
            (rd(&mut d, DATA_OFFSET), rd(&mut d, DATA_OFFSET)),
            (KBD_ACK, KBD_SELF_TEST_OK)
        );
    }

    #[test]
    fn ctrl_alt_del_is_queued_as_set_2_scancodes() {
        let (mut d, _) = dev();
        assert!(d.ctrl_alt_del());
        let got: Vec<u8> = (0..4).map(|_| rd(&mut d, DATA_OFFSET)).collect();
        assert_eq!(got, vec![0x14, 0x11, 0xe0, 0x71]);
        d.write(COMMAND_OFFSET, &[CMD_DISABLE_KBD]);
        assert!(!d.ctrl_alt_del());
    }

    #[test]
    fn a_flood_of_commands_is_bounded() {
        let (mut d, _) = dev();
        for _ in 0..1000 {
            d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        assert_eq!(d.buf.len(), BUF_MAX);
    }
}
