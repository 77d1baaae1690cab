#!/bin/sh
# Issue #12, Rectified Diffusion on Fashion-MNIST (unconditional MLPs 784→1024×3→784 over
# flattened 28×28 images, the same network as slim_chain.sh's teacher).
#   ddpm        the teacher: VP ε-prediction, linear β 1e-4 → 0.02, T = 1000, 20,000 steps.
#   rd_eps      Rectified Diffusion: 20,000 (ε*, x0*) pairs from the teacher's DDIM-50 (noiseSeed
#               11), an ε-prediction student initialised from the teacher, trained on
#               x_i = √ᾱ_i·x0* + √(1 − ᾱ_i)·ε* with the element-wise pseudo-Huber (c = 1e-3) on
#               x̂0 (lossSpace data), 5,000 steps.
#   rd_eps_mse  the same with squared error on ε (lossSpace output): the loss ablation.
#   rd_vpv      a VP v-prediction student on the same pairs (from the teacher's weights).
#   rd_flow     the flow form: a rectified flow (v = x1 − x0, Euler) on the same pairs, from the
#               teacher's weights; rd_flow_s the same from random weights.
#   rd_ph2, rd_ph4  phased Rectified Diffusion with 2 and 4 phases: 20,000 phase pairs (training
#               images noised to the phase start, the teacher's DDIM-40 split over the phases),
#               from the teacher's weights, element-wise pseudo-Huber on the phase end.
#   v (third argument): the same chain from a v-prediction teacher on the cosine schedule (an
#               MLP predicts ε poorly at this budget); the rectified student inherits the
#               v-parameterisation (also in the phased runs); ddpm, rd_eps, rd_flow_s, rd_ph2 and
#               rd_ph4 run.
# Usage: rd_chain.sh OUTDIR [tiny|full] [eps|v]
set -eu
OUT=${1:?usage: rd_chain.sh OUTDIR [tiny]}
SCALE=${2:-full}
PRED=${3:-eps}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
if [ "$SCALE" = tiny ]; then S1=10; P=64; S=10; LIMIT=',"limit":2000'; else S1=20000; P=20000; S=5000; LIMIT=''; fi
M='{"kind":"mlp","dimension":784,"imageShape":[1,28,28],"width":1024,"depth":3,"timeInput":{"kind":"sinusoidal","features":32,"scale":1000}}'
COMMON='"batchSize":128,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"logEvery":100,"checkpointEvery":1000'
RD='"loss":{"kind":"elementwisePseudoHuber","c":0.001},"lossSpace":"data"'
mkdir -p "$OUT"
job() { printf '{"type":"%s","input":{%s}}\n' "$2" "$3" > "$OUT/$1.json"; }
if [ "$PRED" = v ]; then VP='{"kind":"vp","prediction":"v","schedule":{"kind":"cosine"}}'; else VP='{"kind":"vp","prediction":"epsilon","schedule":{"kind":"linear"}}'; fi
job ddpm train "\"model\":$M,\"interpolant\":$VP,\"data\":{\"kind\":\"images\",\"dataset\":\"$DATA\",\"split\":\"train\"$LIMIT},\"batchSize\":128,\"learningRate\":5e-4,\"gradClipNorm\":1,\"emaDecay\":0.999,\"seed\":1,\"steps\":$S1,\"logEvery\":100,\"checkpointEvery\":1000"
job rd_eps reflow "\"teacher\":{\"job\":\"ddpm\"},\"pairs\":$P,\"solver\":{\"kind\":\"ddim\",\"steps\":50},\"noiseSeed\":11,$RD,$COMMON,\"seed\":2,\"steps\":$S"
PF='"teacher":{"job":"ddpm"},"pairsFrom":{"job":"rd_eps"},"noiseSeed":11'
job rd_eps_mse reflow "$PF,$COMMON,\"seed\":2,\"steps\":$S"
job rd_vpv reflow "$PF,\"interpolant\":{\"kind\":\"vp\",\"prediction\":\"v\"},$COMMON,\"seed\":2,\"steps\":$S"
job rd_flow reflow "$PF,\"interpolant\":\"rectifiedFlow\",$COMMON,\"seed\":2,\"steps\":$S"
job rd_flow_s reflow "$PF,\"interpolant\":\"rectifiedFlow\",\"initialization\":\"scratch\",$COMMON,\"seed\":2,\"steps\":$S"
job rd_ph2 reflow "\"teacher\":{\"job\":\"ddpm\"},\"pairs\":$P,\"solver\":{\"kind\":\"ddim\",\"steps\":40},\"noiseSeed\":13,\"phases\":2,$RD,$COMMON,\"seed\":2,\"steps\":$S"
job rd_ph4 reflow "\"teacher\":{\"job\":\"ddpm\"},\"pairs\":$P,\"solver\":{\"kind\":\"ddim\",\"steps\":40},\"noiseSeed\":13,\"phases\":4,$RD,$COMMON,\"seed\":2,\"steps\":$S"
run() {
  if [ -f "$OUT/$1/result.json" ]; then echo "$1: done"; return; fi
  echo "$1: start $(date -u +%FT%TZ)"
  if "$BIN" run "$OUT/$1.json" --out "$OUT/$1" --threads 1 > "$OUT/$1.log" 2>&1; then echo "$1: end $(date -u +%FT%TZ)"; else echo "$1: FAILED"; fi
}
run ddpm
run rd_eps
if [ "$PRED" = v ]; then ( run rd_flow_s; run rd_ph2 ) & run rd_ph4; wait; exit 0; fi
( run rd_ph2; run rd_vpv; run rd_flow_s ) &
( run rd_ph4; run rd_eps_mse; run rd_flow ) &
wait
