#!/usr/bin/env bash
# The runtime dependencies' lower bounds, tested: a second venv with the lowest versions
# pyproject.toml allows (requirements-lower.txt: the runtime dependencies and the 'dino' extra), then
# the tests that need no test-extra library (no diffusers/PEFT/LyCORIS fixtures) in it.
#
#   scripts/lower_bounds.sh [pytest args]   torch 2.2.0 from PyPI (a CUDA build, ~3 GB) in .venv-lower
#   scripts/lower_bounds.sh --ci            what .ci/run does: every other floor, but torch 2.13.0 (the
#                                           CPU wheel on this machine's disk) in .venv-lower-ci
#
# The torch floor is checked by hand (the first form) whenever the code or the floors change:
# PyPI has no CPU build of torch 2.2 for Linux, and its CUDA build takes minutes to install on CI's
# two cores (docs/CLIENTS.md, "Lower bounds").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LOWER_VENV:-.venv-lower}
constraints=requirements-lower.txt
if [ "${1:-}" = "--ci" ]; then
  shift
  VENV=${LOWER_VENV:-.venv-lower-ci}
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  sed 's/^torch==.*/torch==2.13.0/' requirements-lower.txt > "$constraints"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch alone first (its exact version), so that nothing below resolves another build of it
pip install "$(grep '^torch==' "$constraints")"
pip install -c "$constraints" -r "$constraints" -e .
"$VENV/bin/python" -m pip list --format=freeze |
  grep -i -E "^(torch|safetensors|numpy|pydantic|typer|rich|pyyaml|platformdirs|transformers|pillow)=="
[ $# -gt 0 ] || set -- tests/analysis tests/plan tests/strategies tests/formats/test_algebras.py \
  tests/formats/test_streaming.py tests/output/test_output_protection.py tests/pipeline/test_merge_synthetic.py \
  tests/tune/test_dino.py tests/tune/test_heuristic.py tests/tune/test_scoring.py \
  --ignore=tests/strategies/test_peft_oracle.py
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
