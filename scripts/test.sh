#!/usr/bin/env bash
# The test suite. Creates or updates .venv first. Extra arguments go to pytest (-n 0: one process).
# One pytest worker per core (pytest-xdist): most tests wait on a subprocess or on Python, not on
# TensorFlow's threads, so one process uses about one core. --dist worksteal: an idle worker takes
# tests queued for another, which ended the suite sooner than keeping each file on one worker.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q -n auto --dist worksteal "$@"
