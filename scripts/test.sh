#!/usr/bin/env bash
# The test suite. Creates or updates .venv first. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@"
