#!/bin/sh
# Issue #11, follow-up evaluations (after cond_eval.sh and cond_stage3.sh): rfpp's "new" update
# rule (`remix`) against Euler at 3 and 4 NFE (at 1 and 2 NFE the two rules are the same map in
# exact arithmetic, see docs/RESULTS.md), and the teacher at guidance 8 and 16.
# Usage: cond_eval2.sh OUTDIR [tiny]
set -eu
OUT=${1:?usage: cond_eval2.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
PAR=${PAR:-2}
if [ "$SCALE" = tiny ]; then N=64; TI=64; else N=2000; TI=10000; fi
SOL='[{"kind":"euler","steps":3},{"kind":"remix","steps":3},{"kind":"euler","steps":4},{"kind":"remix","steps":4}]'
: > "$OUT/eval2.list"
ev() { # name model solvers seed extra
  printf '{"type":"evaluate","input":{"model":{"job":"%s"},"classifier":{"job":"clf_eval"},"n":%s,"seed":%s,"trainImages":%s,"solvers":%s%s}}\n' \
    "$2" "$N" "$4" "$TI" "$3" "$5" > "$OUT/$1.json"
  echo "$1" >> "$OUT/eval2.list"
}
for seed in 1 2 3; do
  for m in r2_base r2_uhp r2_uhpi r2_if r3 r2_g; do ev "f_${m}_s$seed" $m "$SOL" $seed ''; done
  for g in 8 16; do ev "e_rf1_g${g}_s$seed" rf1 '[{"kind":"euler","steps":50}]' $seed ",\"guidance\":$g"; done
done
xargs -P "$PAR" -I{} sh -c 'if [ -f "$0/{}/result.json" ]; then echo "{}: done"; elif "$1" run "$0/{}.json" --out "$0/{}" --threads 1 > "$0/{}.log" 2>&1; then echo "{}: ok"; else echo "{}: FAILED"; fi' "$OUT" "$BIN" < "$OUT/eval2.list"
