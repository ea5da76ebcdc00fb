//! berth-vmm end to end: boots in the lab, and bad input natively.

use berth_e2e::{built_binary, busybox_initramfs, guest_kernel, Lab, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Guest {
    dir: TempDir,
    vmm: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// A guest whose /init is `init` (after mounting /proc, /sys and /dev), with `bins` copied
/// in along with their libraries.
fn guest(name: &str, init: &str, bins: &[&str]) -> Guest {
    let dir = TempDir::new(name).unwrap();
    let (kernel, _) = guest_kernel().unwrap();
    let initrd = dir.path().join("initrd.gz");
    let script = format!(
        "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n{init}\n"
    );
    busybox_initramfs(&initrd, &script, bins).unwrap();
    Guest {
        dir,
        vmm: built_binary("berth-vmm"),
        kernel,
        initrd,
    }
}

/// Compiles the guest program `tests/guest/NAME.c`; its directory and path.
fn guest_program(name: &str) -> (TempDir, PathBuf) {
    let build = TempDir::new(&format!("{name}-build")).unwrap();
    let program = build.path().join(name);
    let src = berth_e2e::repo_root().join(format!("tests/guest/{name}.c"));
    let cc = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&program)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    (build, program)
}

impl Guest {
    /// The berth-vmm command line for this guest, as shell words.
    fn vmm(&self, extra: &str) -> String {
        format!(
            "{} --kernel {} --initrd {} {extra}",
            self.vmm.display(),
            self.kernel.display(),
            self.initrd.display()
        )
    }

    fn lab(&self, script: &str) -> berth_e2e::Finished {
        self.lab_for(script, std::time::Duration::from_secs(300))
    }

    fn lab_for(&self, script: &str, timeout: std::time::Duration) -> berth_e2e::Finished {
        let out = Lab::new()
            .timeout(timeout)
            .rw(self.dir.path())
            // Unix sockets can't live on the 9p share: $S is a directory on the lab's own /tmp.
            .sh(&format!(
                "S=$(mktemp -d /tmp/sock.XXXXXX) || exit 1\ncd {} || exit 1\n{script}",
                self.dir.path().display()
            ))
            .unwrap();
        eprintln!(
            "--- lab stdout ---\n{}\n--- lab stderr ---\n{}",
            out.stdout, out.stderr
        );
        out
    }
}

#[test]
fn boots_to_the_console_with_two_vcpus_and_shuts_down_cleanly() {
    let g = guest(
        "vmm-console",
        "echo \"BOOT-OK cpus=$(grep -c ^processor /proc/cpuinfo)\"\n\
         case \"$(cat /proc/cmdline)\" in *halt=poweroff*) poweroff -f ;; *) reboot -f ;; esac",
        &[],
    );
    // Each boot is bounded (a hang shows as 137 with the console so far, not as a silent
    // lab timeout).
    let script = format!(
        "timeout -s KILL 120 {}; echo rc-reboot=$?; timeout -s KILL 120 {}; echo rc-poweroff=$?; timeout -s KILL 120 {}; echo rc-file=$?; grep -c BOOT-OK console.log",
        g.vmm("--vcpus 2 --memory 256 --cmdline quiet"),
        g.vmm("--cmdline 'quiet halt=poweroff'"),
        g.vmm("--console file:console.log --cmdline quiet"),
    );
    let out = g.lab(&script);
    assert_eq!(out.status, 0);
    assert!(
        out.stdout.contains("BOOT-OK cpus=2"),
        "serial output and 2 vCPUs"
    );
    assert!(
        out.stdout.contains("rc-reboot=0"),
        "reboot -f ends the monitor with 0"
    );
    assert!(
        out.stdout.contains("rc-poweroff=0"),
        "poweroff -f ends the monitor with 0"
    );
    assert!(out.stdout.contains("rc-file=0\n1"), "console to a file");
}

#[test]
fn a_kernel_panic_is_a_failure_with_its_reason() {
    let g = guest("vmm-panic", "exit 3", &[]);
    let out = g.lab(&format!(
        "{}; echo rc=$?",
        g.vmm("--console off --cmdline quiet")
    ));
    // Inside the lab the monitor's stderr reaches the lab console, i.e. stdout.
    assert!(out.stdout.contains("rc=1"), "{out:?}");
    assert!(
        out.stdout
            .contains("berth-vmm: guest kernel panic: Attempted to kill init"),
        "{out:?}"
    );
}

#[test]
fn ext4_disk_is_written_and_a_read_only_disk_refuses_writes() {
    let g = guest(
        "vmm-disk",
        "mkdir -p /mnt/rw /mnt/ro\n\
         mount -t ext4 /dev/vda /mnt/rw && echo hello-from-the-guest > /mnt/rw/hello && umount /mnt/rw && echo RW-OK\n\
         if dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null; then echo RO-WRITTEN; else echo RO-WRITE-FAILED; fi\n\
         mount -t ext4 -o ro /dev/vdb /mnt/ro && cat /mnt/ro/marker\n\
         reboot -f",
        &[],
    );
    let out = g.lab(&format!(
        "truncate -s 64M rw.img && mkfs.ext4 -q -F rw.img && \
         mkdir ro && echo ro-disk-content > ro/marker && truncate -s 16M ro.img && mkfs.ext4 -q -F -d ro ro.img && \
         sha256sum ro.img > ro.sha && {}; echo rc=$?",
        g.vmm("--memory 256 --disk rw.img --disk ro.img,ro --cmdline quiet")
    ));
    assert!(out.stdout.contains("RW-OK"), "{out:?}");
    assert!(out.stdout.contains("RO-WRITE-FAILED"), "{out:?}");
    assert!(out.stdout.contains("ro-disk-content"), "{out:?}");
    assert!(out.stdout.contains("rc=0"), "{out:?}");
    // Back on the host, after shutdown: the guest's write is in the image.
    let img = g.dir.path().join("rw.img");
    let cat = Command::new("debugfs")
        .args(["-R", "cat /hello"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        "hello-from-the-guest\n"
    );
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg("ro.sha")
        .current_dir(g.dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "the read-only image changed");
}

#[test]
fn vsock_moves_ten_megabytes_each_way() {
    let g = guest(
        "vmm-vsock",
        "socat -u VSOCK-LISTEN:5000 CREATE:/recv &\n\
         l=$!\n\
         sleep 1\n\
         echo GUEST-LISTENING\n\
         dd if=/dev/urandom of=/send bs=1M count=10 2>/dev/null\n\
         echo \"GUEST-SENT $(sha256sum /send | cut -d' ' -f1)\"\n\
         socat -u OPEN:/send VSOCK-CONNECT:2:6000\n\
         wait $l\n\
         echo \"GUEST-RECEIVED $(sha256sum /recv | cut -d' ' -f1)\"\n\
         reboot -f",
        &["/usr/bin/socat"],
    );
    let script = format!(
        "head -c 10M /dev/urandom > to-guest; echo HOST-SENT $(sha256sum to-guest | cut -d' ' -f1)\n\
         socat -u UNIX-LISTEN:$S/v.sock_6000 CREATE:from-guest &\n\
         {} > console.txt 2>&1 &\n\
         vmm=$!\n\
         for i in $(seq 300); do grep -q GUEST-LISTENING console.txt 2>/dev/null && break; sleep 0.2; done\n\
         (printf 'CONNECT 5000\\n'; cat to-guest) | socat -t 60 - UNIX-CONNECT:$S/v.sock > reply.txt\n\
         wait $vmm; echo rc=$?\n\
         cat console.txt reply.txt; echo HOST-RECEIVED $(sha256sum from-guest | cut -d' ' -f1)\n\
         test ! -e $S/v.sock && echo SOCKET-REMOVED",
        g.vmm("--memory 256 --vsock 3,$S/v.sock --cmdline quiet")
    );
    let out = g.lab(&script);
    let field = |prefix: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {out:?}"))
            .trim()
            .to_owned()
    };
    assert_eq!(
        field("HOST-SENT "),
        field("GUEST-RECEIVED "),
        "host → guest"
    );
    assert_eq!(
        field("GUEST-SENT "),
        field("HOST-RECEIVED "),
        "guest → host"
    );
    assert!(
        out.stdout.contains("\nOK "),
        "the monitor answered OK <port>"
    );
    assert!(out.stdout.contains("rc=0"));
    assert!(
        out.stdout.contains("SOCKET-REMOVED"),
        "the vsock socket is removed at exit"
    );
}

#[test]
fn the_guest_pings_the_tap_address_over_virtio_net() {
    let g = guest(
        "vmm-net",
        "ip link set eth0 up && ip addr add 169.254.100.2/24 dev eth0\n\
         cat /sys/class/net/eth0/address\n\
         ping -c 3 -W 5 169.254.100.1 && echo PING-OK\n\
         reboot -f",
        &[],
    );
    let out = g.lab(&format!(
        "ip tuntap add dev berth0 mode tap && ip addr add 169.254.100.1/24 dev berth0 && ip link set berth0 up && \
         {}; echo rc=$?",
        g.vmm("--net berth0,mac=02:be:27:00:00:02 --cmdline quiet")
    ));
    assert!(out.stdout.contains("02:be:27:00:00:02"), "{out:?}");
    assert!(out.stdout.contains("PING-OK"), "{out:?}");
    assert!(out.stdout.contains("rc=0"));
}

#[test]
fn control_socket_reports_stats_pauses_resumes_and_stops() {
    let g = guest(
        "vmm-control",
        "echo GUEST-UP\nwhile true; do sleep 1; done",
        &[],
    );
    let out = g.lab(&format!(
        "q() {{ echo \"$1\" | socat -t 5 - UNIX-CONNECT:$S/ctl.sock; }}\n\
         up() {{ for i in $(seq 300); do grep -q GUEST-UP console.txt 2>/dev/null && return; sleep 0.2; done; }}\n\
         {vmm} > console.txt 2>&1 &\n\
         vmm=$!; up\n\
         q '{{\"action\":\"stats\"}}'; q '{{\"action\":\"pause\"}}'; q '{{\"action\":\"stats\"}}'\n\
         q '{{\"action\":\"resume\"}}'; q '{{\"action\":\"bogus\"}}'; q 'not json'; q '{{\"action\":\"shutdown\"}}'\n\
         wait $vmm; echo rc-shutdown=$?; test ! -e $S/ctl.sock && echo SOCKET-REMOVED\n\
         rm -f console.txt; {vmm} > console.txt 2>&1 &\n\
         vmm=$!; up; q '{{\"action\":\"stop\"}}'; wait $vmm; echo rc-stop=$?",
        vmm = g.vmm("--control $S/ctl.sock --cmdline quiet")
    ));
    assert!(out.stdout.contains("\"vcpu_exits\":"), "{out:?}");
    assert!(out.stdout.contains("\"paused\":true"), "{out:?}");
    assert!(
        out.stdout.contains("unknown action \\\"bogus\\\""),
        "{out:?}"
    );
    assert!(out.stdout.contains("bad request"), "{out:?}");
    assert!(out.stdout.contains("\"sent\":\"ctrl-alt-del\""), "{out:?}");
    assert!(
        out.stdout.contains("rc-shutdown=0"),
        "Ctrl+Alt+Del shuts the guest down: {out:?}"
    );
    assert!(out.stdout.contains("SOCKET-REMOVED"), "{out:?}");
    assert!(out.stdout.contains("rc-stop=0"), "{out:?}");
}

#[test]
fn a_snapshot_of_a_running_guest_resumes_in_new_monitors_with_a_disk_added() {
    // The guest counts, and each tick probes the virtio-mmio slots no driver has taken:
    // the slot announced empty at boot gets its disk only in the restored monitors.
    let g = guest(
        "vmm-snapshot",
        "i=0\nwhile true; do\n  i=$((i+1))\n  for d in /sys/bus/platform/devices/virtio-mmio.*; do [ -e $d/driver ] || echo ${d##*/} > /sys/bus/platform/drivers_probe 2>/dev/null; done\n  if [ -b /dev/vda ]; then echo \"tick $i disk $(head -c 9 /dev/vda)\"; else echo \"tick $i\"; fi\n  sleep 1\ndone",
        &[],
    );
    let vmm = g.vmm.display().to_string();
    let kernel = g.kernel.display().to_string();
    let out = g.lab_for(&format!(
        "q() {{ echo \"$1\" | socat -t 60 - UNIX-CONNECT:$2; }}\n\
         see() {{ for i in $(seq 600); do grep -q \"$1\" $2 2>/dev/null && return 0; sleep 0.1; done; return 1; }}\n\
         printf BERTHDISK > disk.img; truncate -s 1M disk.img; mkdir snap\n\
         {g_vmm} --memory 128 --console file:boot.log --control $S/boot.sock --snapshot-to snap --empty-slots 1 --cmdline quiet &\n\
         vmm=$!; see 'tick 2' boot.log\n\
         q '{{\"action\":\"snapshot\"}}' $S/boot.sock; wait $vmm; echo rc-snapshot=$?\n\
         for n in 1 2; do\n\
           timeout -s KILL 120 {vmm} --kernel {kernel} --memory 128 --cmdline quiet --console file:restored$n.log --control $S/r$n.sock --restore snap --disk disk.img,ro &\n\
           vmm=$!; see 'disk BERTHDISK' restored$n.log && echo DISK-SEEN-$n\n\
           q '{{\"action\":\"stop\"}}' $S/r$n.sock; wait $vmm; echo rc-restored$n=$?\n\
         done\n\
         {vmm} --kernel {kernel} --memory 256 --cmdline quiet --console off --restore snap 2>&1; echo rc-wrong-memory=$?\n\
         {vmm} --kernel {kernel} --memory 128 --cmdline quiet --console off --restore snap --disk disk.img --disk disk.img 2>&1; echo rc-too-many=$?\n\
         {vmm} --kernel {kernel} --memory 128 --console off --restore snap 2>&1; echo rc-other-cmdline=$?\n\
         echo == boot; cat boot.log; echo == restored1; cat restored1.log; echo == restored2; cat restored2.log",
        g_vmm = g.vmm(""),
    ), std::time::Duration::from_secs(400));
    let o = &out.stdout;
    assert!(
        o.contains("\"memory_bytes\":"),
        "the snapshot's reply: {out:?}"
    );
    assert!(
        o.contains("rc-snapshot=0"),
        "the monitor exits 0 once the snapshot is written: {out:?}"
    );
    for n in [1, 2] {
        assert!(
            o.contains(&format!("DISK-SEEN-{n}")),
            "restore {n} runs on and probes the added disk: {out:?}"
        );
        assert!(o.contains(&format!("rc-restored{n}=0")), "{out:?}");
        let log = o
            .split(&format!("== restored{n}\n"))
            .nth(1)
            .and_then(|r| r.split("\n== ").next())
            .unwrap_or("");
        let first: u32 = log
            .lines()
            .find_map(|l| l.strip_prefix("tick ")?.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        assert!(
            first > 2,
            "restore {n} goes on counting from the snapshot (first tick {first}): {log}"
        );
    }
    assert!(
        o.contains("the snapshot's guest has 128 MiB and 1 vCPUs, this configuration 256 MiB"),
        "{out:?}"
    );
    assert!(o.contains("rc-wrong-memory=1"), "{out:?}");
    assert!(
        o.contains("1 more virtio devices than the snapshot's 1 empty slots"),
        "{out:?}"
    );
    assert!(o.contains("rc-too-many=1"), "{out:?}");
    assert!(
        o.contains("taken with cmdline \"quiet\""),
        "a restore keeps the boot's command line: {out:?}"
    );
    assert!(o.contains("rc-other-cmdline=1"), "{out:?}");
}

#[test]
fn the_jailed_monitor_runs_confined_and_a_forbidden_call_stops_it() {
    let g = guest("vmm-jail", "echo GUEST-UP\nsleep 6\npoweroff -f", &[]);
    let forbidden = built_binary("examples/vmm-forbidden-syscall");
    let out = g.lab(&format!(
        "up() {{ for i in $(seq 300); do grep -q GUEST-UP $1 2>/dev/null && return; sleep 0.2; done; }}\n\
         mkdir /sys/fs/cgroup/vmm-jail-test\n\
         {vmm} --console file:console.txt --vsock 3,$S/v.sock --jail $S/jail --jail-uid 900000123 --jail-gid 900000124 \\\n\
           --jail-cgroup /sys/fs/cgroup/vmm-jail-test/cgroup.procs > vmm.txt 2>&1 &\n\
         waiter=$!; up console.txt\n\
         monitor=$(pgrep -P $waiter)\n\
         for p in $waiter $monitor; do\n\
           echo \"== process $([ $p = $waiter ] && echo waiter || echo monitor)\"\n\
           grep -E '^(Uid|Gid|Groups|Seccomp|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/$p/status\n\
           [ \"$(stat -Lc %d:%i /proc/$p/root)\" = \"$(stat -c %d:%i $S/jail)\" ] && echo root-is-the-jail\n\
           [ \"$(readlink /proc/$p/ns/net)\" != \"$(readlink /proc/self/ns/net)\" ] && echo own-net-ns\n\
           [ \"$(readlink /proc/$p/ns/mnt)\" != \"$(readlink /proc/self/ns/mnt)\" ] && echo own-mount-ns\n\
           [ \"$(readlink /proc/$p/ns/ipc)\" != \"$(readlink /proc/self/ns/ipc)\" ] && echo own-ipc-ns\n\
           [ \"$(readlink /proc/$p/ns/uts)\" != \"$(readlink /proc/self/ns/uts)\" ] && echo own-uts-ns\n\
           echo \"cgroup=$(cat /proc/$p/cgroup)\"\n\
         done\n\
         grep NSpid /proc/$monitor/status\n\
         echo \"threads=$(ls /proc/$monitor/task | wc -l) filtered=$(grep -l '^Seccomp:.2' /proc/$monitor/task/*/status | wc -l)\"\n\
         grep -E '^Max (open files|processes|address space|file size|core)' /proc/$monitor/limits\n\
         echo \"jail-entries=$(ls -A $S/jail | wc -l)\"\n\
         wait $waiter; echo rc-jailed=$?\n\
         cat vmm.txt\n\
         rm -f console.txt; rmdir $S/jail\n\
         {vmm} --console file:console.txt --jail $S/jail --jail-uid 900000123 --jail-gid 900000124 > vmm2.txt 2>&1 &\n\
         waiter=$!; up console.txt; monitor=$(pgrep -P $waiter)\n\
         kill -9 $waiter; sleep 1\n\
         st=$(awk '{{print $3}}' /proc/$monitor/stat 2>/dev/null)\n\
         [ -n \"$monitor\" ] && {{ [ -z \"$st\" ] || [ \"$st\" = Z ]; }} && echo monitor-died-with-waiter\n\
         for call in execve open; do\n\
           for jail in '' \"--jail $S/j-$call --jail-uid 900000125 --jail-gid 900000125\"; do\n\
             BERTH_VMM_TEST_FORBIDDEN=$call {forbidden} --kernel {kernel} --initrd {initrd} --cmdline quiet --console off $jail > f.txt 2>&1\n\
             echo \"forbidden-$call-rc=$? $(cat f.txt)\"\n\
           done\n\
         done",
        vmm = g.vmm("--cmdline quiet"),
        forbidden = forbidden.display(),
        kernel = g.kernel.display(),
        initrd = g.initrd.display(),
    ));
    let o = &out.stdout;
    let section = |who: &str| -> String {
        o.split(&format!("== process {who}\n"))
            .nth(1)
            .and_then(|s| s.split("== process").next())
            .unwrap_or_default()
            .to_owned()
    };
    for who in ["waiter", "monitor"] {
        let s = section(who);
        assert!(
            s.contains("Uid:\t900000123\t900000123\t900000123\t900000123"),
            "{who}: {s}\n{out:?}"
        );
        assert!(
            s.contains("Gid:\t900000124\t900000124\t900000124\t900000124"),
            "{who}: {s}"
        );
        assert!(
            s.lines()
                .any(|l| l.starts_with("Groups:") && l["Groups:".len()..].trim().is_empty()),
            "{who}: no supplementary groups: {s}"
        );
        assert!(s.contains("Seccomp:\t2"), "{who}: {s}");
        assert!(s.contains("NoNewPrivs:\t1"), "{who}: {s}");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(
                s.contains(&format!("{cap}:\t0000000000000000")),
                "{who}: {cap}: {s}"
            );
        }
        assert!(
            s.contains("root-is-the-jail"),
            "{who}: its root is the jail: {s}"
        );
        for ns in ["net", "mount", "ipc", "uts"] {
            assert!(
                s.contains(&format!("own-{ns}-ns")),
                "{who}: {ns} namespace: {s}"
            );
        }
        assert!(s.contains("cgroup=0::/vmm-jail-test"), "{who}: {s}");
    }
    assert!(
        o.contains("NSpid:")
            && o.lines()
                .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "the monitor is PID 1 of its own PID namespace: {o}"
    );
    let threads = o
        .lines()
        .find(|l| l.starts_with("threads="))
        .unwrap_or_default();
    let n: Vec<usize> = threads
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        n.len() == 2 && n[0] >= 2 && n[0] == n[1],
        "every thread filtered: {threads}"
    );
    let core = o
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default();
    assert_eq!(
        core.split_whitespace().nth(4),
        Some("0"),
        "no core dumps of guest memory: {o}"
    );
    assert!(o.contains("jail-entries=0"), "the jail holds nothing: {o}");
    assert!(
        o.contains("rc-jailed=0"),
        "the jailed guest ran and powered off: {o}"
    );
    assert!(
        o.contains("monitor-died-with-waiter"),
        "killing the process berthd knows kills the monitor: {o}"
    );
    for call in ["execve", "open"] {
        let name = if call == "open" { "openat" } else { "execve" };
        let lines: Vec<&str> = o
            .lines()
            .filter(|l| l.starts_with(&format!("forbidden-{call}-rc=")))
            .collect();
        assert_eq!(lines.len(), 2, "{o}");
        for l in lines {
            assert!(l.starts_with(&format!("forbidden-{call}-rc=159 ")), "{l}");
            assert!(
                l.contains(&format!(
                    "berth-vmm: seccomp: thread main made the forbidden system call {name} ("
                )),
                "{l}"
            );
            assert!(!l.contains("came back") && !l.contains("opened"), "{l}");
        }
    }
}

/// A hostile guest against every other device, with the monitor jailed as berthd runs it:
/// with the devices unbound from their drivers, a guest program
/// (tests/guest/virtio-attack.c) drives virtio-blk, virtio-net, virtio-vsock and
/// virtio-rng itself: descriptors outside guest RAM, oversized lengths, looping and
/// out-of-range chains, a runaway avail index, rings outside RAM, register and
/// config-space floods, block requests past the disk's end, short, oversized and
/// garbage frames, vsock packets with bad headers and connection floods, and queues it
/// never reads while the host floods the tap and a vsock connection. After each attack
/// the device still serves a well-formed request; the monitor's memory stays bounded, the
/// disk keeps its size, nothing reaches the host's vsock listener from inside the jail,
/// and the guest reboots normally at the end.
/// The two hostile-guest tests are the heaviest lab runs in this file: one at a time, so
/// that neither is starved past its monitor's time limit (both at once on two cores once
/// took the attacks past 500 s; alone they take under 2 minutes).
static HOSTILE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_monitor_survives_a_hostile_guest() {
    let _one = HOSTILE.lock().unwrap_or_else(|e| e.into_inner());
    let (_build, attack) = guest_program("virtio-attack");
    let a = attack.display();
    let g = guest(
        "vmm-hostile",
        &format!(
            "for d in /sys/bus/virtio/devices/*; do basename $(dirname $(readlink -f $d)); done > /tmp/bound\n\
             while read p; do echo $p > /sys/bus/platform/drivers/virtio-mmio/unbind; done < /tmp/bound\n\
             echo UNBOUND\n\
             for d in blk net vsock rng; do {a} $d; echo rc-$d=$?; done\n\
             reboot -f"
        ),
        &[attack.to_str().unwrap()],
    );
    // The host's side: a tap flooded with frames the guest never takes, a vsock listener
    // the jailed monitor must not reach, and a host connection that writes into a guest
    // that never reads.
    let host = r#"
import os, socket, sys, threading, time
mode = sys.argv[1]
if mode == "tap":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("tap-hostile", 0))
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + b"x" * 1000
    sent = 0
    while not os.path.exists(sys.argv[2]):
        try:
            s.send(frame); sent += 1
        except OSError:
            time.sleep(0.01)
        if sent % 200 == 0:
            time.sleep(0.005)
    print("tap-frames-sent", sent)
elif mode == "listen":
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[2]); s.listen(4096); s.settimeout(1)
    n = 0
    while not os.path.exists(sys.argv[3]):
        try:
            s.accept(); n += 1
        except socket.timeout:
            pass
    print("listener-accepted", n)
else:
    c = None
    for _ in range(600):
        try:
            c = socket.socket(socket.AF_UNIX)
            c.connect(sys.argv[2])
            break
        except OSError:
            c = None
            time.sleep(0.1)
    if c is None:
        print("vsock-bytes-accepted none: no monitor to connect to")
        sys.exit(0)
    c.sendall(b"CONNECT 5000\n"); c.setblocking(False)
    sent, chunk, t0 = 0, b"y" * 65536, time.time()
    while time.time() - t0 < 20:
        try:
            sent += c.send(chunk)
        except BlockingIOError:
            time.sleep(0.05)
        except OSError:
            break
    print("vsock-bytes-accepted", sent)
"#;
    std::fs::write(g.dir.path().join("host.py"), host).unwrap();
    let script = format!(
        "truncate -s 8M $S/disk.img\n\
         ip tuntap add tap-hostile mode tap && ip link set tap-hostile up\n\
         python3 host.py tap $S/done > tap.txt 2>&1 &\n\
         python3 host.py listen $S/v.sock_1234 $S/done > listen.txt 2>&1 &\n\
         python3 host.py vsock $S/v.sock > vsock.txt 2>&1 &\n\
         timeout -s KILL 500 {vmm} --disk $S/disk.img --net tap-hostile --vsock 3,$S/v.sock --console file:console.txt \\\n\
           --jail $S/jail --jail-uid 900000200 --jail-gid 900000200 > vmm.txt 2>&1 &\n\
         waiter=$!; hwm=0\n\
         while kill -0 $waiter 2>/dev/null; do\n\
           for p in $(pgrep -f 'jail-uid 900000200'); do\n\
             h=$(awk '/^VmHWM/{{print $2}}' /proc/$p/status 2>/dev/null)\n\
             [ -n \"$h\" ] && [ \"$h\" -gt \"$hwm\" ] && hwm=$h\n\
           done\n\
           sleep 0.5\n\
         done\n\
         wait $waiter; echo rc-vmm=$?\n\
         touch $S/done; wait\n\
         echo hwm-kib=$hwm\n\
         echo disk-size=$(stat -c %s $S/disk.img)\n\
         echo jail-entries=$(ls -A $S/jail | wc -l)\n\
         ip link show tap-hostile >/dev/null && echo tap-still-there\n\
         cat tap.txt listen.txt vsock.txt; echo --- console; cat console.txt; echo --- vmm; cat vmm.txt",
        vmm = g.vmm("--memory 128 --cmdline quiet"),
    );
    let out = g.lab_for(&script, std::time::Duration::from_secs(600));
    let o = out.stdout.replace("\r\n", "\n");
    assert!(o.contains("UNBOUND"), "{o}");
    for d in ["blk", "net", "vsock", "rng"] {
        assert!(o.contains(&format!("ATTACKS-DONE {d}\n")), "{d}: {o}");
        assert!(o.contains(&format!("rc-{d}=0")), "{d}: {o}");
    }
    assert!(!o.contains("NOT SERVED"), "a device stopped serving: {o}");
    let served = o
        .lines()
        .filter(|l| l.starts_with("sane after") && l.contains(": served"))
        .count();
    assert!(served >= 4 * 10, "{served} checks: {o}");
    let attack = |name: &str| -> String {
        o.lines()
            .find(|l| l.starts_with(&format!("attack {name}:")))
            .unwrap_or_default()
            .to_owned()
    };
    for past_end in [
        "read-at-end",
        "read-across-end",
        "read-sector-max",
        "read-sector-huge",
        "write-past-end",
    ] {
        assert!(
            attack(past_end).ends_with("blk status 1"),
            "{past_end} is an I/O error: {o}"
        );
    }
    assert!(attack("write-sector-0").ends_with("blk status 0"), "{o}");
    assert!(
        attack("unknown-type").ends_with("blk status 2"),
        "unsupported: {o}"
    );
    assert!(o.contains("rc-vmm=0"), "the guest rebooted at the end: {o}");
    assert!(o.contains(&format!("disk-size={}", 8 << 20)), "{o}");
    assert!(o.contains("jail-entries=0"), "{o}");
    assert!(
        o.contains("listener-accepted 0") && attack("connect-host-listener").ends_with("op 3"),
        "the jail keeps the guest from the host's sockets: a reset, not a response: {o}"
    );
    assert!(o.contains("tap-still-there"), "{o}");
    let num = |key: &str| -> u64 {
        o.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let hwm = num("hwm-kib=");
    assert!(hwm > 0, "the monitor's peak RSS was measured: {o}");
    // The guest's 128 MiB and the monitor's own few: no queue grows with the floods.
    assert!(hwm < (128 + 24) << 10, "monitor peak RSS {hwm} KiB: {o}");
    assert!(num("tap-frames-sent ") > 1000, "the tap was flooded: {o}");
    eprintln!(
        "hostile guest: monitor peak RSS {hwm} KiB, tap frames {}, vsock bytes taken {}",
        num("tap-frames-sent "),
        num("vsock-bytes-accepted ")
    );
}

// ---- natively, on this host ----

fn vmm_native(args: &[&str]) -> berth_e2e::Finished {
    Command::new(built_binary("berth-vmm"))
        .args(args)
        .output()
        .unwrap()
        .into()
}

#[test]
fn bad_input_gets_one_clear_line_and_leaves_nothing_behind() {
    let dir = TempDir::new("vmm-bad").unwrap();
    let (kernel, _) = guest_kernel().unwrap();
    let k = kernel.to_str().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    std::fs::write(p("garbage"), vec![0x42u8; 100_000]).unwrap();
    std::fs::write(p("taken.sock"), b"").unwrap();
    std::fs::write(p("bad.json"), br#"{"kernel": "/k", "vcpu": 2}"#).unwrap();
    let vs = format!("3,{}", p("v.sock"));
    let (garbage, taken, bad) = (p("garbage"), p("taken.sock"), p("bad.json"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--kernel", "/nonexistent/vmlinux"],
            "/nonexistent/vmlinux: no such file",
        ),
        (
            vec!["--bench-setup", "--kernel", &garbage, "--vsock", &vs],
            "is not a loadable x86_64 vmlinux",
        ),
        (
            vec!["--bench-setup", "--kernel", k, "--memory", "99999999"],
            "this host has only",
        ),
        (
            vec![
                "--bench-setup",
                "--kernel",
                k,
                "--net",
                "nosuchtap0",
                "--vsock",
                &vs,
            ],
            "no such tap device",
        ),
        (
            vec!["--kernel", k, "--vsock", "3,/dev/null"],
            "already in use",
        ),
        (vec!["--kernel", k, "--control", &taken], "already in use"),
        (vec!["--config", &bad], "unknown field `vcpu`"),
        (
            vec!["--kernel", k, "--vcpus", "0"],
            "vcpus: 0 is out of range",
        ),
        (vec!["--kernel", k, "--frobnicate"], "unknown argument"),
    ];
    for (args, want) in cases {
        let out = vmm_native(&args);
        assert_ne!(out.status, 0, "{args:?} succeeded");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("berth-vmm: ") && first.contains(want),
            "{args:?}: {:?}",
            out.stderr
        );
        assert!(
            !Path::new(&p("v.sock")).exists(),
            "{args:?} left its vsock socket behind"
        );
    }
    assert!(
        Path::new(&taken).exists(),
        "an existing path is never removed"
    );
}

#[test]
fn on_a_host_without_hardware_kvm_the_monitor_says_why() {
    if berth_hostcheck::check().can_run_microvms() {
        eprintln!("skipped: this host runs microVMs directly");
        return;
    }
    let (kernel, _) = guest_kernel().unwrap();
    let out = vmm_native(&["--kernel", kernel.to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("cannot start a microVM"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("tests/lab/run"), "{}", out.stderr);
}

#[test]
fn setup_reaches_the_first_kvm_run_natively() {
    let (kernel, _) = guest_kernel().unwrap();
    let out = vmm_native(&[
        "--bench-setup",
        "--kernel",
        kernel.to_str().unwrap(),
        "--vcpus",
        "2",
    ]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("first_kvm_run_monotonic_ns "),
        "{out:?}"
    );
}

/// virtio-fs over vhost-user, and a hostile guest against it: the guest mounts a share
/// served by virtiofsd and uses it; then, with the device unbound from its drivers, a
/// guest program (tests/guest/virtiofs-attack.c) drives it itself with garbage requests,
/// descriptors outside guest RAM, looping chains, oversized lengths, a runaway ring, MMIO
/// floods and `..`/'/'/symlink traversal. The monitor stays up and the guest shuts down
/// normally; nothing outside the shared directory changes.
#[test]
fn virtio_fs_shares_a_directory_and_survives_a_hostile_guest() {
    let _one = HOSTILE.lock().unwrap_or_else(|e| e.into_inner());
    let (_build, attack) = guest_program("virtiofs-attack");
    let virtiofsd = berth_e2e::virtiofsd().unwrap();
    let g = guest(
        "vmm-virtiofs",
        &format!("mkdir -p /mnt\n\
         mount -t virtiofs berth0 /mnt && cat /mnt/from-host && echo from-the-guest > /mnt/from-guest && ls /mnt/.. >/dev/null && umount /mnt && echo SHARE-OK\n\
         for d in /sys/bus/virtio/devices/*; do [ \"$(cat $d/device)\" = 0x001a ] && p=$(dirname $(readlink -f $d)); done\n\
         echo $(basename $p) > /sys/bus/platform/drivers/virtio-mmio/unbind && echo UNBOUND\n\
         {}\n\
         echo attack-rc=$?\n\
         reboot -f", attack.display()),
        &[attack.to_str().unwrap()],
    );
    // The share is $S/top/share; $S/top holds a canary the guest must not reach.
    let script = format!(
        "mkdir -p $S/top/share && echo canary > $S/top/canary && echo from-the-host > $S/top/share/from-host\n\
         {v} --socket-path=$S/fs.sock --shared-dir=$S/top/share --sandbox=namespace --cache=auto --log-level=error 2> virtiofsd.log &\n\
         for i in $(seq 100); do [ -S $S/fs.sock ] && break; sleep 0.1; done\n\
         timeout -s KILL 300 {vmm} > console.out 2> vmm.err; echo rc-vmm=$?\n\
         sleep 1; if pgrep -f $S/fs.sock >/dev/null; then echo VIRTIOFSD-LEFT; fi\n\
         echo top: $(ls -A $S/top); echo share: $(ls -A $S/top/share); cat $S/top/canary $S/top/share/from-guest\n\
         cat console.out; echo --- vmm.err; cat vmm.err; echo --- virtiofsd.log; cat virtiofsd.log",
        v = virtiofsd.display(),
        vmm = g.vmm("--memory 256 --fs berth0=$S/fs.sock --cmdline quiet"),
    );
    let out = g.lab(&script);
    let o = out.stdout.replace("\r\n", "\n");
    let line = |name: &str| -> String {
        o.lines()
            .find(|l| l.starts_with(&format!("attack {name}:")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(o.contains("from-the-host\n"), "{out:?}");
    assert!(o.contains("SHARE-OK"), "{out:?}");
    assert!(o.contains("UNBOUND"), "{out:?}");
    assert!(
        o.contains("ATTACKS-DONE"),
        "the attack did not run to its end: {out:?}"
    );
    assert!(o.contains("attack-rc=0"), "{out:?}");
    assert_eq!(line("init"), "attack init: used len 80, error 0", "{out:?}");
    // Malformed requests get FUSE errors, and the share goes on serving.
    assert!(line("garbage").contains("error -"), "{out:?}");
    assert!(line("getattr-unknown-node").contains("error -"), "{out:?}");
    assert!(
        line("getattr-root-after-garbage").ends_with("error 0"),
        "{out:?}"
    );
    // ".." of the share's root is its root (virtiofsd runs pivot_root'ed into the share,
    // so even a name with "../" lands inside); a symlink's node is no directory.
    assert!(o.contains("lookup .. of the root gave node 1\n"), "{out:?}");
    let share = o
        .lines()
        .find(|l| l.starts_with("share: "))
        .unwrap_or_default();
    assert!(
        line("mkdir-slash-name").contains("error -") || share.contains("escaped2"),
        "{out:?}"
    );
    assert!(line("mkdir-through-symlink").contains("error -"), "{out:?}");
    // The monitor survived all of it and stopped when the guest shut down; a backend
    // that gave up on a malformed ring did so cleanly, and the monitor said so.
    assert!(o.contains("rc-vmm=0"), "{out:?}");
    if line("avail-runaway").ends_with("no answer") {
        assert!(
            o.contains("berth-vmm: virtio-fs berth0: the backend hung up"),
            "{out:?}"
        );
    }
    assert!(!o.contains("VIRTIOFSD-LEFT"), "{out:?}");
    assert!(!o.contains("panicked"), "{out:?}");
    // Outside the share: only the canary and the share, the canary unchanged. Traversal
    // got nowhere: whatever the mkdirs under ".." of the root, under a name with '/' or
    // through a symlink to "/" made, they are inside the share.
    assert!(o.contains("top: canary share\n"), "{out:?}");
    assert!(o.contains("canary\nfrom-the-guest\n"), "{out:?}");
}
