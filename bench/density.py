#!/usr/bin/env python3
"""bench/density's lab half: density.py RELEASE_DIR KERNEL INITRD TAR N (see bench/density)."""
import glob
import json
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import lab_berthd, timed  # noqa: E402


def pids():
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise SystemExit("no MemAvailable")


def stats(sock):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b'{"action": "stats"}\n')
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def idle(berth, work, n, isolation, daemon_pid):
    """Starts n idle containers; returns (run -d times, PSS KiB per container, MemAvailable
    drop KiB per container)."""
    subprocess.run(["sync"])
    time.sleep(2)
    before, avail = pids(), mem_available_kib()
    times = []
    for i in range(n):
        times.append(timed(berth + ["run", "-d", "--isolation", isolation, "--name", f"{isolation}{i}",
                                    "busybox", "sleep", "100000"]))
    # Free page reporting runs 2 s after the guest frees memory, in batches: let it.
    time.sleep(20)
    new = pids() - before - {daemon_pid, os.getpid()}
    pss = sum(pss_kib(p) for p in new) / n
    drop = (avail - mem_available_kib()) / n
    return times, pss, drop


def main(release, kernel, initrd, tar, n):
    work, _, _, d, berth = lab_berthd(release, kernel, initrd, tar, "berth-density-")
    try:
        vm_times, vm_pss, vm_drop = idle(berth, work, n, "vm", d.pid)
        reported = [stats(s)["reported_free_kib"] for s in glob.glob(f"{work}/berth-run/c/*/control.sock")]
        print(f"lab_vm_idle_pss_mib {vm_pss / 1024:.1f}")
        print(f"lab_vm_memavailable_drop_mib {vm_drop / 1024:.1f}")
        # A running total per monitor: blocks freed, reused and freed again count again.
        print(f"lab_vm_reported_free_mib {statistics.mean(reported or [0]) / 1024:.1f}")
        print(f"lab_vm_run_d_first_s {vm_times[0]:.3f}")
        print(f"lab_vm_run_d_tenth_s {vm_times[-1]:.3f}")
        print(f"lab_vm_run_d_tenth_vs_first {vm_times[-1] / vm_times[0]:.2f}")
        print("lab_vm_run_d_all_s " + " ".join(f"{t:.2f}" for t in vm_times))
        subprocess.run(berth + ["rm", "-f"] + [f"vm{i}" for i in range(n)], check=True, stdout=subprocess.DEVNULL)
        _, p_pss, p_drop = idle(berth, work, n, "process", d.pid)
        print(f"lab_process_idle_pss_mib {p_pss / 1024:.1f}")
        print(f"lab_process_memavailable_drop_mib {p_drop / 1024:.1f}")
        subprocess.run(berth + ["rm", "-f"] + [f"process{i}" for i in range(n)], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        d.terminate()
        d.wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
