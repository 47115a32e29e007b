#!/usr/bin/env bash
# The GPU kit: proves vireid's CUDA path on a machine with a CUDA build of torch and no internet.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            # on the GPU machine (about 5 minutes on one H100)
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run  # anywhere: the same steps on the CPU at toy sizes
#
# 1. installs vireid without dependencies over the machine's own torch, timm and friends
#    (pip --no-deps --no-index --no-build-isolation; falls back to PYTHONPATH=src when that fails);
# 2. runs the tests marked `cuda` (tests/engine/test_cuda.py): bf16/fp16 autocast with GradScaler,
#    channels_last, torch.compile, one-process NCCL DDP, ranking and re-ranking on CUDA against the
#    CPU, the prefetching loader with GPU augmentation;
# 3. benchmarks/gpu_check.py: trains the AGW two-stream ResNet-50 at 288x144 (bf16, channels_last,
#    compiled) on synthetic data for a fixed number of steps; prints img/s, the GPU's busy fraction
#    (nvidia-smi), peak memory, extraction img/s and the re-ranking time at N = 20,000.
# Everything (gpu_check.md, gpu_check.json, gpu_check.log, pytest_cuda.log, nvidia-smi.csv, the
# training run) goes to OUT_DIR. PYTHON names the interpreter (default: python3). Exit status 0
# when every step ran; the targets are reported in gpu_check.md, not enforced.
set -uo pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run]" >&2; exit 2; }
OUT="" DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) usage ;;
    -*) echo "gpu_check: unknown option $arg" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT="$arg" ;;
  esac
done
[ -n "$OUT" ] || usage
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PIP_NO_INPUT=1
START=$(date +%s)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
step() { echo; echo "== [$(( $(date +%s) - START )) s] $*"; }
FAILED=0

step "1/3 install vireid without dependencies over this machine's torch"
if [ "$DRY" = 1 ]; then
  echo "(dry run) would run: $PY -m pip install --no-deps --no-index --no-build-isolation -e $REPO"
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$PY" -m pip install --no-deps --no-index --no-build-isolation -e "$REPO" > "$OUT/pip_install.log" 2>&1; then
  echo "pip could not install vireid offline (see pip_install.log); using PYTHONPATH=$REPO/src instead"
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'PYEOF' || FAILED=1
import vireid  # first: its torchvision guard
import timm
import torch
cuda = torch.cuda.is_available()
print(f"vireid {vireid.__version__} from {vireid.__file__}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"timm {timm.__version__}; GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}")
PYEOF

step "2/3 tests marked cuda (pytest -m cuda)"
(cd "$REPO" && timeout 210 "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests/engine/test_cuda.py) \
  > "$OUT/pytest_cuda.log" 2>&1
rc=$?
tail -n 15 "$OUT/pytest_cuda.log"
[ $rc = 0 ] || { echo "cuda tests failed (exit $rc), see pytest_cuda.log"; FAILED=1; }

step "3/3 training, extraction and re-ranking measurements"
DRY_FLAG=()
[ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
(cd "$REPO" && timeout 240 "$PY" benchmarks/gpu_check.py "$OUT" ${DRY_FLAG[@]+"${DRY_FLAG[@]}"}) || { echo "gpu_check.py failed"; FAILED=1; }

step "done in $(( $(date +%s) - START )) s; results in $OUT (gpu_check.md)"
exit $FAILED
