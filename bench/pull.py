#!/usr/bin/env python3
"""bench/pull helpers.

  pull.py make-layout DIR            a ~100 MB, 5-layer image (files from /usr, gzip'd) as an
                                     OCI layout at DIR, tag "1" (kept between runs)
  pull.py run BERTH_IMAGE IMAGE WORK N   alternate berth, docker and skopeo pulls of IMAGE
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

LAYER_BYTES = 20 << 20


def blob(d, data):
    h = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(d, "blobs/sha256"), exist_ok=True)
    with open(os.path.join(d, "blobs/sha256", h), "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)


def make_layout(d):
    if os.path.exists(os.path.join(d, "index.json")):
        return
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    files = []
    for top in ["/usr/lib", "/usr/share", "/usr/bin"]:
        for dp, dns, fns in os.walk(top):
            dns.sort()
            for fn in sorted(fns):
                p = os.path.join(dp, fn)
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append(p)
    layers, diff_ids, i = [], [], 0
    for _ in range(5):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            size = 0
            while size < LAYER_BYTES and i < len(files):
                try:
                    t.add(files[i], arcname=files[i].lstrip("/"), recursive=False)
                    size += os.path.getsize(files[i])
                except OSError:
                    pass
                i += 1
        raw = buf.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        gz = gzip.compress(raw, compresslevel=6, mtime=0)
        dg, n = blob(tmp, gz)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": dg, "size": n})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd, cn = blob(tmp, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                           "layers": layers}).encode()
    md, mn = blob(tmp, manifest)
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "1"}}]}, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    os.rename(tmp, d)


def timed(argv, **kw):
    t0 = time.monotonic()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    t = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({r.returncode}): {r.stderr.decode()[-800:]}")
    return t


def run(berth, image, work, n):
    b, d, s = [], [], []
    broot = os.path.join(work, "berth-root")
    layout = os.path.join(work, "skopeo-layout")
    subprocess.run(["sync"])
    for _ in range(n):
        shutil.rmtree(broot, ignore_errors=True)
        b.append(timed([berth, "--root", broot, "pull", image]))
        shutil.rmtree(broot, ignore_errors=True)
        d.append(timed(["docker", "pull", "-q", image]))
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=True)
        shutil.rmtree(layout, ignore_errors=True)
        s.append(timed(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                        f"docker://{image}", f"oci:{layout}:1"]))
        shutil.rmtree(layout, ignore_errors=True)
    mb, md, ms = statistics.median(b), statistics.median(d), statistics.median(s)
    print(f"pull_berth_s {mb:.3f}")
    print(f"pull_docker_s {md:.3f}")
    print(f"pull_skopeo_s {ms:.3f}")
    print(f"pull_ratio_vs_docker {mb / md:.2f}")
    print(f"pull_ratio_vs_skopeo {mb / ms:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "make-layout":
        make_layout(sys.argv[2])
    else:
        run(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
