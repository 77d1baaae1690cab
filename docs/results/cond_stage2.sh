#!/bin/sh
# Issue #11, stage 2 (after cond_stage1.sh): guidance, InstaFlow's recipe and the 2-rectified
# flow++ ablation on Fashion-MNIST, all from the stage-1 teacher `rf1`. Two lanes of one thread.
#   r2_*   2-RFs on the same 20,000 teacher pairs (guidance 2, Euler 50):
#          base (scratch, uniform t, squared L2) → u (+ U-shaped t, a = 4) → uh (+ pseudo-Huber,
#          c = 0.00054·d) → uhp (+ LPIPS-Huber-1/t on clf_feat) → uhpi (+ init from the teacher);
#          uhs (pseudo-Huber √d variant); if (InstaFlow's 2-RF: init from teacher, uniform, L2).
#   r3     a 3-RF: reflow of r2_uhpi with the same recipe.
#   d_if   InstaFlow: one-step student of r2_if's pairs (guidance 1.5), L2 then LPIPS (d_if_lp).
#   d_rf1  the same from the 1-RF teacher's pairs, at equal budget (its L2 stage also gets the
#          2-RF's steps), then LPIPS (d_rf1_lp).
# Usage: cond_stage2.sh OUTDIR [tiny]
set -eu
OUT=${1:?usage: cond_stage2.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
if [ "$SCALE" = tiny ]; then P=64; S=10; SD=10; SL=5; SB=20; else P=20000; S=5000; SD=3000; SL=1000; SB=8000; fi
COMMON='"batchSize":128,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"logEvery":100,"checkpointEvery":1000'
PAIRS="\"pairs\":$P,\"solver\":{\"kind\":\"euler\",\"steps\":50}"
U='"timeSampler":{"kind":"uShaped","a":4}'
H='"loss":{"kind":"pseudoHuber","scaling":"d"}'
HS='"loss":{"kind":"pseudoHuber","scaling":"sqrtD"}'
LP='"perceptual":{"classifier":{"job":"clf_feat"},"form":"lpipsHuberInverseT"}'
job() { # name type json-body
  printf '{"type":"%s","input":{%s}}\n' "$2" "$3" > "$OUT/$1.json"
}
job r2_base reflow "\"teacher\":{\"job\":\"rf1\"},$PAIRS,\"guidance\":2,\"noiseSeed\":11,\"initialization\":\"scratch\",$COMMON,\"seed\":2,\"steps\":$S"
R2P='"pairsFrom":{"job":"r2_base"},"guidance":2,"noiseSeed":11'
job r2_u    reflow "\"teacher\":{\"job\":\"rf1\"},$R2P,\"initialization\":\"scratch\",$U,$COMMON,\"seed\":2,\"steps\":$S"
job r2_uh   reflow "\"teacher\":{\"job\":\"rf1\"},$R2P,\"initialization\":\"scratch\",$U,$H,$COMMON,\"seed\":2,\"steps\":$S"
job r2_uhs  reflow "\"teacher\":{\"job\":\"rf1\"},$R2P,\"initialization\":\"scratch\",$U,$HS,$COMMON,\"seed\":2,\"steps\":$S"
job r2_uhp  reflow "\"teacher\":{\"job\":\"rf1\"},$R2P,\"initialization\":\"scratch\",$U,$H,$LP,$COMMON,\"seed\":2,\"steps\":$S"
job r2_uhpi reflow "\"teacher\":{\"job\":\"rf1\"},$R2P,\"initialization\":\"teacher\",$U,$H,$LP,$COMMON,\"seed\":2,\"steps\":$S"
job r2_if   reflow "\"teacher\":{\"job\":\"rf1\"},$R2P,\"initialization\":\"teacher\",$COMMON,\"seed\":2,\"steps\":$S"
job r3      reflow "\"teacher\":{\"job\":\"r2_uhpi\"},$PAIRS,\"noiseSeed\":13,\"initialization\":\"teacher\",$U,$H,$LP,$COMMON,\"seed\":3,\"steps\":$S"
job d_if     distill "\"teacher\":{\"job\":\"r2_if\"},$PAIRS,\"guidance\":1.5,\"noiseSeed\":12,\"k\":1,$COMMON,\"seed\":4,\"steps\":$SD"
job d_if_lp  distill "\"teacher\":{\"job\":\"r2_if\"},\"pairsFrom\":{\"job\":\"d_if\"},\"guidance\":1.5,\"noiseSeed\":12,\"k\":1,\"initFrom\":{\"job\":\"d_if\"},$LP,$COMMON,\"seed\":5,\"steps\":$SL"
job d_rf1    distill "\"teacher\":{\"job\":\"rf1\"},$PAIRS,\"guidance\":1.5,\"noiseSeed\":12,\"k\":1,$COMMON,\"seed\":4,\"steps\":$SB"
job d_rf1_lp distill "\"teacher\":{\"job\":\"rf1\"},\"pairsFrom\":{\"job\":\"d_rf1\"},\"guidance\":1.5,\"noiseSeed\":12,\"k\":1,\"initFrom\":{\"job\":\"d_rf1\"},$LP,$COMMON,\"seed\":5,\"steps\":$SL"
run() { # name
  if [ -f "$OUT/$1/result.json" ]; then echo "$1: done"; return; fi
  echo "$1: start $(date -u +%FT%TZ)"
  if "$BIN" run "$OUT/$1.json" --out "$OUT/$1" --threads 1 > "$OUT/$1.log" 2>&1; then echo "$1: end $(date -u +%FT%TZ)"; else echo "$1: FAILED"; fi
}
# Phase 1: the shared pairs (r2_base) beside InstaFlow's baseline distillation from the 1-RF.
( run d_rf1; run d_rf1_lp ) &
run r2_base
wait
# Phase 2: the ablation columns and InstaFlow's chain.
( run r2_u; run r2_uh; run r2_uhp; run r2_uhs ) &
( run r2_uhpi; run r2_if; run d_if; run d_if_lp; run r3 ) &
wait
