#!/bin/sh
# Issue #11, stage 3 (after cond_stage2.sh): 2-rectified flow++'s Config G, fine-tuning the full
# recipe's 2-RF (r2_uhpi) on (real image, inverted noise) pairs: 10,000 Fashion-MNIST training
# images with their labels, inverted by the 1-RF teacher (Euler 50, backward, no guidance);
# 2,000 steps with the same recipe. Then its evaluation as in cond_eval.sh.
# Usage: cond_stage3.sh OUTDIR [tiny]
set -eu
OUT=${1:?usage: cond_stage3.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
if [ "$SCALE" = tiny ]; then P=64; S=10; N=64; TI=64; LIMIT=',"limit":2000'; else P=10000; S=2000; N=2000; TI=10000; LIMIT=''; fi
cat > "$OUT/r2_g.json" <<JSON
{"type":"reflow","input":{"teacher":{"job":"rf1"},"inversionData":{"kind":"images","dataset":"$DATA","split":"train"$LIMIT},
 "pairs":$P,"solver":{"kind":"euler","steps":50},"noiseSeed":14,"initFrom":{"job":"r2_uhpi"},
 "timeSampler":{"kind":"uShaped","a":4},"loss":{"kind":"pseudoHuber","scaling":"d"},
 "perceptual":{"classifier":{"job":"clf_feat"},"form":"lpipsHuberInverseT"},
 "batchSize":128,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"logEvery":100,"checkpointEvery":1000,"seed":6,"steps":$S}}
JSON
if [ ! -f "$OUT/r2_g/result.json" ]; then
  echo "r2_g: start $(date -u +%FT%TZ)"
  "$BIN" run "$OUT/r2_g.json" --out "$OUT/r2_g" --threads 2 > "$OUT/r2_g.log" 2>&1 || echo "r2_g: FAILED"
  echo "r2_g: end $(date -u +%FT%TZ)"
fi
for seed in 1 2 3; do
  cat > "$OUT/e_r2_g_s$seed.json" <<JSON
{"type":"evaluate","input":{"model":{"job":"r2_g"},"classifier":{"job":"clf_eval"},"n":$N,"seed":$seed,"trainImages":$TI,
 "solvers":[{"kind":"euler","steps":1},{"kind":"euler","steps":2},{"kind":"remix","steps":2}]}}
JSON
done
for seed in 1 2 3; do echo "e_r2_g_s$seed"; done | xargs -P 2 -I{} sh -c 'if [ -f "$0/{}/result.json" ]; then echo "{}: done"; elif "$1" run "$0/{}.json" --out "$0/{}" --threads 1 > "$0/{}.log" 2>&1; then echo "{}: ok"; else echo "{}: FAILED"; fi' "$OUT" "$BIN"
