#!/bin/sh
# Issue #12 cost check (idle machine, one thread): DDIM against Euler per NFE on the same MLP,
# and the training step of a VP model with lossSpace data against a flow.
# Usage: bench12.sh FLOW_MODEL VP_MODEL [WORKDIR]
#   FLOW_MODEL: a flow checkpoint (slim_chain.sh's t1/model.safetensors);
#   VP_MODEL: a VP checkpoint (rd_chain.sh OUT full v: ddpm/model.safetensors).
set -eu
FLOW=${1:?usage: bench12.sh FLOW_MODEL VP_MODEL [WORKDIR]}
VPM=${2:?usage: bench12.sh FLOW_MODEL VP_MODEL [WORKDIR]}
D=${3:-${TMPDIR:-/tmp}/bench12}
B=$(realpath "${REFLOWD:-.build/release/reflowd}")
DATA=${FMNIST:-/usr/share/datasets/fashion-mnist}
FLOW=$(realpath "$FLOW"); VPM=$(realpath "$VPM")
export OPENBLAS_NUM_THREADS=1
rm -rf "$D"; mkdir -p "$D"; cd "$D"
M='{"kind":"mlp","dimension":784,"imageShape":[1,28,28],"width":1024,"depth":3,"timeInput":{"kind":"sinusoidal","features":32,"scale":1000}}'
for r in 1 2 3; do
  echo "{\"type\":\"sample\",\"input\":{\"model\":{\"path\":\"$FLOW\"},\"n\":2000,\"solver\":{\"kind\":\"euler\",\"steps\":50},\"seed\":$r}}" > e$r.json
  echo "{\"type\":\"sample\",\"input\":{\"model\":{\"path\":\"$VPM\"},\"n\":2000,\"solver\":{\"kind\":\"ddim\",\"steps\":50},\"seed\":$r}}" > d$r.json
  "$B" run e$r.json --out e$r --threads 1 > /dev/null 2>&1; "$B" run d$r.json --out d$r --threads 1 > /dev/null 2>&1
  python3 -c "import json; a=json.load(open('e$r/result.json'))['sample']['seconds']; b=json.load(open('d$r/result.json'))['sample']['seconds']; print('round $r: euler-50 %.2f s, ddim-50 %.2f s (2000 images)' % (a, b))"
done
for r in 1 2; do
  for kind in flow vp; do
    if [ $kind = vp ]; then X=',"interpolant":{"kind":"vp"},"loss":{"kind":"elementwisePseudoHuber"},"lossSpace":"data"'; else X=''; fi
    echo "{\"type\":\"train\",\"input\":{\"model\":$M,\"data\":{\"kind\":\"images\",\"dataset\":\"$DATA\",\"split\":\"train\",\"limit\":10000},\"batchSize\":128,\"steps\":400,\"previewPoints\":0$X}}" > t$kind$r.json
    "$B" run t$kind$r.json --out t$kind$r --threads 1 > /dev/null 2>&1
    python3 -c "import json; t=json.load(open('t$kind$r/result.json'))['training']; print('round $r $kind: %.1f steps/s' % t['stepsPerSecond'])"
  done
done
