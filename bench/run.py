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


def start_berthd(release, work, name, kernel, initrd, extra, env=None):
    """A berthd with its own roots and socket under `work`; (process, socket)."""
    sock = os.path.join(work, f"{name}.sock")
    d = subprocess.Popen([os.path.join(release, "berthd"), "-H", f"unix://{sock}",
                          "--data-root", os.path.join(work, f"{name}-data"),
                          "--exec-root", os.path.join(work, f"{name}-run"), "--kernel", kernel,
                          "--agent-initrd", initrd] + extra,
                         stderr=open(os.path.join(work, f"{name}.log"), "w"), env=env)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return d, sock


def lab_berthd(release, kernel, initrd, tar, prefix):
    """In the lab: a work directory on a tmpfs with the guest's files, and a berthd with
    the busybox image, both paths warmed up once; (work, kernel, initrd, daemon, cli)."""
    work = tempfile.mkdtemp(prefix=prefix)
    # A real tmpfs: the lab's root is an overlay, which can't hold another overlay's upper.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", work], check=True)
    # The guest's files from the lab's tmpfs, as from a local disk.
    kernel = shutil.copy(kernel, work)
    initrd = shutil.copy(initrd, work)
    d, sock = start_berthd(release, work, "berth", kernel, initrd, [])
    berth = [os.path.join(release, "berth"), "-H", f"unix://{sock}"]
    subprocess.run(berth + ["import", tar, "busybox:latest"], check=True, stdout=subprocess.DEVNULL)
    # The root disk is built on first use.
    timed(berth + ["run", "--rm", "busybox", "true"])
    timed(berth + ["run", "--rm", "--isolation", "process", "busybox", "true"])
    return work, kernel, initrd, d, berth


def lab(release, kernel, initrd, tar, n):
    work, kernel, initrd, d, berth = lab_berthd(release, kernel, initrd, tar, "berth-bench-")
    try:
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
    phases(release, work, kernel, initrd, tar, n)
    guest_steps(release, work, kernel, initrd, tar, n)
    # The cost of the monitor's jail: two berthds, alike but for --vmm-jail, without a
    # bridge (one default bridge per host), alternating. Target <= 1.05.
    pair(release, work, kernel, initrd, tar, n, "jailed_vs_unjailed",
         ("jailed", []), ("unjailed", ["--vmm-jail", "false"]))
    # Starting from a snapshot against booting (docs/snapshots.md); the first run of the
    # first berthd makes its snapshot.
    pair(release, work, kernel, initrd, tar, n, "snapshot_vs_cold",
         ("snapshot", []), ("cold", ["--vm-snapshots", "false"]))


def pair(release, work, kernel, initrd, tar, n, ratio, a, b):
    """Two berthds alike but for their extra flags, without a bridge: `run --rm` n times
    each, alternating; lab_run_vm_<name>_first_s, lab_run_vm_<name>_s, and their ratio."""
    daemons = [start_berthd(release, work, name, kernel, initrd, ["--bridge", "none"] + extra)
               for name, extra in (a, b)]
    try:
        clis = [[os.path.join(release, "berth"), "-H", f"unix://{s}"] for _, s in daemons]
        for c, (name, _) in zip(clis, (a, b)):
            subprocess.run(c + ["import", tar, "busybox:latest"], check=True, stdout=subprocess.DEVNULL)
            print(f"lab_run_vm_{name}_first_s {timed(c + ['run', '--rm', 'busybox', 'true']):.3f}")
        times = ([], [])
        for _ in range(n):
            for c, t in zip(clis, times):
                t.append(timed(c + ["run", "--rm", "busybox", "true"]))
        ma, mb = statistics.median(times[0]), statistics.median(times[1])
        print(f"lab_run_vm_{a[0]}_s {ma:.3f}")
        print(f"lab_run_vm_{b[0]}_s {mb:.3f}")
        print(f"lab_run_ratio_{ratio} {ma / mb:.2f}")
    finally:
        for d, _ in daemons:
            d.terminate()
            d.wait()


def trace_times(path, prefix):
    """{step: seconds} from `PREFIX: trace T STEP` lines (ns on the host, s in the guest)."""
    out = {}
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(prefix + ": trace "):
            parts = line.split(" ", 3)
            try:
                t, step = float(parts[2]), parts[3]
            except (ValueError, IndexError):
                # Two processes' lines run together (the jail's waiter and monitor).
                continue
            out.setdefault(step, t / (1e9 if prefix != "berth-agent" else 1))
    return out


def phases(release, work, kernel, initrd, tar, n):
    """Where a microVM's boot goes: a berthd whose monitors trace their steps (a quiet
    console; the agent adds its steps' lines to it), `run -d` n times; then `run --rm`
    split at berthd's steps (run_steps)."""
    env = dict(os.environ, BERTH_VMM_TRACE="1")
    # The boot itself: every microVM boots its kernel (no snapshot).
    d, sock = start_berthd(release, work, "traced", kernel, initrd,
                           ["--bridge", "none", "--vm-snapshots", "false"], env=env)
    rows = []
    try:
        berth = [os.path.join(release, "berth"), "-H", f"unix://{sock}"]
        subprocess.run(berth + ["import", tar, "busybox:latest"], check=True, stdout=subprocess.DEVNULL)
        timed(berth + ["run", "--rm", "busybox", "true"])
        for i in range(n):
            total = timed(berth + ["run", "-d", "--name", f"p{i}", "busybox", "sleep", "1000"])
            cid = subprocess.run(berth + ["inspect", "-f", "{{.Id}}", f"p{i}"], check=True,
                                 capture_output=True, text=True).stdout.strip()
            cdir = os.path.join(work, "traced-data", "containers", cid)
            host = trace_times(os.path.join(cdir, "agent.log"), "berth-vmm")
            host.update(trace_times(os.path.join(cdir, "agent.log"), "berthd"))
            guest = trace_times(os.path.join(cdir, "console.log"), "berth-agent")
            subprocess.run(berth + ["rm", "-f", f"p{i}"], check=True, stdout=subprocess.DEVNULL)
            try:
                booted = host["agent answered"] - host["vcpus"]
                rows.append({
                    "monitor_setup": host["vcpus"] - host["main"],
                    "guest_kernel": guest["started"],
                    "agent_init": guest["listening"] - guest["started"],
                    "agent_connect": booted - guest["listening"],
                    "guest_mounts": host["guest storage and network set up"] - host["agent answered"],
                    "run_d": total,
                })
            except KeyError as e:
                raise SystemExit(f"bench/run: no trace of {e} for container p{i}")
        steps = run_steps(berth, os.path.join(work, "traced.log"), n)
    finally:
        d.terminate()
        d.wait()
    # Emulated seconds: compare them with one another, not with native figures.
    for k in rows[0]:
        print(f"lab_boot_{k}_s {statistics.median(r[k] for r in rows):.3f}")
    for kind, per_step in steps.items():
        for step, times in per_step.items():
            name = step.replace(" ", "_")
            print(f"lab_run_step_{kind}_{name}_ms {statistics.median(times) * 1000:.0f}")


# /proc/stat's columns in the agent's step lines (USER_HZ ticks: 10 ms).
CPU_COLUMNS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def step_lines(path):
    """[(guest seconds, [cpu ticks], step)] from the agent's `berth-agent: step` lines."""
    out = []
    with open(path, errors="replace") as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("berth-agent: step "):
            f = line.split(" ")
            # berth-agent: step T cpu U N S I W Q SQ ST STEP...
            out.append((float(f[2]), [int(x) for x in f[4:12]], " ".join(f[12:])))
    return out


def kernel_lines(path):
    """The kernel's boot from the agent's `berth-agent: initcall T USECS NAME` and
    `berth-agent: kernel T MESSAGE` lines: ({initcall: ms}, {message: kernel seconds})."""
    calls, marks = {}, {}
    with open(path, errors="replace") as f:
        text = f.read()
    for line in text.splitlines():
        parts = line.split(" ", 4)
        if line.startswith("berth-agent: initcall ") and len(parts) == 5:
            calls[parts[4]] = calls.get(parts[4], 0) + int(parts[3]) / 1000
        elif line.startswith("berth-agent: kernel "):
            _, _, t, msg = line.split(" ", 3)
            # "Freeing (or Keeping) unused kernel image (initmem) memory: 772K": the first
            # marks the end of the initcalls.
            name = "init sections" if "unused kernel image" in msg else msg
            marks.setdefault(name, float(t))
    return calls, marks


def guest_steps(release, work, kernel_path, initrd, tar, n):
    """Inside the guest (BERTH_VMM_TRACE=guest: the agent notes its steps with the guest's
    CPU time, written at power-off): `run busybox true` as a microVM n times; medians of
    the container's create, start and run (exec to reaped) in guest ms, and of the guest's
    CPU time by kind from the agent's set-up to its power-off."""
    env = dict(os.environ, BERTH_VMM_TRACE="guest")
    d, sock = start_berthd(release, work, "steps", kernel_path, initrd, ["--bridge", "none"], env=env)
    rows, kernel = [], []
    try:
        berth = [os.path.join(release, "berth"), "-H", f"unix://{sock}"]
        subprocess.run(berth + ["import", tar, "busybox:latest"], check=True, stdout=subprocess.DEVNULL)
        timed(berth + ["run", "--rm", "busybox", "true"])
        for i in range(n):
            timed(berth + ["run", "--name", f"s{i}", "busybox", "true"])
            cid = subprocess.run(berth + ["inspect", "-f", "{{.Id}}", f"s{i}"], check=True,
                                 capture_output=True, text=True).stdout.strip()
            # The monitor is gone once the run returns: the console is complete.
            console = os.path.join(work, "steps-data", "containers", cid, "console.log")
            steps = step_lines(console)
            kernel.append(kernel_lines(console))
            subprocess.run(berth + ["rm", f"s{i}"], check=True, stdout=subprocess.DEVNULL)
            at = {}
            for t, cpu, step in steps:
                at.setdefault(step, (t, cpu))
            try:
                row = {
                    "create": at["create: done"][0] - at["create"][0],
                    "start": at["start: exec'd"][0] - at["start"][0],
                    "run": at["exit: reaped"][0] - at["start: exec'd"][0],
                    # Of which: from the process's exit (its stdout closed, before its
                    # namespaces go) to its reaping.
                    "run_exit_teardown": at["exit: reaped"][0] - at["output: stdout closed"][0],
                    "set_up_to_power_off": at["power off"][0] - at["set up"][0],
                }
            except KeyError as e:
                raise SystemExit(f"bench/run: no guest step {e} for container s{i}")
            first, last = at["set up"][1], at["power off"][1]
            for k, name in enumerate(CPU_COLUMNS):
                if name in ("user", "system", "iowait", "steal", "idle"):
                    row[f"cpu_{name}"] = (last[k] - first[k]) / 100
            rows.append(row)
    finally:
        d.terminate()
        d.wait()
    for k in rows[0]:
        print(f"lab_guest_{k}_ms {statistics.median(r[k] for r in rows) * 1000:.0f}")
    # The guest kernel's boot in its own clock (initcall_debug, from the kernel's log).
    totals = [sum(c.values()) for c, _ in kernel]
    print(f"lab_guest_kernel_slow_initcalls_ms {statistics.median(totals):.0f}")
    for name, key in [("init sections", "initcalls_done"), ("Run /init as init process", "run_init")]:
        at = [m[name] for _, m in kernel if name in m]
        if at:
            print(f"lab_guest_kernel_{key}_s {statistics.median(at):.3f}")
    names = {k for c, _ in kernel for k in c}
    med = {k: statistics.median(c.get(k, 0) for c, _ in kernel) for k in names}
    for k in sorted(med, key=med.get, reverse=True)[:12]:
        print(f"lab_guest_initcall_{k}_ms {med[k]:.0f}")


def run_steps(berth, log, n):
    """`run --rm busybox true` as a microVM and with process isolation, alternating, n
    times each, split at berthd's traced steps (`berthd: trace NS ID STEP` in its log, the
    run's container only): {kind: {step: [seconds since the step before (the CLI's start
    for the first)]}}."""
    out = {"vm": {}, "process": {}}
    timed(berth + ["run", "--rm", "--isolation", "process", "busybox", "true"])
    for _ in range(n):
        for kind, extra in [("vm", []), ("process", ["--isolation", "process"])]:
            pos = os.path.getsize(log)
            t0 = time.monotonic_ns()
            timed(berth + ["run", "--rm"] + extra + ["busybox", "true"])
            t1 = time.monotonic_ns()
            with open(log, "rb") as f:
                f.seek(pos)
                text = f.read().decode(errors="replace")
            prev, cid = t0, None
            for line in text.splitlines():
                if line.startswith("berthd: trace "):
                    _, _, ns, id_, step = line.split(" ", 4)
                    # The first step of this run names its container; a late line of
                    # an earlier container is not this run's.
                    if cid is None and step == "created record":
                        cid = id_
                    if id_ != cid:
                        continue
                    out[kind].setdefault(step, []).append((int(ns) - prev) / 1e9)
                    prev = int(ns)
            out[kind].setdefault("cli exit", []).append((t1 - prev) / 1e9)
            out[kind].setdefault("total", []).append((t1 - t0) / 1e9)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "native":
        native(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        lab(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
