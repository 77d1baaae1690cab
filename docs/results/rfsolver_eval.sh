#!/bin/sh
# Issue #13 (RF-Solver), for docs/RESULTS.md. OUTDIR holds `rf1` (the class-conditional MLP
# 1-rectified flow of cond_stage1.sh), `r2` (its 2-rectified flow, `r2_base` of cond_stage2.sh)
# and `clf_eval` (the evaluation CNN of cond_stage1.sh), copied in as job directories.
#  - inversion-reconstruction: the first 600 Fashion-MNIST test images in three sets of 200
#    (the spread is over the sets), each inverted under its own label (the conditional
#    velocity, no guidance) and reconstructed with the same solver: Euler with N steps against
#    RF-Solver-2 with N/2 steps (equal NFE), N = 4, 6, 10, 20, 50, 100;
#  - local error of every inversion step against RK45 (rtol = atol = 1e-6) on the first set:
#    Euler 10 / RF-Solver-2 5 and Euler 20 / RF-Solver-2 10;
#  - sample quality at equal NFE: evaluate (n = 2000, guidance 1.5, seeds 1-3) with Euler
#    4/10/20/50 and RF-Solver-2 2/5/10/25.
# Usage: rfsolver_eval.sh OUTDIR [DATASET]   (DATASET: the Fashion-MNIST directory or name)
set -eu
OUT=${1:?usage: rfsolver_eval.sh OUTDIR [DATASET]}
DATA=${2:-/usr/share/datasets/fashion-mnist}
BIN=${REFLOWD:-.build/release/reflowd}
PAR=${PAR:-2}
LIST="$OUT/rfs.list"
: > "$LIST"
s() { printf '{"kind":"%s","steps":%s}' "$1" "$2"; }
inv() { # name model solver first localError
  printf '{"type":"invert","input":{"model":{"job":"%s"},"images":{"dataset":"%s","split":"test","indices":[%s]},"solver":%s,"localError":%s}}\n' \
    "$2" "$DATA" "$(seq -s, "$4" $(($4 + 199)))" "$3" "$5" > "$OUT/$1.json"
  echo "$1" >> "$LIST"
}
for m in rf1 r2; do
  for set in 0 1 2; do
    first=$((set * 200))
    for n in 4 6 10 20 50 100; do
      inv "i_${m}_euler${n}_set$set" $m "$(s euler $n)" $first false
      inv "i_${m}_rfs$((n / 2))_set$set" $m "$(s rfSolver2 $((n / 2)))" $first false
    done
  done
  for n in 10 20; do
    inv "l_${m}_euler$n" $m "$(s euler $n)" 0 true
    inv "l_${m}_rfs$((n / 2))" $m "$(s rfSolver2 $((n / 2)))" 0 true
  done
  for seed in 1 2 3; do
    printf '{"type":"evaluate","input":{"model":{"job":"%s"},"classifier":{"job":"clf_eval"},"n":2000,"seed":%s,"trainImages":10000,"guidance":1.5,"solvers":[%s,%s,%s,%s,%s,%s,%s,%s]}}\n' \
      $m $seed "$(s euler 4)" "$(s euler 10)" "$(s euler 20)" "$(s euler 50)" "$(s rfSolver2 2)" "$(s rfSolver2 5)" "$(s rfSolver2 10)" "$(s rfSolver2 25)" \
      > "$OUT/e_${m}_s$seed.json"
    echo "e_${m}_s$seed" >> "$LIST"
  done
done
export OUT BIN
xargs -P "$PAR" -I{} sh -c 'if [ -f "$OUT/{}/result.json" ]; then echo "{}: done"; elif "$BIN" run "$OUT/{}.json" --out "$OUT/{}" --threads 1 > "$OUT/{}.log" 2>&1; then echo "{}: ok"; else echo "{}: FAILED"; fi' < "$LIST"
