//! The i8042 keyboard controller, just enough for the guest to reset the machine: Linux with
//! `reboot=k` writes 0xFE (pulse reset) to the command port, which ends the VM cleanly.

use super::BusDevice;
use std::sync::Arc;

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;
/// Command: pulse the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller. Reads return 0: no data, input buffer empty.
pub struct I8042 {
    exit: Arc<crate::ExitSignal>,
}

impl I8042 {
    /// A controller that reports a guest reset through `exit`.
    pub fn new(exit: Arc<crate::ExitSignal>) -> I8042 {
        I8042 { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.exit
                .set(crate::VmExit::ok("the guest reset the machine (reboot)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_ends_the_vm_cleanly() {
        let exit = Arc::new(crate::ExitSignal::new().unwrap());
        let mut dev = I8042::new(exit.clone());
        let mut status = [0xaa];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
        dev.write(0, &[CMD_RESET_CPU]);
        assert!(!exit.is_set(), "a data-port write is not a reset");
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert!(exit.is_set());
        assert_eq!(exit.take().unwrap().code, 0);
    }
}
