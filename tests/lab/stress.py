#!/usr/bin/env python3
"""Inside the lab (tests/lab/stress-loop): keep a microVM printing on its serial console
for DURATION seconds, restarting it every PERIOD seconds, while a thread writes small
files on the lab's io share. The console is an interrupt storm into the microVM (the lab's
KVM keeps asking for interrupt windows); the writes are 9p requests, whose completions are
interrupts into the lab from QEMU's main loop. Together they make the lost-timer freeze
of docs/testing.md likely. Prints a line per microVM.

  stress.py VMM KERNEL INITRD DURATION PERIOD
"""
import os
import select
import subprocess
import sys
import threading
import time

vmm, kernel, initrd, duration, period = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
io = [w.split("=", 1)[1] for w in open("/proc/cmdline").read().split() if w.startswith("lab.io=")][0]
t_end = time.monotonic() + duration
writes = [0]


def p9(k):
    path = os.path.join(io, f"stress-9p-{k}")
    while time.monotonic() < t_end:
        with open(path, "w") as f:
            f.write("x" * 100)
        os.stat(path)
        writes[0] += 1
    os.unlink(path)


# Two writers, flat out: each request's completion is an interrupt from QEMU's main loop.
for k in range(2):
    threading.Thread(target=p9, args=(k,), daemon=True).start()
n = 0
while time.monotonic() < t_end:
    p = subprocess.Popen([vmm, "--kernel", kernel, "--initrd", initrd, "--memory", "128", "--cmdline", "quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    t0 = time.monotonic(); got = 0
    while time.monotonic() - t0 < period and time.monotonic() < t_end:
        r, _, _ = select.select([p.stdout], [], [], 1.0)
        if r:
            c = os.read(p.stdout.fileno(), 65536)
            if not c: break
            got += len(c)
    p.kill(); p.wait(); n += 1
    print(f"vm {n}: {got} bytes in {time.monotonic()-t0:.0f}s, 9p writes {writes[0]}", flush=True)
