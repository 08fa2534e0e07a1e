"""benchmarks/method_runs.py: what a failed training run is recorded as."""

import subprocess
import sys

from benchmarks.method_runs import failure_message


def test_a_run_killed_by_a_signal_is_recorded_as_killed_not_as_its_last_log_line():
    killed = subprocess.run([sys.executable, "-c", "import os, signal, sys; "
                             "print('W tensorflow: failed call to cuInit', file=sys.stderr, flush=True); "
                             "os.kill(os.getpid(), signal.SIGTERM)"], capture_output=True, text=True)
    assert failure_message(killed.returncode, killed.stderr) == "killed by SIGTERM"


def test_a_run_that_exits_with_an_error_is_recorded_as_its_last_stderr_line():
    failed = subprocess.run([sys.executable, "-c", "import sys; print('loading', file=sys.stderr); "
                             "sys.exit('error: --task: expected one of cola, sst2')"], capture_output=True, text=True)
    assert failure_message(failed.returncode, failed.stderr) == "error: --task: expected one of cola, sst2"
    assert failure_message(3, "\n  \n") == "exit code 3"


def test_the_cpu_is_named_with_the_simd_extensions_that_tell_two_machines_of_one_name_apart(tmp_path):
    from benchmarks.method_runs import cpu_model

    def named(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return cpu_model(str(path))

    core = "processor\t: {n}\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n\n"
    assert named(core.format(n=0, flags="fma avx avx2") + core.format(n=1, flags="fma avx avx2")) == "AMD EPYC (AVX2)"
    assert named(core.format(n=0, flags="avx2 avx512f avx512_vnni avx512_bf16")) == \
        "AMD EPYC (AVX2, AVX-512, AVX-512 VNNI, AVX-512 BF16)"
    assert named("processor\t: 0\nFeatures\t: fp asimd asimddp\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n") == \
        "ARMv8 Processor rev 1 (v8l) (NEON dot product)"
    assert named("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n") == "Intel(R) Xeon(R) Processor"
