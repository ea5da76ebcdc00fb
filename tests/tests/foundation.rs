//! The foundation: guest kernel, the lab, and the guest kernel booting inside the lab.

use berth_e2e::{built_binary, busybox_initramfs, guest_kernel, repo_root, Lab, TempDir};
use std::process::Command;
use std::time::Duration;

#[test]
fn guest_kernel_builds_with_every_required_option_and_is_cached() {
    let (vmlinux, _first) = guest_kernel().expect("kernel builds");
    assert!(vmlinux.is_file(), "{} missing", vmlinux.display());
    let elf = std::fs::read(&vmlinux).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "vmlinux is an ELF file");
    let config = vmlinux.with_file_name(".config");
    let check = Command::new(repo_root().join("kernel/check-config"))
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "missing options: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (again, second) = guest_kernel().unwrap();
    assert_eq!(again, vmlinux);
    assert!(second.stderr.contains("cache hit"), "{}", second.stderr);
}

#[test]
fn lab_has_a_hardware_kvm_with_svm() {
    let out = Lab::new()
        .sh("test -c /dev/kvm && grep -qw svm /proc/cpuinfo && test -d /sys/module/kvm_amd && echo kvm-ready")
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "kvm-ready");
}

#[test]
fn lab_returns_the_commands_exit_status_and_output() {
    let out = Lab::new().sh("echo out; echo err >&2; exit 7").unwrap();
    assert_eq!(out.status, 7, "{out:?}");
    assert!(out.stdout.contains("out"));
}

#[test]
fn lab_runs_in_the_callers_directory_and_writes_back_to_rw_dirs() {
    let dir = TempDir::new("lab-rw").unwrap();
    let out = Lab::new()
        .rw(dir.path())
        .run(&[
            "sh",
            "-c",
            &format!("echo written-in-lab > {}/f", dir.path().display()),
        ])
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let got = std::fs::read_to_string(dir.path().join("f")).unwrap();
    assert_eq!(got, "written-in-lab\n");
}

#[test]
fn lab_kills_a_hanging_command_at_the_timeout_and_leaves_nothing() {
    let tmp = TempDir::new("lab-timeout").unwrap();
    let out = Lab::new()
        .timeout(Duration::from_secs(20))
        .tmpdir(tmp.path())
        .sh("sleep 1000")
        .unwrap();
    assert_eq!(out.status, 124, "{out:?}");
    assert!(
        out.stderr.contains("timed out after 20 s"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
    let ps = Command::new("pgrep")
        .args(["-f", &tmp.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn guest_kernel_boots_to_init_inside_the_lab() {
    let (vmlinux, _) = guest_kernel().unwrap();
    let dir = TempDir::new("guest-boot").unwrap();
    let initrd = dir.path().join("initrd.gz");
    busybox_initramfs(
        &initrd,
        "#!/bin/sh\necho BERTH-GUEST-INIT-OK $(uname -r)\nreboot -f\n",
        &[],
    )
    .unwrap();
    let vmm = built_binary("berth-vmm");
    let out = Lab::new()
        .run(&[
            vmm.to_str().unwrap(),
            "--kernel",
            vmlinux.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            "quiet",
        ])
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("BERTH-GUEST-INIT-OK 6.1."),
        "no init marker on the console: {out:?}"
    );
}

#[test]
fn a_lab_boot_that_stalls_is_retried_once_then_reported() {
    let tmp = TempDir::new("lab-stall").unwrap();
    let out = Command::new(repo_root().join("tests/lab/run"))
        .args(["--", "true"])
        .env("BERTH_LAB_BOOT_TIMEOUT", "1")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("booting it again"), "{stderr}");
    assert!(
        stderr.contains("did not start the command within 1 s (twice)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "temp files left"
    );
}

#[test]
fn a_frozen_lab_is_caught_by_the_watchdog_and_reported() {
    let tmp = TempDir::new("lab-freeze").unwrap();
    // The command stops the lab's heartbeats (over 9p and on the serial port), as a
    // frozen lab VM stops everything.
    let script = "io=$(sed -n 's/.*lab.io=\\([^ ]*\\).*/\\1/p' /proc/cmdline); \
                  kill -STOP $(cat $io/heartbeat.pid) $(cat $io/serial-beat.pid); \
                  echo heartbeat-stopped; sleep 1000";
    let t0 = std::time::Instant::now();
    let out = Command::new(repo_root().join("tests/lab/run"))
        .args(["--timeout", "300", "--", "sh", "-c", script])
        .env("BERTH_LAB_FREEZE_TIMEOUT", "25")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(123), "{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(150),
        "caught long before the 300 s timeout ({:?})",
        t0.elapsed()
    );
    assert!(
        stderr.contains("FROZE: no heartbeat from the lab VM for 25 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("lab|   heartbeat-stopped"),
        "the last console lines are in the report: {stderr}"
    );
    assert!(
        stderr.contains("RIP=") && stderr.contains("IRR"),
        "the vCPUs' registers and local APICs are in the report: {stderr}"
    );
    // Before it gave up, the watchdog kicked it (10 s late), in vain: the stopped
    // heartbeat loops neither beat nor answered.
    assert!(
        stderr.contains("the watchdog kicked it")
            && stderr.contains("no heartbeat within 8 s of the kick (and no answer to it)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "temp files left"
    );
}

#[test]
fn a_kick_on_the_lab_serial_port_wakes_its_heartbeat() {
    // Kicks are due 2 s after the last heartbeat (which comes every 5 s): each kick's byte
    // must reach the lab as a received character (an interrupt: the path that wakes a
    // lab vCPU QEMU left halted with a timer pending, docs/testing.md), and the heartbeat
    // that follows comes from a timer.
    let tmp = TempDir::new("lab-kick").unwrap();
    let out = Command::new(repo_root().join("tests/lab/run"))
        .args([
            "--timeout",
            "300",
            "--",
            "sh",
            "-c",
            "sleep 20; cat /proc/tty/driver/serial",
        ])
        .env("BERTH_LAB_KICK", "2")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the watchdog kicked it"), "{stderr}");
    assert!(
        stderr.contains("s after the kick: the lab runs again"),
        "{stderr}"
    );
    // ttyS1 (port 0x2f8) received the kicks.
    let rx: u64 = stdout
        .lines()
        .find(|l| l.starts_with("1:"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("rx:")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rx > 0, "the kicks reached ttyS1: {stdout}");
}
