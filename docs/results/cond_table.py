#!/usr/bin/env python3
"""Tables and figures of issue #11 (docs/RESULTS.md) from the evaluate jobs of cond_eval.sh and
cond_stage3.sh. Usage: cond_table.py OUTDIR [FIGDIR]. Prints markdown; with FIGDIR and matplotlib,
writes loss_curves.png and guidance.png there. Every number is mean ± sample std over the sampling
seeds 1, 2, 3 (same noise for every model), and paired differences use the same seed."""
import json, os, statistics, sys

OUT = sys.argv[1]
FIG = sys.argv[2] if len(sys.argv) > 2 else None
SEEDS = [1, 2, 3]

def load(name):
    p = os.path.join(OUT, name, "result.json")
    return json.load(open(p)) if os.path.exists(p) else None

def solver_name(s):
    return s["kind"] + ("-%d" % s["steps"] if "steps" in s else "")

def rows(prefix):
    """{solver: {metric: [per seed]}} and straightness per seed for evaluations prefix_s<seed>."""
    out, straight = {}, []
    for seed in SEEDS:
        r = load("%s_s%d" % (prefix, seed))
        if r is None:
            continue
        ie = r["imageEvaluation"]
        straight.append(ie["straightness"])
        for row in ie["rows"]:
            m = out.setdefault(solver_name(row["solver"]), {})
            for k in ["frechetDistance", "kid", "precision", "recall", "density", "coverage"]:
                m.setdefault(k, []).append(row["metrics"][k] if k != "kid" else row["metrics"]["kid"]["mean"])
            m.setdefault("classAccuracy", []).append(row.get("classAccuracy"))
    return out, straight

def ms(xs, fmt="%.2f"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt % xs[0]
    return (fmt + " ± " + fmt) % (statistics.mean(xs), statistics.stdev(xs))

def paired(a, b):
    """Mean and std of per-seed differences a − b, and how many seeds have a < b."""
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2:
        return "–"
    return "%+.2f ± %.2f (%d/%d lower)" % (statistics.mean(d), statistics.stdev(d), sum(1 for x in d if x < 0), len(d))

floor = load("e_rf1_g1_s1")
if floor:
    ie = floor["imageEvaluation"]
    print("Evaluation classifier `clf_eval`: held-out accuracy %.4f; real-vs-real floor FD %.2f (n = %d)." % (
        ie.get("classifierTestAccuracy") or 0, ie["floor"]["frechetDistance"], ie["n"]))
    print()

# 1. Guidance trade-off of the teacher.
print("#### Guidance of the conditional 1-RF (Euler 50, n = 2000, seeds 1–3)\n")
print("| α | FD ↓ | class accuracy ↑ | precision | recall | KID ×10³ |")
print("|---|---|---|---|---|---|")
guide = {}
for g in ["0", "1", "1.5", "2", "4", "8", "16"]:
    r, _ = rows("e_rf1_g%s" % g)
    m = r.get("euler-50")
    if not m:
        continue
    guide[float(g)] = m
    print("| %s | %s | %s | %s | %s | %s |" % (g, ms(m["frechetDistance"]), ms(m["classAccuracy"], "%.3f"), ms(m["precision"], "%.3f"),
                                              ms(m["recall"], "%.3f"), ms([k * 1000 for k in m["kid"]])))
print()

# 2. The ablation and the reflow count.
cols = [("r2_base", "A: 2-RF from scratch, uniform t, L2"), ("r2_u", "+ U-shaped t (a = 4)"), ("r2_uh", "+ pseudo-Huber (c = 0.00054·d)"),
        ("r2_uhs", "(pseudo-Huber, c = 0.00054·√d instead)"), ("r2_uhp", "+ LPIPS-Huber-1/t"), ("r2_uhpi", "+ init from the teacher"),
        ("r2_g", "+ real-image inversion pairs (Config G)"), ("r2_if", "InstaFlow's 2-RF (init teacher, uniform t, L2)"), ("r3", "3-RF (reflow of the full recipe)")]
print("#### 2-rectified flow++ ablation (n = 2000, seeds 1–3; remix = rfpp's \"new\" update rule)\n")
print("| model | FD 1 NFE | FD 2 NFE (Euler) | FD 2 NFE (remix) | class acc. 1 NFE | precision / recall 1 NFE | straightness (per pixel) |")
print("|---|---|---|---|---|---|---|")
ab = {}
r1, s1 = rows("e_rf1_g1")
if r1:
    print("| 1-RF teacher (α = 1) | %s | %s | – | %s | %s / %s | %s |" % (ms(r1["euler-1"]["frechetDistance"]), ms(r1["euler-2"]["frechetDistance"]),
          ms(r1["euler-1"]["classAccuracy"], "%.3f"), ms(r1["euler-1"]["precision"], "%.3f"), ms(r1["euler-1"]["recall"], "%.3f"), ms(s1, "%.4f")))
for key, label in cols:
    r, st = rows("e_" + key)
    if not r:
        continue
    ab[key] = (r, st)
    print("| %s | %s | %s | %s | %s | %s / %s | %s |" % (label, ms(r["euler-1"]["frechetDistance"]), ms(r["euler-2"]["frechetDistance"]),
          ms(r["remix-2"]["frechetDistance"]), ms(r["euler-1"]["classAccuracy"], "%.3f"), ms(r["euler-1"]["precision"], "%.3f"),
          ms(r["euler-1"]["recall"], "%.3f"), ms(st, "%.4f")))
print()
print("Paired FD differences (column minus the previous step; per seed, same noise):\n")
steps = [("r2_u", "r2_base"), ("r2_uh", "r2_u"), ("r2_uhs", "r2_uh"), ("r2_uhp", "r2_uh"), ("r2_uhpi", "r2_uhp"), ("r2_g", "r2_uhpi"),
         ("r2_uhpi", "r2_base"), ("r3", "r2_uhpi"), ("r2_uhpi", "r2_if")]
print("| comparison | 1 NFE | 2 NFE (Euler) | 2 NFE: remix − Euler of the first |")
print("|---|---|---|---|")
for a, b in steps:
    if a in ab and b in ab:
        ra, rb = ab[a][0], ab[b][0]
        print("| %s − %s | %s | %s | %s |" % (a, b, paired(ra["euler-1"]["frechetDistance"], rb["euler-1"]["frechetDistance"]),
              paired(ra["euler-2"]["frechetDistance"], rb["euler-2"]["frechetDistance"]),
              paired(ra["remix-2"]["frechetDistance"], ra["euler-2"]["frechetDistance"])))
print()

# 2b. remix against Euler where they differ (3 and 4 NFE).
print("#### rfpp's \"new\" update rule (remix) against Euler at 3 and 4 NFE (FD, n = 2000, seeds 1–3)\n")
print("| model | Euler 3 | remix 3 | remix − Euler (paired) | Euler 4 | remix 4 | remix − Euler (paired) |")
print("|---|---|---|---|---|---|---|")
for key, label in cols:
    r, _ = rows("f_" + key)
    if not r or "remix-4" not in r:
        continue
    f = lambda k: r[k]["frechetDistance"]
    print("| %s | %s | %s | %s | %s | %s | %s |" % (label, ms(f("euler-3")), ms(f("remix-3")), paired(f("remix-3"), f("euler-3")),
          ms(f("euler-4")), ms(f("remix-4")), paired(f("remix-4"), f("euler-4"))))
print()

# 3. InstaFlow.
print("#### InstaFlow at CPU scale: one-step students (1 NFE, n = 2000, seeds 1–3)\n")
print("| student | FD ↓ | class accuracy ↑ | precision | recall |")
print("|---|---|---|---|---|")
inst = {}
for key, label in [("d_rf1", "from 1-RF pairs, L2 (8,000 steps)"), ("d_rf1_lp", "  … + LPIPS stage (1,000 steps)"),
                   ("d_if", "from 2-RF pairs, L2 (5,000 2-RF + 3,000 steps)"), ("d_if_lp", "  … + LPIPS stage (1,000 steps)")]:
    r, _ = rows("e_" + key)
    if not r:
        continue
    inst[key] = r["euler-1"]
    m = r["euler-1"]
    print("| %s | %s | %s | %s | %s |" % (label, ms(m["frechetDistance"]), ms(m["classAccuracy"], "%.3f"), ms(m["precision"], "%.3f"), ms(m["recall"], "%.3f")))
print()
for a, b in [("d_if", "d_rf1"), ("d_if_lp", "d_rf1_lp"), ("d_rf1_lp", "d_rf1"), ("d_if_lp", "d_if")]:
    if a in inst and b in inst:
        print("- FD %s − %s: %s" % (a, b, paired(inst[a]["frechetDistance"], inst[b]["frechetDistance"])))
if r1 and "r2_if" in ab:
    print("- straightness (per pixel, Euler 100, 256 trajectories, labels i mod 10, no guidance) of the 1-RF teacher: %s; of InstaFlow's 2-RF r2_if: %s; of the 2-RF from scratch r2_base: %s" % (
        ms(s1, "%.4f"), ms(ab["r2_if"][1], "%.4f"), ms(ab["r2_base"][1], "%.4f")))
# Training speed of the runs (one thread each, two jobs at a time).
print()
print("Training throughput (steps/s, 1 thread, batch 128, beside one other job):", ", ".join(
    "%s %.1f" % (k, load(k)["training"]["stepsPerSecond"]) for k in ["rf1", "r2_base", "r2_u", "r2_uh", "r2_uhs", "r2_uhp", "r2_uhpi", "r2_if", "r3", "r2_g", "d_rf1", "d_rf1_lp", "d_if", "d_if_lp"] if load(k)))
print()

# 4. Loss curves and the intersection argument.
curves = []
for name, label in [("e_rf1_g1_s1", "1-RF (independent coupling)"), ("e_r2_base_s1", "vanilla 2-RF (fresh teacher pairs)")]:
    r = load(name)
    if r and "lossCurve" in r:
        c = r["lossCurve"]
        curves.append((label, c))
        print("%s: endsOverMiddle %.2f; loss per bin (t: mean ± standard error): %s" % (label, c["endsOverMiddle"],
              ", ".join("%.3f: %.4f ± %.4f" % (b["t"], b["mean"], b["standardError"]) for b in c["bins"])))
        i = c.get("intersection")
        if i:
            print("  intersection: fresh noise ‖z‖/√d %.3f, lag-1 %.3f; crossing noise per t %s" % (
                i["fresh"]["normOverSqrtD"], i["fresh"]["lag1Autocorrelation"],
                ", ".join("t=%.2f: %.2f / %.2f" % (t, s["normOverSqrtD"], s["lag1Autocorrelation"]) for t, s in zip(i["times"], i["crossing"]))))
print()

if FIG:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(0)
    os.makedirs(FIG, exist_ok=True)
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4))
        axes = axes if len(curves) > 1 else [axes]
        for ax, (label, c) in zip(axes, curves):
            t = [b["t"] for b in c["bins"]]; m = [b["mean"] for b in c["bins"]]; e = [2 * b["standardError"] for b in c["bins"]]
            ax.errorbar(t, m, yerr=e, marker="o", ms=3, capsize=2)
            ax.set_xlabel("t (0 = noise, 1 = data)"); ax.set_ylabel("held-out loss (MSE per pixel)"); ax.set_title(label, fontsize=9)
            ax.set_ylim(bottom=0)
        fig.tight_layout(); fig.savefig(os.path.join(FIG, "loss_curves.png"), dpi=110)
    if guide:
        fig, ax = plt.subplots(figsize=(4.6, 3.4))
        gs = sorted(guide)
        fd = [statistics.mean(guide[g]["frechetDistance"]) for g in gs]
        acc = [statistics.mean(guide[g]["classAccuracy"]) for g in gs]
        ax.plot(acc, fd, "o-")
        for g, x, y in zip(gs, acc, fd):
            ax.annotate("α=%g" % g, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("class accuracy under clf_eval"); ax.set_ylabel("FD (clf_eval features)")
        ax.set_title("conditional 1-RF, Euler 50: guidance trade-off", fontsize=9)
        fig.tight_layout(); fig.savefig(os.path.join(FIG, "guidance.png"), dpi=110)
