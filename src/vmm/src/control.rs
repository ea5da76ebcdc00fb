//! The control socket: one JSON request per connection, one JSON reply.
//!
//! ```text
//! {"action": "stats"}   -> {"ok": true, "vcpu_exits": N, "rss_kib": N,
//!                            "reported_free_kib": N, "paused": false}
//! {"action": "pause"}   -> {"ok": true}
//! {"action": "resume"}  -> {"ok": true}
//! {"action": "stop"}    -> {"ok": true}   then the monitor exits (status 0)
//! {"action": "shutdown"} -> {"ok": true, "sent": "ctrl-alt-del"}   the guest shuts down
//! {"action": "snapshot"} -> {"ok": true, "memory_bytes": N}   the guest written to the
//!                            `snapshot_to` directory; then the monitor exits (status 0)
//! ```

use crate::vm::Vm;
use crate::VmExit;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

/// The listening control socket.
pub struct Control {
    listener: UnixListener,
}

impl Control {
    /// Binds the socket (the path must not exist).
    pub fn bind(path: &Path) -> std::io::Result<Control> {
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Control { listener })
    }

    /// The listening fd, for the event loop.
    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Serves one pending connection. Returns an exit when the request stops the VM.
    pub fn accept(&self, vm: &Vm) -> Option<VmExit> {
        let (stream, _) = self.listener.accept().ok()?;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream).take_limit(4096);
        if reader.read_line(&mut line).is_err() {
            return None;
        }
        let (reply, exit) = handle(vm, &line);
        let mut out = &stream;
        let _ = writeln!(out, "{reply}");
        exit
    }
}

trait TakeLimit: Sized {
    fn take_limit(self, n: u64) -> std::io::Take<Self>;
}
impl<R: std::io::Read> TakeLimit for R {
    fn take_limit(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}

/// VmRSS, from the status file the monitor opened before its jail (a re-read from
/// offset 0 is current).
fn rss_kib(status: Option<&std::fs::File>) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = status
        .and_then(|f| f.read_at(&mut buf, 0).ok())
        .unwrap_or(0);
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn handle(vm: &Vm, line: &str) -> (Value, Option<VmExit>) {
    let err = |m: String| (json!({"ok": false, "error": m}), None);
    let req: Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(e) => return err(format!("bad request: {e}")),
    };
    let Some(action) = req.get("action").and_then(Value::as_str) else {
        return err("bad request: no \"action\"".into());
    };
    match action {
        "stats" => (
            json!({
                "ok": true,
                "vcpu_exits": vm.stats().vcpu_exits.load(std::sync::atomic::Ordering::Relaxed),
                "rss_kib": rss_kib(vm.proc_status.as_ref()),
                "reported_free_kib": vm.stats().reported_free.load(std::sync::atomic::Ordering::Relaxed) >> 10,
                "paused": vm.vcpu_control.is_paused(),
                "devices": vm.device_count(),
            }),
            None,
        ),
        "pause" => {
            if vm.vcpu_control.pause() {
                (json!({"ok": true}), None)
            } else {
                vm.vcpu_control.resume();
                err("the vCPUs did not stop within a second".into())
            }
        }
        "resume" => {
            vm.vcpu_control.resume();
            (json!({"ok": true}), None)
        }
        "stop" => (
            json!({"ok": true}),
            Some(VmExit::ok("stopped through the control socket")),
        ),
        // Like Firecracker's SendCtrlAltDel: the guest decides how to shut down; the
        // monitor exits when it has.
        "shutdown" => {
            let sent = vm
                .i8042
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ctrl_alt_del();
            if sent {
                (json!({"ok": true, "sent": "ctrl-alt-del"}), None)
            } else {
                err("the guest has disabled its keyboard; use \"stop\"".into())
            }
        }
        "snapshot" => match vm.snapshot() {
            Ok(bytes) => (
                json!({"ok": true, "memory_bytes": bytes}),
                Some(VmExit::ok("snapshot taken")),
            ),
            // A failed snapshot leaves the VM as it was (running, or paused by a
            // "pause" before it).
            Err(e) => err(e),
        },
        other => err(format!(
            "unknown action {other:?} (stats, pause, resume, shutdown, stop, snapshot)"
        )),
    }
}
