#!/usr/bin/env python3
"""Inside the lab: boot a microVM N times, one after another (berth-vmm, the guest kernel
and a marker initramfs), each to its init marker, then stop it. Prints one line a boot.

  boots.py VMM KERNEL INITRD N
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from vmm import boot_to_marker  # noqa: E402


def main():
    vmm, kernel, initrd, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    # From the lab's local tmpfs, as a real host would read a local disk.
    local = tempfile.mkdtemp(prefix="berth-boots-")
    kernel = shutil.copy(kernel, local)
    initrd = shutil.copy(initrd, local)
    argv = [vmm, "--kernel", kernel, "--initrd", initrd, "--memory", "128", "--cmdline", "quiet"]
    for i in range(n):
        t, p = boot_to_marker(argv)
        p.kill()
        p.wait()
        print(f"boot {i + 1} {t:.2f}s", flush=True)
        time.sleep(0.2)
    shutil.rmtree(local, ignore_errors=True)


if __name__ == "__main__":
    main()
