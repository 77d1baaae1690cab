#!/usr/bin/env python3
"""Side-by-side speed comparison of reflowd with its peers (docs/BENCHMARKS.md).

Alternates each reflowd benchmark with the matching peer command for --rounds rounds on the same
machine, records every JSON line (with the other processes' CPU load), and prints a summary of
medians and ratios as JSON. Peers: shared/peers/rf_torch.py, rf_jax.py and an sgemm probe.

usage: compare_peers.py --reflowd .build/release/reflowd --peers ../shared/peers \
           --python /path/to/venv/bin/python --sgemm /path/to/sgemm_shapes [--rounds 3] [--out FILE]
"""
import argparse, json, os, statistics, subprocess, sys, time


def busy():
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def run(cmd, env=None):
    """Runs cmd, returns (last JSON line on stdout, foreign load in cores)."""
    e = dict(os.environ, **(env or {}))
    b0, t0 = busy(), time.time()
    r0 = os.times()
    p = subprocess.run(cmd, capture_output=True, text=True, env=e)
    r1 = os.times()
    own = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    wall = time.time() - t0
    foreign = max(0.0, (busy() - b0 - own) / wall) if wall > 0 else 0.0
    if p.returncode != 0:
        sys.stderr.write(f"FAILED {cmd}: {p.stderr[-2000:]}\n")
        return None, foreign
    line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line), foreign


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reflowd", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--sgemm", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch_py, jax_py = os.path.join(a.peers, "rf_torch.py"), os.path.join(a.peers, "rf_jax.py")
    rows = []

    def rec(name, cmd, env=None):
        d, fl = run(cmd, env)
        rows.append({"name": name, "cmd": " ".join(cmd), "foreign_load": fl, "result": d})
        sys.stderr.write(f"{name}: foreign {fl:.2f}\n")
        return d

    wide = ["--width", "1024", "--depth", "4", "--batch", "1024", "--steps", "20", "--warmup", "3"]
    for r in range(a.rounds):
        rec("reflowd.toy", [a.reflowd, "bench", "toy", "--threads", "2"])
        rec("torch.toy", [a.python, torch_py, "toy", "--threads", "2"])
        rec("jax.toy", [a.python, jax_py])
        rec("reflowd.wide", [a.reflowd, "bench", "toy", "--threads", "2", *wide, "--sample-steps", "1", "--sample-reps", "2"])
        rec("torch.wide", [a.python, torch_py, "toy", "--threads", "2", *wide, "--sample-steps", "1", "--sample-reps", "2"])
        for op in ("NT", "NN", "TN"):
            rec(f"sgemm.1024.{op}", [a.sgemm, "1024", "1024", "1024", op[0], op[1], "0.1", "7"], {"OPENBLAS_NUM_THREADS": "2"})
            rec(f"reflowd.gemm.1024.{op}", [a.reflowd, "bench", "gemm", "--threads", "2", "--m", "1024", "--n", "1024",
                                            "--k", "1024", "--op", op])

    def med(name, path):
        vals = []
        for row in rows:
            if row["name"] == name and row["result"] is not None:
                v = row["result"]
                for k in path:
                    v = v[k]
                vals.append(v)
        return statistics.median(vals) if vals else float("nan"), vals

    summary = {}
    for key, name, path in [
        ("reflowd_toy_step_ms", "reflowd.toy", ["train_step", "median_ms"]),
        ("torch_toy_step_ms", "torch.toy", ["train_step", "median_ms"]),
        ("jax_toy_step_ms", "jax.toy", ["train_step", "median_ms"]),
        ("reflowd_euler100_ms", "reflowd.toy", ["sample", "euler100", "median_ms"]),
        ("torch_euler100_ms", "torch.toy", ["sample", "euler100", "median_ms"]),
        ("jax_euler100_ms", "jax.toy", ["sample", "euler100", "median_ms"]),
        ("reflowd_euler1_ms", "reflowd.toy", ["sample", "euler1", "median_ms"]),
        ("torch_euler1_ms", "torch.toy", ["sample", "euler1", "median_ms"]),
        ("jax_euler1_ms", "jax.toy", ["sample", "euler1", "median_ms"]),
        ("reflowd_wide_step_ms", "reflowd.wide", ["train_step", "median_ms"]),
        ("torch_wide_step_ms", "torch.wide", ["train_step", "median_ms"]),
        ("reflowd_wide_gemm_gflops", "reflowd.wide", ["train_step", "gemm_gflops_at_median"]),
        ("sgemm_1024_NT_gflops", "sgemm.1024.NT", ["median_gflops"]),
        ("sgemm_1024_NN_gflops", "sgemm.1024.NN", ["median_gflops"]),
        ("sgemm_1024_TN_gflops", "sgemm.1024.TN", ["median_gflops"]),
        ("reflowd_gemm_1024_NT_gflops", "reflowd.gemm.1024.NT", ["median_gflops"]),
        ("reflowd_gemm_1024_NN_gflops", "reflowd.gemm.1024.NN", ["median_gflops"]),
        ("reflowd_gemm_1024_TN_gflops", "reflowd.gemm.1024.TN", ["median_gflops"]),
    ]:
        m, vals = med(name, path)
        summary[key] = {"median": m, "runs": vals}
    s = {k: v["median"] for k, v in summary.items()}
    # The wide step's GEMMs are 1/3 NT (forward), 1/3 NN (dX), 1/3 TN (dW) by FLOPs:
    # the sgemm reference throughput is their FLOP-weighted harmonic mean.
    sg = 3 / (1 / s["sgemm_1024_NT_gflops"] + 1 / s["sgemm_1024_NN_gflops"] + 1 / s["sgemm_1024_TN_gflops"])
    ratios = {
        "toy_step_vs_torch": s["reflowd_toy_step_ms"] / s["torch_toy_step_ms"],
        "toy_step_vs_jax": s["reflowd_toy_step_ms"] / s["jax_toy_step_ms"],
        "euler100_vs_jax": s["reflowd_euler100_ms"] / s["jax_euler100_ms"],
        "euler100_vs_torch": s["reflowd_euler100_ms"] / s["torch_euler100_ms"],
        "wide_step_vs_torch": s["reflowd_wide_step_ms"] / s["torch_wide_step_ms"],
        "wide_gemm_fraction_of_sgemm": s["reflowd_wide_gemm_gflops"] / sg,
        "sgemm_reference_gflops": sg,
    }
    loads = [r["foreign_load"] for r in rows]
    out = {"summary": summary, "ratios": ratios, "foreign_load_median": statistics.median(loads),
           "foreign_load_max": max(loads), "rows": rows}
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(json.dumps({"ratios": ratios, "medians": s, "foreign_load_median": statistics.median(loads),
                      "foreign_load_max": max(loads)}, indent=1))


if __name__ == "__main__":
    main()
