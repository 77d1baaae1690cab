#!/bin/sh
# Issue #11, stage 1: the class-conditional 1-RF teacher on Fashion-MNIST (an MLP over flattened
# 28×28 images, label embedding, 10 % label dropout) and two classifiers: `clf_eval` (CNN) is the
# evaluation classifier every image evaluation scores with; `clf_feat` (LeNet-5, another seed) is
# the feature network of the perceptual premetric. They are different networks on purpose: a
# student trained against the scorer's own features would game the metric.
# Usage: cond_stage1.sh OUTDIR [tiny]
set -eu
OUT=${1:?usage: cond_stage1.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
if [ "$SCALE" = tiny ]; then S1=10; SC=10; LIMIT=',"limit":2000'; else S1=20000; SC=3000; LIMIT=''; fi
CM='{"kind":"mlp","dimension":784,"imageShape":[1,28,28],"width":1024,"depth":3,"timeInput":{"kind":"sinusoidal","features":32,"scale":1000},"classes":10}'
mkdir -p "$OUT"
cat > "$OUT/rf1.json" <<JSON
{"type":"train","input":{"model":$CM,"data":{"kind":"images","dataset":"$DATA","split":"train"$LIMIT},"labelDropout":0.1,
 "batchSize":128,"learningRate":5e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":1,
 "steps":$S1,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/clf_eval.json" <<JSON
{"type":"classify","input":{"data":{"kind":"images","dataset":"$DATA","split":"train"$LIMIT},"model":{"kind":"cnn","channels":[32,64],"features":128},
 "batchSize":128,"learningRate":2e-3,"decay":"cosine","steps":$SC,"seed":0,"logEvery":100}}
JSON
cat > "$OUT/clf_feat.json" <<JSON
{"type":"classify","input":{"data":{"kind":"images","dataset":"$DATA","split":"train"$LIMIT},"model":{"kind":"lenet"},
 "batchSize":128,"learningRate":2e-3,"decay":"cosine","steps":$SC,"seed":7,"logEvery":100}}
JSON
run() { # name threads
  if [ -f "$OUT/$1/result.json" ]; then echo "$1: done"; return; fi
  echo "$1: start $(date -u +%FT%TZ)"; "$BIN" run "$OUT/$1.json" --out "$OUT/$1" --threads "$2" > "$OUT/$1.log" 2>&1; echo "$1: end $(date -u +%FT%TZ)"
}
( run clf_eval 1; run clf_feat 1 ) &
run rf1 ${THREADS:-1}
wait
