#!/bin/sh
# Evaluation of the Fashion-MNIST chain (fmnist_chain.sh) for docs/RESULTS.md: a CNN classifier,
# then each model's image evaluation at n = 1000 against the held-out test split, 3 sampling seeds.
# Usage: fmnist_eval.sh OUTDIR   (the chain's OUTDIR)
set -eu
OUT=${1:?usage: fmnist_eval.sh OUTDIR}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-2}
cat > "$OUT/clf.json" <<JSON
{"type":"classify","input":{"data":{"kind":"images","dataset":"$DATA"},"model":{"kind":"cnn","channels":[32,64],"features":128},
 "epochs":3,"seed":0}}
JSON
run() { # name spec
  if [ -f "$OUT/$1/result.json" ]; then echo "$1: done"; return; fi
  echo "$1: start $(date -u +%FT%TZ)"; "$BIN" run "$OUT/$1.json" --out "$OUT/$1" --threads "$THREADS" > "$OUT/$1.log" 2>&1; echo "$1: end $(date -u +%FT%TZ)"
}
run clf
for seed in 1 2 3; do
  for m in rf1 rf2 distill; do
    case $m in
      rf1) SOLVERS='[{"kind":"euler","steps":1},{"kind":"euler","steps":4},{"kind":"euler","steps":100}]';;
      rf2) SOLVERS='[{"kind":"euler","steps":1},{"kind":"euler","steps":2}]';;
      distill) SOLVERS='[{"kind":"euler","steps":1}]';;
    esac
    cat > "$OUT/eval-$m-$seed.json" <<JSON
{"type":"evaluate","input":{"model":{"job":"$m"},"classifier":{"job":"clf"},"n":1000,"seed":$seed,"trainImages":10000,
 "solvers":$SOLVERS}}
JSON
    run "eval-$m-$seed"
  done
done
