#!/usr/bin/python3
"""carve benchmarks, each against its baseline in the same run.

provision: POST /api/v1/vms until libvirt reports the domain running, against `virsh define`
           + `virsh start` of the same domain XML with a pre-made overlay and seed.
disk:      carve's "create disk" step for a 1 GiB and a 20 GiB base image (copy-on-write).
rss:       resident memory of `carve serve` managing 100 VMs on libvirt's test driver.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import libvirt

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # "not found yet" is expected while polling

ED = "ed25519"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Carve:
    """A `carve serve` process with an admin token."""

    running = []

    def __init__(self, binary, data, images, uri, extra_env=None):
        self.binary, self.data = binary, data
        os.makedirs(data, exist_ok=True)
        os.chmod(data, 0o711)
        self.port = free_port()
        self.env = dict(os.environ, CARVE_DATA_DIR=data, CARVE_IMAGE_DIR=images,
                        CARVE_HTTP_LISTEN=f"127.0.0.1:{self.port}", CARVE_SFTP_LISTEN="127.0.0.1:0",
                        CARVE_LIBVIRT_URI=uri, CARVE_LIBVIRT_DOMAIN_TYPE="qemu",
                        CARVE_CAPACITY_CPU_OVERCOMMIT="100", CARVE_CAPACITY_MEMORY_OVERCOMMIT="100",
                        CARVE_CAPACITY_DISK_OVERCOMMIT="100", CARVE_QUOTA_MAX_VMS="100000",
                        CARVE_QUOTA_MAX_VCPUS="100000", CARVE_QUOTA_MAX_MEMORY_MIB="100000000",
                        CARVE_QUOTA_MAX_DISK_GIB="100000000", RUST_LOG="warn",
                        **(extra_env or {}))
        subprocess.run([binary, "admin", "create-user", "--email", "bench@localhost", "--role", "admin"],
                       input=b"bench password\n", env=self.env, check=True, capture_output=True)
        self.token = subprocess.run([binary, "admin", "create-token", "--email", "bench@localhost", "--name", "bench"],
                                    env=self.env, check=True, capture_output=True).stdout.decode().strip()
        self.log = open(os.path.join(data, "serve.log"), "ab")
        self.proc = subprocess.Popen([binary, "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        Carve.running.append(self)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    raise SystemExit(f"carve did not start; see {data}/serve.log")
                time.sleep(0.05)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_op(self, op_id, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, op = self.call("GET", f"/api/v1/operations/{op_id}")
            if op["state"] in ("succeeded", "failed"):
                return op
            time.sleep(0.05)
        raise SystemExit(f"operation {op_id} did not finish")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_running(conn, name, deadline=120):
    """Polls libvirt every 2 ms until the named domain is running; returns when it is."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                return
        except libvirt.libvirtError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"{name} never ran")


def summary(xs):
    xs = sorted(xs)
    return {"median_ms": round(statistics.median(xs) * 1000, 1),
            "p90_ms": round(xs[int(0.9 * (len(xs) - 1))] * 1000, 1),
            "min_ms": round(xs[0] * 1000, 1), "n": len(xs)}


def bench_provision(args, images):
    data = os.path.join(args.work, "provision")
    carve = Carve(args.carve, data, images, "qemu:///system")
    conn = libvirt.open("qemu:///system")
    carve.call("POST", "/api/v1/plans", {"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})
    base = os.path.join(images, "tiny", "disk.qcow2")
    raw_dir = os.path.join(args.work, "virsh")
    os.makedirs(raw_dir, exist_ok=True)
    os.chmod(raw_dir, 0o711)
    carve_times, virsh_times = [], []
    for i in range(args.iterations + 1):
        # carve: from POST to libvirt reporting the domain running.
        t0 = time.monotonic()
        status, body = carve.call("POST", "/api/v1/vms", {"name": f"p{i}", "plan": "small", "image": "tiny", "ports": [80]})
        assert status == 202, body
        vm = body["vm"]["id"]
        wait_running(conn, f"carve-{vm}")
        elapsed = time.monotonic() - t0
        op = carve.wait_op(body["id"])
        assert op["state"] == "succeeded", op
        template = conn.lookupByName(f"carve-{vm}").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        # Baseline: the same XML, with an overlay and seed made beforehand (untimed).
        name = f"bench-virsh-{i}"
        disk = os.path.join(raw_dir, f"{name}.qcow2")
        seed = os.path.join(raw_dir, f"{name}.iso")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk, "1G"], check=True)
        shutil.copy(os.path.join(data, "vms", vm, "seed.iso"), seed)
        xml = (template.replace(f"carve-{vm}", name)
               .replace(os.path.join(data, "vms", vm, "disk.qcow2"), disk)
               .replace(os.path.join(data, "vms", vm, "seed.iso"), seed)
               .replace(os.path.join(data, "vms", vm, "console.log"), os.path.join(raw_dir, f"{name}.log")))
        xml = "\n".join(l for l in xml.splitlines() if "<uuid>" not in l)
        port = body["vm"]["forwards"][0]["host_port"]
        xml = xml.replace(f"start='{port}'", f"start='{port + 1000}'")
        xml_path = os.path.join(raw_dir, f"{name}.xml")
        with open(xml_path, "w") as f:
            f.write(xml)
        carve.call("DELETE", f"/api/v1/vms/{vm}")  # frees its CPU before the baseline runs
        deadline = time.time() + 120
        while carve.call("GET", f"/api/v1/vms/{vm}")[0] != 404 and time.time() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", "define", xml_path], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", "start", name], check=True, stdout=subprocess.DEVNULL)
        wait_running(conn, name)
        baseline = time.monotonic() - t0
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", "destroy", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", "undefine", name], check=True, stdout=subprocess.DEVNULL)
        if i > 0:  # the first round warms caches on both sides
            carve_times.append(elapsed)
            virsh_times.append(baseline)
    carve.stop()
    c, v = summary(carve_times), summary(virsh_times)
    overhead = c["median_ms"] - v["median_ms"]
    limit = max(0.10 * v["median_ms"], 50.0)
    return {"carve": c, "virsh_define_start": v, "overhead_ms": round(overhead, 1),
            "ratio": round(c["median_ms"] / v["median_ms"], 3), "allowed_overhead_ms": round(limit, 1),
            "pass": overhead <= limit}


def make_base(path, gib):
    """A qcow2 base whose whole virtual size holds data (so a copy would cost its full size)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, f"{gib}G"], check=True)
    writes = [arg for g in range(gib) for arg in ("-c", f"write -P 0xa5 {g}G 1G")]
    subprocess.run(["qemu-io", "-f", "qcow2", *writes, path], check=True, stdout=subprocess.DEVNULL)


def bench_disk(args, images):
    bench_images = os.path.join(args.work, "images")
    for gib in (1, 20):
        d = os.path.join(bench_images, f"base-{gib}g")
        os.makedirs(d, exist_ok=True)
        make_base(os.path.join(d, "disk.qcow2"), gib)
        with open(os.path.join(d, "image.toml"), "w") as f:
            f.write(f'name = "base-{gib}g"\nos = "none"\nboot = "disk"\ndisk = "disk.qcow2"\nmin_memory_mib = 64\n')
    os.chmod(bench_images, 0o755)
    carve = Carve(args.carve, os.path.join(args.work, "disk"), bench_images, "test:///default")
    carve.call("POST", "/api/v1/plans", {"name": "big", "vcpus": 1, "memory_mib": 128, "disk_gib": 40})
    times = {1: [], 20: []}
    for i in range(args.iterations):
        for gib in (1, 20):
            status, body = carve.call("POST", "/api/v1/vms", {"name": f"d{gib}-{i}", "plan": "big", "image": f"base-{gib}g"})
            assert status == 202, body
            op = carve.wait_op(body["id"])
            assert op["state"] == "succeeded", op
            step = next(s for s in op["steps"] if s["name"] == "create disk")
            times[gib].append(iso_seconds(step["finished_at"]) - iso_seconds(step["started_at"]))
            used = os.stat(os.path.join(carve.data, "vms", body["vm"]["id"], "disk.qcow2")).st_blocks * 512
            assert used < 16 << 20, f"the overlay holds {used} bytes: a copy was made"
    carve.stop()
    a, b = summary(times[1]), summary(times[20])
    return {"base_1g": a, "base_20g": b, "ratio_20g_to_1g": round(b["median_ms"] / a["median_ms"], 3)}


def iso_seconds(s):
    """Seconds since the epoch of an RFC 3339 time with up to nanosecond precision."""
    from datetime import datetime
    import re
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", s)
    whole = datetime.fromisoformat(m.group(1) + "+00:00").timestamp()
    return whole + (float("0." + m.group(2)) if m.group(2) else 0.0)


def bench_rss(args, images):
    carve = Carve(args.carve, os.path.join(args.work, "rss"), images, "test:///default")
    carve.call("POST", "/api/v1/plans", {"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})
    ops = []
    for i in range(100):
        status, body = carve.call("POST", "/api/v1/vms", {"name": f"r{i}", "plan": "small", "image": "tiny", "ports": [22, 80]})
        assert status == 202, body
        ops.append(body["id"])
    for op in ops:
        assert carve.wait_op(op)["state"] == "succeeded"
    for _ in range(200):
        status, vms = carve.call("GET", "/api/v1/vms")
        assert status == 200 and len(vms) == 100
    time.sleep(5)  # let a reconciler pass run over all 100
    rss, hwm = carve.rss_kib()
    carve.stop()
    return {"vms": 100, "rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(hwm / 1024, 1), "pass": rss < 50 * 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--carve", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--only", choices=["provision", "disk", "rss"])
    args = p.parse_args()
    results = {}
    for name, fn in (("provision", bench_provision), ("disk", bench_disk), ("rss", bench_rss)):
        if args.only in (None, name):
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                results[name] = fn(args, args.images)
            finally:
                for c in Carve.running:
                    c.stop()
            print(json.dumps(results[name], indent=2), flush=True)
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
