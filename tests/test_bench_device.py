"""benchmarks/bench_device.py: what it refuses before converting or timing anything."""

import pytest

from benchmarks import bench_device


@pytest.mark.parametrize("lengths", [["7x"], ["real", "1"], ["sorted", "longest"]])
def test_a_length_that_is_not_a_token_count_real_or_sorted_is_refused_by_name(tmp_path, lengths):
    with pytest.raises(SystemExit) as stop:
        bench_device.main(["--models-dir", str(tmp_path), "--lengths", *lengths])
    bad = [length for length in lengths if length not in ("real", "sorted")]
    assert str(stop.value) == (f"error: --lengths takes token counts >= 2, 'real' or 'sorted' (got {bad}); "
                               "--threads, --num-texts, --repeats and --block must be >= 1")
