#!/bin/sh
# The dense one-step flows that docs/RESULTS.md's pruning section (issue #10) prunes: ReLU MLP
# velocity models (ReLU so that the dead-neuron rate means something; an MLP so that structured
# pruning yields a physically smaller network), each 1-RF → reflow (2-RF) → one-step distillation.
#   fmnist: Fashion-MNIST as flattened 28×28 images (imageShape set: grids and image evaluation)
#   moons:  2-D two moons
# Usage: prune_flow_chain.sh OUTDIR [tiny]   (tiny checks the chain in a minute)
set -eu
OUT=${1:?usage: prune_flow_chain.sh OUTDIR [tiny]}
SCALE=${2:-full}
BIN=${REFLOWD:-.build/release/reflowd}
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-2}
if [ "$SCALE" = tiny ]; then S1=10; P=64; S2=10; S3=10; M1=10; MP=64; M2=10; M3=10
else S1=20000; P=10000; S2=4000; S3=4000; M1=5000; MP=20000; M2=3000; M3=3000; fi
FM='{"kind":"mlp","dimension":784,"imageShape":[1,28,28],"width":1024,"depth":3,"activation":"relu","timeInput":{"kind":"sinusoidal","features":32,"scale":1000}}'
MM='{"kind":"mlp","dimension":2,"width":256,"depth":3,"activation":"relu"}'
mkdir -p "$OUT"
cat > "$OUT/fm_rf1.json" <<JSON
{"type":"train","input":{"model":$FM,"data":{"kind":"images","dataset":"$DATA","split":"train"},
 "batchSize":128,"learningRate":5e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":1,
 "steps":$S1,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/fm_rf2.json" <<JSON
{"type":"reflow","input":{"teacher":{"job":"fm_rf1"},"pairs":$P,"solver":{"kind":"euler","steps":50},"noiseSeed":11,
 "batchSize":128,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":2,
 "steps":$S2,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/fm_distill.json" <<JSON
{"type":"distill","input":{"teacher":{"job":"fm_rf2"},"k":1,"pairs":$P,"solver":{"kind":"euler","steps":50},"noiseSeed":12,
 "batchSize":128,"learningRate":2e-4,"gradClipNorm":1,"emaDecay":0.999,"seed":3,
 "steps":$S3,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/mo_rf1.json" <<JSON
{"type":"train","input":{"model":$MM,"data":{"kind":"twoMoons"},"batchSize":512,"learningRate":1e-3,"seed":1,
 "steps":$M1,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/mo_rf2.json" <<JSON
{"type":"reflow","input":{"teacher":{"job":"mo_rf1"},"pairs":$MP,"noiseSeed":11,"batchSize":512,"learningRate":1e-3,"seed":2,
 "steps":$M2,"logEvery":100,"checkpointEvery":1000}}
JSON
cat > "$OUT/mo_distill.json" <<JSON
{"type":"distill","input":{"teacher":{"job":"mo_rf2"},"k":1,"pairs":$MP,"noiseSeed":12,"batchSize":512,"learningRate":1e-3,"seed":3,
 "steps":$M3,"logEvery":100,"checkpointEvery":1000}}
JSON
for j in mo_rf1 mo_rf2 mo_distill fm_rf1 fm_rf2 fm_distill; do
  if [ -f "$OUT/$j/result.json" ]; then echo "$j: done"; continue; fi
  echo "$j: start $(date -u +%FT%TZ)"
  "$BIN" run "$OUT/$j.json" --out "$OUT/$j" --threads "$THREADS" > "$OUT/$j.log" 2>&1
  echo "$j: end $(date -u +%FT%TZ)"
done
