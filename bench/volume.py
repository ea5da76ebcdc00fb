#!/usr/bin/env python3
"""bench/volume helper, in one run each:

  volume.py RELEASE_DIR WORKDIR        natively: the host's filesystem (the peer), a named
                                       volume and a bind mount of a process container
  volume.py lab RELEASE_DIR KERNEL INITRD VIRTIOFSD
                                       in the lab: a microVM's volume and bind (virtio-fs)
                                       against a process container's (ratios only)
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

MB = 1024
FILES = 2000


def sh(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed: {r.stdout[-300:]}{r.stderr[-800:]}")
    return r


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def secs(time_err):
    # busybox time: "real\t0m 0.41s"
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", time_err)
    if not m:
        raise SystemExit(f"no time summary in: {time_err}")
    return max(int(m.group(1)) * 60 + float(m.group(2)), 0.005)


def workload(run, d, mb=MB, files=FILES, before_read=None):
    """MB/s written, MB/s read, files created per second, in directory d (each timed by
    busybox's time where it runs, so that the container's exec costs nothing).
    before_read(name): prepares the file to read (default: the written one, caches
    dropped); returns its name."""
    w = mb / secs(run(["time", "dd", "if=/dev/zero", f"of={d}/big", "bs=1M", f"count={mb}", "conv=fsync"]).stderr)
    if before_read:
        run(["rm", "-f", f"{d}/big"])
        name = before_read()
    else:
        drop_caches()
        name = "big"
    r = mb / secs(run(["time", "dd", f"if={d}/{name}", "of=/dev/null", "bs=1M"]).stderr)
    run(["rm", "-f", f"{d}/{name}", f"{d}/big"])
    script = f"mkdir {d}/small && cd {d}/small && i=0; while [ $i -lt {files} ]; do echo x > f$i; i=$((i+1)); done; sync"
    n = files / secs(run(["time", "sh", "-c", script]).stderr)
    run(["rm", "-rf", f"{d}/small"])
    return w, r, n


def main(release, work):
    sock = os.path.join(work, "berthd.sock")
    berth = [os.path.join(release, "berth"), "-H", f"unix://{sock}"]
    d = subprocess.Popen([os.path.join(release, "berthd"), "-H", f"unix://{sock}",
                          "--data-root", os.path.join(work, "data"), "--exec-root", os.path.join(work, "run"),
                          "--exec-opt", "isolation=process", "--bridge", "none"],
                         stderr=open(os.path.join(work, "berthd.log"), "w"))
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        sh(berth + ["import", os.path.join(work, "busybox.tar"), "bench-vol:1"])
        host_dir = os.path.join(work, "host")
        bind_dir = os.path.join(work, "bind")
        os.makedirs(host_dir, exist_ok=True)
        os.makedirs(bind_dir, exist_ok=True)
        ctr = sh(berth + ["run", "-d", "-v", "benchvol:/vol", "-v", f"{bind_dir}:/bind",
                          "bench-vol:1", "sleep", "3600"]).stdout.strip()

        def in_ctr(argv):
            return sh(berth + ["exec", ctr] + argv)

        def on_host(argv):
            return sh(["busybox"] + argv)

        # Three rounds, interleaved, medians: no place gets the warm-up or the tail.
        runs = {"host": [], "volume": [], "bind": []}
        for _ in range(3):
            runs["host"].append(workload(on_host, host_dir))
            runs["volume"].append(workload(in_ctr, "/vol"))
            runs["bind"].append(workload(in_ctr, "/bind"))
        rows = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in runs.items()}
        sh(berth + ["rm", "-f", ctr])
        sh(berth + ["volume", "rm", "benchvol"])
        for name, (w, r, f) in rows.items():
            print(f"{name}_seq_write_mbps {w:.0f}")
            print(f"{name}_seq_read_mbps {r:.0f}")
            print(f"{name}_small_files_per_s {f:.0f}")
        hw, hr, hf = rows["host"]
        for name in ["volume", "bind"]:
            w, r, f = rows[name]
            print(f"{name}_write_ratio_vs_host {w / hw:.2f}")
            print(f"{name}_read_ratio_vs_host {r / hr:.2f}")
            print(f"{name}_small_files_ratio_vs_host {f / hf:.2f}")
    finally:
        d.terminate()
        d.wait()


def busybox_tar(work):
    root = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    for d in ["proc", "sys", "dev", "tmp", "etc"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    for a in sh(["/bin/busybox", "--list"]).stdout.split():
        if a != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", a))
    tar = os.path.join(work, "busybox.tar")
    sh(["tar", "-C", root, "-cf", tar, "."])
    return tar


def lab(release, kernel, initrd, virtiofsd):
    """In the lab: the same workload (smaller: the lab's CPU is emulated) in a named volume
    and a bind mount of a microVM container (each a virtio-fs device served by virtiofsd)
    and of a process container, two rounds interleaved, medians; ratios vm/process. The
    file read is written by the host first, so that neither reads its own page cache."""
    import tempfile
    top = tempfile.mkdtemp(prefix="berth-bench-vol-")
    # The lab's root is an overlay, which can't hold a process container's upper layer:
    # the data on an ext4 disk (a file on a tmpfs), as a host's data root would be; the
    # sockets on the tmpfs.
    sh(["mount", "-t", "tmpfs", "tmpfs", top])
    work = os.path.join(top, "fs")
    os.makedirs(work)
    sh(["truncate", "-s", "1536M", os.path.join(top, "disk.img")])
    sh(["mkfs.ext4", "-q", "-F", os.path.join(top, "disk.img")])
    subprocess.run(["modprobe", "-a", "loop", "ext4"], capture_output=True)
    sh(["mount", "-o", "loop", os.path.join(top, "disk.img"), work])
    sock = os.path.join(top, "berthd.sock")
    berth = [os.path.join(release, "berth"), "-H", f"unix://{sock}"]
    d = subprocess.Popen([os.path.join(release, "berthd"), "-H", f"unix://{sock}",
                          "--data-root", os.path.join(work, "data"), "--exec-root", os.path.join(top, "run"),
                          "--kernel", kernel, "--agent-initrd", initrd, "--virtiofsd", virtiofsd,
                          "--bridge", "none"],
                         stderr=open(os.path.join(work, "berthd.log"), "w"))
    mb, files = 32, 200
    try:
        for _ in range(400):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        sh(berth + ["import", busybox_tar(work), "bench-vol:1"])
        bind_dir = os.path.join(work, "bind")
        os.makedirs(bind_dir)
        sh(berth + ["volume", "create", "benchvol"])
        vol_dir = sh(berth + ["volume", "inspect", "-f", "{{.Mountpoint}}", "benchvol"]).stdout.strip()
        mounts = ["-v", "benchvol:/vol", "-v", f"{bind_dir}:/bind"]
        vm = sh(berth + ["run", "-d"] + mounts + ["bench-vol:1", "sleep", "3600"]).stdout.strip()

        def in_ctr(iso):
            # Each step is timed inside the container, so how it is started costs nothing:
            # exec in the microVM; a fresh process container each step (in the lab, whose
            # root is an initramfs, an exec into a process container does not land in its
            # root).
            if iso == "vm":
                return lambda argv: sh(berth + ["exec", vm] + argv)
            return lambda argv: sh(berth + ["run", "--rm", "--isolation", "process"] + mounts
                                   + ["bench-vol:1"] + argv)

        def host_file(host_dir):
            def make():
                with open(os.path.join(host_dir, "rd"), "wb") as f:
                    f.write(b"\0" * (mb << 20))
                drop_caches()
                return "rd"
            return make

        runs = {(iso, kind): [] for iso in ["vm", "process"] for kind in ["volume", "bind"]}
        for _ in range(2):
            for (iso, kind), v in runs.items():
                host_dir, d_in = (vol_dir, "/vol") if kind == "volume" else (bind_dir, "/bind")
                v.append(workload(in_ctr(iso), d_in, mb, files, host_file(host_dir)))
        rows = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in runs.items()}
        for kind in ["volume", "bind"]:
            (vw, vr, vf), (pw, pr, pf) = rows[("vm", kind)], rows[("process", kind)]
            print(f"lab_{kind}_write_ratio_vm_vs_process {vw / pw:.2f}")
            print(f"lab_{kind}_read_ratio_vm_vs_process {vr / pr:.2f}")
            print(f"lab_{kind}_small_files_ratio_vm_vs_process {vf / pf:.2f}")
        sh(berth + ["rm", "-f", vm])
        sh(berth + ["volume", "rm", "benchvol"])
    finally:
        d.terminate()
        d.wait()
        subprocess.run(f"umount -l {work}; umount -l {top}; rm -rf {top}", shell=True)


if __name__ == "__main__":
    if sys.argv[1] == "lab":
        lab(*sys.argv[2:6])
    else:
        main(sys.argv[1], sys.argv[2])
