#!/usr/bin/env python3
"""bench/run helpers.

  run.py native BERTH BERTH_SOCK DOCKER_SOCK N   berth run vs docker run, alternating
  run.py lab RELEASE_DIR KERNEL INITRD TAR N      in the lab: microVM vs process isolation, and
                                                  a jailed monitor vs an unjailed one
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(argv, env=None):
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed ({r.returncode}): {r.stderr.decode()[-600:]}")
    return t


def native(berth, berth_sock, docker_sock, n):
    denv = dict(os.environ, DOCKER_HOST=f"unix://{docker_sock}")
    berth_run = [berth, "-H", f"unix://{berth_sock}", "run", "--rm"]
    b, net, d = [], [], []
    for _ in range(n):
        # Like for like: both without a network (dockerd runs with --bridge=none here).
        b.append(timed(berth_run + ["--network", "none", "busybox", "true"]))
        # berth's default bridge: a veth, addresses, a route and the nft table each run.
        net.append(timed(berth_run + ["busybox", "true"]))
        d.append(timed(["docker", "run", "--rm", "--network", "none", "busybox", "true"], env=denv))
    mb, mn, md = statistics.median(b), statistics.median(net), statistics.median(d)
    print(f"run_berth_ms {mb * 1000:.1f}")
    print(f"run_docker_ms {md * 1000:.1f}")
    print(f"run_ratio_vs_docker {mb / md:.2f}")
    print(f"run_berth_bridge_ms {mn * 1000:.1f}")
    # The target: networking adds less than 20% of run_berth_ms.
    print(f"run_network_overhead_ratio {(mn - mb) / mb:.2f}")


def start_berthd(release, work, name, kernel, initrd, extra):
    """A berthd with its own roots and socket under `work`; (process, socket)."""
    sock = os.path.join(work, f"{name}.sock")
    d = subprocess.Popen([os.path.join(release, "berthd"), "-H", f"unix://{sock}",
                          "--data-root", os.path.join(work, f"{name}-data"),
                          "--exec-root", os.path.join(work, f"{name}-run"), "--kernel", kernel,
                          "--agent-initrd", initrd] + extra,
                         stderr=open(os.path.join(work, f"{name}.log"), "w"))
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return d, sock


def lab(release, kernel, initrd, tar, n):
    work = tempfile.mkdtemp(prefix="berth-bench-")
    # A real tmpfs: the lab's root is an overlay, which can't hold another overlay's upper.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", work], check=True)
    # The guest's files from the lab's tmpfs, as from a local disk.
    kernel = shutil.copy(kernel, work)
    initrd = shutil.copy(initrd, work)
    d, sock = start_berthd(release, work, "berth", kernel, initrd, [])
    try:
        berth = [os.path.join(release, "berth"), "-H", f"unix://{sock}"]
        subprocess.run(berth + ["import", tar, "busybox:latest"], check=True, stdout=subprocess.DEVNULL)
        # Warm up both paths once (the root disk is built on first use).
        timed(berth + ["run", "--rm", "busybox", "true"])
        timed(berth + ["run", "--rm", "--isolation", "process", "busybox", "true"])
        vm, proc = [], []
        for _ in range(n):
            vm.append(timed(berth + ["run", "--rm", "busybox", "true"]))
            proc.append(timed(berth + ["run", "--rm", "--isolation", "process", "busybox", "true"]))
        mv, mp = statistics.median(vm), statistics.median(proc)
        print(f"lab_run_vm_s {mv:.3f}")
        print(f"lab_run_process_s {mp:.3f}")
        print(f"lab_run_ratio_vm_vs_process {mv / mp:.2f}")
    finally:
        d.terminate()
        d.wait()
    # The cost of the monitor's jail: two berthds, alike but for --vmm-jail, without a
    # bridge (one default bridge per host), alternating.
    daemons = [start_berthd(release, work, name, kernel, initrd, ["--bridge", "none"] + extra)
               for name, extra in [("jailed", []), ("unjailed", ["--vmm-jail", "false"])]]
    try:
        clis = [[os.path.join(release, "berth"), "-H", f"unix://{s}"] for _, s in daemons]
        for c in clis:
            subprocess.run(c + ["import", tar, "busybox:latest"], check=True, stdout=subprocess.DEVNULL)
            timed(c + ["run", "--rm", "busybox", "true"])
        times = ([], [])
        for _ in range(n):
            for c, t in zip(clis, times):
                t.append(timed(c + ["run", "--rm", "busybox", "true"]))
        mj, mu = statistics.median(times[0]), statistics.median(times[1])
        print(f"lab_run_vm_jailed_s {mj:.3f}")
        print(f"lab_run_vm_unjailed_s {mu:.3f}")
        # Target <= 1.05.
        print(f"lab_run_ratio_jailed_vs_unjailed {mj / mu:.2f}")
    finally:
        for d, _ in daemons:
            d.terminate()
            d.wait()


if __name__ == "__main__":
    if sys.argv[1] == "native":
        native(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        lab(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
