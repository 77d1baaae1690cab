#!/bin/sh
# Issue #11, evaluations of stages 1–2 (cond_stage1.sh, cond_stage2.sh) for docs/RESULTS.md:
# every model scored on the features of `clf_eval` (never the perceptual network `clf_feat`),
# n = 2000 samples under balanced labels (i mod 10) against the held-out test split, sampling
# seeds 1, 2, 3 (the noise; the models are fixed).
#   teacher rf1 at guidance α ∈ {0, 1, 1.5, 2, 4} (Euler 50; α = 1 is the conditional velocity
#   alone), plus its 1- and 2-step Euler; the per-t loss curve of rf1 (independent coupling)
#   and of the vanilla 2-RF r2_base (fresh teacher pairs at guidance 2, as it was trained on).
#   2-RFs and the 3-RF at 1 and 2 NFE (Euler, and rfpp's "new" rule `remix` at 2 NFE).
#   one-step students at 1 NFE.
# Usage: cond_eval.sh OUTDIR [tiny]
set -eu
OUT=${1:?usage: cond_eval.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
PAR=${PAR:-2}
if [ "$SCALE" = tiny ]; then N=64; TI=64; LN=16; else N=2000; TI=10000; LN=1000; fi
E1='{"kind":"euler","steps":1}'; E2='{"kind":"euler","steps":2}'; R2='{"kind":"remix","steps":2}'; E50='{"kind":"euler","steps":50}'
: > "$OUT/eval.list"
ev() { # name model solvers seed extra
  printf '{"type":"evaluate","input":{"model":{"job":"%s"},"classifier":{"job":"clf_eval"},"n":%s,"seed":%s,"trainImages":%s,"solvers":%s%s}}\n' \
    "$2" "$N" "$4" "$TI" "$3" "$5" > "$OUT/$1.json"
  echo "$1" >> "$OUT/eval.list"
}
for seed in 1 2 3; do
  for g in 0 1 1.5 2 4; do
    if [ "$g" = 1 ]; then G=''; SOL="[$E1,$E2,$E50]"; else G=",\"guidance\":$g"; SOL="[$E50]"; fi
    LC=''; [ "$g" = 1 ] && [ "$seed" = 1 ] && LC=",\"lossCurve\":{\"n\":$LN,\"bins\":20}"
    ev "e_rf1_g${g}_s$seed" rf1 "$SOL" $seed "$G$LC"
  done
  for m in r2_base r2_u r2_uh r2_uhs r2_uhp r2_uhpi r2_if r3; do
    LC=''; [ "$m" = r2_base ] && [ "$seed" = 1 ] && LC=",\"lossCurve\":{\"teacher\":{\"job\":\"rf1\"},\"guidance\":2,\"n\":$LN,\"bins\":20}"
    ev "e_${m}_s$seed" $m "[$E1,$E2,$R2]" $seed "$LC"
  done
  for m in d_if d_if_lp d_rf1 d_rf1_lp; do ev "e_${m}_s$seed" $m "[$E1]" $seed ''; done
done
export OUT BIN
xargs -P "$PAR" -I{} sh -c 'if [ -f "$OUT/{}/result.json" ]; then echo "{}: done"; elif "$BIN" run "$OUT/{}.json" --out "$OUT/{}" --threads 1 > "$OUT/{}.log" 2>&1; then echo "{}: ok"; else echo "{}: FAILED"; fi' < "$OUT/eval.list"
