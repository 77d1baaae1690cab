#!/bin/sh
# Image-to-image transfer for docs/RESULTS.md (issue #9): a 1-RF from the built-in shapes (π0)
# to Fashion-MNIST (π1), then Euler-100 translations of 64 shapes (translation.png).
# Usage: transfer.sh OUTDIR
set -eu
OUT=${1:?usage: transfer.sh OUTDIR}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
cat > "$OUT/tr.json" <<JSON
{"type":"train","input":{"model":{"kind":"unet","channels":[16,32],"blocksPerLevel":1,"groups":8},
 "data":{"kind":"images","dataset":"$DATA"},"source":{"kind":"images","dataset":"builtin:shapes"},
 "batchSize":64,"learningRate":5e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":5,"steps":3000,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/tr-sample.json" <<JSON
{"type":"sample","input":{"model":{"job":"tr"},"n":64,"seed":3,"solver":{"kind":"euler","steps":100}}}
JSON
for j in tr tr-sample; do
  [ -f "$OUT/$j/result.json" ] && continue
  "$BIN" run "$OUT/$j.json" --out "$OUT/$j" --threads "$THREADS" > "$OUT/$j.log" 2>&1
done
