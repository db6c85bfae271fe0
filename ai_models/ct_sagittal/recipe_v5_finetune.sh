#!/usr/bin/env bash
# The "v5 recipe" (TRIED, NOT SHIPPED: see model_card.md; it reads the undeformed example_ct L1
# as a grade-3 biconcave body): the v4 network (2.1.0, recipe_v4_finetune.sh) fine-tuned 600 iterations at
# lr 5e-4 with the realistic synthetic fractures of train.py (wedge and crush: the column above
# follows the collapsed endplate; biconcave: the dome filled with the disc's own soft tissue),
# at p 0.5, with v4's other augmentations and the same chest pseudo-labels. A fold starts from
# the fold's own v4 network, so nothing of the held-out case reaches its fold. About 3.5
# minutes per network on 2 idle cores, fixed seeds.
#
#   ai_models/ct_sagittal/recipe_v5_finetune.sh all           # -> runs/v5_export/all
#   ai_models/ct_sagittal/recipe_v5_finetune.sh s0009 tptbox  # folds -> runs/v5_export/folds/CASE
# needs runs/all_v4 and runs/loo_v4/CASE (recipe_v4_finetune.sh makes them).
set -euo pipefail
cd "$(dirname "$0")/../.."
A=ai_models/ct_sagittal
PY=.venv/bin/python
[ -f "$A/cache/example_ct.npz" ] || $PY "$A/prepare_data.py"
for name in "$@"; do
  if [ "$name" = all ]; then
    base=runs/all_v4; exclude=(); out=runs/all_v5; dest=$A/runs/v5_export/all
    version=v5-recipe; extra=chest_pseudo_v2_all
  else
    base=runs/loo_v4/$name; exclude=(--exclude "$name"); out=runs/loo_v5/$name
    dest=$A/runs/v5_export/folds/$name; version=loo-$name-v5-recipe; extra=chest_pseudo_v2_$name
  fi
  [ -f "$A/$base/model.pt" ] || "$A/recipe_v4_finetune.sh" "$name"
  mkdir -p "$dest"
  $PY "$A/train.py" --iters 600 --lr 5e-4 --fracture-p 0.5 --low-density-p 0.2 \
    --canal-contrast-p 0.25 "${exclude[@]}" --init "$A/$base/model.pt" \
    --extra "$A/cache/$extra.npz" --out "$out"
  $PY "$A/export.py" --checkpoint "$A/$out/model.pt" --out "$dest" --version "$version"
  cp "$A/$out/train_log.json" "$dest/train_log.json"
done
