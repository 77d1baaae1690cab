#!/bin/sh
# Issue #12, evaluations of rd_chain.sh (Rectified Diffusion) and slim_chain.sh (SlimFlow) for
# docs/RESULTS.md: every model scored on the features of `clf_eval` (the evaluation CNN of
# cond_stage1.sh, copied into each OUTDIR), n = 2000 samples against the held-out test split,
# sampling seeds 1, 2, 3 (the noise; the models are fixed). Straightness and (VP models)
# first-order-ness from 256 trajectories of `straightnessSteps` = 100 (Euler / DDIM).
# rdv: the models of `rd_chain.sh OUTDIR full v` (ddpm, rd_eps, rd_flow_s, rd_ph2, rd_ph4).
# Usage: rd_slim_eval.sh rd|rdv|slim OUTDIR [tiny]
set -eu
WHICH=${1:?usage: rd_slim_eval.sh rd|slim OUTDIR [tiny]}
OUT=${2:?usage: rd_slim_eval.sh rd|slim OUTDIR [tiny]}
SCALE=${3:-full}
BIN=${REFLOWD:-.build/release/reflowd}
PAR=${PAR:-2}
if [ "$SCALE" = tiny ]; then N=64; TI=64; ST=10; else N=2000; TI=10000; ST=100; fi
s() { printf '{"kind":"%s","steps":%s}' "$1" "$2"; }
LIST="$OUT/eval_$WHICH.list"
: > "$LIST"
ev() { # name model solvers seed
  printf '{"type":"evaluate","input":{"model":{"job":"%s"},"classifier":{"job":"clf_eval"},"n":%s,"seed":%s,"trainImages":%s,"straightnessSteps":%s,"solvers":%s}}\n' \
    "$2" "$N" "$4" "$TI" "$ST" "$3" > "$OUT/$1.json"
  echo "$1" >> "$LIST"
}
for seed in 1 2 3; do
  if [ "$WHICH" = rdv ]; then
    ev "e_ddpm_s$seed" ddpm "[$(s ddim 1),$(s ddim 2),$(s ddim 4),$(s ddim 25),$(s ddim 100)]" $seed
    ev "e_rd_eps_s$seed" rd_eps "[$(s ddim 1),$(s ddim 2),$(s ddim 4)]" $seed
    ev "e_rd_flow_s_s$seed" rd_flow_s "[$(s euler 1),$(s euler 2),$(s euler 4)]" $seed
    for m in rd_ph2 rd_ph4; do ev "e_${m}_s$seed" $m "[$(s ddim 1),$(s ddim 2),$(s ddim 4)]" $seed; done
  elif [ "$WHICH" = rd ]; then
    ev "e_ddpm_s$seed" ddpm "[$(s ddim 1),$(s ddim 2),$(s ddim 4),$(s ddim 25),$(s ddim 100)]" $seed
    for m in rd_eps rd_eps_mse rd_vpv rd_ph2 rd_ph4; do ev "e_${m}_s$seed" $m "[$(s ddim 1),$(s ddim 2),$(s ddim 4)]" $seed; done
    for m in rd_flow rd_flow_s; do ev "e_${m}_s$seed" $m "[$(s euler 1),$(s euler 2),$(s euler 4)]" $seed; done
  else
    ev "e_t1_s$seed" t1 "[$(s euler 1),$(s euler 2),$(s euler 8),$(s euler 50)]" $seed
    for m in a_w1024 a_w640 a_w384 a_w224 a_w384_none a_w384_flip a_w384_anneal; do
      ev "e_${m}_s$seed" $m "[$(s euler 1),$(s euler 2),$(s euler 8)]" $seed
    done
    for m in d_w1024 d_w640 d_w384 d_w224 d_w384_plain d_w384_scratch; do ev "e_${m}_s$seed" $m "[$(s euler 1)]" $seed; done
  fi
done
export OUT BIN
xargs -P "$PAR" -I{} sh -c 'if [ -f "$OUT/{}/result.json" ]; then echo "{}: done"; elif "$BIN" run "$OUT/{}.json" --out "$OUT/{}" --threads 1 > "$OUT/{}.log" 2>&1; then echo "{}: ok"; else echo "{}: FAILED"; fi' < "$LIST"
