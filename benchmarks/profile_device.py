"""Where a text's instructions go on the device, per deployment, counted by valgrind's callgrind.

    PYTHONPATH=. .venv/bin/python benchmarks/profile_device.py --models-dir /tmp/benchmodels \
        --bundles-dir /tmp/benchbundles --num-texts 10 --jobs 1 --output docs/results/device_profile.json

bench_device.py measures time, which moves with whatever else the machine runs; this counts the
instructions the device client executes for a text (tokenizing, padding, setting the inputs, the
interpreter), which do not, so it can run beside a training job. It sorts them by what executes
them: XNNPACK's int8 matmuls (the backbone's dynamic-range GEMMs), its float matmuls (attention, and
a shared task's memory, whose keys and values reach the graph as inputs) with their weight packing,
its other kernels (softmax, GELU, adds, conversions), the TFLite runtime around them (interpreter,
shape ops, arena), memory copies, the tokenizer, and Python with NumPy. Each row of bench_device.py
named in ROWS runs twice under callgrind in a process of its own: it loads its bundle, runs the first
QNLI dev pair, then 0 or ``--num-texts`` more, one at a time through the client's Engine at their real
lengths (fixed-128: padded to 128), as bench_device.classify does; the difference over the texts is a
text's cost, loading and first calls excluded.

Instructions are not time: a count runs faster in large matrices than in small ones, and memory
stalls cost nothing here. Valgrind cannot execute AVX-512 and does not offer it to the program, so
XNNPACK should pick its AVX2 kernels even where the CPU has AVX-512 (so far run only on an AVX2 VM).
Needs valgrind (Debian: apt install valgrind), which runs the client about 50x slower: with
``--num-texts 10`` a row takes about 4 minutes on a 2-core AMD EPYC VM. Prints a Markdown table,
writes JSON (default benchmarks/results/device_profile.json).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))

from benchmarks.bench_device import DEFAULT_INPUT, FIXED, TASK, read_pairs  # noqa: E402
from benchmarks.bench_device import ROWS as DEVICE_ROWS  # noqa: E402
from benchmarks.method_bundles import ensure_bundles  # noqa: E402
from benchmarks.method_runs import cpu_model, machine, print_table, write_json  # noqa: E402

ROWS = ["SPARTAN shared", "SPARTAN fused", "adapters shared", "adapters whole", "LoRA merged (plain BERT graph)",
        "fixed-128 one graph"]
GROUPS = ["int8 matmuls", "float matmuls", "weight packing", "other XNNPACK kernels", "TFLite runtime",
          "memory copies", "tokenizer", "Python and NumPy", "other"]
# callgrind_annotate: "  1,234 ( 5.67%)  file:function [object]"; a call count may follow the function
_COST_LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.+?)\s*$")


def group_of(function: str) -> str:
    """The group of GROUPS that executes ``function`` (callgrind_annotate's "file:function [object]")."""
    name, _, obj = function.rpartition(" [")
    name = name.split(":", 1)[1] if ":" in name else name
    if name.startswith("xnn_"):
        if "pack" in name:
            return "weight packing"
        if "gemm" in name:
            return "int8 matmuls" if name.startswith(("xnn_qd8", "xnn_qs8", "xnn_qu8", "xnn_qc8")) else "float matmuls"
        return "other XNNPACK kernels"
    if "litert" in obj or "tflite" in obj:
        return "TFLite runtime"
    if "libc.so" in obj and re.search(r"mem(cpy|move|set)", name):
        return "memory copies"
    if "tokenizers" in obj:
        return "tokenizer"
    if "python" in obj or "numpy" in obj:
        return "Python and NumPy"
    return "other"


def parse_annotate(text: str) -> tuple[int, Counter]:
    """(program total, {group: instructions}) from ``callgrind_annotate --threshold=100 --auto=no`` output."""
    head, marker, body = text.partition("file:function")
    totals = [int(m.group(1).replace(",", "")) for line in head.splitlines()
              if (m := _COST_LINE.match(line)) and m.group(2) == "PROGRAM TOTALS"]
    if not marker or len(totals) != 1:
        raise ValueError("not callgrind_annotate output (no PROGRAM TOTALS and file:function table)")
    groups = Counter()
    for line in body.splitlines():
        match = _COST_LINE.match(line)
        if match:
            groups[group_of(match.group(2))] += int(match.group(1).replace(",", ""))
    return totals[0], groups


def per_text(loaded: tuple[int, Counter], ran: tuple[int, Counter], texts: int) -> dict:
    """{"total": instructions per text, "groups": {group: per text}}: the run of ``texts`` more texts
    minus the run of none."""
    groups = {group: (ran[1].get(group, 0) - loaded[1].get(group, 0)) / texts for group in GROUPS}
    return {"total": (ran[0] - loaded[0]) / texts, "groups": groups}


def run_texts(bundle: Path, count: int, input_path: str, length: int | None) -> int:
    """What runs under callgrind: load ``bundle``'s task, run the file's first pair (whatever runs only
    on a first call, such as the tokenizer's setup, then costs both runs alike), then the next
    ``count`` pairs; returns their tokens."""
    from benchmarks.bench_device import classify
    from spartan_device.bundle import read_bundle
    from spartan_device.engine import Engine
    from spartan_device.runtime import choose_runtime

    engine = Engine(read_bundle(bundle), choose_runtime(), threads=1)
    engine.task(TASK)
    max_length = engine.bundle.task(TASK).max_length
    first, *pairs = read_pairs(input_path, count + 1)
    classify(engine, TASK, first, length, max_length)
    return sum(classify(engine, TASK, pair, length, max_length) for pair in pairs[:count])


def profile(bundle: Path, count: int, input_path: str, length: int | None, scratch: Path, name: str):
    """Start one callgrind run of ``run_texts``; returns (process, its output file, its log file)."""
    out, log = scratch / f"{name}.callgrind", scratch / f"{name}.log"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
               "--texts-of", str(bundle), str(count), str(length or 0), "--input", input_path]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
    return process, out, log


def annotate(out: Path) -> tuple[int, Counter]:
    command = ["callgrind_annotate", "--threshold=100", "--auto=no", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: callgrind_annotate {out} failed: {done.stderr.strip()[-300:]}")
    return parse_annotate(done.stdout)


def measure(bundles: dict, args, scratch: Path) -> dict:
    """{row: per_text figures}, ``args.jobs`` callgrind runs at a time."""
    jobs = [(label, count) for label in ROWS for count in (0, args.num_texts)]
    lengths = {label: FIXED.get(label) for label in ROWS}  # None: each text at its own length
    counts, tokens, running = {}, {}, []
    while jobs or running:
        while jobs and len(running) < args.jobs:
            label, count = jobs.pop(0)
            form = DEVICE_ROWS[label][0]
            started = profile(bundles[form], count, args.input, lengths[label], scratch, f"{form}-{count}")
            running.append((label, count, *started))
            print(f"  {label}: {count} texts under callgrind ...", file=sys.stderr, flush=True)
        label, count, process, out, log = running.pop(0)
        if process.wait() != 0:
            for *_, other, _, _ in running:  # the runs still going would outlive this process
                other.kill()
            sys.exit(f"error: the callgrind run of {label} ({count} texts) failed: "
                     f"{log.read_text()[-1500:].strip()}")
        counts[label, count] = annotate(out)
        if count:
            tokens[label] = int(re.search(r"^tokens (\d+)$", log.read_text(), re.MULTILINE).group(1))
    return {label: {**per_text(counts[label, 0], counts[label, args.num_texts], args.num_texts),
                    "tokens_per_text": round(tokens[label] / args.num_texts, 1), "padded_to": lengths[label]}
            for label in ROWS}


def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/profile_device.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", help="one trained QNLI model per method (method_bundles.py); required")
    parser.add_argument("--bundles-dir", default="models/bench-bundles")
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="QNLI dev TSV (default: ../shared/data)")
    parser.add_argument("--num-texts", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time (default 2)")
    parser.add_argument("--output", default="benchmarks/results/device_profile.json")
    parser.add_argument("--texts-of", nargs=3, metavar=("BUNDLE", "COUNT", "LENGTH"), help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.texts_of:  # the process callgrind runs
        bundle, count, length = args.texts_of
        print(f"tokens {run_texts(Path(bundle), int(count), args.input, int(length) or None)}")
        return
    if args.models_dir is None:
        parser.error("the following arguments are required: --models-dir")
    if min(args.num_texts, args.jobs) < 1:
        sys.exit(f"error: --num-texts and --jobs must be >= 1 (got {args.num_texts}, {args.jobs})")
    if not Path(args.input).is_file():
        sys.exit(f"error: --input {args.input}: no such file (QNLI dev TSV expected)")
    missing = [tool for tool in ("valgrind", "callgrind_annotate") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"error: {' and '.join(missing)} not found on PATH: install valgrind (Debian: apt install valgrind)")
    bundles = ensure_bundles(args.models_dir, args.bundles_dir, sorted({DEVICE_ROWS[label][0] for label in ROWS}))
    with tempfile.TemporaryDirectory(prefix="profile-device-") as scratch:
        rows = measure(bundles, args, Path(scratch))

    from spartan_device.runtime import choose_runtime

    print(f"\n{args.num_texts} QNLI dev pairs, batch 1, 1 thread, {choose_runtime()}, int8 bundles, under callgrind "
          f"on {cpu_model()}; millions of instructions per text, loading and first calls excluded\n")
    base = rows["SPARTAN fused"]["total"]
    print_table(["deployment", "total", "vs SPARTAN fused", *GROUPS],
                [[label, f"{r['total'] / 1e6:.1f}", f"{r['total'] / base:.3f}x",
                  *(f"{r['groups'][g] / 1e6:.1f}" for g in GROUPS)] for label, r in rows.items()])
    fixed = rows["fixed-128 one graph"]["total"]
    print(f"\nfixed-128 / SPARTAN shared at real lengths: {fixed / rows['SPARTAN shared']['total']:.2f}x the "
          f"instructions a text (bench_device.py's goal, in texts/s: >= 2.5x)")
    write_json(args.output, {"benchmark": "device_profile", "machine": machine(),
                             "setting": {"num_texts": args.num_texts, "input": args.input, "batch_size": 1,
                                         "threads": 1, "tool": "valgrind --tool=callgrind",
                                         "unit": "instructions per text"},
                             "bundles": {DEVICE_ROWS[label][0]: str(bundles[DEVICE_ROWS[label][0]]) for label in ROWS},
                             "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
