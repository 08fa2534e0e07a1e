"""Trained task directories -> a device bundle: the run behind ``python convert/to_tflite.py``.

    1. read every task config; all must share one backbone fingerprint (and agree with the bundle
       already in the output directory, if any);
    2. load the backbone once and rebuild each task's Keras model on it;
    3. convert into a scratch directory: one shared graph per layout of the shared tasks (unless the
       bundle's is unchanged), each task file (a shared task's tensors, or a whole task's graph), and
       float32 twins for the parity check;
    4. parity: the Keras model against the bundle run as on the device, on dev examples;
       a float32 bundle that disagrees with Keras is a bug and stops the run before anything is written;
    5. write the files atomically into the output directory, the manifest last.
"""

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spartan_tf import artifacts, bundle, shared_graph
from spartan_tf.errors import SpartanError
from spartan_tf.parity import MIN_FLOAT_AGREEMENT

DEFAULT_MODELS_DIR = Path("models")
DEFAULT_OUTPUT_DIR = DEFAULT_MODELS_DIR / "tflite"
REFERENCE_INPUTS = 3  # dev examples recorded in the manifest for the device's --benchmark


def deployment(config: dict, options: "Options") -> str:
    """"shared" (the task file is its tensors, run on a shared graph) or "whole" (the task file is the
    model). Shared: SPARTAN, adapters and unmerged LoRA, whose task weights are small tensors. Whole:
    full fine-tuning, merged LoRA (a changed backbone), and every task with ``options.whole``."""
    from spartan_tf.shared_graph import SHARED_METHODS

    name = config["method"]["name"]
    if options.whole or name not in SHARED_METHODS or (name == "lora" and options.lora_merged):
        return bundle.WHOLE
    return bundle.SHARED


class ParityFailure(Exception):
    """The float32 bundle disagrees with Keras: a conversion bug (exit code 1, nothing written)."""


@dataclass(frozen=True)
class Options:
    """How to convert. weights: "int8" | "float16" | "float32" (see spartan_tf.export).
    whole: deploy every task as its own one-graph model (SPARTAN fused, adapters and LoRA inside
    the graph) instead of on a shared graph. lora_merged: LoRA tasks go merged (whole: a plain BERT
    graph) or unmerged (shared, unless ``whole``). check_samples: dev examples for the parity check;
    None = the whole dev set, 0 = skip it."""

    output_dir: Path = DEFAULT_OUTPUT_DIR
    weights: str = "int8"
    whole: bool = False
    lora_merged: bool = True
    check_samples: int | None = 200


def log(message: str):
    print(message, flush=True)


def discover_model_dirs(models_dir=DEFAULT_MODELS_DIR, output_dir=DEFAULT_OUTPUT_DIR) -> list[Path]:
    """Every trained task under ``models_dir`` (a subdirectory with config.json), bundle excluded."""
    models_dir = Path(models_dir)
    found = sorted(
        path for path in models_dir.iterdir()
        if path.is_dir() and (path / artifacts.CONFIG_FILE).is_file() and path.resolve() != Path(output_dir).resolve()
    ) if models_dir.is_dir() else []
    if not found:
        raise SpartanError(
            f"no trained task under {models_dir}/ (a directory with {artifacts.CONFIG_FILE}); train one with "
            f"python -m spartan_tf.train, or pass --model-dir"
        )
    return found


# --------------------------------------------------------------------------- checks before any work


def read_task_configs(model_dirs) -> dict:
    """{bundle task key: (model_dir, config)}; refuses two directories with one key."""
    tasks = {}
    for model_dir in model_dirs:
        config = artifacts.read_config(model_dir)
        key = bundle.task_key(config, model_dir)
        if key in tasks:
            raise SpartanError(
                f"--model-dir {model_dir} and --model-dir {tasks[key][0]} are both task {key!r}; "
                f"a bundle holds one model per task"
            )
        tasks[key] = (Path(model_dir), config)
    return tasks


def check_one_backbone(tasks: dict, existing: dict | None, output_dir) -> str:
    """The one backbone fingerprint every task (and the existing bundle) shares; else name the odd one out."""
    fingerprints = {key: config["backbone"]["fingerprint"] for key, (_, config) in tasks.items()}
    counts = Counter(fingerprints.values())
    if existing is not None:
        shared = existing["backbone"]["fingerprint"]
    else:  # the majority; on a tie, the first task's
        shared = max(counts, key=lambda fp: (counts[fp], -list(fingerprints.values()).index(fp)))
    odd = [key for key, fp in fingerprints.items() if fp != shared]
    if odd:
        key = odd[0]
        model_dir, config = tasks[key]
        against = (
            f"the bundle in {output_dir} ({existing['backbone']['model']}, {shared[:19]}...)" if existing is not None
            else f"the other task(s) {', '.join(k for k in tasks if k not in odd)} ({shared[:19]}...)"
        )
        raise SpartanError(
            f"--model-dir {model_dir}: task {key!r} was trained on backbone {config['backbone']['model']} "
            f"({fingerprints[key][:19]}...), not the one of {against}; a bundle shares one backbone: "
            f"convert it into another --output-dir"
        )
    return shared


def check_weights_mode(existing: dict | None, weights: str, output_dir):
    if existing is not None and existing["backbone"]["weights"] != weights:
        raise SpartanError(
            f"--output-dir {output_dir}: holds a {existing['backbone']['weights']} bundle, this run writes "
            f"{weights} weights; a bundle has one weights mode: choose another --output-dir"
        )


# --------------------------------------------------------------------------- the run


def convert_bundle(model_dirs, options: Options) -> dict:
    """Convert the tasks in ``model_dirs`` into the bundle at ``options.output_dir``; returns the manifest."""
    from spartan_tf.backbone import Backbone  # TensorFlow loads only once the input is checked

    output_dir = Path(options.output_dir)
    tasks = read_task_configs(model_dirs)
    existing = bundle.read_existing(output_dir)
    check_one_backbone(tasks, existing, output_dir)
    check_weights_mode(existing, options.weights, output_dir)
    dev_examples = {key: dev_examples_for(config, options.check_samples) for key, (_, config) in tasks.items()}

    backbone = Backbone.load(next(iter(tasks.values()))[1]["backbone"]["model"])
    models = {key: artifacts.load_trained(model_dir, backbone=backbone)[0] for key, (model_dir, _) in tasks.items()}
    deployments = {key: deployment(config, options) for key, (_, config) in tasks.items()}
    kept_tasks = {key: entry for key, entry in (existing or {}).get("tasks", {}).items() if key not in tasks}
    layouts = {key: shared_graph.layout(config) for key, (_, config) in tasks.items()
               if deployments[key] == bundle.SHARED}
    graph_layouts = {shared_graph.graph_key(value): value for value in layouts.values()}
    graph_layouts.update({entry["graph"]: (existing or {})["graphs"][entry["graph"]]
                          for entry in kept_tasks.values() if entry["deployment"] == bundle.SHARED})
    graph_layouts = {key: {"method": value["method"], "pooling": value["pooling"]} for key, value in graph_layouts.items()}
    # The shared graphs' position tables cover the longest max length of the shared tasks.
    shared_lengths = ([tasks[key][1]["max_seq_length"] for key in layouts]
                      + [entry["max_length"] for entry in kept_tasks.values() if entry["deployment"] == bundle.SHARED])
    max_length = max(shared_lengths or [config["max_seq_length"] for _, config in tasks.values()])
    old_graphs = (existing or {}).get("graphs", {})
    kept_graphs = {
        key for key in graph_layouts
        if key in old_graphs and existing["backbone"]["weights"] == options.weights
        and existing["backbone"]["max_length"] == max_length and bundle.file_matches(output_dir, old_graphs[key])
    }
    with tempfile.TemporaryDirectory(prefix="spartan-bundle-") as scratch:
        paths = convert_files(Path(scratch), backbone, models, tasks, deployments, graph_layouts, kept_graphs,
                              max_length, options)
        if options.check_samples != 0:
            for key, model in models.items():
                rows = check_parity(key, tasks[key][1], model, backbone, dev_examples[key], paths, options.weights)
                if rows[0].agreement < MIN_FLOAT_AGREEMENT:
                    raise ParityFailure(
                        f"task {key!r}: the float32 bundle agrees with Keras on only {100 * rows[0].agreement:.2f}% "
                        f"of the checked dev examples (minimum {100 * MIN_FLOAT_AGREEMENT:.0f}%): a conversion bug; "
                        f"nothing was written to {output_dir}"
                    )
        # Everything checked: write the bundle, manifest last.
        output_dir.mkdir(parents=True, exist_ok=True)
        graphs = {}
        for key, graph_layout in graph_layouts.items():
            if key in kept_graphs:
                file_entry = {field: old_graphs[key][field] for field in ("file", "sha256", "bytes")}
            else:
                file_entry = bundle.write_file(output_dir, bundle.graph_file(key), paths[key, "graph"].read_bytes())
            graphs[key] = bundle.graph_entry(file_entry, graph_layout)
        tokenizer = backbone.tokenizer(max_length).to_str().encode()
        tokenizer_file = bundle.write_file(output_dir, bundle.TOKENIZER_FILE, tokenizer)
        entries = dict(kept_tasks)
        for key, (model_dir, config) in tasks.items():
            name = bundle.task_file(key, deployments[key])
            task_file = bundle.write_file(output_dir, name, paths[key, "task"].read_bytes())
            lora_merged = options.lora_merged if config["method"]["name"] == "lora" else None
            graph = shared_graph.graph_key(layouts[key]) if key in layouts else None
            entries[key] = bundle.task_entry(task_file, config, deployments[key], options.weights,
                                             read_dev_metrics(model_dir), reference_inputs(dev_examples[key]),
                                             graph, lora_merged)
        backbone_block = bundle.backbone_entry(backbone, max_length, options.weights)
        manifest = bundle.write_manifest(output_dir, backbone_block, tokenizer_file, graphs, entries)
    remove_stale_files(output_dir, existing, manifest)
    log(size_table(output_dir, manifest))
    return manifest


def remove_stale_files(output_dir: Path, existing: dict | None, manifest: dict):
    """Files the new manifest no longer lists leave the bundle: a task's file of its old deployment
    (e.g. qnli.tflite once qnli is shared as qnli.npz) and a graph no shared task uses any more."""
    listed = {entry["file"] for block in ("graphs", "tasks") for entry in manifest[block].values()}
    old = [entry["file"] for block in ("graphs", "tasks") for entry in (existing or {}).get(block, {}).values()]
    for name in old:
        if name not in listed:
            (output_dir / name).unlink(missing_ok=True)
            log(f"removed {name}: the new manifest no longer lists it")


def convert_files(scratch: Path, backbone, models: dict, tasks: dict, deployments: dict, graph_layouts: dict,
                  kept_graphs: set, max_length: int, options: Options) -> dict:
    """Convert everything into ``scratch``; returns the paths: (graph key, "graph") for every shared
    graph (the kept one in the output directory if unchanged), (key, "task") for every task; with a
    parity check of a quantized bundle also the float32 twins (graph key, "float_graph") and, for
    a whole task, (key, "float_task"); (key, "tensors") holds a shared task's float32 tensors. A whole
    task is converted at its own max length."""
    import numpy as np

    from spartan_tf import export

    output_dir, weights = Path(options.output_dir), options.weights
    float_twins = options.check_samples != 0 and weights != "float32"
    paths = {}
    needed = {shared_graph.graph_key(shared_graph.layout(tasks[key][1])) for key in models
              if deployments[key] == bundle.SHARED}
    for key, graph_layout in graph_layouts.items():
        if key in kept_graphs:
            log(f"{bundle.graph_file(key)}: unchanged (same backbone, {weights} weights, max length {max_length}): kept")
            paths[key, "graph"] = output_dir / bundle.graph_file(key)
        else:
            paths[key, "graph"] = convert_to(scratch / bundle.graph_file(key),
                                             shared_graph.shared_signatures(backbone, graph_layout, max_length), weights)
        if float_twins and key in needed:
            paths[key, "float_graph"] = convert_to(scratch / f"float32.{bundle.graph_file(key)}",
                                                   shared_graph.shared_signatures(backbone, graph_layout, max_length),
                                                   "float32")
        else:
            paths[key, "float_graph"] = paths[key, "graph"]
    for key, model in models.items():
        if deployments[key] == bundle.SHARED:
            tensors = shared_graph.task_tensors(model)
            paths[key, "task"] = scratch / bundle.task_file(key, bundle.SHARED)
            with open(paths[key, "task"], "wb") as handle:
                np.savez(handle, **shared_graph.pack_task_file(tensors, weights))
            paths[key, "tensors"] = tensors  # the exact float32 tensors, for the parity check
            continue
        config = tasks[key][1]
        if model.method.name == "spartan":
            signatures = export.fused_signatures(backbone, model, config["max_seq_length"])
        else:
            signatures = export.whole_signatures(model, config["max_seq_length"], options.lora_merged)
        paths[key, "task"] = convert_to(scratch / bundle.task_file(key, bundle.WHOLE), signatures, weights)
        paths[key, "float_task"] = (convert_to(scratch / f"{key}.float32.tflite", signatures, "float32")
                                    if float_twins else paths[key, "task"])
    return paths


def convert_to(path: Path, signatures: dict, weights: str, per_channel: bool = True) -> Path:
    """Convert ``signatures`` and write the .tflite to ``path`` (a scratch file), logging size and time."""
    from spartan_tf import export

    start = time.perf_counter()
    flatbuffer = export.to_tflite(signatures, weights, per_channel=per_channel)
    path.write_bytes(flatbuffer)
    log(f"converted {path.name} ({weights}): {len(flatbuffer):,} bytes in {time.perf_counter() - start:.0f} s")
    return path


# --------------------------------------------------------------------------- parity


def dev_examples_for(config: dict, check_samples: int | None) -> list:
    """The first ``check_samples`` dev examples of the task's training-time data source."""
    from spartan_tf.sources import DataSource, read_split

    task = artifacts.task_from_config(config)
    try:
        examples = read_split(task, DataSource.from_dict(config["task"]["data"]), "dev")
    except SpartanError as err:
        if check_samples == 0:
            return []
        raise SpartanError(f"the parity check needs task {task.name}'s dev data: {err} "
                           f"(--check-samples 0 skips the check)") from None
    return examples if check_samples is None else examples[:check_samples]


def check_parity(key, config, model, backbone, examples, paths: dict, weights: str) -> list:
    """Keras vs each bundle path on ``examples`` (paths from convert_files); prints the table;
    returns the rows, the float32 path first. A whole task's Keras reference is the trained model
    itself (for merged LoRA: unmerged), so the check also covers the merge."""
    import numpy as np

    from spartan_tf import data, parity
    from spartan_tf.metrics import compute_metrics

    task = artifacts.task_from_config(config)
    encoded = data.encode(backbone.tokenizer(config["max_seq_length"]), examples)
    labels = [example.label for example in examples]
    start = time.perf_counter()
    reference = parity.keras_logits(model, task, encoded)

    def shared(graph_path, tensors):
        return parity.run_one_by_one(parity.SharedBundle(graph_path, tensors), encoded)

    def whole(path):
        return parity.run_one_by_one(parity.WholeBundle(path), encoded)

    if (key, "tensors") in paths:  # a shared task
        graph = shared_graph.graph_key(shared_graph.layout(config))
        with np.load(paths[key, "task"]) as packed:
            written = shared_graph.unpack_task_file(dict(packed))
        rows = [parity.compare("float32 shared graph + float32 tensors", task, reference,
                               shared(paths[graph, "float_graph"], paths[key, "tensors"]), labels)]
        if weights != "float32":
            rows.append(parity.compare(f"{weights} shared graph + float32 tensors", task, reference,
                                       shared(paths[graph, "graph"], paths[key, "tensors"]), labels))
            rows.append(parity.compare(f"{weights} shared graph + {weights} tensors (written)", task, reference,
                                       shared(paths[graph, "graph"], written), labels))
    else:
        rows = [parity.compare("float32 whole model (no quantization)", task, reference,
                               whole(paths[key, "float_task"]), labels)]
        if weights != "float32":
            rows.append(parity.compare(f"{weights} whole model (written)", task, reference,
                                       whole(paths[key, "task"]), labels))
    keras_row = parity.ParityRow("keras (tf_keras, reference)", None, None, compute_metrics(task, reference, labels))
    log(parity.format_table(key, task, len(examples), [keras_row] + rows)
        + f"\n  ({time.perf_counter() - start:.0f} s)")
    return rows


# --------------------------------------------------------------------------- manifest details


def read_dev_metrics(model_dir) -> dict:
    """The final Keras dev metrics training recorded in metrics.json ({} if absent)."""
    import json

    path = Path(model_dir) / artifacts.METRICS_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("final", {}))
    except (ValueError, AttributeError):
        return {}


def reference_inputs(examples) -> list:
    return [{"text": example.text, "text_pair": example.text_pair} for example in examples[:REFERENCE_INPUTS]]


def size_table(output_dir, manifest) -> str:
    """Bytes of every bundle file and each shared task's ratio to its graph (goal for SPARTAN: <= 2%)."""
    backbone = manifest["backbone"]
    lines = [f"bundle {output_dir} ({backbone['weights']} weights, max length {backbone['max_length']}):",
             f"  {'file':<32} {'bytes':>12} {'of backbone':>12}"]
    for entry in manifest["graphs"].values():
        lines.append(f"  {entry['file']:<32} {entry['bytes']:>12,}")
    for entry in manifest["tasks"].values():
        ratio = entry.get("size_ratio_to_backbone")
        if ratio is None:  # a whole task: the model itself
            lines.append(f"  {entry['file']:<32} {entry['bytes']:>12,} {'(whole, ' + entry['method']['name'] + ')':>12}")
            continue
        mark = "" if ratio <= 0.02 or entry["method"]["name"] != "spartan" else "  (over the 2% goal)"
        lines.append(f"  {entry['file']:<32} {entry['bytes']:>12,} {100 * ratio:>11.2f}%{mark}")
    return "\n".join(lines)
