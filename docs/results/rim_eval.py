#!/usr/bin/env python3
"""Issue #14 result runs: RIMs (GRU, MGU, IndRNN) against zero filling and compressed sensing.

Usage: rim_eval.py REFLOWD OUT [--phase train|eval|extras|all]

Single-coil 28×28, Gaussian-2D masks (centre fraction 0.08) at R = 4 and 8, a fresh mask per
image (seeded). Training: Fashion-MNIST train split (or random-ellipse phantoms, or both), zero
phase, batch 8, Adam 1e-3, L1 on every estimate, 3000 steps, seed 0, one thread per run, two
runs at a time. Test sets: Fashion-MNIST test images 0..199, 200 phantoms (seed 12345), and
both with 3 simulated lesions per image. CS: FISTA, λ chosen from a sweep on a validation set
(Fashion-MNIST train images 59000..59099, or 100 phantoms of seed 777) by mean SSIM, then run
for 200 iterations ("converged") and for the fewest iterations within 1 % of the converged
validation SSIM (the timed setting). Every reconstruction runs with one thread, one job at a time.
Extras: a two-cascade IndRNN and an IndRNN trained on smooth random phase, with a smooth-phase test.
"""
import json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

REFLOWD, OUT = sys.argv[1], sys.argv[2]
PHASE = sys.argv[sys.argv.index("--phase") + 1] if "--phase" in sys.argv else "all"
FMNIST = os.environ.get("FMNIST", "/usr/share/datasets/fashion-mnist")
os.makedirs(OUT, exist_ok=True)
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")

FM_TRAIN = {"kind": "images", "dataset": FMNIST, "split": "train", "limit": 59000}
PH_TRAIN = {"kind": "phantoms", "height": 28, "width": 28}


def mask(r, seed=None):
    return {"kind": "gaussian2D", "acceleration": r, "centerFraction": 0.08, "seed": seed}


def models():
    out = []
    for r in (4, 8):
        for cell in ("gru", "mgu", "indrnn"):
            out.append((f"fm_{cell}32_r{r}", cell, 32, r, FM_TRAIN))
    for cell in ("gru", "mgu", "indrnn"):
        out.append((f"fm_{cell}16_r4", cell, 16, 4, FM_TRAIN))
    for cell in ("gru", "indrnn"):
        out.append((f"ph_{cell}32_r4", cell, 32, 4, PH_TRAIN))
        out.append((f"mix_{cell}32_r4", cell, 32, 4, {"kind": "mixed", "parts": [FM_TRAIN, PH_TRAIN]}))
    return out


# Extras: a two-cascade IndRNN (CIRIM) and an IndRNN trained on smooth-phase acquisitions.
EXTRAS = [("fm_indrnn32x2_r4", "indrnn", 32, 4, FM_TRAIN, {"cascades": 2}, "zero"),
          ("fm_indrnn32_smooth_r4", "indrnn", 32, 4, FM_TRAIN, {}, "smooth")]


def run(name, spec):
    d = os.path.join(OUT, name)
    if os.path.exists(os.path.join(d, "result.json")):
        return json.load(open(os.path.join(d, "result.json")))
    path = os.path.join(OUT, name + ".json")
    json.dump(spec, open(path, "w"), indent=1)
    with open(os.path.join(OUT, name + ".log"), "w") as log:
        subprocess.run([REFLOWD, "run", path, "--out", d, "--threads", "1"], env=ENV, stdout=log, stderr=log, check=True)
    return json.load(open(os.path.join(d, "result.json")))


def train(m):
    name, cell, features, r, data = m[:5]
    extra, phase = (m[5], m[6]) if len(m) > 5 else ({}, "zero")
    return run(name, {"type": "train", "input": {
        "model": {"kind": "rim", "cell": cell, "features": features, "steps": 8, **extra},
        "data": data, "acquisition": {"mask": mask(r), "phase": phase, "noise": 0},
        "batchSize": 8, "learningRate": 1e-3, "loss": {"kind": "l1"}, "steps": 3000, "seed": 0,
        "logEvery": 100, "checkpointEvery": 500, "checkImages": 32}})


TEST = {
    "fm": {"dataset": FMNIST, "split": "test", "indices": list(range(200))},
    "ph": {"phantoms": {"count": 200, "height": 28, "width": 28, "seed": 12345}},
}
VALID = {
    "fm": {"dataset": FMNIST, "split": "train", "indices": list(range(59000, 59100))},
    "ph": {"phantoms": {"count": 100, "height": 28, "width": 28, "seed": 777}},
}
SWEEP = [1e-5, 3e-5, 1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1]


def recon(name, method, images, r, lesions=0, seed=7, phase="zero"):
    return run(name, {"type": "reconstruct", "input": {
        "method": method, "images": images, "acquisition": {"mask": mask(r), "phase": phase, "noise": 0},
        "seed": seed, "lesions": lesions, "figureImages": 16}})


def evaluate():
    for dom in ("fm", "ph"):
        for r in (4, 8):
            # λ and the iteration count on the validation set, per regulariser.
            for reg in ("wavelet", "tv"):
                v = recon(f"val_{dom}_cs{reg}_r{r}", {"kind": "cs", "regularizer": reg, "sweep": SWEEP, "iterations": 200,
                                                       "trace": True}, VALID[dom], r, seed=8)
                cs = v["reconstruction"]["cs"]
                lam, k = cs["lambda"], cs["iterationsWithin1Percent"]
                for lesions in (0, 3):
                    tag = f"{dom}{'_les' if lesions else ''}_r{r}"
                    recon(f"test_{tag}_cs{reg}200", {"kind": "cs", "regularizer": reg, "lambda": lam, "iterations": 200}, TEST[dom], r, lesions)
                    recon(f"test_{tag}_cs{reg}{k}", {"kind": "cs", "regularizer": reg, "lambda": lam, "iterations": k}, TEST[dom], r, lesions)
            for lesions in (0, 3):
                tag = f"{dom}{'_les' if lesions else ''}_r{r}"
                recon(f"test_{tag}_zf", {"kind": "zeroFilled"}, TEST[dom], r, lesions)
                for (name, _, _, mr, _) in models():
                    if mr == r:
                        ref = {"path": os.path.abspath(os.path.join(OUT, name, "model.safetensors"))}
                        recon(f"test_{tag}_{name}", {"kind": "rim", "model": ref}, TEST[dom], r, lesions)


def evaluate_extras():
    ref = lambda n: {"kind": "rim", "model": {"path": os.path.abspath(os.path.join(OUT, n, "model.safetensors"))}}
    for tag, lesions in (("fm_r4", 0), ("fm_les_r4", 3)):
        recon(f"test_{tag}_fm_indrnn32x2_r4", ref("fm_indrnn32x2_r4"), TEST["fm"], 4, lesions)
    # Smooth random phase: CS-TV tuned on smooth-phase validation images, both IndRNNs.
    v = recon("val_fm_cstv_smooth_r4", {"kind": "cs", "regularizer": "tv", "sweep": SWEEP, "iterations": 200, "trace": True},
              VALID["fm"], 4, seed=8, phase="smooth")
    lam = v["reconstruction"]["cs"]["lambda"]
    recon("test_fm_smooth_r4_zf", {"kind": "zeroFilled"}, TEST["fm"], 4, phase="smooth")
    recon("test_fm_smooth_r4_cstv200", {"kind": "cs", "regularizer": "tv", "lambda": lam, "iterations": 200}, TEST["fm"], 4, phase="smooth")
    for n in ("fm_indrnn32_r4", "fm_indrnn32_smooth_r4"):
        recon(f"test_fm_smooth_r4_{n}", ref(n), TEST["fm"], 4, phase="smooth")


if PHASE in ("train", "all"):
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(train, models()))
if PHASE in ("extras", "all"):
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(train, EXTRAS))
    evaluate_extras()
if PHASE in ("eval", "all"):
    evaluate()
print("done")
