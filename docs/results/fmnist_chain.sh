#!/bin/sh
# Fashion-MNIST result chain of docs/RESULTS.md (issue #9): 1-RF → reflow (pairs + 2-RF) →
# one-step distillation of the 2-RF, each a `reflowd run` of the specs below, seeds fixed.
# Usage: fmnist_chain.sh OUTDIR [SCALE]   (SCALE=tiny checks the chain in a minute)
set -eu
OUT=${1:?usage: fmnist_chain.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-2}
if [ "$SCALE" = tiny ]; then S1=10; P=64; S2=10; S3=10; else S1=6000; P=5000; S2=2500; S3=2000; fi
MODEL='{"kind":"unet","channels":[16,32],"blocksPerLevel":1,"groups":8}'
mkdir -p "$OUT"
cat > "$OUT/rf1.json" <<JSON
{"type":"train","input":{"model":$MODEL,"data":{"kind":"images","dataset":"$DATA","split":"train"},
 "batchSize":64,"learningRate":5e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":1,
 "steps":$S1,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/rf2.json" <<JSON
{"type":"reflow","input":{"teacher":{"job":"rf1"},"pairs":$P,"solver":{"kind":"euler","steps":25},"noiseSeed":11,
 "batchSize":64,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":2,
 "steps":$S2,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/distill.json" <<JSON
{"type":"distill","input":{"teacher":{"job":"rf2"},"k":1,"pairs":$P,"solver":{"kind":"euler","steps":25},"noiseSeed":12,
 "batchSize":64,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":3,
 "steps":$S3,"logEvery":100,"checkpointEvery":1000}}
JSON
for j in rf1 rf2 distill; do
  if [ -f "$OUT/$j/result.json" ]; then echo "$j: done"; continue; fi
  echo "$j: start $(date -u +%FT%TZ)"
  "$BIN" run "$OUT/$j.json" --out "$OUT/$j" --threads "$THREADS" > "$OUT/$j.log" 2>&1
  echo "$j: end $(date -u +%FT%TZ)"
done
