"""benchmarks/profile_device.py: a text's instructions, counted by callgrind, sorted by what executes them.
Here beside the device tests, whose int8 bundle one real callgrind run profiles."""

import shutil
import subprocess

import pytest

# importing the benchmark puts device/ on sys.path
from benchmarks.bench_device import read_pairs
from benchmarks.profile_device import GROUPS, annotate, group_of, main, parse_annotate, per_text, profile
from repo_paths import REPO
from spartan_device.bundle import read_bundle  # noqa: E402
from spartan_device.engine import Engine  # noqa: E402
from spartan_device.runtime import choose_runtime  # noqa: E402

QNLI_DEV = REPO / "samples" / "glue" / "QNLI" / "dev.tsv"
LITERT = "/venv/lib/python3.11/site-packages/ai_edge_litert/libpywrap_litert_common.so"


@pytest.mark.parametrize("function, group", [
    (f"???:xnn_qd8_f32_qc8w_gemm_minmax_ukernel_4x8c8__avx2 [{LITERT}]", "int8 matmuls"),
    (f"???:xnn_f32_gemm_minmax_ukernel_6x16__asm_amd64_fma3_broadcast [{LITERT}]", "float matmuls"),
    (f"???:xnn_x32_packw_gemm_goi_ukernel_x16__avx_u4 [{LITERT}]", "weight packing"),
    (f"???:xnn_f32_vgelu_ukernel__fma3_rational_12_10_div_u16 [{LITERT}]", "other XNNPACK kernels"),
    (f"???:tflite::SimpleMemoryArena::Allocate(TfLiteContext*, unsigned long) [{LITERT}]", "TFLite runtime"),
    ("./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S:__memcpy_avx_unaligned_erms "
     "[/usr/lib/x86_64-linux-gnu/libc.so.6]", "memory copies"),
    ("./malloc/./malloc/malloc.c:_int_malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]", "other"),
    ("???:alloc::collections::btree::map::BTreeMap<K,V,A>::insert "
     "[/venv/lib/python3.11/site-packages/tokenizers/tokenizers.abi3.so]", "tokenizer"),
    ("/tmp/Python-3.11.7/Python/ceval.c:_PyEval_EvalFrameDefault'2 [/usr/lib/libpython3.11.so.1.0]",
     "Python and NumPy"),
    ("???:0x000000000029ad80 [/usr/lib/x86_64-linux-gnu/libcrypto.so.3]", "other"),
])
def test_functions_are_grouped_by_what_executes_them(function, group):
    assert group_of(function) == group


def test_a_text_costs_the_run_minus_the_load_in_every_group():
    loaded = (1000, {"int8 matmuls": 100, "Python and NumPy": 900})
    ran = (7000, {"int8 matmuls": 4100, "Python and NumPy": 2100, "TFLite runtime": 800})
    figures = per_text(loaded, ran, 4)
    assert figures["total"] == 1500
    assert figures["groups"] == {**dict.fromkeys(GROUPS, 0.0), "int8 matmuls": 1000, "Python and NumPy": 300,
                                 "TFLite runtime": 200}


def test_output_that_is_not_callgrind_annotate_is_refused():
    with pytest.raises(ValueError, match="not callgrind_annotate output"):
        parse_annotate("Profile data file 'x'\nnothing else\n")


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_callgrind_counts_the_client_running_the_int8_bundle(int8_bundle, tmp_path):
    """One real run: every instruction callgrind counted lands in a group, the int8 graph's matmuls are
    XNNPACK's int8 kernels, and the tokens are the client's own count of the two texts after the first."""
    process, out, log = profile(int8_bundle, 2, str(QNLI_DEV), None, tmp_path, "int8")
    assert process.wait() == 0, log.read_text()[-2000:]
    total, groups = annotate(out)
    assert sum(groups.values()) == total
    assert set(groups) <= set(GROUPS)
    assert groups["int8 matmuls"] > 0 and groups["Python and NumPy"] > 0
    raw = subprocess.run(["callgrind_annotate", str(out)], capture_output=True, text=True).stdout
    assert f"{total:,} (100.0%)  PROGRAM TOTALS" in raw

    engine = Engine(read_bundle(int8_bundle), choose_runtime(), threads=1)
    encoded = engine.encode(engine.bundle.task("qnli"), read_pairs(str(QNLI_DEV), 3)[1:])  # the first: untimed
    assert f"tokens {sum(len(e.ids) for e in encoded)}" in log.read_text().splitlines()


def test_bad_arguments_and_a_missing_valgrind_are_refused_by_name(tmp_path, monkeypatch):
    output = tmp_path / "profile.json"
    with pytest.raises(SystemExit) as stop:
        main(["--models-dir", str(tmp_path), "--num-texts", "0", "--output", str(output)])
    assert str(stop.value) == "error: --num-texts and --jobs must be >= 1 (got 0, 2)"
    with pytest.raises(SystemExit) as stop:
        main(["--models-dir", str(tmp_path), "--input", str(tmp_path / "none.tsv"), "--output", str(output)])
    assert str(stop.value) == f"error: --input {tmp_path / 'none.tsv'}: no such file (QNLI dev TSV expected)"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit) as stop:
        main(["--models-dir", str(tmp_path), "--input", str(QNLI_DEV), "--output", str(output)])
    assert str(stop.value) == ("error: valgrind and callgrind_annotate not found on PATH: install valgrind "
                               "(Debian: apt install valgrind)")
    assert not output.exists()
