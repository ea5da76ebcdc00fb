#!/usr/bin/env python3
"""bench/net helpers: berthd runs in a network namespace made here ("host"), joined by a
veth to a second one ("outside"); no packet leaves them.

  net.py native RELEASE_DIR RUNS                  process isolation against the host's loopback
  net.py lab RELEASE_DIR KERNEL INITRD RUNS       in the lab: microVM vs process isolation
  net.py http URL N                               (inside a namespace) median request time
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST_IP, OUT_IP = "10.250.1.1", "10.250.1.2"


def sh(cmd, check=True):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"{cmd} failed ({r.returncode}): {r.stdout[-400:]}{r.stderr[-800:]}")
    return r.stdout


class Lab:
    """Two namespaces and a berthd in the first."""

    def __init__(self, release, extra):
        sid = os.getpid()
        self.host, self.out = f"bbh{sid}", f"bbo{sid}"
        sh(f"ip netns add {self.host} && ip netns add {self.out} && "
           f"ip link add bvh{sid} type veth peer name bvo{sid} && "
           f"ip link set bvh{sid} netns {self.host} && ip link set bvo{sid} netns {self.out} && "
           f"ip -n {self.host} addr add {HOST_IP}/24 dev bvh{sid} && ip -n {self.host} link set bvh{sid} up && "
           f"ip -n {self.host} link set lo up && ip -n {self.out} addr add {OUT_IP}/24 dev bvo{sid} && "
           f"ip -n {self.out} link set bvo{sid} up && ip -n {self.out} link set lo up")
        self.work = tempfile.mkdtemp(prefix="berth-bench-net-")
        # A real tmpfs: in the lab the root is an overlay, which can't hold another's upper.
        sh(f"mount -t tmpfs tmpfs {self.work}")
        self.sock = os.path.join(self.work, "berthd.sock")
        self.berth = [os.path.join(release, "berth"), "-H", f"unix://{self.sock}"]
        self.d = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.host}", os.path.join(release, "berthd"),
             "-H", f"unix://{self.sock}", "--data-root", os.path.join(self.work, "data"),
             "--exec-root", os.path.join(self.work, "run")] + extra,
            stderr=open(os.path.join(self.work, "berthd.log"), "w"))
        for _ in range(400):
            if os.path.exists(self.sock):
                break
            time.sleep(0.05)
        self.image()

    def image(self):
        """bench-net:1: busybox, iperf3 with its libraries, a page for httpd."""
        root = os.path.join(self.work, "root")
        os.makedirs(os.path.join(root, "bin"))
        for d in ["proc", "sys", "dev", "tmp", "etc", "www"]:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
        for a in sh("/bin/busybox --list").split():
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        iperf = shutil.which("iperf3")
        files = [iperf] + re.findall(r"(/\S+) \(0x", sh(f"ldd {iperf}"))
        for f in files:
            dest = os.path.join(root, f.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(f, dest)
        with open(os.path.join(root, "www/index.html"), "w") as f:
            f.write("hello\n")
        tar = os.path.join(self.work, "img.tar")
        sh(f"tar -C {root} -cf {tar} .")
        self.ok(["import", tar, "bench-net:1"])

    def ok(self, args):
        r = subprocess.run(self.berth + args, capture_output=True, text=True)
        if r.returncode != 0:
            log = open(os.path.join(self.work, "berthd.log")).read()[-1500:]
            raise SystemExit(f"berth {args} failed: {r.stdout}{r.stderr}\n{log}")
        return r.stdout

    def in_host(self, cmd):
        return sh(f"nsenter --net=/run/netns/{self.host} {cmd}")

    def close(self):
        for c in self.ok(["ps", "-aq"]).split():
            subprocess.run(self.berth + ["rm", "-f", c], capture_output=True)
        self.d.terminate()
        self.d.wait()
        subprocess.run(f"umount -l {self.work}; rm -rf {self.work}; "
                       f"ip netns del {self.host}; ip netns del {self.out}", shell=True)


def gbps(iperf_json):
    j = json.loads(iperf_json)
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def rtt_us(ping_out):
    m = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", ping_out)
    if not m:
        raise SystemExit(f"no ping summary in: {ping_out}")
    return float(m.group(1)) * 1000


def timed(argv):
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"{argv} failed: {r.stderr.decode()[-600:]}")
    return time.monotonic() - t0


def ctr_pair(lab, iso, secs, pings):
    """Throughput and RTT between two containers on one user network."""
    iso_args = ["--isolation", iso]
    srv = lab.ok(["run", "-d", "--network", "bnet", "--name", f"srv-{iso}"] + iso_args
                 + ["bench-net:1", "iperf3", "-s"]).strip()
    time.sleep(1)
    out = lab.ok(["run", "--rm", "--network", "bnet"] + iso_args
                 + ["bench-net:1", "sh", "-c",
                    f"iperf3 -c srv-{iso} -t {secs} -J && ping -c {pings} -i 0.2 srv-{iso} | tail -n 1"])
    lab.ok(["rm", "-f", srv])
    body, _, last = out.rstrip().rpartition("\n")
    return gbps(body), rtt_us(last)


def start_overhead(lab, runs):
    """Median `run --rm` seconds without a network and on the default bridge, alternating."""
    base = lab.berth + ["run", "--rm"]
    timed(base + ["bench-net:1", "true"])
    none, bridge = [], []
    for _ in range(runs):
        none.append(timed(base + ["--network", "none", "bench-net:1", "true"]))
        bridge.append(timed(base + ["bench-net:1", "true"]))
    return statistics.median(none), statistics.median(bridge)


def native(release, runs):
    lab = Lab(release, ["--exec-opt", "isolation=process"])
    try:
        secs = 3
        # The peer: the host's own loopback, in the same namespace.
        srv = subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.host}", "iperf3", "-s", "-1", "-p", "5299"],
                               stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        lo = gbps(lab.in_host(f"iperf3 -c 127.0.0.1 -p 5299 -t {secs} -J"))
        srv.wait()
        lo_rtt = rtt_us(lab.in_host("busybox ping -c 20 -i 0.2 127.0.0.1"))
        print(f"loopback_tcp_gbps {lo:.2f}")
        print(f"loopback_rtt_us {lo_rtt:.0f}")
        lab.ok(["network", "create", "bnet"])
        c2c, c2c_rtt = ctr_pair(lab, "process", secs, 20)
        print(f"ctr_to_ctr_tcp_gbps {c2c:.2f}")
        print(f"ctr_to_ctr_rtt_us {c2c_rtt:.0f}")
        print(f"ctr_to_ctr_tcp_ratio_vs_loopback {c2c / lo:.2f}")
        # A published port: from the host (berthd's proxy) and from outside (DNAT).
        pub = lab.ok(["run", "-d", "-p", "5201:5201", "-p", "8080:80", "bench-net:1", "sh", "-c",
                      "httpd -p 80 -h /www && iperf3 -s"]).strip()
        time.sleep(1)
        via_proxy = gbps(lab.in_host(f"iperf3 -c 127.0.0.1 -p 5201 -t {secs} -J"))
        via_dnat = gbps(sh(f"ip netns exec {lab.out} iperf3 -c {HOST_IP} -p 5201 -t {secs} -J"))
        print(f"host_to_published_tcp_gbps {via_proxy:.2f}")
        print(f"outside_to_published_tcp_gbps {via_dnat:.2f}")
        me = os.path.abspath(__file__)
        req_pub = float(lab.in_host(f"python3 {me} http http://127.0.0.1:8080/index.html 300"))
        req_dnat = float(sh(f"ip netns exec {lab.out} python3 {me} http http://{HOST_IP}:8080/index.html 300"))
        lab.ok(["rm", "-f", pub])
        # The peer: the same httpd on the host's loopback.
        httpd = subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.host}", "busybox", "httpd", "-f", "-p",
                                  "127.0.0.1:8081", "-h", os.path.join(lab.work, "root/www")])
        time.sleep(0.3)
        req_lo = float(lab.in_host(f"python3 {me} http http://127.0.0.1:8081/index.html 300"))
        httpd.terminate()
        httpd.wait()
        print(f"host_to_published_request_us {req_pub:.0f}")
        print(f"outside_to_published_request_us {req_dnat:.0f}")
        print(f"loopback_request_us {req_lo:.0f}")
        # Start time: run --rm with the default bridge vs without a network.
        mn, mb = start_overhead(lab, runs)
        print(f"run_berth_ms {mn * 1000:.1f}")
        print(f"run_berth_bridge_ms {mb * 1000:.1f}")
        print(f"run_network_overhead_ratio {(mb - mn) / mn:.2f}")
    finally:
        lab.close()


def lab_mode(release, kernel, initrd, runs):
    work = tempfile.mkdtemp(prefix="berth-bench-guest-")
    sh(f"mount -t tmpfs tmpfs {work}")
    kernel, initrd = shutil.copy(kernel, work), shutil.copy(initrd, work)
    lab = Lab(release, ["--kernel", kernel, "--agent-initrd", initrd])
    try:
        lab.ok(["network", "create", "bnet"])
        secs, pings = 2, 5
        vm, vm_rtt = ctr_pair(lab, "vm", secs, pings)
        pr, pr_rtt = ctr_pair(lab, "process", secs, pings)
        print(f"lab_ctr_to_ctr_tcp_ratio_vm_vs_process {vm / pr:.2f}")
        print(f"lab_ctr_to_ctr_rtt_ratio_vm_vs_process {vm_rtt / pr_rtt:.2f}")
        mn, mb = start_overhead(lab, runs)
        print(f"lab_vm_run_network_overhead_ratio {(mb - mn) / mn:.2f}")
    finally:
        lab.close()
        sh(f"umount -l {work}; rm -rf {work}", check=False)


def http(url, n):
    ts = []
    for _ in range(n):
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
        ts.append(time.monotonic() - t0)
    print(f"{statistics.median(ts) * 1e6:.0f}")


if __name__ == "__main__":
    if sys.argv[1] == "native":
        native(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "lab":
        lab_mode(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        http(sys.argv[2], int(sys.argv[3]))
