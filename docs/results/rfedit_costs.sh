#!/bin/sh
# Issue #13: what feature sharing costs (docs/BENCHMARKS.md), one job at a time on OUTDIR of
# rfedit_eval.py: the 50 images of set 0, RF-Solver-2 10, without sharing, with V sharing at
# k = 10 in memory, and the same with the cache in a mapped file (featureMemoryMB 0), run twice
# in alternation; then the U-Net's sample quality, Euler against RF-Solver-2 at equal NFE
# (evaluate, n = 1000, seed 1, guidance 1.5).
# Usage: rfedit_costs.sh OUTDIR
set -eu
OUT=${1:?usage: rfedit_costs.sh OUTDIR}
BIN=${REFLOWD:-.build/release/reflowd}
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
base = json.load(open(f"{out}/attn_k10_set0.json"))
base["input"].pop("classifier", None)
for name, extra in [("cost_k0", {"inject": 0}), ("cost_k10_mem", {}), ("cost_k10_disk", {"featureMemoryMB": 0})]:
    s = json.loads(json.dumps(base))
    s["input"].update(extra)
    json.dump(s, open(f"{out}/{name}.json", "w"))
solvers = [{"kind": "euler", "steps": n} for n in (4, 10, 20)] + [{"kind": "rfSolver2", "steps": n} for n in (2, 5, 10)]
json.dump({"type": "evaluate", "input": {"model": {"job": "unet"}, "classifier": {"job": "clf_eval"}, "n": 1000, "seed": 1,
           "trainImages": 10000, "guidance": 1.5, "solvers": solvers}}, open(f"{out}/e_unet_s1.json", "w"))
PY
for round in 1 2; do
  for name in cost_k0 cost_k10_mem cost_k10_disk; do
    rm -rf "$OUT/${name}_r$round"
    "$BIN" run "$OUT/$name.json" --out "$OUT/${name}_r$round" --threads 1 > "$OUT/${name}_r$round.log" 2>&1
    python3 -c "import json; r = json.load(open('$OUT/${name}_r$round/result.json'))['edit']; print('${name}_r$round', round(r['seconds'], 2), r.get('cache'))"
  done
done
[ -f "$OUT/e_unet_s1/result.json" ] || "$BIN" run "$OUT/e_unet_s1.json" --out "$OUT/e_unet_s1" --threads 1 > "$OUT/e_unet_s1.log" 2>&1
