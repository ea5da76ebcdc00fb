#!/usr/bin/env python3
"""bench/process-start helpers; see docs/agent-protocol.md ("Benchmarks").

  process-start.py native AGENT BUNDLE N      berth-agent run vs runc run, alternating
  process-start.py lab VMM KERNEL INITRD N    agent ready time after boot (in the lab)
"""
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time


def timed(argv):
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return t


def native(agent, bundle, n):
    berth, runc = [], []
    for i in range(n):
        berth.append(timed([agent, "run", "--bundle", bundle, f"bench-berth-{os.getpid()}-{i}"]))
        runc.append(timed(["runc", "run", "--bundle", bundle, f"bench-runc-{os.getpid()}-{i}"]))
    b, r = statistics.median(berth), statistics.median(runc)
    print(f"process_start_berth_ms {b * 1000:.1f}")
    print(f"process_start_runc_ms {r * 1000:.1f}")
    print(f"process_start_ratio_vs_runc {b / r:.2f}")


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def agent_ready(sock_path, deadline):
    """Seconds until the agent behind the hybrid vsock socket answers a hello."""
    while time.monotonic() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(b"CONNECT 1024\n")
            line = b""
            while not line.endswith(b"\n"):
                c = s.recv(1)
                if not c:
                    raise OSError("refused")
                line += c
            s.sendall(frame({"version": 1, "channel": "control"}))
            hdr = s.recv(4)
            if len(hdr) == 4:
                s.close()
                return True
        except OSError:
            pass  # not up yet (refused, reset or timed out): try again
        time.sleep(0.01)
    return False


def agent_args(agent):
    """berth-vmm's arguments for the agent: its erofs image on virtio-pmem (as berthd boots
    it) or its initramfs."""
    with open(agent, "rb") as f:
        f.seek(1024)
        if f.read(4) == bytes.fromhex("e2e1f5e0"):
            return ["--pmem", agent, "--cmdline",
                    "root=/dev/pmem0 rootfstype=erofs rootflags=dax=always ro rootwait init=/init"]
    return ["--initrd", agent]


def lab(vmm, kernel, initrd, n, prefix="lab"):
    times = []
    for _ in range(n):
        d = tempfile.mkdtemp(prefix="berth-bench-")
        sock = os.path.join(d, "vm.sock")
        t0 = time.monotonic()
        p = subprocess.Popen([vmm, "--kernel", kernel] + agent_args(initrd) + ["--memory", "256", "--console", "off",
                              "--vsock", f"3,{sock}"], stdin=subprocess.DEVNULL)
        ok = agent_ready(sock, t0 + 120)
        times.append(time.monotonic() - t0)
        p.terminate()
        p.wait()
        if not ok:
            raise SystemExit("the agent never answered")
    print(f"{prefix}_agent_ready_s {statistics.median(times):.3f}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "native":
        native(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:  # "lab", or "native-agent-ready" on a host with hardware KVM (bench/native-kvm)
        lab(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), prefix=mode)
