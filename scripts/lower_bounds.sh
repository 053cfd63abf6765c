#!/usr/bin/env bash
# The runtime dependencies' lower bounds, tested: a second venv (.venv-lower) with the lowest
# versions pyproject.toml allows (requirements-lower.txt), then the tests that need no test-extra
# library (no diffusers/transformers/PEFT/LyCORIS fixtures) in it.
#   scripts/lower_bounds.sh [pytest args: default the subset below]
# Not part of .ci/run: torch 2.2 from PyPI brings its CUDA libraries (~3 GB), several minutes on
# CI's two cores (see docs/CLIENTS.md, "Lower bounds").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LOWER_VENV:-.venv-lower}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -c requirements-lower.txt -r requirements-lower.txt -e .
"$VENV/bin/python" -m pip list --format=freeze | grep -i -E "^(torch|safetensors|numpy|pydantic|typer|rich|pyyaml)=="
[ $# -gt 0 ] || set -- tests/analysis tests/plan tests/strategies tests/formats/test_algebras.py \
  tests/formats/test_streaming.py tests/output/test_output_protection.py tests/pipeline/test_merge_synthetic.py \
  --ignore=tests/strategies/test_peft_oracle.py
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
