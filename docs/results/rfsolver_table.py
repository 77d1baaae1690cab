#!/usr/bin/env python3
"""Tables for the RF-Solver part of issue #13 (docs/RESULTS.md) from the jobs of
rfsolver_eval.sh. Usage: rfsolver_table.py OUTDIR. Prints markdown. Every number is the mean
± sample standard deviation over the three image sets (inversion) or the sampling seeds 1-3
(sample quality)."""
import json, os, statistics, sys

out = sys.argv[1]

def load(name):
    with open(os.path.join(out, name, "result.json")) as f:
        return json.load(f)

def ms(xs, fmt="{:.4g}"):
    if len(xs) == 1:
        return fmt.format(xs[0])
    return (fmt + " ± " + fmt.replace("+", "")).format(statistics.mean(xs), statistics.stdev(xs))

models = [("rf1", "1-RF"), ("r2", "2-RF")]
print("### Inversion → reconstruction at equal NFE (600 test images, 3 sets of 200)\n")
print("| model | NFE | Euler MSE | RF-Solver-2 MSE | Euler PSNR (dB) | RF-Solver-2 PSNR (dB) | Euler SSIM | RF-Solver-2 SSIM | MSE ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for m, label in models:
    for n in [4, 6, 10, 20, 50, 100]:
        row = {}
        for key, name in [("e", f"i_{m}_euler{n}"), ("r", f"i_{m}_rfs{n // 2}")]:
            rs = [load(f"{name}_set{s}")["invert"]["reconstruction"] for s in range(3)]
            row[key] = rs
        ratio = [e["mse"] / max(r["mse"], 1e-30) for e, r in zip(row["e"], row["r"])]
        print(f"| {label} | {n} | {ms([r['mse'] for r in row['e']])} | {ms([r['mse'] for r in row['r']])} "
              f"| {ms([r['psnr'] for r in row['e']], '{:.2f}')} | {ms([r['psnr'] for r in row['r']], '{:.2f}')} "
              f"| {ms([r['ssim'] for r in row['e']], '{:.4f}')} | {ms([r['ssim'] for r in row['r']], '{:.4f}')} "
              f"| {min(ratio):.3g}–{max(ratio):.3g} |")

print("\n### Local error of each inversion step against RK45 (rtol = atol = 1e-6; RMS per pixel, 200 images)\n")
print("| model | solver | NFE | per-step RMS error, t = 1 → 0 | sum | max |")
print("|---|---|---|---|---|---|")
for m, label in models:
    for name, solver in [(f"l_{m}_euler10", "Euler 10"), (f"l_{m}_rfs5", "RF-Solver-2 5"), (f"l_{m}_euler20", "Euler 20"), (f"l_{m}_rfs10", "RF-Solver-2 10")]:
        inv = load(name)["invert"]
        e = [r["rms"] for r in inv["localErrors"]]
        print(f"| {label} | {solver} | {inv['nfe']} | {' '.join(f'{x:.4f}' for x in e)} | {sum(e):.4f} | {max(e):.4f} |")

print("\n### Sample quality at equal NFE (evaluate: n = 2000, guidance 1.5, seeds 1-3)\n")
print("| model | solver | NFE | FD | Δ FD vs Euler, same NFE (paired by seed) | class accuracy | precision | recall |")
print("|---|---|---|---|---|---|---|---|")
for m, label in models:
    runs = [load(f"e_{m}_s{s}")["imageEvaluation"] for s in (1, 2, 3)]
    euler = {row["nfe"]: i for i, row in enumerate(runs[0]["rows"]) if row["solver"]["kind"] == "euler"}
    for i, row in enumerate(runs[0]["rows"]):
        rows = [r["rows"][i] for r in runs]
        sol = row["solver"]
        name = {"euler": "Euler", "rfSolver2": "RF-Solver-2"}[sol["kind"]] + f" {sol['steps']}"
        delta = ""
        if sol["kind"] == "rfSolver2" and row["nfe"] in euler:
            delta = ms([r["rows"][i]["metrics"]["frechetDistance"] - r["rows"][euler[row["nfe"]]]["metrics"]["frechetDistance"] for r in runs], "{:+.1f}")
        print(f"| {label} | {name} | {row['nfe']} | {ms([r['metrics']['frechetDistance'] for r in rows], '{:.1f}')} | {delta} "
              f"| {ms([r['classAccuracy'] for r in rows], '{:.3f}')} | {ms([r['metrics']['precision'] for r in rows], '{:.3f}')} "
              f"| {ms([r['metrics']['recall'] for r in rows], '{:.3f}')} |")
    print(f"| | floor (real vs real) | | {runs[0]['rows'][0]['floor']['frechetDistance']:.1f} | | | | |")
