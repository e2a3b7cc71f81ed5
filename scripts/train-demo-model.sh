#!/usr/bin/env bash
# Re-trains the embedded demo model (models/demo/) from scratch, as it was trained:
# data (seeded, ~1 min), training (2,500 steps, ~30-60 min on 2 CPU cores), export, evaluation.
# Usage: scripts/train-demo-model.sh [python]   (run from the repository root)
set -euo pipefail
PY=${1:-python}
$PY -m service.cli demo-data --out data/demo --train 40000 --val 1000 --corrupt-fraction 0.4 --level-repeats 1 1 1 2
OMP_WAIT_POLICY=PASSIVE $PY -m service.cli train --config models/training/recipes/demo.json --resume
cp runs/demo/model/config.json runs/demo/model/model.safetensors runs/demo/model/tokenizer.json \
   runs/demo/model/train_config.json models/demo/
$PY -m service.cli eval --output models/demo/eval.json
