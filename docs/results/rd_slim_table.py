#!/usr/bin/env python3
"""Tables of issue #12 (docs/RESULTS.md) from the evaluate jobs of rd_slim_eval.sh.
Usage: rd_slim_table.py rd|rdv|slim OUTDIR. Prints markdown. Every number is mean ± sample std over
the sampling seeds 1, 2, 3 (same noise for every model); paired differences use the same seed."""
import json, os, statistics, sys

WHICH, OUT = sys.argv[1], sys.argv[2]
SEEDS = [1, 2, 3]

def load(name):
    p = os.path.join(OUT, name, "result.json")
    return json.load(open(p)) if os.path.exists(p) else None

def solver_name(s):
    return s["kind"] + ("-%d" % s["steps"] if "steps" in s else "")

def evals(model):
    """{solver: {metric: [per seed]}}, straightness and first-order-ness per seed."""
    out, straight, first = {}, [], []
    for seed in SEEDS:
        r = load("e_%s_s%d" % (model, seed))
        if r is None:
            continue
        ie = r["imageEvaluation"]
        straight.append(ie["straightness"])
        if ie.get("firstOrderness") is not None:
            first.append(ie["firstOrderness"])
        for row in ie["rows"]:
            m = out.setdefault(solver_name(row["solver"]), {})
            for k in ["frechetDistance", "precision", "recall", "coverage"]:
                m.setdefault(k, []).append(row["metrics"][k])
            m.setdefault("kid", []).append(row["metrics"]["kid"]["mean"] * 1000)
    return out, straight, first

def ms(xs, fmt="%.1f"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt % xs[0]
    return (fmt + " ± " + fmt) % (statistics.mean(xs), statistics.stdev(xs))

def paired(a, b):
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2:
        return "–"
    return "%+.1f ± %.1f (%d/%d lower)" % (statistics.mean(d), statistics.stdev(d), sum(1 for x in d if x < 0), len(d))

def size(job):
    r = load(job)
    t = (r or {}).get("training") or {}
    return t.get("parameters"), t.get("macsPerSample")

first_eval = load("e_%s_s1" % ("t1" if WHICH == "slim" else "ddpm"))
if first_eval:
    ie = first_eval["imageEvaluation"]
    print("Evaluation classifier `clf_eval`: held-out accuracy %.4f; real-vs-real floor FD %.2f (n = %d).\n" % (
        ie.get("classifierTestAccuracy") or 0, ie["floor"]["frechetDistance"], ie["n"]))

if WHICH in ("rd", "rdv"):
    models = [("ddpm", "DDPM teacher (v, cosine β)"), ("rd_eps", "v-rectified (pseudo-Huber on x̂0, from teacher)"),
              ("rd_flow_s", "flow form, random init"), ("rd_ph2", "phased (v), 2 phases"),
              ("rd_ph4", "phased (v), 4 phases")] if WHICH == "rdv" else [("ddpm", "DDPM teacher (ε, linear β)"), ("rd_eps", "ε-rectified (pseudo-Huber on x̂0, from teacher)"),
              ("rd_eps_mse", "ε-rectified, squared error on ε"), ("rd_vpv", "VP v-prediction rectified"),
              ("rd_flow", "flow form (v = x1 − x0, from teacher's weights)"), ("rd_flow_s", "flow form, random init"),
              ("rd_ph2", "phased, 2 phases"), ("rd_ph4", "phased, 4 phases")]
    print("| model | solver | FD ↓ | KID ×10³ ↓ | precision | recall |")
    print("|---|---|---|---|---|---|")
    paths = {}
    for job, label in models:
        rows, straight, first = evals(job)
        paths[job] = (straight, first)
        for solver, m in rows.items():
            print("| %s | %s | %s | %s | %s | %s |" % (label, solver, ms(m["frechetDistance"]), ms(m["kid"]),
                                                     ms(m["precision"], "%.3f"), ms(m["recall"], "%.3f")))
    print()
    print("| model | first-order-ness E(ε̂ − ε*)² ↓ | x-space straightness per pixel |")
    print("|---|---|---|")
    for job, label in models:
        straight, first = paths[job]
        print("| %s | %s | %s |" % (label, ms(first, "%.4f"), ms(straight, "%.4f")))
    print()
    base, _, _ = evals("rd_eps")
    for fjob, flabel in [("rd_flow", "flow form from the teacher's weights"), ("rd_flow_s", "flow form from random weights")]:
        flow, _, _ = evals(fjob)
        for n in [1, 2, 4]:
            a, b = base.get("ddim-%d" % n), flow.get("euler-%d" % n)
            if a and b:
                print("- ε-rectified DDIM-%d − %s Euler-%d, FD: %s" % (n, flabel, n, paired(a["frechetDistance"], b["frechetDistance"])))
    t, _, _ = evals("ddpm")
    for n in [1, 2, 4]:
        a, b = base.get("ddim-%d" % n), t.get("ddim-%d" % n)
        if a and b:
            print("- ε-rectified − teacher at DDIM-%d, FD: %s" % (n, paired(a["frechetDistance"], b["frechetDistance"])))
    for ph in ["rd_ph2", "rd_ph4"]:
        p, _, _ = evals(ph)
        a, b = p.get("ddim-4"), base.get("ddim-4")
        if a and b:
            print("- %s − ε-rectified at DDIM-4, FD: %s" % (ph, paired(a["frechetDistance"], b["frechetDistance"])))
else:
    print("| model | parameters | MACs / NFE | 2-RF FD, Euler 1 | 2-RF FD, Euler 8 | one-step student FD ↓ | student precision | student recall | 2-RF straightness |")
    print("|---|---|---|---|---|---|---|---|---|")
    t, ts, _ = evals("t1")
    p, mac = size("t1")
    print("| teacher 1-RF (w 1024) | %s | %s | %s (1-RF) | %s (1-RF) | – | – | – | %s (1-RF) |" % (
        p, mac, ms(t["euler-1"]["frechetDistance"]), ms(t["euler-8"]["frechetDistance"]), ms(ts, "%.4f")))
    for w in [1024, 640, 384, 224]:
        d, _, _ = evals("d_w%d" % w)
        a, astraight, _ = evals("a_w%d" % w)
        p, mac = size("a_w%d" % w)
        m = d.get("euler-1")
        print("| SlimFlow w %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            w, p, mac, ms(a["euler-1"]["frechetDistance"]) if "euler-1" in a else "–",
            ms(a["euler-8"]["frechetDistance"]) if "euler-8" in a else "–",
            ms(m["frechetDistance"]) if m else "–", ms(m["precision"], "%.3f") if m else "–", ms(m["recall"], "%.3f") if m else "–",
            ms(astraight, "%.4f")))
    print()
    print("Teacher at more steps: " + ", ".join("%s FD %s" % (k, ms(v["frechetDistance"])) for k, v in t.items()))
    print()
    print("#### Annealing reflow ablation (w 384 2-RF)\n")
    print("| 2-RF | Euler 1 | Euler 2 | Euler 8 | straightness |")
    print("|---|---|---|---|---|")
    abl = {}
    for job, label in [("a_w384_none", "no annealing, no flip"), ("a_w384_flip", "flip only"),
                       ("a_w384_anneal", "annealing only"), ("a_w384", "annealing + flip")]:
        r, st, _ = evals(job)
        abl[job] = r
        cells = [ms(r[k]["frechetDistance"]) if k in r else "–" for k in ["euler-1", "euler-2", "euler-8"]]
        print("| %s | %s | %s |" % (label, " | ".join(cells), ms(st, "%.4f")))
    print()
    for job in ["a_w384_flip", "a_w384_anneal", "a_w384"]:
        for k in ["euler-1", "euler-8"]:
            if k in abl.get(job, {}) and k in abl.get("a_w384_none", {}):
                print("- %s − no annealing/flip, %s FD: %s" % (job, k, paired(abl[job][k]["frechetDistance"], abl["a_w384_none"][k]["frechetDistance"])))
    print()
    print("#### Distillation ablation (w 384 one-step students)\n")
    print("| student | FD 1 step | KID ×10³ | precision | recall |")
    print("|---|---|---|---|---|")
    dd = {}
    for job, label in [("d_w384_scratch", "L2, random init, no two-step"), ("d_w384_plain", "L2, init from 2-RF, no two-step"),
                       ("d_w384", "L2, init from 2-RF, + two-step term")]:
        r, _, _ = evals(job)
        dd[job] = r
        if "euler-1" in r:
            m = r["euler-1"]
            print("| %s | %s | %s | %s | %s |" % (label, ms(m["frechetDistance"]), ms(m["kid"]), ms(m["precision"], "%.3f"), ms(m["recall"], "%.3f")))
    print()
    if "euler-1" in dd.get("d_w384", {}) and "euler-1" in dd.get("d_w384_plain", {}):
        print("- two-step term: %s" % paired(dd["d_w384"]["euler-1"]["frechetDistance"], dd["d_w384_plain"]["euler-1"]["frechetDistance"]))
    print()
    print("#### Straightness against student size (annealed 2-RFs, per pixel, 100 Euler steps)\n")
    for w in [1024, 640, 384, 224]:
        _, st, _ = evals("a_w%d" % w)
        p, _ = size("a_w%d" % w)
        print("- w %d (%s parameters): %s" % (w, p, ms(st, "%.4f")))
