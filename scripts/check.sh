#!/usr/bin/env bash
# Lint, format check, type check, then the whole test suite (what CI runs; pytest arguments pass on).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src comfy_nodes
.venv/bin/ruff format --check src comfy_nodes
.venv/bin/mypy
.venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
