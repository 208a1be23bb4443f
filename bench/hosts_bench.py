#!/usr/bin/env python3
"""Many hosts (bench/hosts.sh): provisioning on a second libvirt host against the local one and
against raw virsh on each, and evacuating a 1 GiB-used disk against virsh vol-download | vol-upload.

The second host is an unprivileged user's session libvirt reached over a private sshd, as in
the tests. Times run from the request to libvirt reporting the domain running."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET


def api(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + "/api/v1" + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_op(base, token, op, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, o = api(base, token, "GET", f"/operations/{op}")
        if o["state"] in ("succeeded", "failed"):
            if o["state"] != "succeeded":
                raise SystemExit(f"operation failed: {o}")
            return o
        time.sleep(0.05)
    raise SystemExit(f"operation {op} did not finish")


def virsh(uri, *args, check=True, **kw):
    return subprocess.run(["virsh", "-q", "-c", uri, *args], check=check, capture_output=True, text=True, **kw)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class SecondHost:
    """An unprivileged user's session libvirt behind a private sshd on 127.0.0.1."""

    def __init__(self):
        self.user = "carvebench" + os.urandom(3).hex()
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", self.user], check=True)
        self.dir = tempfile.mkdtemp(prefix="carve-bench-host2-")
        key, host_key = os.path.join(self.dir, "key"), os.path.join(self.dir, "host_key")
        for k in (key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k], check=True)
        ssh = f"/home/{self.user}/.ssh"
        os.makedirs(ssh, exist_ok=True)
        shutil.copy(key + ".pub", ssh + "/authorized_keys")
        subprocess.run(["chown", "-R", f"{self.user}:{self.user}", ssh], check=True)
        os.makedirs("/run/sshd", exist_ok=True)
        self.port = free_port()
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-p", str(self.port), "-o", "ListenAddress=127.0.0.1",
                                      "-o", f"HostKey={host_key}", "-o", f"PidFile={self.dir}/sshd.pid",
                                      "-o", "PasswordAuthentication=no", "-o", f"AllowUsers={self.user}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.uri = f"qemu+ssh://{self.user}@127.0.0.1:{self.port}/session?keyfile={key}&no_verify=1"
        self.pool_path = f"/home/{self.user}/carve-pool"

    def close(self):
        for d in virsh(self.uri, "list", "--all", "--name", check=False).stdout.split():
            virsh(self.uri, "destroy", d, check=False)
            virsh(self.uri, "undefine", d, check=False)
        self.sshd.kill()
        self.sshd.wait()
        for daemon in ("libvirtd", "virtqemud", "virtlogd"):
            try:
                pid = int(open(f"/home/{self.user}/.cache/libvirt/{daemon}.pid").read())
                os.kill(pid, 15)
            except (OSError, ValueError):
                pass
        for _ in range(20):
            subprocess.run(["userdel", "-r", self.user], capture_output=True)
            if subprocess.run(["id", self.user], capture_output=True).returncode != 0:
                break
            time.sleep(0.25)
        shutil.rmtree(self.dir, ignore_errors=True)


def carve_create(base, token, name, label):
    start = time.monotonic()
    s, a = api(base, token, "POST", "/vms", {"name": name, "plan": "small", "image": "tiny", "host_labels": [label]})
    assert s == 202, a
    wait_op(base, token, a["id"])
    return time.monotonic() - start, a["vm"]["id"]


def running(uri, name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if virsh(uri, "domstate", name, check=False).stdout.strip() == "running":
            return
        time.sleep(0.05)
    raise SystemExit(f"{name} never ran")


def raw_create(uri, pool, pool_dir, xml_text, i, base_path, seed_file):
    """virsh on the host alone, in one session (one connection, as carve keeps one): an
    overlay on the same base, the seed uploaded, carve's domain XML renamed onto them,
    defined and started (start returns once libvirt runs it)."""
    name = f"bench-raw-{os.getpid()}-{i}"
    disk, seed = f"{pool_dir}/{name}.qcow2", f"{pool_dir}/{name}-seed.iso"
    root = ET.fromstring(xml_text)
    root.find("name").text = name
    for tag in ("uuid", "metadata"):
        el = root.find(tag)
        if el is not None:
            root.remove(el)
    disks = root.findall("./devices/disk")
    disks[0].find("source").set("file", disk)
    disks[1].find("source").set("file", seed)
    for el in root.iter("log"):
        el.set("file", f"{pool_dir}/{name}-console.log")
    for iface in root.findall("./devices/interface"):
        for pf in iface.findall("portForward"):
            iface.remove(pf)
    path = os.path.join(tempfile.gettempdir(), f"{name}.xml")
    with open(path, "w") as f:
        f.write(ET.tostring(root, encoding="unicode"))
    size = os.path.getsize(seed_file)
    script = "; ".join([
        f"vol-create-as {pool} {name}.qcow2 3G --format qcow2 --backing-vol {base_path} --backing-vol-format qcow2",
        f"vol-create-as {pool} {name}-seed.iso {size} --format raw",
        f"vol-upload --pool {pool} {name}-seed.iso {seed_file}",
        f"define {path}",
        f"start {name}",
    ])
    start = time.monotonic()
    virsh(uri, script)
    took = time.monotonic() - start
    running(uri, name)
    virsh(uri, "destroy", name, check=False)
    virsh(uri, "undefine", name, check=False)
    for v in (f"{name}.qcow2", f"{name}-seed.iso", f"{name}-console.log"):
        virsh(uri, "vol-delete", "--pool", pool, v, check=False)
    os.remove(path)
    return took


def main():
    base, token, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    local_uri = "qemu:///system"
    host2 = SecondHost()
    try:
        s, a = api(base, token, "POST", "/plans", {"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 3})
        assert s == 201, a
        s, hosts = api(base, token, "GET", "/hosts")
        local = hosts[0]
        api(base, token, "PATCH", f"/hosts/{local['id']}", {"labels": ["near"]})
        s, h2 = api(base, token, "POST", "/hosts", {"libvirt_uri": host2.uri, "name": "host2", "domain_type": "qemu",
                                                  "storage_path": host2.pool_path, "labels": ["far"],
                                                  "forward_ports": "38600-38699"})
        assert s == 201, h2
        # One create on each host first: the image's base goes to each host once, not timed.
        for label in ("near", "far"):
            _, vm = carve_create(base, token, f"warm-{label}", label)
            api(base, token, "DELETE", f"/vms/{vm}")
        times = {k: [] for k in ("carve local", "carve remote", "virsh local", "virsh remote")}
        for i in range(rounds):
            t, vm_near = carve_create(base, token, f"near{i}", "near")
            times["carve local"].append(t)
            t, vm_far = carve_create(base, token, f"far{i}", "far")
            times["carve remote"].append(t)
            for uri, pool, pool_dir, vm, key in (
                    (local_uri, local["storage_pool"], local["storage_path"], vm_near, "virsh local"),
                    (host2.uri, "carve", host2.pool_path, vm_far, "virsh remote")):
                xml_text = virsh(uri, "dumpxml", f"carve-{vm}").stdout
                disk_xml = ET.fromstring(virsh(uri, "vol-dumpxml", "--pool", pool, f"{vm}.qcow2").stdout)
                base_path = disk_xml.find("./backingStore/path").text
                seed_file = os.path.join(tempfile.gettempdir(), f"seed-{os.getpid()}.iso")
                virsh(uri, "vol-download", "--pool", pool, f"{vm}-seed.iso", seed_file)
                times[key].append(raw_create(uri, pool, pool_dir, xml_text, f"{key.split()[1]}{i}", base_path,
                                             seed_file))
                os.remove(seed_file)
            for vm in (vm_near, vm_far):
                s, op = api(base, token, "DELETE", f"/vms/{vm}")
                wait_op(base, token, op["id"])
        print(f"== provisioning to running, {rounds} rounds (median)")
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"   {k:13} {v * 1000:8.0f} ms   (all: {', '.join(f'{x * 1000:.0f}' for x in times[k])})")
        for where in ("local", "remote"):
            over = med[f"carve {where}"] - med[f"virsh {where}"]
            ratio = med[f"carve {where}"] / med[f"virsh {where}"]
            ok = over <= 0.05 or ratio <= 1.10
            print(f"   carve's overhead on the {where} host: {over * 1000:+.0f} ms, ratio {ratio:.2f} "
                  f"(target: at most 10 % or 50 ms: {'met' if ok else 'MISSED'})")
        print(f"   remote against local (carve): {med['carve remote'] / med['carve local']:.2f}")

        # Evacuation of a disk with 1 GiB written, against virsh vol-download | vol-upload.
        _, vm = carve_create(base, token, "big", "far")
        s, op = api(base, token, "POST", f"/vms/{vm}/actions", {"action": "force_stop"})
        wait_op(base, token, op["id"])
        disk = os.path.join(host2.pool_path, f"{vm}.qcow2")
        subprocess.run(["qemu-io", "-c", "write -P 0xab 1G 1G", disk], check=True, capture_output=True)
        length = os.path.getsize(disk)
        local_pool = local["storage_pool"]
        raw = f"bench-copy-{os.getpid()}.qcow2"
        start = time.monotonic()
        virsh(local_uri, "vol-create-as", local_pool, raw, str(length), "--format", "raw")
        pipe = subprocess.run(
            f"virsh -q -c '{host2.uri}' vol-download --pool carve {vm}.qcow2 /dev/stdout | "
            f"virsh -q -c {local_uri} vol-upload --pool {local_pool} {raw} /dev/stdin",
            shell=True, capture_output=True, text=True)
        virsh_copy = time.monotonic() - start
        assert pipe.returncode == 0, pipe.stderr
        virsh(local_uri, "vol-delete", "--pool", local_pool, raw, check=False)
        api(base, token, "PATCH", f"/hosts/{h2['id']}", {"state": "maintenance"})
        start = time.monotonic()
        s, ev = api(base, token, "POST", f"/hosts/{h2['id']}/evacuate")
        assert s == 202 and len(ev["moves"]) == 1, ev
        wait_op(base, token, ev["moves"][0]["id"])
        carve_move = time.monotonic() - start
        print(f"== evacuating a disk with 1 GiB written ({length / 2**30:.2f} GiB file)")
        print(f"   carve evacuate (stopped VM, copy, define): {carve_move:6.2f} s")
        print(f"   virsh vol-download | vol-upload (copy only): {virsh_copy:6.2f} s")
        print(f"   ratio carve / virsh: {carve_move / virsh_copy:.2f}")
        s, op = api(base, token, "DELETE", f"/vms/{vm}")
        wait_op(base, token, op["id"])
    finally:
        host2.close()


if __name__ == "__main__":
    main()
