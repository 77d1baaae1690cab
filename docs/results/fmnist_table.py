#!/usr/bin/env python3
"""Prints the docs/RESULTS.md tables of the Fashion-MNIST chain from fmnist_eval.sh's results.
Usage: fmnist_table.py OUTDIR"""
import json, statistics, sys

out = sys.argv[1]
seeds = [1, 2, 3]
label = {"rf1": "1-RF", "rf2": "2-RF", "distill": "2-RF + distill (k = 1)"}
rows, floors = {}, []
for m in ["rf1", "rf2", "distill"]:
    for s in seeds:
        ev = json.load(open(f"{out}/eval-{m}-{s}/result.json"))["imageEvaluation"]
        for r in ev["rows"]:
            key = (m, r["solver"]["steps"])
            rows.setdefault(key, []).append(r)
            floors.append(r["floor"]["frechetDistance"])
floor_fd = statistics.mean(floors)

def ms(v):
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

def ms3(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"

print("| model | Euler steps | FD | FD / floor | KID | precision | recall | density | coverage | memorised |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (m, n), rs in rows.items():
    fd = [r["metrics"]["frechetDistance"] for r in rs]
    kid = [r["metrics"]["kid"]["mean"] for r in rs]
    g = lambda k: [r["metrics"][k] for r in rs]
    # Samples closer to a training image than the 1 % quantile of held-out images are.
    mem = [r["memorisation"]["fractionBelowThreshold"] for r in rs]
    print(f"| {label[m]} | {n} | {ms(fd)} | {statistics.mean(fd) / floor_fd:.1f}× | {ms(kid)} | {ms3(g('precision'))} | {ms3(g('recall'))} | {ms3(g('density'))} | {ms3(g('coverage'))} | {ms3(mem)} |")
fl = rows[("rf1", 1)][0]["floor"]
print()
print(f"Real-vs-real floor (n = 1000 training images against the same 1000 test images): FD {floor_fd:.2f}, "
      f"KID {fl['kid']['mean']:.2f}, precision {fl['precision']:.3f}, recall {fl['recall']:.3f}, "
      f"density {fl['density']:.3f}, coverage {fl['coverage']:.3f}.")
