#!/usr/bin/env bash
# Produce the README pictures (docs/images/*.png) from a short synthetic training run.
#
#   scripts/make_readme_images.sh [RUN_DIR] [OUT_DIR]
#
# RUN_DIR (default runs/readme): trained first with the CPU demo recipe (configs/baseline_synth.yaml
# on data/synth-demo, generated if absent) unless it already holds best.pt; OUT_DIR (default
# docs/images) receives curves.png, cmc.png, ranked.png, cam.png and tsne.png, and RUN_DIR gets
# report.html. Environment: EPOCHS (default 8), TRAIN_OVERRIDES (extra key=value overrides),
# VIREID (the command, default: the repo's .venv/bin/vireid or `vireid`), SEED (picture seed, 0).
# On 2 CPU cores the training takes a few minutes; the pictures about half a minute.
set -euo pipefail

cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/readme}
OUT_DIR=${2:-docs/images}
EPOCHS=${EPOCHS:-8}
SEED=${SEED:-0}
if [[ -z "${VIREID:-}" ]]; then
  if [[ -x .venv/bin/vireid ]]; then VIREID=.venv/bin/vireid; else VIREID=vireid; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1

if [[ ! -f "$RUN_DIR/best.pt" ]]; then
  # shellcheck disable=SC2086  # TRAIN_OVERRIDES is a list of key=value words
  "$VIREID" train -c baseline_synth --run-dir "$RUN_DIR" --no-eval name=readme "train.epochs=$EPOCHS" ${TRAIN_OVERRIDES:-}
fi
if [[ ! -f "$RUN_DIR/test_results.json" ]]; then  # with and without re-ranking: both CMC curves
  "$VIREID" eval "$RUN_DIR" --rerank
fi

mkdir -p "$OUT_DIR"
"$VIREID" visualize curves "$RUN_DIR" --out "$OUT_DIR/curves.png"
"$VIREID" visualize cmc "$RUN_DIR" --out "$OUT_DIR/cmc.png"
"$VIREID" visualize ranked "$RUN_DIR" --out "$OUT_DIR/ranked.png" --num-queries 5 --seed "$SEED"
"$VIREID" visualize cam "$RUN_DIR" --out "$OUT_DIR/cam.png" --num-ids 4 --seed "$SEED"
"$VIREID" visualize tsne "$RUN_DIR" --out "$OUT_DIR/tsne.png" --num-ids 10 --seed "$SEED"
"$VIREID" report "$RUN_DIR" --seed "$SEED"
echo "README pictures in $OUT_DIR; run report: $RUN_DIR/report.html"
