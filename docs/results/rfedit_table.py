#!/usr/bin/env python3
"""Tables and figures for the RF-Edit part of issue #13 (docs/RESULTS.md) from the jobs of
rfedit_eval.py. Usage: rfedit_table.py OUTDIR [FIGDIR [DATASET]]. Prints markdown; with FIGDIR
(and matplotlib) writes edit_curves.png (structure preserved against edit success) and
edit_grid.png (sources and their edits). Numbers are mean ± sample standard deviation over the
three sets of 50 images."""
import gzip, json, os, statistics, sys
import numpy as np

out = sys.argv[1]
figdir = sys.argv[2] if len(sys.argv) > 2 else None
data = sys.argv[3] if len(sys.argv) > 3 else "/usr/share/datasets/fashion-mnist"

def load(name):
    with open(os.path.join(out, name, "result.json")) as f:
        return json.load(f)

def ms(xs, fmt="{:.3f}"):
    return (fmt + " ± " + fmt).format(statistics.mean(xs), statistics.stdev(xs))

def edits(name):
    return [load(f"{name}_set{s}")["edit"] for s in range(3)]

configs = ([(f"attn_k{k}", "V sharing", k, 2) for k in [0, 1, 2, 3, 4, 5, 6, 8, 10]]
           + [(f"act_k{k}", "mid.1 sharing", k, 2) for k in [1, 2, 3, 4, 6]]
           + [(f"attn14_k{k}", "V sharing, 14×14 blocks", k, 2) for k in [4, 8]]
           + [(f"attn7_k{k}", "V sharing, 7×7 blocks", k, 2) for k in [4, 8]]
           + [(f"g{g}", "no sharing", 0, g) for g in [1, 1.5, 3, 4]])
print("### Editing: structure preserved against edit success (150 test images, 3 sets of 50; RF-Solver-2 10 steps)\n")
print("| sharing | k | guidance | SSIM to source | PSNR to source (dB) | P(target) | edits classified as target | s/image |")
print("|---|---|---|---|---|---|---|---|")
points = {}
for name, kind, k, g in configs:
    es = edits(name)
    ssim = [e["structure"]["ssim"] for e in es]
    acc = [e["success"]["targetAccuracy"] for e in es]
    points.setdefault(kind, []).append((k, g, statistics.mean(acc), statistics.mean(ssim)))
    secs = statistics.mean(e["seconds"] / e["n"] for e in es)
    print(f"| {kind} | {k} | {g:g} | {ms(ssim)} | {ms([e['structure']['psnr'] for e in es], '{:.2f}')} "
          f"| {ms([e['success']['targetProbability'] for e in es])} | {ms(acc)} | {secs:.2f} |")
base = edits("attn_k0")
print(f"\nThe unedited sources: P(target) {ms([e['success']['sourceTargetProbability'] for e in base])}.\n")

print("### Inversion → reconstruction on the U-Net (equal NFE 20)\n")
print("| solver | MSE | PSNR (dB) | SSIM |")
print("|---|---|---|---|")
for name, label in [("inv_euler20", "Euler 20"), ("inv_rfs10", "RF-Solver-2 10")]:
    rs = [load(f"{name}_set{s}")["invert"]["reconstruction"] for s in range(3)]
    print(f"| {label} | {ms([r['mse'] for r in rs], '{:.2e}')} | {ms([r['psnr'] for r in rs], '{:.2f}')} | {ms([r['ssim'] for r in rs], '{:.4f}')} |")

if os.path.exists(os.path.join(out, "e_unet_s1", "result.json")):
    ev = load("e_unet_s1")["imageEvaluation"]
    print("\n### Sample quality of the U-Net at equal NFE (evaluate: n = 1000, seed 1, guidance 1.5)\n")
    print("| solver | NFE | FD | class accuracy | precision | recall |")
    print("|---|---|---|---|---|---|")
    for row in ev["rows"]:
        sol = row["solver"]
        name = {"euler": "Euler", "rfSolver2": "RF-Solver-2"}[sol["kind"]] + f" {sol['steps']}"
        m = row["metrics"]
        print(f"| {name} | {row['nfe']} | {m['frechetDistance']:.1f} | {row['classAccuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |")
    print(f"| floor (real vs real) | | {ev['rows'][0]['floor']['frechetDistance']:.1f} | | | |")

if figdir:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(figdir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for kind, marker in [("V sharing", "o"), ("mid.1 sharing", "s"), ("no sharing", "^")]:
        pts = points[kind]
        if kind == "no sharing":
            pts = sorted(pts + [(0, 2, *points["V sharing"][0][2:])], key=lambda p: p[1])
        ax.plot([p[2] for p in pts], [p[3] for p in pts], marker=marker, label=kind)
        for k, g, x, y in pts:
            ax.annotate(f"g{g:g}" if kind == "no sharing" else f"k{k}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("edit success: share classified as the target label")
    ax.set_ylabel("structure preserved: SSIM to the source")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(figdir, "edit_curves.png"), dpi=110)

    with gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")) as f:
        src = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 784)[:10].astype(np.float32) / 127.5 - 1
    with gzip.open(os.path.join(data, "t10k-labels-idx1-ubyte.gz")) as f:
        y = list(f.read()[8:18])
    names = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    rows = [("source", src)]
    for name, label in [("attn_k0", "k = 0"), ("attn_k2", "V, k = 2"), ("attn_k4", "V, k = 4"), ("attn_k6", "V, k = 6"),
                        ("attn_k10", "V, k = 10"), ("act_k4", "mid.1, k = 4")]:
        rows.append((label, np.load(os.path.join(out, f"{name}_set0", "edited.npy"))[:10]))
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.05 * len(rows)))
    for r, (label, imgs) in enumerate(rows):
        for c in range(10):
            a = axes[r][c]
            a.imshow(np.clip(imgs[c].reshape(28, 28), -1, 1), cmap="gray", vmin=-1, vmax=1)
            a.set_xticks([]); a.set_yticks([])
            if c == 0:
                a.set_ylabel(label, fontsize=7)
            if r == 0:
                a.set_title(f"{names[y[c]]}→{names[(y[c] + 1 + c % 9) % 10]}", fontsize=6)
    fig.tight_layout(pad=0.2)
    fig.savefig(os.path.join(figdir, "edit_grid.png"), dpi=100)
