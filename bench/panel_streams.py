#!/usr/bin/env python3
"""Holds N panel event streams (/events with a session cookie) open against carve, reports
carve's extra resident memory, then changes one VM's state through the API and reports how
long the change took to reach every stream (p50, p99, max)."""
import argparse
import asyncio
import json
import time
import urllib.request
from urllib.parse import urlparse


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def stream(host, port, cookie, ready, vm, arrivals, index):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head[:200]
    ready.release()
    buffer = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            text = frame.decode(errors="replace")
            if "event: vm" in text and vm in text and index not in arrivals:
                arrivals[index] = time.monotonic()
                writer.close()
                return


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base")
    p.add_argument("--cookie")
    p.add_argument("--token")
    p.add_argument("--vm")
    p.add_argument("--streams", type=int)
    p.add_argument("--pid", type=int)
    a = p.parse_args()
    url = urlparse(a.base)
    before = rss_kib(a.pid)
    ready = asyncio.Semaphore(0)
    arrivals = {}
    tasks = []
    for i in range(a.streams):
        tasks.append(asyncio.create_task(stream(url.hostname, url.port, a.cookie, ready, a.vm, arrivals, i)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    for _ in range(a.streams):
        await asyncio.wait_for(ready.acquire(), 60)
    await asyncio.sleep(2)
    held = rss_kib(a.pid)
    print(f"   carve resident memory: {before / 1024:.1f} MiB before, {held / 1024:.1f} MiB holding "
          f"{a.streams} streams: +{(held - before) / 1024:.1f} MiB (target: under 30 MiB: "
          f"{'met' if held - before < 30 * 1024 else 'MISSED'})")
    req = urllib.request.Request(f"{a.base}/api/v1/vms/{a.vm}/actions", method="POST",
                                 data=json.dumps({"action": "force_stop"}).encode(),
                                 headers={"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"})
    start = time.monotonic()
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    lat = sorted((t - start) * 1000 for t in arrivals.values())
    if len(lat) != a.streams:
        raise SystemExit(f"only {len(lat)} of {a.streams} streams saw the change")
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"   a VM state change reached all {len(lat)} streams: p50 {pick(0.5):.0f} ms, "
          f"p99 {pick(0.99):.0f} ms, max {lat[-1]:.0f} ms (target: p99 under 250 ms: "
          f"{'met' if pick(0.99) < 250 else 'MISSED'})")


asyncio.run(main())
