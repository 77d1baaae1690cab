#!/usr/bin/env python3
"""Issue #13 (RF-Edit), for docs/RESULTS.md: trains the class-conditional U-Net with
self-attention at 14x14 and 7x7 (job `unet`, unless OUTDIR already holds it) and runs the
editing and U-Net inversion jobs. OUTDIR must hold `clf_eval` (the evaluation CNN of
cond_stage1.sh, copied in as a job directory).

Edits: the first 150 Fashion-MNIST test images in three sets of 50 (the spread is over the
sets); image i of a set goes from its label y to (y + 1 + i mod 9) mod 10, so every other class
is a target equally often. RF-Solver-2 with 10 steps (20 NFE each way), inversion under the
source label without guidance, denoising with guidance 2 unless noted:
  attn_k{K}: sharing every self-attention block's V for the first K steps (K = 0 is plain
             invert-then-sample);
  act_k{K}:  sharing the bottleneck ResBlock output `mid.1` instead (the fallback for models
             without attention);
  attn14_k{K}, attn7_k{K}: sharing V of the 14x14 blocks only, or of the 7x7 blocks only;
  g{G}:      no sharing, guidance G (the structure/edit trade-off without sharing).
Inversion: Euler 20 against RF-Solver-2 10 (equal NFE) on each set, reconstruction scored.

Usage: rfedit_eval.py OUTDIR [DATASET]   (env REFLOWD = binary, PAR = parallel jobs)
"""
import gzip, json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

out = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist"
binary = os.environ.get("REFLOWD", ".build/release/reflowd")
par = int(os.environ.get("PAR", "2"))

UNET = {"type": "train", "input": {
    "model": {"kind": "unet", "imageShape": [1, 28, 28], "channels": [32, 64, 64], "blocksPerLevel": 1, "groups": 8,
              "attentionResolutions": [14, 7], "attentionHeads": 2, "classes": 10},
    "data": {"kind": "images", "dataset": data, "split": "train"}, "labelDropout": 0.1, "batchSize": 64,
    "learningRate": 5e-4, "gradClipNorm": 1, "emaDecay": 0.999, "seed": 1, "steps": 5000, "logEvery": 100,
    "checkpointEvery": 500}}

def labels():
    path = os.path.join(data, "t10k-labels-idx1-ubyte.gz")
    with gzip.open(path) as f:
        return list(f.read()[8:])

def run(name, spec):
    if os.path.exists(os.path.join(out, name, "result.json")):
        return f"{name}: done"
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(spec, f)
    with open(os.path.join(out, name + ".log"), "w") as log:
        r = subprocess.run([binary, "run", os.path.join(out, name + ".json"), "--out", os.path.join(out, name), "--threads", "1"],
                           stdout=log, stderr=subprocess.STDOUT)
    return f"{name}: {'ok' if r.returncode == 0 else 'FAILED'}"

print(run("unet", UNET), flush=True)
y = labels()
solver = {"kind": "rfSolver2", "steps": 10}
jobs = []
for s in range(3):
    idx = list(range(50 * s, 50 * s + 50))
    src = [y[i] for i in idx]
    tgt = [(src[j] + 1 + j % 9) % 10 for j in range(50)]
    images = {"dataset": data, "split": "test", "indices": idx}
    def edit(name, **kw):
        spec = {"model": {"job": "unet"}, "images": images, "targetLabels": tgt, "solver": solver, "guidance": 2,
                "classifier": {"job": "clf_eval"}}
        spec.update(kw)
        jobs.append((f"{name}_set{s}", {"type": "edit", "input": spec}))
    for k in [0, 1, 2, 3, 4, 5, 6, 8, 10]:
        edit(f"attn_k{k}", inject=k)
    for k in [1, 2, 3, 4, 6]:
        edit(f"act_k{k}", inject=k, sites=["mid.1"])
    for k in [4, 8]:
        edit(f"attn14_k{k}", inject=k, sites=["down2_attn.0", "up2_attn.0"])
        edit(f"attn7_k{k}", inject=k, sites=["down3_attn.0", "mid_attn.0", "mid_attn.1", "up3_attn.0"])
    for g in [1, 1.5, 3, 4]:
        edit(f"g{g}", inject=0, guidance=g)
    for name, sol in [("inv_euler20", {"kind": "euler", "steps": 20}), ("inv_rfs10", solver)]:
        jobs.append((f"{name}_set{s}", {"type": "invert", "input": {"model": {"job": "unet"}, "images": images, "solver": sol}}))
with ThreadPoolExecutor(par) as pool:
    for line in pool.map(lambda j: run(*j), jobs):
        print(line, flush=True)
