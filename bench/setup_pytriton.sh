#!/usr/bin/env bash
# Optional: install nvidia-pytriton (a real Triton server, ~450 MB) into its own virtual
# environment for the PyTriton baseline. It pins numpy<2, so it cannot share .venv.
# `python -m bench` picks it up from the default path below, or from --pytriton-python.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${1:-$HOME/.cache/rnnserve-bench/pytriton-venv}"
BASE="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
"$BASE" -m venv "$TARGET"
"$TARGET/bin/python" -m pip install -q --upgrade pip
"$TARGET/bin/python" -m pip install -q "nvidia-pytriton==0.7.0" "onnxruntime==$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')"
"$TARGET/bin/python" -c "import pytriton, onnxruntime; print('pytriton ready in $TARGET')"
