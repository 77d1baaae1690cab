#!/bin/sh
# Flow pruning results of docs/RESULTS.md (issue #10): the one-step students of
# prune_flow_chain.sh (2-D moons and Fashion-MNIST, ReLU MLPs) pruned iteratively with
# fine-tuning (rewind none; 30 % of the survivors per cycle to 90 %: 7 cycles), with and without
# AP (3 of the 30 %), and structured to 50/80/90 % of each hidden layer's units. Fine-tuning uses
# each student's own distillation pairs and recorded recipe.
# Usage: prune_flows.sh CHAINDIR OUTDIR CLASSIFIER   (CHAINDIR: prune_flow_chain.sh's OUTDIR;
# CLASSIFIER: a Fashion-MNIST classifier.safetensors for the Fréchet distance)
set -eu
CHAIN=${1:?usage: prune_flows.sh CHAINDIR OUTDIR CLASSIFIER}
OUT=${2:?usage}
CLS=${3:?usage}
BIN=${REFLOWD:-.build/release/reflowd}
PAR=${PAR:-1}
mkdir -p "$OUT"
: > "$OUT/list"
imp() {  # name model retrainSteps seed ap evaluation
  en=false; [ "$5" = on ] && en=true
  cat > "$OUT/$1.json" <<JSON
{"type":"prune","input":{"model":{"path":"$CHAIN/$2/model.safetensors"},"pairs":{"path":"$CHAIN/$2/pairs.safetensors"},
 "method":"magnitude","scope":"global","schedule":"iterative","sparsity":0.9,"rate":0.3,"rewind":{"kind":"none"},
 "ap":{"enabled":$en,"rate":0.03,"selection":"movement"},"retrain":{"steps":$3,"decay":"cosine"},
 "dnr":{"samples":1000},"evaluation":$6,"seed":$4}}
JSON
  echo "$1" >> "$OUT/list"
}
structured() {  # name model sparsity retrainSteps evaluation
  cat > "$OUT/$1.json" <<JSON
{"type":"prune","input":{"model":{"path":"$CHAIN/$2/model.safetensors"},"pairs":{"path":"$CHAIN/$2/pairs.safetensors"},
 "method":"structured","schedule":"oneShot","sparsity":$3,"retrain":{"steps":$4,"decay":"cosine"},
 "dnr":{"samples":1000},"evaluation":$5,"seed":1}}
JSON
  echo "$1" >> "$OUT/list"
}
MO='{"n":4000,"steps":[1,10],"timingRows":1024,"timingRepeats":15}'
FM='{"n":2000,"steps":[1,10],"classifier":{"path":"'"$CLS"'"},"timingRows":256,"timingRepeats":9}'
for s in 1 2 3; do imp "mo_imp_off_$s" mo_distill 300 $s off "$MO"; imp "mo_imp_on_$s" mo_distill 300 $s on "$MO"; done
for sp in 0.5 0.8 0.9; do structured "mo_str_$sp" mo_distill $sp 600 "$MO"; done
for s in 1 2; do imp "fm_imp_off_$s" fm_distill 400 $s off "$FM"; imp "fm_imp_on_$s" fm_distill 400 $s on "$FM"; done
for sp in 0.5 0.8 0.9; do structured "fm_str_$sp" fm_distill $sp 600 "$FM"; done
export OUT BIN
echo "start $(date -u +%FT%TZ)"
xargs -P "$PAR" -I{} sh -c 'if [ -f "$OUT/{}/result.json" ]; then exit 0; fi; "$BIN" run "$OUT/{}.json" --out "$OUT/{}" --threads 1 > "$OUT/{}.log" 2>&1 || echo "{}: FAILED"' < "$OUT/list"
echo "done $(date -u +%FT%TZ)"
