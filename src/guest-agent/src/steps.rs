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
    for l in kernel_lines() {
        out.push_str(&l);
        out.push('\n');
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
    // The console takes the bytes into its buffer; wait until the UART has sent them, or
    // the reboot right after cuts the tail off.
    // SAFETY: tcdrain takes a descriptor number (an error, e.g. not a terminal, is ignored).
    unsafe { libc::tcdrain(2) };
}

/// Initcalls that took at least this long are reported (the kernel's `initcall_debug`).
const SLOW_INITCALL_US: u64 = 1000;

/// The kernel's own account of its boot, from its log (`/dev/kmsg`; berthd adds
/// `initcall_debug` to the command line with `berth_trace=2`, whose lines stay in the log,
/// off a quiet console): each initcall of at least [`SLOW_INITCALL_US`], and the end of
/// the boot (the init sections freed, /init run), with the kernel's time.
fn kernel_lines() -> Vec<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut last: Option<(u64, String)> = None;
    // One record per read; EAGAIN at the end.
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(cur) = record(&String::from_utf8_lossy(&buf[..n])) {
                    out.extend(kernel_line(&cur));
                    out.extend(last.as_ref().and_then(|p| gap_line(p, &cur)));
                    last = Some(cur);
                }
            }
            // A record overwritten while reading (EPIPE): go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// A stretch of the kernel's boot at least this long without a log record (outside the
/// initcalls, which `initcall_debug` times) is reported with the records around it.
const GAP_US: u64 = 20_000;

/// A `/dev/kmsg` record's (`PRIO,SEQ,USEC,FLAGS;MESSAGE`) time (µs) and first line.
fn record(rec: &str) -> Option<(u64, String)> {
    let (head, msg) = rec.split_once(';')?;
    Some((
        head.split(',').nth(2)?.parse().ok()?,
        msg.lines().next()?.to_owned(),
    ))
}

/// The records around a long silence, unless it is an initcall's own time.
fn gap_line(prev: &(u64, String), cur: &(u64, String)) -> Option<String> {
    let gap = cur.0.checked_sub(prev.0)?;
    (gap >= GAP_US && !prev.1.starts_with("calling ")).then(|| {
        format!(
            "berth-agent: kernel-gap {}.{:06} {} after: {} | before: {}",
            cur.0 / 1_000_000,
            cur.0 % 1_000_000,
            gap / 1000,
            prev.1,
            cur.1
        )
    })
}

/// A `/dev/kmsg` record ([`record`]) as a line for the notes, if it is a slow initcall or
/// a step of the boot's end.
fn kernel_line((usec, msg): &(u64, String)) -> Option<String> {
    let at = format!("{}.{:06}", usec / 1_000_000, usec % 1_000_000);
    // "initcall foo+0x0/0x20 returned 0 after 1234 usecs"
    if let Some(rest) = msg.strip_prefix("initcall ") {
        let (name, tail) = rest.split_once(' ')?;
        let took: u64 = tail
            .split_once(" after ")?
            .1
            .strip_suffix(" usecs")?
            .parse()
            .ok()?;
        let name = name.split('+').next()?;
        return (took >= SLOW_INITCALL_US)
            .then(|| format!("berth-agent: initcall {at} {took} {name}"));
    }
    // berth's kernel keeps the init sections rather than freeing them (kernel/patches).
    (msg.starts_with("Freeing unused kernel image")
        || msg.starts_with("Keeping unused kernel image")
        || msg.starts_with("Run /init"))
    .then(|| format!("berth-agent: kernel {at} {msg}"))
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
    fn slow_initcalls_and_the_boots_end_from_the_kernel_log() {
        assert_eq!(
            kernel_line(
                &record(
                    "7,812,412345,-;initcall fuse_init+0x0/0x1a0 returned 0 after 15234 usecs\n"
                )
                .unwrap()
            ),
            Some("berth-agent: initcall 0.412345 15234 fuse_init".into())
        );
        assert_eq!(
            kernel_line(
                &record("7,813,412400,-;initcall quick+0x0/0x10 returned 0 after 12 usecs\n")
                    .unwrap()
            ),
            None,
            "fast ones are left out"
        );
        assert_eq!(
            kernel_line(
                &record("6,900,1532209,-;Run /init as init process\n SUBSYSTEM=x\n").unwrap()
            ),
            Some("berth-agent: kernel 1.532209 Run /init as init process".into())
        );
        assert_eq!(
            kernel_line(&record("6,1,2,-;Linux version 6.1\n").unwrap()),
            None
        );
        let a = record("6,1,100000,-;Memory: 240000K/262144K available\n").unwrap();
        let b = record("6,2,160000,-;SLUB: HWalign=64\n").unwrap();
        assert_eq!(
            gap_line(&a, &b).as_deref(),
            Some("berth-agent: kernel-gap 0.160000 60 after: Memory: 240000K/262144K available | before: SLUB: HWalign=64")
        );
        assert_eq!(gap_line(&b, &a), None, "time never runs backwards here");
        let call = record("7,3,100000,-;calling  fuse_init+0x0/0x1a0 @ 1\n").unwrap();
        assert_eq!(
            gap_line(&call, &b),
            None,
            "an initcall's own time is reported as such"
        );
        assert_eq!(record("garbage"), None);
    }

    #[test]
    fn off_outside_a_traced_guest() {
        // The test runner is not PID 1.
        note("nothing");
        assert!(STEPS.lock().unwrap().is_empty());
    }
}
