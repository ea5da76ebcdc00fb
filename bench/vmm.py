#!/usr/bin/env python3
"""berth-vmm benchmark helpers. `bench/vmm` calls this; see docs/vmm.md for what each figure
measures.

  vmm.py setup VMM KERNEL INITRD N      natively: process start -> first KVM_RUN (ms, median)
  vmm.py lab VMM KERNEL INITRD N        in the lab: boot ratios (jailed vs unjailed, vs QEMU,
                                        vs Firecracker), and the jailed monitor's RSS
"""
import os
import select
import statistics
import subprocess
import sys
import time

MARKER = b"BERTH-BENCH-INIT"
# Seconds between two boots in the lab, so that one monitor's teardown (guest memory,
# the KVM VM, a jail's namespaces) does not land in the next one's boot.
SETTLE = 1.5
CMDLINE_EXTRA = "quiet"


def setup(vmm, kernel, initrd, n):
    times, memslot = [], []
    env = dict(os.environ, BERTH_VMM_TRACE="1")
    for _ in range(n):
        t0 = time.monotonic_ns()
        r = subprocess.run(
            [vmm, "--bench-setup", "--kernel", kernel, "--initrd", initrd, "--console", "off"],
            capture_output=True, check=True, env=env,
        )
        t1 = int(r.stdout.decode().split()[1])
        times.append((t1 - t0) / 1e6)
        for line in r.stderr.decode().splitlines():
            if "memslot-ioctl-us" in line:
                memslot.append(int(line.split()[-1]) / 1e3)
    print(f"vmm_setup_ms {statistics.median(times):.2f}")
    # On a PVM host the memory-slot ioctl alone costs several ms (it overlaps the rest).
    print(f"vmm_memslot_ioctl_ms {statistics.median(memslot):.2f}")


def boot_to_marker(argv, timeout=120.0):
    """Seconds from process start to MARKER on its stdout; the process is then stopped."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    buf = b""
    try:
        while MARKER not in buf:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"no marker from {argv[0]} within {timeout} s")
            r, _, _ = select.select([p.stdout], [], [], 1.0)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"{argv[0]} exited before the marker: {buf[-500:]!r}")
                buf += chunk
        return time.monotonic() - t0, p
    except BaseException:
        p.kill()
        p.wait()
        time.sleep(SETTLE)
        raise


def monitor_rss_mib(pid, guest_mib):
    """Resident memory of the monitor minus the guest RAM: the run of adjacent mappings
    that together span exactly the guest's memory (the kernel and initramfs are mapped
    copy-on-write inside it, which splits it into several mappings)."""
    vmas = []  # (start, end, rss_kib)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                vmas.append([lo, hi, 0])
            elif parts[0] == "Rss:" and vmas:
                vmas[-1][2] = int(parts[1])
    total = sum(v[2] for v in vmas)
    want = guest_mib << 20
    guest = 0
    for i in range(len(vmas)):
        span, rss, j = 0, 0, i
        while j < len(vmas) and (j == i or vmas[j][0] == vmas[j - 1][1]) and span < want:
            span += vmas[j][1] - vmas[j][0]
            rss += vmas[j][2]
            j += 1
        if span == want:
            guest = rss
            break
    return (total - guest) / 1024


FIRECRACKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers", "firecracker")


def child_of(pid):
    """The jailed monitor: the only child of the waiter berth-vmm --jail leaves outside."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"berth-vmm --jail ({pid}) has no monitor child")


def lab(vmm, kernel, initrd, n, prefix="lab"):
    """Boot to the init marker with berth-vmm, unjailed and jailed, and, where they are
    installed, with `qemu -M microvm` and Firecracker on the same kernel, initramfs and
    command line, alternating."""
    from vm_cmdline import DEFAULT_CMDLINE  # noqa: E402  (written by bench/vmm)
    import shutil
    import tempfile
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    # Both monitors read the guest from the lab's local tmpfs, as they would from a local
    # disk on a real host (the lab's root is a 9p share, slow to fault pages from).
    local = tempfile.mkdtemp(prefix="berth-bench-")
    kernel = shutil.copy(kernel, local)
    initrd = shutil.copy(initrd, local)
    cmdline = f"{DEFAULT_CMDLINE} {CMDLINE_EXTRA}"
    berth = [vmm, "--kernel", kernel, "--initrd", initrd, "--memory", "128", "--cmdline", CMDLINE_EXTRA]
    qemu = ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", "128", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", kernel, "-initrd", initrd, "-append", cmdline]
    have_fc = os.path.isfile(FIRECRACKER) and os.access(FIRECRACKER, os.X_OK)
    fc_config = os.path.join(local, "fc.json")
    fc_log = os.path.join(local, "fc.log")
    import json
    with open(fc_config, "w") as f:
        json.dump({"boot-source": {"kernel_image_path": kernel, "initrd_path": initrd, "boot_args": cmdline},
                   "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "smt": False},
                   "entropy": {}}, f)
    b_times, j_times, q_times, f_times, rss, j_rss = [], [], [], [], [], []

    def unjailed(i):
        t, p = boot_to_marker(berth)
        b_times.append(t)
        time.sleep(0.5)  # the guest idles after its marker
        rss.append(monitor_rss_mib(p.pid, 128))
        return p

    def jailed(i):
        # As berthd runs it: an empty jail directory and a uid of its own.
        jail = ["--jail", os.path.join(local, f"jail-{i}"), "--jail-uid", str(900_100_000 + i),
                "--jail-gid", str(900_100_000 + i)]
        t, p = boot_to_marker(berth + jail)
        j_times.append(t)
        time.sleep(0.5)
        j_rss.append(monitor_rss_mib(child_of(p.pid), 128))
        return p

    def firecracker(i):
        open(fc_log, "w").close()
        t, p = boot_to_marker([FIRECRACKER, "--no-api", "--config-file", fc_config, "--log-path", fc_log])
        f_times.append(t)
        return p

    def qemu_run(i):
        t, p = boot_to_marker(qemu)
        q_times.append(t)
        return p

    monitors = [unjailed, jailed] + ([firecracker] if have_fc else []) + ([qemu_run] if have_qemu else [])
    for i in range(n):
        # Each round in another order, so that no monitor always follows the same one.
        k = i % len(monitors)
        for run in monitors[k:] + monitors[:k]:
            p = run(i)
            p.kill()
            p.wait()
            time.sleep(SETTLE)
    for name, ts in [("berth", b_times), ("berth_jailed", j_times), ("firecracker", f_times), ("qemu", q_times)]:
        if ts:
            print(f"# {prefix} boots {name}: " + " ".join(f"{t:.2f}" for t in ts))
    b = statistics.median(b_times)
    j = statistics.median(j_times)
    print(f"{prefix}_boot_berth_s {b:.3f}")
    print(f"{prefix}_boot_berth_jailed_s {j:.3f}")
    # The cost of confinement (target <= 1.05).
    print(f"{prefix}_boot_ratio_jailed_vs_unjailed {j / b:.2f}")
    if have_qemu:
        q = statistics.median(q_times)
        print(f"{prefix}_boot_qemu_s {q:.3f}")
        print(f"{prefix}_boot_ratio_vs_qemu {j / q:.2f}")
    else:
        print(f"# {prefix}: no qemu-system-x86_64 here, so no ratio against QEMU")
    if have_fc:
        f = statistics.median(f_times)
        print(f"{prefix}_boot_firecracker_s {f:.3f}")
        # berth-vmm jailed against Firecracker (target < 1.0).
        print(f"{prefix}_boot_ratio_vs_firecracker {j / f:.2f}")
    else:
        print(f"# {prefix}: no {FIRECRACKER} here, so no ratio against Firecracker")
    print(f"vmm_rss_mib_unjailed {statistics.median(rss):.2f}")
    print(f"vmm_rss_mib {statistics.median(j_rss):.2f}")


if __name__ == "__main__":
    mode, vmm, kernel, initrd, n = sys.argv[1:6]
    if mode == "native":  # a host with hardware KVM (bench/native-kvm)
        lab(vmm, kernel, initrd, int(n), prefix="native")
    else:
        {"setup": setup, "lab": lab}[mode](vmm, kernel, initrd, int(n))
