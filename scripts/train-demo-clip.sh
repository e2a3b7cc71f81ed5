#!/usr/bin/env bash
# Trains the deterministic CLIP baseline of the demo world (models/demo-clip/) with the same trainer,
# data, steps, learning rates and seeds as the demo ProLIP (scripts/train-demo-model.sh), minus what
# needs variances: its loss is PPCL without variances (the SigLIP loss), no inclusion terms, no VIB,
# no masked inputs. Four stages, 6,000 steps of batch 128, fp32 on CPU; then evaluates it.
# Usage: scripts/train-demo-clip.sh [python]   (run from the repository root)
# Each stage resumes from its last checkpoint if interrupted; rerun the script to continue.
set -euo pipefail
PY=${1:-python}
if [ ! -f data/demo/train.jsonl ]; then  # the demo ProLIP's data, generated the same way
  $PY -m service.cli demo-data --out data/demo --train 40000 --val 1000 --corrupt-fraction 0.25 --level-repeats 1 1 1 2
fi
for recipe in demo-clip demo-clip-stage2 demo-clip-stage3 demo-clip-stage4; do
  OMP_WAIT_POLICY=PASSIVE $PY -m service.cli train --config "models/training/recipes/$recipe.json" --resume
done
mkdir -p models/demo-clip
cp runs/demo-clip-stage4/model/config.json runs/demo-clip-stage4/model/model.safetensors \
   runs/demo-clip-stage4/model/tokenizer.json runs/demo-clip-stage4/model/train_config.json models/demo-clip/
$PY -m service.cli eval --model models/demo-clip --output models/demo-clip/eval.json
