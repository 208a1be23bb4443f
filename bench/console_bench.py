"""Driven by bench/console.sh: logs in at a guest's serial console through carve's WebSocket,
times keystroke-to-echo round trips there and through `virsh console`, then measures the
resident memory of 200 idle consoles. Args: base admin_token vm domain carve_pid password."""
import json
import os
import pty
import select
import statistics
import subprocess
import sys
import time
import urllib.request

import websocket

base, token, vm, domain, carve_pid, password = sys.argv[1:7]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1000"))
IDLE = int(os.environ.get("BENCH_IDLE_CONSOLES", "200"))


def ticket(mode="write"):
    req = urllib.request.Request(
        f"{base}/api/v1/vms/{vm}/console/tickets",
        data=json.dumps({"mode": mode}).encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)["url"]


def open_console(mode="write"):
    return websocket.create_connection(base.replace("http://", "ws://") + ticket(mode), origin=base, timeout=30)


class Carve:
    """The guest's console through carve: send text, read binary output."""

    def __init__(self):
        self.ws = open_console()

    def send(self, data):
        self.ws.send(data.decode())

    def read(self, timeout):
        self.ws.settimeout(timeout)
        try:
            op, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return b""
        return data if op == websocket.ABNF.OPCODE_BINARY else b""

    def close(self):
        self.ws.close()


class Virsh:
    """The same console through `virsh console` on a pty."""

    def __init__(self):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvp("virsh", ["virsh", "-c", "qemu:///system", "console", domain, "--force"])

    def send(self, data):
        os.write(self.fd, data)

    def read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, 65536) if r else b""

    def close(self):
        os.write(self.fd, b"\x1d")  # ^] ends virsh console
        time.sleep(0.5)
        os.waitpid(self.pid, 0)


def expect(con, needle, timeout, seen=b""):
    end = time.time() + timeout
    while needle not in seen:
        if time.time() > end:
            raise SystemExit(f"no {needle!r} within {timeout} s; got {seen[-300:]!r}")
        seen += con.read(0.5)
    return seen


def log_in(con):
    """Logs in as root at the getty prompt (or finds the shell already logged in)."""
    seen = b""
    end = time.time() + 120
    while b"login: " not in seen[-200:] and b" # " not in seen[-50:]:
        if time.time() > end:
            raise SystemExit(f"no login prompt; got {seen[-300:]!r}")
        con.send(b"\r")
        seen += con.read(3)
    if b"login: " in seen[-200:]:
        con.send(b"root\r")
        expect(con, b"Password: ", 30)
        time.sleep(0.5)  # login turns echo off just after its prompt
        con.send(password.encode() + b"\r")
        expect(con, b" # ", 30)
    # Clear the line and settle.
    con.send(b"\r")
    time.sleep(1)
    while con.read(0.2):
        pass


def round_trips(con, rounds):
    times = []
    for i in range(rounds):
        key, echo = (b"a", b"a") if i % 2 == 0 else (b"\x7f", b"\x08")
        start = time.perf_counter()
        con.send(key)
        seen = b""
        while echo not in seen:
            chunk = con.read(5)
            if not chunk:
                raise SystemExit(f"no echo of {key!r} in round {i}")
            seen += chunk
        times.append((time.perf_counter() - start) * 1000)
    return times


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


results = {}
carve = Carve()
log_in(carve)
results["carve"] = round_trips(carve, ROUNDS)
carve.close()
time.sleep(1)
virsh = Virsh()
log_in(virsh)
results["virsh"] = round_trips(virsh, ROUNDS)
virsh.close()

print(f"== keystroke to echo, {ROUNDS} round trips each (a letter, then a backspace, at the guest's shell)")
for name, xs in results.items():
    print(f"   {name:6} p50 {statistics.median(xs):.2f} ms, p99 {pct(xs, 99):.2f} ms, max {max(xs):.2f} ms")
ratio = pct(results["carve"], 99) / pct(results["virsh"], 99)
print(f"   carve p99 / virsh p99 = {ratio:.2f} (target at most 1.2)")

time.sleep(1)
before = rss(carve_pid)
held = [open_console("read") for _ in range(IDLE)]
time.sleep(3)
after = rss(carve_pid)
print(f"== {IDLE} idle consoles: carve {before:.1f} MiB -> {after:.1f} MiB (+{after - before:.1f} MiB; target under 20)")
for ws in held:
    ws.close()
