"""benchmarks/bench_runtime_matmul.py: each form computes the product it names, and bad sizes are refused."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_runtime_matmul import FORMS, as_input

ROOT = Path(__file__).resolve().parents[1]


def test_every_form_is_timed_and_agrees_with_the_exact_product(tmp_path):
    output = tmp_path / "runtime_matmul.json"
    subprocess.run([sys.executable, "benchmarks/bench_runtime_matmul.py", "--length", "5", "--hidden", "64",
                    "--keys", "32", "--children", "16", "--repeats", "1", "--output", str(output)],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    rows = json.loads(output.read_text())["rows"]  # weights of >= 1,024 values: the converter quantizes no fewer
    assert [(row["product"], row["form"]) for row in rows] == [(product, form) for product in ("keys", "values", "head")
                                                              for form in FORMS]
    for row in rows:
        assert row["cpu_us_per_call"] > 0 and row["median_us_per_call"] > 0
        if row["form"].startswith("float32"):
            assert row["relative_error"] < 1e-5, row
        elif "hybrid" in row["form"]:  # int8 weights, float activations: a step or two of 1/127 of the range
            assert 0 < row["relative_error"] < 0.05, row
        else:  # static scales, calibrated on 50 random inputs, clip some products; a wrong product is off by ~100%
            assert 0 < row["relative_error"] < 0.25, row


def test_int8_inputs_are_quantized_with_the_interpreters_scale():
    import numpy as np

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    assert as_input(np.array([0.0, 1.0, -1.2, 100.0], np.float32), detail).tolist() == [-3, -1, -5, 127]
    floats = np.array([0.25], np.float32)
    assert as_input(floats, {"dtype": np.float32, "quantization": (0.0, 0)}) is floats


def test_refuses_a_size_below_one(tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/bench_runtime_matmul.py", "--keys", "0",
                             "--output", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "--keys 0: must be >= 1" in result.stderr
    assert not (tmp_path / "x.json").exists()

