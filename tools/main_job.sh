#!/usr/bin/env bash
# The README's main job: on a fresh machine, install what is needed, generate the small shapes dataset, train
# LaViT-S Mask R-CNN on it, evaluate bbox and segm with COCO metrics, and draw predictions on test images.
# An interrupted run continues from its last checkpoint when started again.
#
#   bash tools/main_job.sh                      # everything (its time on 2 CPU cores: see README.md)
#   WORK_DIR=... MAX_ITERS=... bash tools/main_job.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
PY="$ROOT/.venv/bin/python"
export PYTHONWARNINGS=ignore

CONFIG=configs/lavit/maskrcnn_lavit_s_shapes.py
WORK_DIR=${WORK_DIR:-work_dirs/main_job}
MAX_ITERS=${MAX_ITERS:-$("$PY" -c "from mmengine.config import Config; print(Config.fromfile('$CONFIG').max_iters)")}
start=$(date +%s)

echo "== 1/4 data: data/shapes_coco"
"$PY" tools/misc/generate_shapes_data.py --task det

echo "== 2/4 training $CONFIG for $MAX_ITERS iterations (log: $WORK_DIR/<timestamp>/<timestamp>.log)"
resume=()
[[ -f "$WORK_DIR/last_checkpoint" ]] && resume=(--resume) && echo "   resuming from $(cat "$WORK_DIR/last_checkpoint")"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "${resume[@]}" \
    --cfg-options train_cfg.max_iters="$MAX_ITERS" train_cfg.val_interval="$MAX_ITERS"
CKPT="$(cat "$WORK_DIR/last_checkpoint")"

echo "== 3/4 evaluation with tools/test.py (CocoMetric, bbox and segm)"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" | tee "$WORK_DIR/test.log" \
    | grep -E "coco/(bbox|segm)_mAP|Error" || true

echo "== 4/4 drawing predictions on 8 validation images"
"$PY" tools/demo/image_demo.py data/shapes_coco/val2017 "$CONFIG" "$CKPT" --limit 8 --score-thr 0.7 \
    --out-dir "$WORK_DIR/predictions" --grid "$WORK_DIR/predictions.png" > /dev/null

metrics="$(grep -oE "coco/(bbox|segm)_mAP: [0-9.]+" "$WORK_DIR/test.log" | tr '\n' ' ')"
cat <<SUMMARY

main job done
  metrics (val, 50 images):  ${metrics:-see $WORK_DIR/test.log}
  checkpoint:                $CKPT
  training log:              $(ls -1d "$WORK_DIR"/2*/ 2>/dev/null | tail -n1)
  evaluation log:            $WORK_DIR/test.log
  predictions (PNG):         $WORK_DIR/predictions.png  (one per image in $WORK_DIR/predictions/)
  time after the install:    $(( $(date +%s) - start )) s on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
SUMMARY
