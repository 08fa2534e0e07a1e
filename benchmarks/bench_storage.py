"""Storage per method: bytes on the device for 1, 5 and 20 tasks.

    .venv/bin/python benchmarks/bench_storage.py --models-dir models/bench-fewshot [--bundles-dir models/bench-bundles]

Reads the int8 bundles of benchmarks/method_bundles.py (converting the missing ones) and counts,
per deployment form, the files a device holds for N tasks: what every task shares (the shared
graph for a shared form, the tokenizer for all) plus N task files. The per-task file is measured once
and counted N times: tasks of one method differ only in their head's few output units (a 3-label
head adds 4 bytes per hidden unit over a 2-label one). Prints a Markdown table and writes JSON
(default benchmarks/results/storage.json).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.method_bundles import ensure_bundles  # noqa: E402
from benchmarks.method_runs import machine, print_table, write_json  # noqa: E402

TASK_COUNTS = (1, 5, 20)
ROWS = [  # (label, bundle form)
    ("SPARTAN shared (shared graph + task tensors)", "spartan"),
    ("SPARTAN fused (one graph per task)", "spartan-whole"),
    ("SPARTAN two memories a layer (shared graph + task tensors)", "spartan-two-sites"),
    ("SPARTAN tuned LayerNorms (shared graph + task tensors)", "spartan-tuned-norms"),
    ("adapters shared (shared graph + task tensors)", "adapters"),
    ("adapters whole (one graph per task)", "adapters-whole"),
    ("LoRA unmerged shared (shared graph + task tensors)", "lora-unmerged"),
    ("LoRA merged (whole model per task)", "lora-merged"),
    ("full fine-tuning (whole model per task)", "full"),
]


def storage_row(label: str, bundle_dir: Path) -> dict:
    """Shared and per-task bytes of one deployment form, and the totals for TASK_COUNTS tasks."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    (entry,) = manifest["tasks"].values()
    per_task = entry["bytes"]
    shared = {"tokenizer.json": (bundle_dir / manifest["tokenizer"]["file"]).stat().st_size}
    if entry["deployment"] == "shared":
        graph = manifest["graphs"][entry["graph"]]
        shared[graph["file"]] = graph["bytes"]
    return {"form": label, "bundle": str(bundle_dir), "method": entry["method"], "per_task_bytes": per_task,
            "shared_bytes": shared, "totals": {n: sum(shared.values()) + n * per_task for n in TASK_COUNTS}}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_storage.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", required=True, help="one trained model per method (see method_bundles.py)")
    parser.add_argument("--bundles-dir", default="models/bench-bundles")
    parser.add_argument("--output", default="benchmarks/results/storage.json")
    args = parser.parse_args(argv)
    bundles = ensure_bundles(args.models_dir, args.bundles_dir, [form for _, form in ROWS])
    rows = [storage_row(label, bundles[form]) for label, form in ROWS]
    spartan = rows[0]["totals"]
    table = [[row["form"], f"{sum(row['shared_bytes'].values()) / 1e6:.2f}", f"{row['per_task_bytes'] / 1e6:.3f}",
              *[f"{row['totals'][n] / 1e6:.1f} ({row['totals'][n] / spartan[n]:.1f}x)" for n in TASK_COUNTS]]
             for row in rows]
    print("int8 bundles; MB = 10^6 bytes; in brackets: relative to SPARTAN shared\n")
    print_table(["deployment", "shared MB", "per task MB", *[f"{n} task{'s' if n > 1 else ''} MB" for n in TASK_COUNTS]],
                table)
    write_json(args.output, {"benchmark": "storage", "machine": machine(), "task_counts": list(TASK_COUNTS),
                             "rows": rows})
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
