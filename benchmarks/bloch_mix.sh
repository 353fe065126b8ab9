#!/bin/bash
# Bloch-wave share of the training batch, chosen by validation loss (issue 23, item 2).
# Each arm continues the same weights for the same number of steps (WSD with its own cool-down) and
# differs only in the share of stored Bloch-wave patterns of training materials in every batch; the
# losses are then taken on the fixed held-out sets by benchmarks/val_loss_compare.py.
#   bash benchmarks/bloch_mix.sh INIT STORED STEPS THREADS SHARE [SHARE ...]
# e.g. bash benchmarks/bloch_mix.sh weights/default_2026-12-06.safetensors data/bloch_train.h5 400 1 0 0.15 0.3
set -euo pipefail
init=$1; stored=$2; steps=$3; threads=$4; shift 4
export TQDM_DISABLE=1
names=()
for share in "$@"; do
  name=mix_${share/./p}
  args=(--library data/cache/kinematic --run-dir runs/$name --steps "$steps" --schedule wsd
        --decay-steps $((steps / 4)) --lr 5e-4 --warmup-steps 30 --seed 77 --threads "$threads"
        --eval-every 1000000 --init-from "$init" --export runs/export --name "$name")
  if [ "$share" != "0" ]; then args+=(--stored-train "$stored" --stored-fraction "$share"); fi
  py4dstem-gnn train "${args[@]}"
  names+=("runs/export/$name.safetensors")
done
python benchmarks/val_loss_compare.py "$init" "${names[@]}" --title "Bloch-wave share of the batch at equal compute" --out reports/bloch_mix.md
