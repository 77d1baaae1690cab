#!/usr/bin/env python3
"""Tables and figures of docs/RESULTS.md's pruning section (issue #10) from the job directories
of prune_classifiers.sh and prune_flows.sh.
Usage: prune_table.py CLS_DIR FLOW_DIR FIGDIR   (figures need matplotlib; tables print as Markdown)"""
import json, math, os, statistics, sys

cls_dir, flow_dir, fig_dir = sys.argv[1], sys.argv[2], sys.argv[3]

def load(d, name):
    p = os.path.join(d, name, "result.json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["pruning"]

def ms(xs, fmt="{:.2f}", scale=1.0):
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return (fmt + " ± " + fmt.replace("+", "")).format(statistics.mean(xs), statistics.stdev(xs))

SEEDS = [1, 2, 3, 4, 5]
print("## Classifiers\n")
runs = {}
for net in ["mlp", "lenet"]:
    for scope in ["global", "layerwise"]:
        for ap in ["off", "on"]:
            for s in SEEDS:
                r = load(cls_dir, f"p_{net}_{scope}_{ap}_{s}")
                if r:
                    runs[(net, scope, ap, s)] = r
show = [0, 3, 7, 10, 13, 14]
for net in ["mlp", "lenet"]:
    print(f"### {net}: test accuracy (%) and overall DNR against sparsity, mean ± std over seeds\n")
    seeds_any = [s for s in SEEDS if (net, "global", "off", s) in runs]
    if not seeds_any:
        continue
    sp = [runs[(net, "global", "off", seeds_any[0])]["cycles"][c]["sparsity"] for c in show]
    print("| arm | seeds | " + " | ".join(f"{100*x:.1f} %" for x in sp) + " |")
    print("|---|---|" + "---|" * len(show))
    for scope in ["global", "layerwise"]:
        for ap in ["off", "on"]:
            rs = [runs[(net, scope, ap, s)] for s in SEEDS if (net, scope, ap, s) in runs]
            if not rs:
                continue
            acc = [ms([r["cycles"][c]["quality"]["testAccuracy"] for r in rs if len(r["cycles"]) > c], "{:.1f}", 100) for c in show]
            dnr = [ms([r["cycles"][c]["dnr"]["overall"] for r in rs if len(r["cycles"]) > c], "{:.3f}") for c in show]
            print(f"| {scope} AP {ap}: accuracy | {len(rs)} | " + " | ".join(acc) + " |")
            print(f"| {scope} AP {ap}: DNR | {len(rs)} | " + " | ".join(dnr) + " |")
    print()
    print(f"Paired effect of AP (on − off, same seed), accuracy in points at each sparsity; wins = seeds where AP is better:\n")
    print("| scope | " + " | ".join(f"{100*x:.1f} %" for x in sp) + " |")
    print("|---|" + "---|" * len(show))
    for scope in ["global", "layerwise"]:
        cells = []
        for c in show:
            d = [runs[(net, scope, "on", s)]["cycles"][c]["quality"]["testAccuracy"] - runs[(net, scope, "off", s)]["cycles"][c]["quality"]["testAccuracy"]
                 for s in SEEDS if (net, scope, "on", s) in runs and (net, scope, "off", s) in runs]
            if d:
                cells.append(ms(d, "{:+.2f}", 100) + f" ({sum(1 for x in d if x > 0)}/{len(d)})")
            else:
                cells.append("–")
        print(f"| {scope} | " + " | ".join(cells) + " |")
    print()
    # Claim 1: DNR against sparsity (Spearman over all cycles of all runs of this net).
    def rank(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for k, i in enumerate(order):
            r[i] = k
        return r
    for scope in ["global", "layerwise"]:
        for ap in ["off", "on"]:
            xs, ys = [], []
            for s in SEEDS:
                r = runs.get((net, scope, ap, s))
                if r:
                    for c in r["cycles"]:
                        xs.append(c["sparsity"]); ys.append(c["dnr"]["overall"])
            if len(xs) > 3:
                rx, ry = rank(xs), rank(ys)
                mx, my = statistics.mean(rx), statistics.mean(ry)
                cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
                rho = cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
                print(f"- {net} {scope} AP {ap}: Spearman ρ(sparsity, DNR) = {rho:+.2f} over {len(xs)} (run, cycle) points")
    print()
    # Per-layer DNR at 0 and the last cycle (global, AP off).
    rs = [runs[(net, "global", "off", s)] for s in SEEDS if (net, "global", "off", s) in runs]
    if rs:
        layers = sorted(rs[0]["cycles"][0]["dnr"]["layers"].keys())
        print("| layer (global, AP off) | DNR dense | DNR at the last cycle | dead units dense | dead units last |")
        print("|---|---|---|---|---|")
        for l in layers:
            print(f"| {l} | {ms([r['cycles'][0]['dnr']['layers'][l] for r in rs], '{:.3f}')} | {ms([r['cycles'][-1]['dnr']['layers'][l] for r in rs], '{:.3f}')} | "
                  f"{ms([r['cycles'][0]['dnr']['deadUnits'][l] for r in rs], '{:.1f}')} of {rs[0]['cycles'][0]['dnr']['units'][l]} | {ms([r['cycles'][-1]['dnr']['deadUnits'][l] for r in rs], '{:.1f}')} |")
        print()

print("### AP ablations at the last cycle (global; seeds 1–3)\n")
print("| net | selection | accuracy (%) | DNR |")
print("|---|---|---|---|")
for net in ["mlp", "lenet"]:
    rows = [("off (no AP)", [load(cls_dir, f"p_{net}_global_off_{s}") for s in [1, 2, 3]]),
            ("movement (AP)", [load(cls_dir, f"p_{net}_global_on_{s}") for s in [1, 2, 3]])]
    for sel in ["random", "magnitude", "positive"]:
        rows.append((sel, [load(cls_dir, f"a_{net}_{sel}_{s}") for s in [1, 2, 3]]))
    for name, rs in rows:
        rs = [r for r in rs if r and r["complete"]]
        if not rs:
            continue
        print(f"| {net} | {name} | {ms([r['cycles'][-1]['quality']['testAccuracy'] for r in rs], '{:.1f}', 100)} | "
              f"{ms([r['cycles'][-1]['dnr']['overall'] for r in rs], '{:.3f}')} |")
print()

print("## Flows\n")
for tag, key, label in [("mo", "euler1.swd", "1-step sliced W2"), ("fm", "euler1.fd", "1-step FD")]:
    rs = {ap: [load(flow_dir, f"{tag}_imp_{ap}_{s}") for s in [1, 2, 3]] for ap in ["off", "on"]}
    rs = {k: [r for r in v if r] for k, v in rs.items()}
    if not rs["off"]:
        continue
    cyc = rs["off"][0]["cycles"]
    print(f"### {tag}: IMP with fine-tuning, {label} (lower is better) and DNR\n")
    print("| arm | " + " | ".join(f"{100*c['sparsity']:.0f} %" for c in cyc) + " |")
    print("|---|" + "---|" * len(cyc))
    for ap in ["off", "on"]:
        if not rs[ap]:
            continue
        fmt = "{:.3f}" if tag == "mo" else "{:.1f}"
        print(f"| AP {ap}: {label} ({len(rs[ap])} seeds) | " + " | ".join(ms([r["cycles"][i]["quality"].get(key) for r in rs[ap]], fmt) for i in range(len(cyc))) + " |")
        k10 = key.replace("euler1.", "euler10.")
        print(f"| AP {ap}: 10-step | " + " | ".join(ms([r["cycles"][i]["quality"].get(k10) for r in rs[ap]], fmt) for i in range(len(cyc))) + " |")
        print(f"| AP {ap}: DNR | " + " | ".join(ms([r["cycles"][i]["dnr"]["overall"] for r in rs[ap]], "{:.3f}") for i in range(len(cyc))) + " |")
    print()
    print(f"Structured ({tag}):\n")
    print("| units removed | parameters | dense ms | pruned ms | speed-up | " + label + " | DNR |")
    print("|---|---|---|---|---|---|---|")
    for sp in ["0.5", "0.8", "0.9"]:
        r = load(flow_dir, f"{tag}_str_{sp}")
        if not r:
            continue
        s = r["structured"]
        fmt = "{:.3f}" if tag == "mo" else "{:.1f}"
        print(f"| {float(sp)*100:.0f} % | {s['parametersBefore']:,} → {s['parametersAfter']:,} | {1000*s['denseSeconds']:.2f} | {1000*s['prunedSeconds']:.2f} | "
              f"{s['speedup']:.2f}× | {fmt.format(r['cycles'][0]['quality'][key])} → {fmt.format(r['cycles'][1]['quality'][key])} | "
              f"{r['cycles'][0]['dnr']['overall']:.3f} → {r['cycles'][1]['dnr']['overall']:.3f} |")
    print()

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
os.makedirs(fig_dir, exist_ok=True)
fig, axes = plt.subplots(2, 2, figsize=(11, 8))
colors = {("global", "off"): "tab:blue", ("global", "on"): "tab:orange", ("layerwise", "off"): "tab:green", ("layerwise", "on"): "tab:red"}
for j, net in enumerate(["mlp", "lenet"]):
    for (scope, ap), col in colors.items():
        rs = [runs[(net, scope, ap, s)] for s in SEEDS if (net, scope, ap, s) in runs]
        if not rs:
            continue
        n = min(len(r["cycles"]) for r in rs)
        x = [100 * (1 - (1 - rs[0]["cycles"][i]["sparsity"])) for i in range(n)]
        for row, get in [(0, lambda c: 100 * c["quality"]["testAccuracy"]), (1, lambda c: c["dnr"]["overall"])]:
            m = [statistics.mean(get(r["cycles"][i]) for r in rs) for i in range(n)]
            sd = [statistics.stdev([get(r["cycles"][i]) for r in rs]) if len(rs) > 1 else 0 for i in range(n)]
            axes[row][j].errorbar(x, m, yerr=sd, color=col, marker="o", ms=3, capsize=2, label=f"{scope}, AP {ap}")
    axes[0][j].set_title(f"{net}: test accuracy")
    axes[1][j].set_title(f"{net}: dynamic dead-neuron rate")
    for row in range(2):
        axes[row][j].set_xlabel("sparsity of prunable weights (%)")
        axes[row][j].grid(alpha=0.3)
    axes[0][j].set_ylabel("accuracy (%)")
    axes[1][j].set_ylabel("DNR")
axes[0][0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(fig_dir, "prune_classifiers.png"), dpi=90)
