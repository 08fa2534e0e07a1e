"""benchmarks/bench_runtime_api.py's CompiledModel runner: it must compute what the client computes, or
its timings compare different work. Here beside the device tests, whose converted bundles it runs."""

import numpy as np
import pytest

from client_support import ITEMS

from benchmarks.bench_runtime_api import CompiledRunner, main, parse_flags  # puts device/ on sys.path
from spartan_device.bundle import read_bundle  # noqa: E402
from spartan_device.engine import Engine, pad  # noqa: E402
from spartan_device.runtime import choose_runtime  # noqa: E402

# lengths that change, come back, and repeat: the task's buffers must survive every resize
ORDER = [0, 1, 2, 0, 5, 5, 3, 1]


@pytest.mark.parametrize("bundle_name", ["float_bundle", "whole_bundle"])
def test_compiled_model_gives_the_keras_logits_across_changing_lengths(bundle_name, reference, request):
    engine = Engine(read_bundle(request.getfixturevalue(bundle_name)), choose_runtime(), threads=1)
    task = engine.task("qnli")
    runner = CompiledRunner(engine, task, threads=1, xnnpack_flags=None)
    encoded = engine.encode(task.info, ITEMS["qnli"])
    for index in ORDER:
        np.testing.assert_allclose(runner(pad([encoded[index]]))[0], reference["qnli"][index], atol=1e-4,
                                   err_msg=f"qnli #{index}")


def test_compiled_model_with_xnnpack_flags_agrees_with_the_client_on_the_int8_bundle(int8_bundle):
    engine = Engine(read_bundle(int8_bundle), choose_runtime(), threads=1)
    task = engine.task("qnli")
    runner = CompiledRunner(engine, task, threads=1, xnnpack_flags=0x4B)
    encoded = engine.encode(task.info, ITEMS["qnli"])
    for index in ORDER:
        batch = pad([encoded[index]])
        np.testing.assert_allclose(runner(batch), engine.logits(task, batch), atol=1e-5, err_msg=f"qnli #{index}")


def test_flags_are_read_as_decimal_or_hex_and_a_bad_one_is_refused_by_name(tmp_path):
    assert parse_flags(["0x4b", "3"]) == [0x4B, 3]
    with pytest.raises(SystemExit) as stop:
        main(["--models-dir", str(tmp_path), "--xnnpack-flags", "fast", "--output", str(tmp_path / "x.json")])
    assert str(stop.value) == "error: --xnnpack-flags fast: expected an integer, decimal or 0x hex (e.g. 0x4b)"
    with pytest.raises(SystemExit) as stop:
        main(["--models-dir", str(tmp_path), "--input", str(tmp_path / "none.tsv")])
    assert str(stop.value) == f"error: --input {tmp_path / 'none.tsv'}: no such file (QNLI dev TSV expected)"
    assert not (tmp_path / "x.json").exists()
