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
