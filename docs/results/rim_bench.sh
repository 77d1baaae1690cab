#!/bin/sh
# Issue #14 speed comparison: `reflowd bench mri` against its PyTorch peer (rim_torch.py), one
# thread each, alternating for ROUNDS rounds on an otherwise idle machine. JSON lines go to OUT.
# Usage: rim_bench.sh REFLOWD OUT [ROUNDS]
set -eu
REFLOWD=$1 OUT=$2 ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
for i in $(seq "$ROUNDS"); do
  OPENBLAS_NUM_THREADS=1 "$REFLOWD" bench mri --threads 1 --reps 5 2>/dev/null >> "$OUT/bench_mri.jsonl"
  OMP_NUM_THREADS=1 python3 "$HERE/rim_torch.py" --threads 1 --reps 5 >> "$OUT/bench_mri_torch.jsonl"
done
