#!/usr/bin/env python3
"""HTTP benchmarks of `reflowd serve`, side by side with Hummingbird's hb-hello (docs/BENCHMARKS.md).

Starts reflowd (and hb-hello when --hb is given) on free loopback ports and runs wrk (2 threads,
1 at 1 connection) for --duration seconds per point, alternating the servers:
  - GET /healthz on both, at 1, 16, 64 and 256 connections;
  - GET /v1/jobs/{id} (a finished job) on reflowd;
  - GET /v1/jobs/{id} at 64 connections while a training job runs (p99 target < 20 ms);
  - submit → running latency of 20 jobs with a free worker slot, from the jobs' transition
    timestamps (target < 5 ms);
  - SSE delivery delay: --sse-clients event streams (default 1,000) spread over 20 jobs queued
    behind a blocker; once every stream is open the blocker is canceled and the jobs run. Each
    `log` event's arrival time on every stream is compared with the timestamp of its line in the
    job's log.txt (written just before the event is appended). The timestamps have millisecond
    resolution (truncated), so the figures are upper bounds, up to 1 ms high. Also reported: the
    server's thread count (/proc/PID/task) with every stream open.
Prints one JSON line per measurement, then a summary line with the ratios.

usage: bench_http.py --reflowd .build/release/reflowd [--hb path/to/HBHello] [--duration 10] [--only sse]
"""
import argparse, json, os, re, resource, selectors, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime, timezone


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_up(url, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def to_ms(v):
    m = re.match(r"([0-9.]+)(us|ms|s)$", v)
    if not m:
        return None
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]


def wrk(url, conns, duration):
    threads = 1 if conns < 2 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = {p: to_ms(re.search(rf"^\s+{p}%\s+(\S+)", out, re.M).group(1)) for p in ("50", "90", "99")}
    errors = re.search(r"Socket errors:.*|Non-2xx.*", out)
    return {"rps": rps, "p50_ms": lat["50"], "p90_ms": lat["90"], "p99_ms": lat["99"],
            "errors": errors.group(0) if errors else None}


def post(base, body):
    req = urllib.request.Request(base + "/v1/jobs", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(req).read())


def get(base, path):
    return json.loads(urllib.request.urlopen(base + path).read())


def wait_done(base, jid):
    while True:
        j = get(base, f"/v1/jobs/{jid}?wait=30")
        if j["done"]:
            return j


def ts(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def cancel(base, jid):
    urllib.request.urlopen(urllib.request.Request(base + f"/v1/jobs/{jid}/cancel", method="POST")).read()


def sse_delay(base, port, pid, clients=1000, jobs=20):
    """Append → delivery delay of SSE `log` events on `clients` open streams (see the module doc)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, clients + 256)), hard))
    blocker = post(base, {"type": "train", "input": {"steps": 10_000_000, "checkpointEvery": 0, "previewPoints": 0}})["id"]
    spec = {"type": "train", "input": {"steps": 20, "logEvery": 2, "model": {"width": 16, "depth": 2}, "previewPoints": 0}}
    ids = [post(base, spec)["id"] for _ in range(jobs)]
    sel = selectors.DefaultSelector()
    streams = []
    for k in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        jid = ids[k % jobs]
        s.sendall(f"GET /v1/jobs/{jid}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        s.setblocking(False)
        st = {"job": jid, "buf": b"", "arrivals": [], "done": False}
        streams.append(st)
        sel.register(s, selectors.EVENT_READ, st)

    def pump(timeout):
        for key, _ in sel.select(timeout):
            st = key.data
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            now = time.time()
            if not data:
                st["done"] = True
                sel.unregister(key.fileobj)
                key.fileobj.close()
                continue
            st["buf"] += data
            # Frames never straddle chunks (one send per event); chunk-size lines are skipped.
            while b"\n\n" in st["buf"]:
                frame, st["buf"] = st["buf"].split(b"\n\n", 1)
                lines = [l for l in frame.decode().split("\n") if l.startswith(("id: ", "event: ", "data: "))]
                f = {l.split(": ", 1)[0]: l.split(": ", 1)[1] for l in lines}
                if f.get("event") == "log":
                    st["arrivals"].append((json.loads(f["data"])["line"], now))
                if f.get("event") == "completed":
                    st["done"] = True

    # Every stream has its replay (the `queued` line) before the blocker goes.
    end = time.time() + 60
    while time.time() < end and not all(st["arrivals"] for st in streams):
        pump(0.1)
    opened = sum(1 for st in streams if st["arrivals"])
    threads = len(os.listdir(f"/proc/{pid}/task"))
    go = time.time()
    cancel(base, blocker)
    end = time.time() + 300
    while time.time() < end and not all(st["done"] for st in streams):
        pump(0.5)
    delays = []
    logs = {jid: urllib.request.urlopen(base + f"/v1/jobs/{jid}/logs").read().decode().splitlines() for jid in ids}
    for st in streams:
        stamped = [(ts(l.split(" ", 1)[0]), l.split(" ", 1)[1]) for l in logs[st["job"]]]
        for i, (line, arrived) in enumerate(st["arrivals"]):
            if i < len(stamped) and stamped[i][1] == line and stamped[i][0] >= go:
                delays.append((arrived - stamped[i][0]) * 1000)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    delays.sort()
    if not delays:
        return {"bench": "http", "server": "reflowd", "measure": "sse_delivery_ms", "error": "no live events", "streams": opened}
    return {"bench": "http", "server": "reflowd", "measure": "sse_delivery_ms", "median": round(delays[len(delays) // 2], 3),
            "p99": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3), "max": round(delays[-1], 3),
            "n": len(delays), "streams": opened, "server_threads_with_streams_open": threads,
            "note": "upper bound: log.txt timestamps are truncated to ms"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflowd", required=True)
    ap.add_argument("--hb", default=None)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="1,16,64,256")
    ap.add_argument("--sse-clients", type=int, default=1000)
    ap.add_argument("--only", choices=["sse"], default=None, help="run only the SSE delivery measurement")
    a = ap.parse_args()
    if a.only == "sse":
        data = tempfile.mkdtemp(prefix="reflowd-bench-")
        port = free_port()
        rf = subprocess.Popen([a.reflowd, "serve", "--port", str(port), "--data-dir", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}/healthz")
            print(json.dumps(sse_delay(f"http://127.0.0.1:{port}", port, rf.pid, a.sse_clients)), flush=True)
        finally:
            rf.send_signal(signal.SIGTERM)
            rf.wait(timeout=60)
            shutil.rmtree(data, ignore_errors=True)
        return
    if not shutil.which("wrk"):
        print(json.dumps({"bench": "http", "skipped": "wrk is not installed (apt-get install wrk)"}))
        return
    conns = [int(c) for c in a.conns.split(",")]
    data = tempfile.mkdtemp(prefix="reflowd-bench-")
    port = free_port()
    rf = subprocess.Popen([a.reflowd, "serve", "--port", str(port), "--data-dir", data],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hb = None
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        wait_up(base + "/healthz")
        if a.hb and os.path.exists(a.hb):
            hbport = free_port()
            hb = subprocess.Popen([a.hb, str(hbport)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_up(f"http://127.0.0.1:{hbport}/healthz")
        done = wait_done(base, post(base, {"type": "train", "input": {"steps": 50, "model": {"width": 32, "depth": 2}, "previewPoints": 0}})["id"])
        jid = done["id"]
        for c in conns:
            r = wrk(base + "/healthz", c, a.duration)
            results.append({"bench": "http", "server": "reflowd", "route": "/healthz", "conns": c, **r})
            print(json.dumps(results[-1]), flush=True)
            if hb:
                r = wrk(f"http://127.0.0.1:{hbport}/healthz", c, a.duration)
                results.append({"bench": "http", "server": "hummingbird", "route": "/healthz", "conns": c, **r})
                print(json.dumps(results[-1]), flush=True)
            r = wrk(base + f"/v1/jobs/{jid}", c, a.duration)
            results.append({"bench": "http", "server": "reflowd", "route": "/v1/jobs/{id}", "conns": c, **r})
            print(json.dumps(results[-1]), flush=True)
        # Status polls while a job trains (the 8 Gaussians default network, both compute threads).
        busy = post(base, {"type": "train", "input": {"steps": 10_000_000, "checkpointEvery": 0, "previewPoints": 0}})["id"]
        while get(base, f"/v1/jobs/{busy}")["state"] != "running":
            time.sleep(0.05)
        time.sleep(1)
        r = wrk(base + f"/v1/jobs/{jid}", 64, a.duration)
        rate = (get(base, f"/v1/jobs/{busy}").get("progress") or {}).get("stepsPerSecond")
        results.append({"bench": "http", "server": "reflowd", "route": "/v1/jobs/{id}", "conns": 64, "while_training": True,
                        "train_steps_per_s": rate, **r})
        print(json.dumps(results[-1]), flush=True)
        req = urllib.request.Request(base + f"/v1/jobs/{busy}/cancel", method="POST")
        urllib.request.urlopen(req).read()
        wait_done(base, busy)
        # Submit → running with a free slot.
        lat = []
        for _ in range(20):
            j = wait_done(base, post(base, {"type": "sample", "input": {"model": {"job": jid}, "n": 10, "solver": {"kind": "euler", "steps": 1}, "trajectories": 0}})["id"])
            t = {x["state"]: ts(x["at"]) for x in j["transitions"]}
            lat.append((t["running"] - t["queued"]) * 1000)
        lat.sort()
        results.append({"bench": "http", "server": "reflowd", "measure": "submit_to_running_ms", "median": lat[len(lat) // 2],
                        "max": lat[-1], "n": len(lat)})
        print(json.dumps(results[-1]), flush=True)
        results.append(sse_delay(base, port, rf.pid, a.sse_clients))
        print(json.dumps(results[-1]), flush=True)
    finally:
        rf.send_signal(signal.SIGTERM)
        rf.wait(timeout=60)
        if hb:
            hb.terminate()
            hb.wait()
        shutil.rmtree(data, ignore_errors=True)
    if hb:
        def pick(server, c):
            return next(r for r in results if r.get("server") == server and r.get("conns") == c and r.get("route") == "/healthz")
        summary = {"bench": "http-summary"}
        for c in conns:
            mine, theirs = pick("reflowd", c), pick("hummingbird", c)
            summary[f"rps_ratio_c{c}"] = round(mine["rps"] / theirs["rps"], 3)
            summary[f"p99_ms_c{c}"] = [mine["p99_ms"], theirs["p99_ms"]]
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
