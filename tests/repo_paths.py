"""Paths of the repository and its shipped samples, for the tests (named apart from any conftest.py)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
GLUE_SAMPLES = SAMPLES / "glue"
