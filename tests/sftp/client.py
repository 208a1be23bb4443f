#!/usr/bin/env python3
"""A scriptable paramiko SFTP client for carve's tests.

Usage: client.py PORT USER (--password PW | --key FILE) < script.json
The script is a list of operations; the answer (stdout) is a JSON list of results, one per
operation: {"ok": true, "value": ...} or {"ok": false, "error": "...", "errno": N}.
Paths may be given as "hex:..." to send raw bytes (NUL, invalid UTF-8).
"""
import base64
import json
import sys

import paramiko


def path(p):
    return bytes.fromhex(p[4:]) if isinstance(p, str) and p.startswith("hex:") else p


def run(sftp, transport, op):
    kind = op["op"]
    if kind == "put":
        return sftp.put(op["local"], path(op["remote"])).st_size
    if kind == "get":
        sftp.get(path(op["remote"]), op["local"])
        return True
    if kind == "write":
        with sftp.open(path(op["path"]), op.get("mode", "w")) as f:
            if "offset" in op:
                f.seek(op["offset"])
            f.write(base64.b64decode(op["data"]) if "data" in op else b"x" * op["size"])
        return True
    if kind == "read":
        with sftp.open(path(op["path"]), "r") as f:
            return base64.b64encode(f.read()).decode()
    if kind == "truncate":
        sftp.truncate(path(op["path"]), op["size"])
        return True
    if kind == "stat":
        st = sftp.stat(path(op["path"]))
        return {"size": st.st_size, "mode": st.st_mode}
    if kind == "lstat":
        st = sftp.lstat(path(op["path"]))
        return {"size": st.st_size, "mode": st.st_mode}
    if kind == "listdir":
        return sorted(sftp.listdir(path(op.get("path", "."))))
    if kind == "mkdir":
        sftp.mkdir(path(op["path"]))
        return True
    if kind == "rmdir":
        sftp.rmdir(path(op["path"]))
        return True
    if kind == "remove":
        sftp.remove(path(op["path"]))
        return True
    if kind == "rename":
        sftp.rename(path(op["from"]), path(op["to"]))
        return True
    if kind == "posix_rename":
        sftp.posix_rename(path(op["from"]), path(op["to"]))
        return True
    if kind == "symlink":
        sftp.symlink(op["target"], path(op["link"]))
        return True
    if kind == "readlink":
        return sftp.readlink(path(op["path"]))
    if kind == "normalize":
        return sftp.normalize(path(op["path"]))
    if kind == "chmod":
        sftp.chmod(path(op["path"]), op["mode"])
        return True
    if kind == "posix_rename_raw":
        # posix-rename@openssh.com sent as is (paramiko's own checks are skipped).
        sftp._request(paramiko.sftp.CMD_EXTENDED, "posix-rename@openssh.com", path(op["from"]), path(op["to"]))
        return True
    if kind == "host_key":
        return transport.get_remote_server_key().get_base64()
    if kind == "garbage_session":
        # A second SFTP channel that sends a packet claiming 16 MiB: the server must end that
        # channel only; the answer is whether it closed.
        chan = transport.open_session()
        chan.invoke_subsystem("sftp")
        chan.sendall(bytes.fromhex(op.get("hex", "01000000" + "02")))
        chan.settimeout(10)
        try:
            while chan.recv(65536):
                pass
        except Exception:
            return "open"
        return "closed" if chan.closed or chan.eof_received else "open"
    if kind == "sleep":
        import time
        time.sleep(op["seconds"])
        return True
    raise ValueError(f"unknown op {kind}")


def main():
    port, user = int(sys.argv[1]), sys.argv[2]
    auth = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        if "--key" in auth:
            transport.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(auth["--key"]))
        else:
            transport.connect(username=user, password=auth["--password"])
    except paramiko.AuthenticationException as e:
        print(json.dumps({"login": False, "error": str(e)}))
        return
    try:
        sftp = paramiko.SFTPClient.from_transport(transport)
    except Exception as e:  # the server refused the SFTP session (e.g. too many open)
        print(json.dumps({"login": True, "sftp": False, "error": str(e) or type(e).__name__}))
        transport.close()
        return
    results = []
    for op in json.load(sys.stdin):
        try:
            results.append({"ok": True, "value": run(sftp, transport, op)})
        except Exception as e:  # a closed connection raises EOFError or SSHException too
            results.append({"ok": False, "error": str(e) or type(e).__name__, "errno": getattr(e, "errno", None)})
    print(json.dumps({"login": True, "results": results}))
    sftp.close()
    transport.close()


if __name__ == "__main__":
    main()
