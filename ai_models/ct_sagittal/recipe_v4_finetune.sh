#!/usr/bin/env bash
# The "v4 recipe", shipped as model 2.1.0 (see model_card.md), reproducible on CPU with fixed
# seeds (about 20 minutes per 3000-iteration model and 6 minutes per 1000-iteration fine-tune on
# 2 idle cores). The shipped files: export runs/all_v4/model.pt with --version 2.1.0 into
# ai_models/ct_sagittal; the folds: copy runs/v4_export/folds/CASE into folds/CASE.
#
# v4 = the 2.0.0 network (3000 iterations from scratch, runs/all_v2b) fine-tuned 1000
# iterations at lr 1e-3 with two more augmentations (contrast in the spinal canal, p 0.25;
# osteoporotic bodies, p 0.2) and the chest series' pseudo-labels made by that same 2.0.0
# network (IGNORE-aware loss). A fold is the same from the fold's own 2.0.0 network, trained
# without the held-out case, whose pseudo-labels are also made by that fold network, so nothing
# of the held-out case reaches its fold.
#
#   ai_models/ct_sagittal/recipe_v4_finetune.sh all           # -> runs/v4_export/all
#   ai_models/ct_sagittal/recipe_v4_finetune.sh s0009 tptbox  # folds -> runs/v4_export/folds/CASE
# then: osteo-node evaluate --loo ai_models/ct_sagittal/runs/v4_export/folds --only s0009 ...
set -euo pipefail
cd "$(dirname "$0")/../.."
A=ai_models/ct_sagittal
PY=.venv/bin/python
[ -f "$A/cache/example_ct.npz" ] || $PY "$A/prepare_data.py"
for name in "$@"; do
  if [ "$name" = all ]; then
    base=runs/all_v2b; exclude=(); out=runs/all_v4; dest=$A/runs/v4_export/all; version=v4-recipe
  else
    base=runs/loo_v2/$name; exclude=(--exclude "$name"); out=runs/loo_v4/$name
    dest=$A/runs/v4_export/folds/$name; version=loo-$name-v4-recipe
  fi
  iters=3000; [ "$name" = contrast_slab ] && iters=1500  # as the shipped 2.0.0 fold
  [ -f "$A/$base/model.pt" ] || $PY "$A/train.py" --iters "$iters" "${exclude[@]}" --out "$base"
  mkdir -p "$dest"
  $PY "$A/export.py" --checkpoint "$A/$base/model.pt" --out "/tmp/osteo_2_0_$name" --version 2.0.0
  $PY "$A/pseudo_labels.py" --model "/tmp/osteo_2_0_$name" --name "v2_$name"
  $PY "$A/train.py" --iters 1000 --lr 1e-3 --low-density-p 0.2 --canal-contrast-p 0.25 \
    "${exclude[@]}" --init "$A/$base/model.pt" --extra "$A/cache/chest_pseudo_v2_$name.npz" \
    --out "$out"
  $PY "$A/export.py" --checkpoint "$A/$out/model.pt" --out "$dest" --version "$version"
  cp "$A/$out/train_log.json" "$dest/train_log.json"
done
