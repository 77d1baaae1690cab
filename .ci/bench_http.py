#!/usr/bin/env python3
"""HTTP benchmarks of `reflowd serve`, side by side with Hummingbird's hb-hello (docs/BENCHMARKS.md).

Starts reflowd (and hb-hello when --hb is given) on free loopback ports and runs wrk (2 threads,
1 at 1 connection) for --duration seconds per point, alternating the servers:
  - GET /healthz on both, at 1, 16, 64 and 256 connections;
  - GET /v1/jobs/{id} (a finished job) on reflowd;
  - GET /v1/jobs/{id} at 64 connections while a training job runs (p99 target < 20 ms);
  - submit → running latency of 20 jobs with a free worker slot, from the jobs' transition
    timestamps (target < 5 ms).
Prints one JSON line per measurement, then a summary line with the ratios.

usage: bench_http.py --reflowd .build/release/reflowd [--hb path/to/HBHello] [--duration 10]
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime


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
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflowd", required=True)
    ap.add_argument("--hb", default=None)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="1,16,64,256")
    a = ap.parse_args()
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
        rate = get(base, f"/v1/jobs/{busy}")["progress"]["stepsPerSecond"]
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
