"""The client's four modes: --list, --text, --input, --benchmark (argument checks are in infer.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spartan_device import bench, inputs, pipeline
from spartan_device.bundle import SHARED, Bundle, read_bundle, sha256_of
from spartan_device.engine import Engine
from spartan_device.errors import DeviceError
from spartan_device.outputs import JsonLinesOutput, Progress
from spartan_device.runtime import choose_runtime

WINDOW_BATCHES = 16  # a file is read in windows of this many batches, sorted by length inside


def dispatch(args) -> int:
    bundle = read_bundle(args.bundle)
    if args.list:
        return list_bundle(bundle, args.json)
    if args.task is not None:
        bundle.task(args.task)  # an unknown --task is an error before anything loads
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if args.verbose else None
    runtime = choose_runtime(args.runtime)
    if log:
        log(f"runtime {runtime}, {args.threads} thread(s)")
    if args.benchmark:
        return run_benchmark(bundle, runtime, args, log)
    engine = make_engine(bundle, runtime, args, log)
    if args.text is not None:
        return predict_text(engine, args)
    return predict_file(engine, args)


def make_engine(bundle: Bundle, runtime, args, log) -> Engine:
    """The engine, with the shared graph already loaded when the run is sure to need it (one task
    given, deployed shared): a broken graph file then stops the run (exit 2) instead of failing
    every line."""
    engine = Engine(bundle, runtime, args.threads, log)
    task = default_task(bundle, args.task)
    if task is not None:
        try:
            info = bundle.task(task)
        except DeviceError:  # the task's own lines will say what is wrong
            return engine
        if info.deployment == SHARED:
            engine.graph(info.graph)
    return engine


def default_task(bundle: Bundle, task: str | None) -> str | None:
    if task is not None:
        return task
    return bundle.task_names[0] if len(bundle.task_names) == 1 else None


# --------------------------------------------------------------------------- --text


def predict_text(engine: Engine, args) -> int:
    task = default_task(engine.bundle, args.task)
    if task is None:
        raise DeviceError(f"--task is needed: the bundle has {', '.join(engine.bundle.task_names)}")
    item = inputs.make_record(0, None, task, args.text, args.text_pair, "--text", "--text-pair")
    if isinstance(item, inputs.BadLine):
        raise DeviceError(item.message)
    (outcome,) = pipeline.classify(engine, [item], batch_size=1)
    if outcome.error:
        raise DeviceError(outcome.error)
    result = outcome.result
    if args.json:
        result = {key: value for key, value in result.items() if key != "id"}
        print(json.dumps(result, ensure_ascii=False))
        return 0
    info = engine.bundle.task(task)
    if info.is_regression:
        print(f"{task}: score {result['label']:.4f}")
        return 0
    print(f"{task}: {result['label']}")
    width = max(len(name) for name in info.label_names)
    for name, prob in result["scores"].items():
        print(f"  {name:<{width}}  {prob:.4f}")
    return 0


# --------------------------------------------------------------------------- --input


def _open_input(path: str):
    """(binary line source, display name, total non-blank lines or None, is a regular file)."""
    if path == "-":
        return sys.stdin.buffer, "<stdin>", None, False
    file = Path(path)
    if not file.exists():
        raise DeviceError(f"--input {path}: no such file")
    if file.is_dir():
        raise DeviceError(f"--input {path}: is a directory")
    try:
        handle = open(file, "rb")
    except OSError as err:
        raise DeviceError(f"--input {path}: cannot read it ({err.strerror})") from None
    if not file.is_file():  # a named pipe or device: stream it
        return handle, path, None, False
    total, first = 0, None
    with open(file, "rb") as counting:  # for the progress bar
        for raw in counting:
            if raw.strip():
                total += 1
                first = raw if first is None else first
    if first is not None and inputs.detect_format(path, "auto", first) == "tsv":
        total -= 1  # the header
    return handle, path, total, True


def _records(args, bundle: Bundle):
    source, name, total, regular = _open_input(args.input)
    columns = tuple(c.strip() for c in args.columns.split(",")) if args.columns else None
    if columns is not None and not (1 <= len(columns) <= 2 and all(columns)):
        raise DeviceError(f"--columns {args.columns!r}: give one or two column names, e.g. question,sentence")
    items = inputs.read_records(source, name, args.format, default_task(bundle, args.task), columns)
    return items, name, total, regular


def predict_file(engine: Engine, args) -> int:
    items, name, total, regular = _records(args, engine.bundle)
    output = JsonLinesOutput(args.output, args.force)
    show = args.progress if args.progress is not None else (regular and sys.stderr.isatty())
    progress = Progress(total, show)
    failed = answered = 0

    def emit(outcomes, texts):
        nonlocal failed, answered
        for outcome in outcomes:
            if outcome.error:
                failed += 1
                progress.message(f"{name}, line {outcome.line}: {outcome.error}")
            else:
                answered += 1
                output.write(outcome.result)
        output.flush()
        progress.advance(len(outcomes), texts)

    try:
        pipeline.run(engine, items, args.batch_size, args.batch_size * WINDOW_BATCHES, not regular, emit)
    except BaseException:
        output.discard()
        raise
    progress.close()
    output.commit()
    if failed or args.verbose:
        where = f" to {args.output}" if args.output else ""
        print(f"{answered} line(s) answered{where}, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- --benchmark


def run_benchmark(bundle: Bundle, runtime, args, log) -> int:
    failed = 0
    if args.input:
        items, name, _, _ = _records(args, bundle)
        records = []
        for item in items:
            if isinstance(item, inputs.BadLine):
                failed += 1
                print(f"{name}, line {item.line}: {item.message} (skipped)", file=sys.stderr)
            else:
                records.append(item)
        if args.num_texts:
            records = [records[i % len(records)] for i in range(args.num_texts)] if records else []
    else:
        task = default_task(bundle, args.task)
        if task is None:
            raise DeviceError(f"--task is needed: the bundle has {', '.join(bundle.task_names)}")
        records = None
    engine = make_engine(bundle, runtime, args, log)
    if records is None:
        records = bench.reference_records(engine, task, args.num_texts or 200)
    figures = bench.benchmark(engine, records, args.batch_size, args.warmup, args.seq_length)
    print(json.dumps(figures) if args.json else bench.format_report(figures))
    return 1 if failed else 0


# --------------------------------------------------------------------------- --list


def list_bundle(bundle: Bundle, as_json: bool) -> int:
    """Shared graphs and tasks (deployment, method, sizes, labels), and whether each file is present and
    intact. Exit 1 if any is not."""
    backbone = bundle.backbone
    graph_rows, rows, problems = [], [], 0

    def status(entry) -> str:
        path = bundle.path(entry)
        if not path.is_file():
            return "missing"
        return "ok" if sha256_of(path) == entry.sha256.lower() else "corrupt (sha256 mismatch)"

    for graph in bundle.graphs.values():
        graph_status = status(graph.entry)
        problems += graph_status != "ok"
        graph_rows.append({"graph": graph.name, "file": graph.entry.file, "bytes": _size(bundle, graph.entry),
                           "method": graph.method.get("name"), "pooling": graph.pooling, "status": graph_status})
    graph_sizes = {row["graph"]: row["bytes"] for row in graph_rows}
    for name in bundle.task_names:
        try:
            info = bundle.task(name)
        except DeviceError as err:
            rows.append({"task": name, "status": f"invalid manifest entry: {err}"})
            problems += 1
            continue
        shared = info.deployment == SHARED
        task_status = status(info.entry)
        if task_status == "ok" and shared and info.backbone_fingerprint != backbone.fingerprint:
            task_status = "built for another backbone"
        problems += task_status != "ok"
        size, graph_size = _size(bundle, info.entry), graph_sizes.get(info.graph)
        rows.append({
            "task": name, "deployment": info.deployment, "graph": info.graph, "method": info.method_name,
            "lora_merged": info.lora_merged, "file": info.entry.file, "bytes": size, "weights": info.weights,
            "problem_type": info.problem_type, "labels": list(info.label_names), "max_length": info.max_length,
            "ratio_to_backbone": round(size / graph_size, 4) if shared and size and graph_size else None,
            "status": task_status,
        })
    summary = {
        "bundle": str(bundle.root), "format_version": bundle.format_version, "created_by": bundle.created_by,
        "backbone": {"weights": backbone.weights, "model": backbone.model, "num_layers": backbone.num_layers,
                     "hidden_size": backbone.hidden_size},
        "graphs": graph_rows, "tasks": rows,
    }
    if as_json:
        print(json.dumps(summary))
        return 1 if problems else 0
    print(f"bundle {bundle.root} (format {summary['format_version']}, {bundle.created_by})")
    print(f"backbone  {backbone.model}, {backbone.num_layers} layers, hidden {backbone.hidden_size}, "
          f"{backbone.weights} weights")
    for row in graph_rows:
        print(f"graph {row['graph']}  {row['file']}  {_mb(row['bytes'])}  {row['method']} tasks, {row['pooling']} "
              f"pooling  [{row['status']}]")
    for row in rows:
        if "file" not in row:
            print(f"task {row['task']}: {row['status']}")
            continue
        labels = ", ".join(row["labels"]) or "(regression: a score)"
        ratio = f" ({row['ratio_to_backbone'] * 100:.1f}% of the backbone)" if row["ratio_to_backbone"] else ""
        on = f" on {row['graph']}" if row["graph"] else ""
        merged = {True: " (merged)", False: " (unmerged)", None: ""}[row["lora_merged"]]
        print(f"task {row['task']:<8} {row['deployment']}{on} {row['method'] or '?'}{merged}  {row['file']}  "
              f"{_mb(row['bytes'])}{ratio}  {row['weights']}  max_length {row['max_length']}  labels: {labels}  "
              f"[{row['status']}]")
    return 1 if problems else 0


def _size(bundle: Bundle, entry) -> int | None:
    if entry is None:
        return None
    path = bundle.path(entry)
    return path.stat().st_size if path.is_file() else entry.bytes


def _mb(size: int | None) -> str:
    if size is None:
        return "? MB"
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} KB"
