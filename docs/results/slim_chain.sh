#!/bin/sh
# Issue #12, SlimFlow on Fashion-MNIST (unconditional MLPs over flattened 28×28 images).
#   t1          the 1-RF teacher: MLP 784→1024×3→784 (≈3.7M parameters), 20,000 steps.
#   a_w<W>      annealing reflow of a randomly initialised student of width W (3 hidden layers)
#               on 20,000 teacher pairs (Euler 50, noiseSeed 11, shared through pairsFrom):
#               linear β over K = 30 % of the 5,000 steps, flip augmentation on.
#               W = 1024 (the teacher's size), 640 (≈1/2), 384 (≈1/4), 224 (≈1/8).
#   a_w384_{none,flip,anneal}   the ablation at W = 384: plain reflow (β ≡ 0, no flip),
#               flip only, annealing only (a_w384 is "both").
#   d_w<W>      flow-guided distillation: a one-step student initialised from a_w<W>, on
#               20,000 pairs of a_w<W> itself (Euler 50; noiseSeed 12), L2 + the two-step term
#               (u ~ U[0.2, 0.8], frozen a_w<W>), 3,000 steps.
#   d_w384_plain  the same without the two-step term; d_w384_scratch: plain distillation from
#               random weights (no init, no two-step).
# Usage: slim_chain.sh OUTDIR [tiny|long]      (two lanes of one thread each)
#   long: the size table only (a_w<W>, d_w<W>) with 3× the steps (reflow 15,000 with K = 4,500,
#   distillation 9,000), reusing t1 and the pairs of OUTDIR/../slim when copied in first.
set -eu
OUT=${1:?usage: slim_chain.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
if [ "$SCALE" = tiny ]; then S1=10; P=64; S=10; K=3; SD=10; LIMIT=',"limit":2000'
elif [ "$SCALE" = long ]; then S1=20000; P=20000; S=15000; K=4500; SD=9000; LIMIT=''
else S1=20000; P=20000; S=5000; K=1500; SD=3000; LIMIT=''; fi
mlp() { printf '{"kind":"mlp","dimension":784,"imageShape":[1,28,28],"width":%s,"depth":3,"timeInput":{"kind":"sinusoidal","features":32,"scale":1000}}' "$1"; }
COMMON='"batchSize":128,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"logEvery":100,"checkpointEvery":1000'
E50='"solver":{"kind":"euler","steps":50}'
AN="\"annealing\":{\"schedule\":\"linear\",\"steps\":$K}"
mkdir -p "$OUT"
job() { printf '{"type":"%s","input":{%s}}\n' "$2" "$3" > "$OUT/$1.json"; }
job t1 train "\"model\":$(mlp 1024),\"data\":{\"kind\":\"images\",\"dataset\":\"$DATA\",\"split\":\"train\"$LIMIT},\"batchSize\":128,\"learningRate\":5e-4,\"gradClipNorm\":1,\"emaDecay\":0.999,\"seed\":1,\"steps\":$S1,\"logEvery\":100,\"checkpointEvery\":1000"
job a_w1024 reflow "\"teacher\":{\"job\":\"t1\"},\"pairs\":$P,$E50,\"noiseSeed\":11,\"model\":$(mlp 1024),\"initialization\":\"scratch\",$AN,\"flipPairs\":true,$COMMON,\"seed\":2,\"steps\":$S"
for W in 640 384 224; do
  job a_w$W reflow "\"teacher\":{\"job\":\"t1\"},\"pairsFrom\":{\"job\":\"a_w1024\"},\"noiseSeed\":11,\"model\":$(mlp $W),\"initialization\":\"scratch\",$AN,\"flipPairs\":true,$COMMON,\"seed\":2,\"steps\":$S"
done
job a_w384_none   reflow "\"teacher\":{\"job\":\"t1\"},\"pairsFrom\":{\"job\":\"a_w1024\"},\"noiseSeed\":11,\"model\":$(mlp 384),\"initialization\":\"scratch\",$COMMON,\"seed\":2,\"steps\":$S"
job a_w384_flip   reflow "\"teacher\":{\"job\":\"t1\"},\"pairsFrom\":{\"job\":\"a_w1024\"},\"noiseSeed\":11,\"model\":$(mlp 384),\"initialization\":\"scratch\",\"flipPairs\":true,$COMMON,\"seed\":2,\"steps\":$S"
job a_w384_anneal reflow "\"teacher\":{\"job\":\"t1\"},\"pairsFrom\":{\"job\":\"a_w1024\"},\"noiseSeed\":11,\"model\":$(mlp 384),\"initialization\":\"scratch\",$AN,$COMMON,\"seed\":2,\"steps\":$S"
for W in 1024 640 384 224; do
  job d_w$W distill "\"teacher\":{\"job\":\"a_w$W\"},\"pairs\":$P,$E50,\"noiseSeed\":12,\"k\":1,\"initFrom\":{\"job\":\"a_w$W\"},\"twoStep\":{\"weight\":1},$COMMON,\"seed\":4,\"steps\":$SD"
done
job d_w384_plain   distill "\"teacher\":{\"job\":\"a_w384\"},\"pairsFrom\":{\"job\":\"d_w384\"},\"noiseSeed\":12,\"k\":1,\"initFrom\":{\"job\":\"a_w384\"},$COMMON,\"seed\":4,\"steps\":$SD"
job d_w384_scratch distill "\"teacher\":{\"job\":\"a_w384\"},\"pairsFrom\":{\"job\":\"d_w384\"},\"noiseSeed\":12,\"k\":1,\"initialization\":\"scratch\",$COMMON,\"seed\":4,\"steps\":$SD"
run() {
  if [ -f "$OUT/$1/result.json" ]; then echo "$1: done"; return; fi
  echo "$1: start $(date -u +%FT%TZ)"
  if "$BIN" run "$OUT/$1.json" --out "$OUT/$1" --threads 1 > "$OUT/$1.log" 2>&1; then echo "$1: end $(date -u +%FT%TZ)"; else echo "$1: FAILED"; fi
}
run t1
run a_w1024
if [ "$SCALE" = long ]; then
  ( run a_w640; run a_w224; run d_w640; run d_w224 ) &
  ( run a_w384; run d_w384; run d_w1024 ) &
  wait
  exit 0
fi
( run a_w640; run a_w224; run a_w384_none; run d_w640; run d_w224 ) &
( run a_w384; run a_w384_flip; run a_w384_anneal; run d_w384; run d_w384_plain; run d_w384_scratch; run d_w1024 ) &
wait
