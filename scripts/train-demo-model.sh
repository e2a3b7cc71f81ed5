#!/usr/bin/env bash
# Re-trains the embedded demo model (models/demo/) from scratch, as it was trained, in four
# stages on 2 CPU cores (about 85 min in all), then exports and evaluates it:
#   data    seeded demo world, ~1 min
#   stage 1 official objective from random weights, 2,500 steps (~32 min)
#   stage 2 the same objective continued with a fresh warm-up, 1,500 steps (~20 min)
#   stage 3 + broader-caption and degraded-view inclusion, 1,500 steps (~20 min)
#   stage 4 the same with occluders of random grey shades instead of one colour, 500 steps (~7 min)
# Usage: scripts/train-demo-model.sh [python]   (run from the repository root)
# Each stage resumes from its last checkpoint if interrupted; rerun the script to continue.
set -euo pipefail
PY=${1:-python}
$PY -m service.cli demo-data --out data/demo --train 40000 --val 1000 --corrupt-fraction 0.25 --level-repeats 1 1 1 2
for recipe in demo demo-stage2 demo-stage3 demo-stage4; do
  OMP_WAIT_POLICY=PASSIVE $PY -m service.cli train --config "models/training/recipes/$recipe.json" --resume
done
cp runs/demo-stage4/model/config.json runs/demo-stage4/model/model.safetensors runs/demo-stage4/model/tokenizer.json \
   runs/demo-stage4/model/train_config.json models/demo/
$PY -m service.cli eval --output models/demo/eval.json
