#!/usr/bin/env bash
# The Flower side of benchmarks/flower.py gets a venv of its own (.venv-flower): flwr and Ray stay out of
# hpcfed's venv, and `pip install -e .` makes it import the very same hpcfed client code.
# Idempotent: a stamp file makes the second call instant (redone when setup.cfg changes).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-flower
STAMP=$VENV/.installed
if [[ -f $STAMP && $STAMP -nt setup.cfg ]]; then
  echo "flower venv: ready ($VENV)"
  exit 0
fi
start=$SECONDS
"${PYTHON:-python3}" -m venv "$VENV"
# The torch/torchvision pair of hpcfed's own venv (Makefile), so both sides run the same kernels.
"$VENV/bin/pip" install -q 'flwr[simulation]==1.41.0' torch==2.14.1 torchvision==0.29.1 -e . 2>&1 \
  | { grep -v 'is ignored' || true; }
"$VENV/bin/python" -c "import flwr, ray, torch, hpcfed; print('flower venv: flwr', flwr.__version__, '| ray', \
ray.__version__, '| torch', torch.__version__)"
touch "$STAMP"
echo "flower venv: installed in $((SECONDS - start)) s"
