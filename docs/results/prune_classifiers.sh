#!/bin/sh
# Classifier pruning results of docs/RESULTS.md (issue #10): Fashion-MNIST, ReLU MLP 784-300-100-10
# and LeNet-5; IMP with rewinding to the initialisation, 20 % of the survivors per cycle to 95 %
# sparsity (14 cycles), global and layer-wise magnitude, each with and without AP (2 of the 20 %),
# 5 seeds; then AP's three ablations (global, 3 seeds). Each cycle retrains with the recipe of the
# dense run (same steps, batch 128, Adam 2e-3 with cosine decay). Jobs run two at a time on one
# thread each. Usage: prune_classifiers.sh OUTDIR [tiny]
set -eu
OUT=${1:?usage: prune_classifiers.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
PAR=${PAR:-2}
SEEDS=${SEEDS:-"1 2 3 4 5"}
ABL_SEEDS=${ABL_SEEDS:-"1 2 3"}
if [ "$SCALE" = tiny ]; then SM=20; SL=20; SP=0.5; LIMIT=',"limit":2000'; else SM=1000; SL=500; SP=0.95; LIMIT=''; fi
mkdir -p "$OUT"
model() { if [ "$1" = mlp ]; then echo '{"kind":"mlp","hidden":[300,100]}'; else echo '{"kind":"lenet"}'; fi; }
steps() { if [ "$1" = mlp ]; then echo $SM; else echo $SL; fi; }
: > "$OUT/dense.list"; : > "$OUT/prune.list"
for net in mlp lenet; do
  for seed in $SEEDS; do
    c="c_${net}_$seed"
    cat > "$OUT/$c.json" <<JSON
{"type":"classify","input":{"data":{"kind":"images","dataset":"$DATA","split":"train"$LIMIT},"model":$(model $net),
 "batchSize":128,"learningRate":2e-3,"decay":"cosine","steps":$(steps $net),"seed":$seed,"logEvery":100}}
JSON
    echo "$c" >> "$OUT/dense.list"
    for scope in global layerwise; do
      for ap in off on; do
        p="p_${net}_${scope}_${ap}_$seed"
        en=false; [ $ap = on ] && en=true
        cat > "$OUT/$p.json" <<JSON
{"type":"prune","input":{"model":{"job":"$c"},"method":"magnitude","scope":"$scope","schedule":"iterative",
 "sparsity":$SP,"rate":0.2,"rewind":{"kind":"init"},"ap":{"enabled":$en,"rate":0.02,"selection":"movement"},
 "retrain":{"steps":$(steps $net),"learningRate":2e-3,"batchSize":128,"decay":"cosine"},
 "dnr":{"samples":1000},"evaluation":{"n":10000},"seed":$seed}}
JSON
        echo "$p" >> "$OUT/prune.list"
      done
    done
  done
done
for net in mlp lenet; do
  for seed in $ABL_SEEDS; do
    for sel in random magnitude positive; do
      p="a_${net}_${sel}_$seed"
      cat > "$OUT/$p.json" <<JSON
{"type":"prune","input":{"model":{"job":"c_${net}_$seed"},"method":"magnitude","scope":"global","schedule":"iterative",
 "sparsity":$SP,"rate":0.2,"rewind":{"kind":"init"},"ap":{"enabled":true,"rate":0.02,"selection":"$sel"},
 "retrain":{"steps":$(steps $net),"learningRate":2e-3,"batchSize":128,"decay":"cosine"},
 "dnr":{"samples":1000},"evaluation":{"n":10000},"seed":$seed}}
JSON
      echo "$p" >> "$OUT/prune.list"
    done
  done
done
export OUT BIN
echo "dense: start $(date -u +%FT%TZ)"
xargs -P "$PAR" -I{} sh -c 'if [ -f "$OUT/{}/result.json" ]; then exit 0; fi; "$BIN" run "$OUT/{}.json" --out "$OUT/{}" --threads 1 > "$OUT/{}.log" 2>&1 || echo "{}: FAILED"' < "$OUT/dense.list"
echo "prune: start $(date -u +%FT%TZ)"
xargs -P "$PAR" -I{} sh -c 'if [ -f "$OUT/{}/result.json" ]; then exit 0; fi; "$BIN" run "$OUT/{}.json" --out "$OUT/{}" --threads 1 > "$OUT/{}.log" 2>&1 || echo "{}: FAILED"' < "$OUT/prune.list"
echo "done: $(date -u +%FT%TZ)"
