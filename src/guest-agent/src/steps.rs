//! The guest's own account of a container's life, for docs/boot.md and `bench/run`: with
//! `berth_trace=2` on the kernel command line (berthd's `BERTH_VMM_TRACE=guest`), the agent
//! (PID 1 of a microVM) notes each request, connection and container step with the guest's
//! clock and its CPU time so far (`/proc/stat`: user, system, iowait, steal...). The notes
//! stay in memory and go to the console only at power-off, after the last answer: a line on
//! the emulated UART costs tens of ms, which would land in the very steps being measured.

use std::io::Write;
use std::sync::Mutex;

/// Most steps kept (a long-lived guest with tracing on stops noting, it does not grow).
const MAX_STEPS: usize = 4096;

static STEPS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::process::id() == 1 && std::env::var("berth_trace").is_ok_and(|v| v == "2")
    })
}

/// Notes a step (nothing unless enabled).
pub fn note(step: &str) {
    if !enabled() {
        return;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let cpu = cpu_ticks(
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_default()
            .as_str(),
    );
    let mut steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    // The last note (power off) is kept whatever the count: readers look for it.
    if steps.len() < MAX_STEPS || step == POWER_OFF {
        steps.push(line(ts.tv_sec as u64, ts.tv_nsec as u64, &cpu, step));
    }
}

const POWER_OFF: &str = "power off";

/// `/proc/stat`'s first line without its `cpu` label: user nice system idle iowait irq
/// softirq steal (USER_HZ ticks), always eight numbers (0 for any it lacks).
fn cpu_ticks(first_line: &str) -> String {
    let mut t: Vec<u64> = first_line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    t.resize(8, 0);
    t.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

fn line(sec: u64, nsec: u64, cpu: &str, step: &str) -> String {
    format!(
        "berth-agent: step {sec}.{:06} cpu {cpu} {step}",
        nsec / 1000
    )
}

/// Writes the notes to the console (at power-off).
pub fn flush() {
    if !enabled() {
        return;
    }
    note(POWER_OFF);
    let steps = std::mem::take(&mut *STEPS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out = steps.join("\n");
    out.push('\n');
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
    // The console takes the bytes into its buffer; wait until the UART has sent them, or
    // the reboot right after cuts the tail off.
    // SAFETY: tcdrain takes a descriptor number (an error, e.g. not a terminal, is ignored).
    unsafe { libc::tcdrain(2) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_line_carries_the_time_the_cpu_ticks_and_the_step() {
        let cpu = cpu_ticks("cpu  26 0 47 3 17 0 2 23 0 0");
        assert_eq!(cpu, "26 0 47 3 17 0 2 23");
        assert_eq!(
            cpu_ticks(""),
            "0 0 0 0 0 0 0 0",
            "unreadable: still eight numbers"
        );
        assert_eq!(cpu_ticks("cpu 1 2 x"), "1 2 0 0 0 0 0 0");
        assert_eq!(
            line(1, 5_000_000, &cpu, "create: forked"),
            "berth-agent: step 1.005000 cpu 26 0 47 3 17 0 2 23 create: forked"
        );
    }

    #[test]
    fn off_outside_a_traced_guest() {
        // The test runner is not PID 1.
        note("nothing");
        assert!(STEPS.lock().unwrap().is_empty());
    }
}
