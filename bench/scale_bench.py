#!/usr/bin/env python3
"""Scale-up join time against plain create-to-HTTP time (see bench/scale.sh)."""
import json
import statistics
import sys
import time
import urllib.error
import urllib.request

USER_DATA = """#!/bin/sh
mkdir -p /srv/www
echo "hello from $(hostname)" > /srv/www/index.html
printf '#!/bin/sh\\nhttpd -p 80 -h /srv/www\\n' > /etc/rc.local
chmod +x /etc/rc.local
"""


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


def get(url):
    # A short timeout: passt accepts on the forward before the guest listens, and a long wait
    # there would count against the plain VM.
    try:
        with urllib.request.urlopen(url, timeout=0.3) as r:
            return r.status, r.read().decode()
    except Exception as e:  # refused, reset, timeout, 503
        return 0, str(e)


def until(what, check, timeout=300, every=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def group(desired):
    return {"template": {"plan": "small", "image": "tiny", "port": 80, "user_data": USER_DATA},
            "min": 0, "max": 10, "desired": desired}


def run(base, token, rounds):
    api(base, token, "POST", "/plans", {"name": "small", "vcpus": 1, "memory_mib": 128, "disk_gib": 1})
    status, pool = api(base, token, "POST", "/pools", {"name": "web", "protocol": "http",
                       "health_check": {"interval_s": 1, "timeout_s": 1, "rise": 1, "fall": 2}})
    assert status == 201, pool
    pool_url = f"http://{pool['listen']}/"
    gpath = f"/pools/{pool['id']}/scale-group"
    status, g = api(base, token, "PUT", gpath, group(1))
    assert status == 201, g
    until("the first member", lambda: get(pool_url)[0] == 200)
    plain, joins = [], []
    for i in range(rounds):
        # A plain VM: POST /vms until its forward answers.
        t0 = time.monotonic()
        status, made = api(base, token, "POST", "/vms", {"name": f"plain-{i}", "plan": "small", "image": "tiny",
                                                     "ports": [80], "user_data": USER_DATA})
        assert status == 202, made
        vm = made["vm"]["id"]
        fwd = until("the plain VM's forward", lambda: next(
            (f for f in (api(base, token, "GET", f"/vms/{vm}")[1].get("forwards") or [])), None), every=0.05)
        url = f"http://{fwd['host_address']}:{fwd['host_port']}/"
        until("the plain VM's HTTP", lambda: get(url)[0] == 200)
        plain.append(time.monotonic() - t0)
        api(base, token, "DELETE", f"/vms/{vm}")
        # The group: desired + 1 until the pool sends a request to the new member.
        want = i + 2
        t0 = time.monotonic()
        status, g = api(base, token, "PUT", gpath, group(want))
        assert status == 200, g
        name = f"web-{want}"
        until(f"{name} taking traffic", lambda: f"from {name}" in get(pool_url)[1], every=0.01)
        joins.append(time.monotonic() - t0)
        print(f"round {i + 1}: plain VM create-to-HTTP {plain[-1]:.2f} s, scale-up to traffic {joins[-1]:.2f} s",
              flush=True)
    mp, mj = statistics.median(plain), statistics.median(joins)
    print(f"median over {rounds} rounds: plain {mp:.2f} s, scale-up {mj:.2f} s, "
          f"ratio {mj / mp:.2f}, scale-up adds {mj - mp:+.2f} s")


def cleanup(base, token):
    status, pools = api(base, token, "GET", "/pools")
    if status != 200:
        return
    for p in pools:
        api(base, token, "DELETE", f"/pools/{p['id']}/scale-group")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, vms = api(base, token, "GET", "/vms")
        if status == 200 and not vms:
            return
        for v in vms or []:
            if v.get("name", "").startswith("plain-"):
                api(base, token, "DELETE", f"/vms/{v['id']}")
        time.sleep(1)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        cleanup(sys.argv[2], sys.argv[3])
