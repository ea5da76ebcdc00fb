#!/usr/bin/env python3
"""bench/volume helper: the same busybox workload on the host's filesystem (the peer), in
a named volume and in a bind mount of a process container, in one run.

  volume.py RELEASE_DIR WORKDIR
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


def workload(run, d):
    """MB/s written, MB/s read, files created per second, in directory d (each timed by
    busybox's time where it runs, so that the container's exec costs nothing)."""
    w = MB / secs(run(["time", "dd", "if=/dev/zero", f"of={d}/big", "bs=1M", f"count={MB}", "conv=fsync"]).stderr)
    drop_caches()
    r = MB / secs(run(["time", "dd", f"if={d}/big", "of=/dev/null", "bs=1M"]).stderr)
    run(["rm", "-f", f"{d}/big"])
    script = f"mkdir {d}/small && cd {d}/small && i=0; while [ $i -lt {FILES} ]; do echo x > f$i; i=$((i+1)); done; sync"
    files = FILES / secs(run(["time", "sh", "-c", script]).stderr)
    run(["rm", "-rf", f"{d}/small"])
    return w, r, files


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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
