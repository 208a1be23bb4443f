#!/usr/bin/env python3
"""POST /vms to SSH for a Debian image (debian-12 unless told) against virsh define + start of the same image (bench/debian.sh)."""
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

VIRSH = ["virsh", "-q", "-c", "qemu:///system"]


def api(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + "/api/v1" + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ssh_ok(key, port):
    r = subprocess.run(["ssh", "-p", str(port), "-i", key, "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                        "-o", "LogLevel=ERROR", "root@127.0.0.1", "true"], capture_output=True, timeout=60)
    return r.returncode == 0


def until_ssh(key, port, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ssh_ok(key, port):
            return
        time.sleep(0.5)
    raise SystemExit("ssh never answered")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def by_hand(xml_text, work, i, key_pub, image):
    """Defines and starts carve's domain XML under a new name with fresh files; returns its ssh port."""
    d = os.path.join(work, f"raw{i}")
    os.makedirs(d, exist_ok=True)
    disk, seed, log = (os.path.join(d, n) for n in ("disk.qcow2", "seed.iso", "console.log"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image["disk"], disk, "3G"],
                   check=True)
    with open(os.path.join(d, "meta-data"), "w") as f:
        f.write(f'instance-id: "raw{i}"\nlocal-hostname: "raw{i}"\npublic-keys:\n  - "{key_pub}"\n')
    open(os.path.join(d, "user-data"), "w").close()
    open(os.path.join(d, "vendor-data"), "w").close()
    subprocess.run(["genisoimage", "-quiet", "-V", "cidata", "-r", "-J", "-o", seed,
                    os.path.join(d, "meta-data"), os.path.join(d, "user-data"), os.path.join(d, "vendor-data")],
                   check=True)
    os.chmod(d, 0o755)
    for p in (disk, seed):
        os.chmod(p, 0o644)
    root = ET.fromstring(xml_text)
    name = f"bench-raw-{os.getpid()}-{i}"
    root.find("name").text = name
    for tag in ("uuid", "metadata"):
        el = root.find(tag)
        if el is not None:
            root.remove(el)
    disks = root.findall("./devices/disk")
    disks[0].find("source").set("file", disk)
    disks[1].find("source").set("file", seed)
    for el in root.iter("log"):
        el.set("file", log)
    port = free_port()
    for rng in root.iter("range"):
        rng.set("start", str(port))
    for iface in root.findall("./devices/interface"):
        mac = iface.find("mac")
        if mac is not None:
            iface.remove(mac)
    path = os.path.join(d, "domain.xml")
    ET.ElementTree(root).write(path)
    subprocess.run(VIRSH + ["define", path], check=True, capture_output=True)
    subprocess.run(VIRSH + ["start", name], check=True, capture_output=True)
    return name, port


def run(base, token, work, rounds):
    key = os.path.join(work, "key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    pub = open(key + ".pub").read().strip()
    api(base, token, "POST", "/plans", {"name": "deb", "vcpus": 1, "memory_mib": 512, "disk_gib": 3})
    status, images = api(base, token, "GET", "/images")
    name = os.environ.get("BENCH_IMAGE", "debian-12")
    img = next(i for i in images if i["name"] == name)
    manifest = os.path.join(os.environ["CARVE_IMAGE_DIR"], name)
    image = {"disk": os.path.join(manifest, "disk.qcow2")}
    carve_times, raw_times = [], []
    for i in range(rounds):
        t0 = time.monotonic()
        status, made = api(base, token, "POST", "/vms", {"name": f"deb{i}", "plan": "deb", "image": img["name"],
                                                     "ssh_keys": [pub], "ports": [22]})
        assert status == 202, made
        vm = made["vm"]["id"]
        port = None
        while port is None:
            v = api(base, token, "GET", f"/vms/{vm}")[1]
            port = (v.get("forwards") or [{}])[0].get("host_port")
            time.sleep(0.05)
        until_ssh(key, port)
        carve_times.append(time.monotonic() - t0)
        xml_text = subprocess.run(VIRSH + ["dumpxml", "--inactive", f"carve-{vm}"], check=True, capture_output=True,
                                  text=True).stdout
        api(base, token, "DELETE", f"/vms/{vm}")
        t0 = time.monotonic()
        name, rport = by_hand(xml_text, work, i, pub, image)
        until_ssh(key, rport)
        raw_times.append(time.monotonic() - t0)
        subprocess.run(VIRSH + ["destroy", name], capture_output=True)
        subprocess.run(VIRSH + ["undefine", name], capture_output=True)
        print(f"round {i + 1}: carve POST /vms to ssh {carve_times[-1]:.1f} s, virsh define+start to ssh "
              f"{raw_times[-1]:.1f} s", flush=True)
    mc, mr = statistics.median(carve_times), statistics.median(raw_times)
    print(f"median over {rounds} rounds: carve {mc:.1f} s, by hand {mr:.1f} s, ratio {mc / mr:.2f}, "
          f"carve adds {mc - mr:+.1f} s")


def cleanup(base, token, work):
    for line in subprocess.run(VIRSH + ["list", "--all", "--name"], capture_output=True, text=True).stdout.split():
        if line.startswith(f"bench-raw-"):
            subprocess.run(VIRSH + ["destroy", line], capture_output=True)
            subprocess.run(VIRSH + ["undefine", line], capture_output=True)
    status, vms = api(base, token, "GET", "/vms")
    for v in vms if status == 200 else []:
        api(base, token, "DELETE", f"/vms/{v['id']}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, vms = api(base, token, "GET", "/vms")
        if status == 200 and not vms:
            return
        time.sleep(1)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        cleanup(sys.argv[2], sys.argv[3], sys.argv[4])
