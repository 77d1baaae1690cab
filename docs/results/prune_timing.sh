#!/bin/sh
# Inference time of structured-pruned one-step students against the dense ones (docs/RESULTS.md,
# issue #10), measured on an otherwise idle machine: structured pruning without fine-tuning
# (timing does not depend on the weights' values), one thread, the median of 31 forward passes
# of 1,024 points (moons) or 256 images (Fashion-MNIST).
# Usage: prune_timing.sh CHAINDIR OUTDIR
set -eu
CHAIN=${1:?usage: prune_timing.sh CHAINDIR OUTDIR}
OUT=${2:?usage}
BIN=${REFLOWD:-.build/release/reflowd}
mkdir -p "$OUT"
for m in mo fm; do
  rows=1024; [ $m = fm ] && rows=256
  for sp in 0.5 0.8 0.9; do
    n="${m}_time_$sp"
    cat > "$OUT/$n.json" <<JSON
{"type":"prune","input":{"model":{"path":"$CHAIN/${m}_distill/model.safetensors"},"pairs":{"path":"$CHAIN/${m}_distill/pairs.safetensors"},
 "method":"structured","schedule":"oneShot","sparsity":$sp,"retrain":{"steps":0},"dnr":{"samples":100},
 "evaluation":{"n":200,"steps":[1],"timingRows":$rows,"timingRepeats":31}}}
JSON
    [ -f "$OUT/$n/result.json" ] || "$BIN" run "$OUT/$n.json" --out "$OUT/$n" --threads 1 > "$OUT/$n.log" 2>&1
    python3 -c "import json,sys; s=json.load(open('$OUT/$n/result.json'))['pruning']['structured']; print('$n', s['parametersBefore'], s['parametersAfter'], round(1000*s['denseSeconds'],3), round(1000*s['prunedSeconds'],3), round(s['speedup'],2))"
  done
done
