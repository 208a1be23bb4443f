#!/usr/bin/env python3
"""carve's SFTP server against OpenSSH internal-sftp, same client and cipher, same run."""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

CIPHER = "aes128-gcm@openssh.com"
USER = "sftpbench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_openssh(work, pubkey):
    """sshd on 127.0.0.1 with a chrooted internal-sftp user; returns (port, process, home)."""
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    # No password, but not locked: sshd (without PAM) refuses locked accounts even for keys.
    subprocess.run(["usermod", "-p", "*", USER], check=True)
    # Every directory above a chroot must be root's and not writable by others (so not /var/tmp).
    root = "/var/lib/carve-sftp-bench"
    shutil.rmtree(root, ignore_errors=True)
    home = os.path.join(root, "upload")
    os.makedirs(home, exist_ok=True)
    os.chmod(work, 0o755)
    os.chmod(root, 0o755)
    shutil.chown(home, USER, USER)
    keys = os.path.join(work, "authorized_keys")
    with open(keys, "w") as f:
        f.write(pubkey)
    os.chmod(keys, 0o644)
    hostkey = os.path.join(work, "ssh_host_ed25519_key")
    if not os.path.exists(hostkey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], check=True)
    port = free_port()
    config = os.path.join(work, "sshd_config")
    with open(config, "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {hostkey}
PidFile {work}/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {keys}
StrictModes no
Subsystem sftp internal-sftp
Match User {USER}
    ChrootDirectory {root}
    ForceCommand internal-sftp -d /upload
    AllowTcpForwarding no
    X11Forwarding no
""")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", config, "-E", os.path.join(work, "sshd.log")])
    wait_port(port)
    return port, proc, home


def start_carve(binary, work, pubkey):
    data = os.path.join(work, "carve")
    os.makedirs(data, exist_ok=True)
    os.chmod(data, 0o711)
    http, sftp = free_port(), free_port()
    env = dict(os.environ, CARVE_DATA_DIR=data, CARVE_LIBVIRT_URI="test:///default", CARVE_LIBVIRT_DOMAIN_TYPE="qemu",
               CARVE_HTTP_LISTEN=f"127.0.0.1:{http}", CARVE_SFTP_LISTEN=f"127.0.0.1:{sftp}",
               CARVE_IMAGE_DIR=os.environ.get("CARVE_IMAGE_DIR", "/var/lib/carve/images"),
               CARVE_QUOTA_MAX_SFTP_BYTES=str(100 << 30), CARVE_QUOTA_MAX_SFTP_FILES="1000000", RUST_LOG="warn")
    subprocess.run([binary, "admin", "create-user", "--email", "bench@localhost", "--role", "admin"],
                   input=b"bench password\n", env=env, check=True, capture_output=True)
    token = subprocess.run([binary, "admin", "create-token", "--email", "bench@localhost", "--name", "bench"],
                           env=env, check=True, capture_output=True).stdout.decode().strip()
    proc = subprocess.Popen([binary, "serve"], env=env, stderr=open(os.path.join(work, "carve.log"), "ab"))
    wait_port(http)
    req = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/sftp-accounts", method="POST",
                                 data=json.dumps({"username": USER, "public_keys": [pubkey.strip()]}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    account = json.load(urllib.request.urlopen(req))
    return sftp, proc, os.path.join(data, "sftp", account["id"])


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def sftp(port, key, cwd, batch):
    """Runs one OpenSSH sftp session; returns its wall time in seconds."""
    path = os.path.join(cwd, "batch")
    with open(path, "w") as f:
        f.write(batch)
    t = time.monotonic()
    r = subprocess.run(["sftp", "-q", "-b", path, "-i", key, "-P", str(port), "-c", CIPHER,
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                        "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", f"{USER}@127.0.0.1"],
                       cwd=cwd, capture_output=True, text=True)
    elapsed = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit(f"sftp failed on port {port}: {r.stdout}{r.stderr}")
    return elapsed


def clear(home):
    for name in os.listdir(home):
        p = os.path.join(home, name)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--carve", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="carve-sftp-bench-", dir="/var/tmp")
    key = os.path.join(work, "client_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    pubkey = open(key + ".pub").read()
    local = os.path.join(work, "local")
    os.makedirs(os.path.join(local, "small"))
    with open(os.path.join(local, "big.bin"), "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(1 << 20))
    for i in range(2000):
        with open(os.path.join(local, "small", f"f{i:04}.txt"), "wb") as f:
            f.write(os.urandom(4096))
    servers = {}
    procs = []
    try:
        port, proc, home = start_openssh(work, pubkey)
        servers["openssh"] = (port, home)
        procs.append(proc)
        port, proc, home = start_carve(args.carve, work, pubkey)
        servers["carve"] = (port, home)
        procs.append(proc)
        times = {name: {"upload": [], "download": [], "small": []} for name in servers}
        for _ in range(args.rounds):
            for name, (port, home) in servers.items():
                clear(home)
                times[name]["upload"].append(sftp(port, key, local, "put big.bin big.bin\n"))
                times[name]["download"].append(sftp(port, key, local, "get big.bin down.bin\n"))
                os.remove(os.path.join(local, "down.bin"))
                times[name]["small"].append(sftp(port, key, local, "mkdir small\nput small/* small/\n"))
                assert len(os.listdir(os.path.join(home, "small"))) == 2000, name
        size = args.size_mib * (1 << 20)
        result = {}
        for name, t in times.items():
            result[name] = {
                "upload_MiB_s": round(size / statistics.median(t["upload"]) / (1 << 20), 1),
                "download_MiB_s": round(size / statistics.median(t["download"]) / (1 << 20), 1),
                "small_files_s": round(statistics.median(t["small"]), 2),
            }
        c, o = result["carve"], result["openssh"]
        result["ratio_carve_to_openssh"] = {
            "upload": round(c["upload_MiB_s"] / o["upload_MiB_s"], 3),
            "download": round(c["download_MiB_s"] / o["download_MiB_s"], 3),
            "small_files_speed": round(o["small_files_s"] / c["small_files_s"], 3),
        }
        print(json.dumps(result, indent=2))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree("/var/lib/carve-sftp-bench", ignore_errors=True)


if __name__ == "__main__":
    main()
