"""Trained task directories -> a device bundle: the run behind ``python convert/to_tflite.py``.

    1. read every task config; all must share one backbone fingerprint (and agree with the bundle
       already in the output directory, if any);
    2. load the backbone once and rebuild each task's Keras model on it;
    3. convert into a scratch directory: the backbone (if a split task needs it, unless the bundle's
       is unchanged), each task file, optionally each fused file, and float32 twins for the parity check;
    4. parity: the Keras model against the bundle chained as on the device, on dev examples;
       a float32 bundle that disagrees with Keras is a bug and stops the run before anything is written;
    5. write the files atomically into the output directory, the manifest last.
"""

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spartan_tf import artifacts, bundle
from spartan_tf.errors import SpartanError
from spartan_tf.parity import MIN_FLOAT_AGREEMENT

DEFAULT_MODELS_DIR = Path("models")
DEFAULT_OUTPUT_DIR = DEFAULT_MODELS_DIR / "tflite"
REFERENCE_INPUTS = 3  # dev examples recorded in the manifest for the device's --benchmark
# Methods whose per-layer module runs BETWEEN encoder layers (layer_i, then module i), which is what
# the split bundle chains; adapters, LoRA and full fine-tuning change the layers themselves, so their
# tasks are deployed whole (docs/bundle-format.md, "Deployments").
SPLITTABLE_METHODS = ("spartan",)


def deployment(config: dict) -> str:
    """"split" (the task file runs on the shared backbone file) or "whole" (the task file is the model)."""
    return bundle.SPLIT if config["method"]["name"] in SPLITTABLE_METHODS else bundle.WHOLE


class ParityFailure(Exception):
    """The float32 bundle disagrees with Keras: a conversion bug (exit code 1, nothing written)."""


@dataclass(frozen=True)
class Options:
    """How to convert. weights: "int8" | "float16" | "float32" (see spartan_tf.export).
    fused: also write a one-graph file for each split task. lora_merged: LoRA tasks go merged
    (a plain BERT graph) or unmerged (the low-rank matmuls stay in the graph).
    check_samples: dev examples for the parity check; None = the whole dev set, 0 = skip it."""

    output_dir: Path = DEFAULT_OUTPUT_DIR
    weights: str = "int8"
    fused: bool = False
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
    deployments = {key: deployment(config) for key, (_, config) in tasks.items()}
    kept_tasks = {key: {"deployment": bundle.SPLIT, **entry}  # a version 1 entry is a split task
                  for key, entry in (existing or {}).get("tasks", {}).items() if key not in tasks}
    # The backbone file serves split tasks only; its position table covers their longest max length.
    split_lengths = ([config["max_seq_length"] for key, (_, config) in tasks.items() if deployments[key] == bundle.SPLIT]
                     + [entry["max_length"] for entry in kept_tasks.values() if entry["deployment"] == bundle.SPLIT])
    needs_backbone = bool(split_lengths)
    max_length = max(split_lengths or [config["max_seq_length"] for _, config in tasks.values()])
    old_backbone = existing["backbone"] if existing else None
    keep_backbone = (
        needs_backbone and old_backbone is not None and "file" in old_backbone
        and old_backbone["fingerprint"] == backbone.fingerprint()
        and old_backbone["weights"] == options.weights and old_backbone["max_length"] == max_length
        and bundle.file_matches(output_dir, old_backbone)
    )
    with tempfile.TemporaryDirectory(prefix="spartan-bundle-") as scratch:
        paths = convert_files(Path(scratch), backbone, models, tasks, deployments, max_length, options,
                              needs_backbone, keep_backbone)
        if options.check_samples != 0:
            for key, model in models.items():
                rows = check_parity(key, tasks[key][1], model, backbone, dev_examples[key], paths, options.weights,
                                    deployments[key])
                if rows[0].agreement < MIN_FLOAT_AGREEMENT:
                    raise ParityFailure(
                        f"task {key!r}: the float32 bundle agrees with Keras on only {100 * rows[0].agreement:.2f}% "
                        f"of the checked dev examples (minimum {100 * MIN_FLOAT_AGREEMENT:.0f}%): a conversion bug; "
                        f"nothing was written to {output_dir}"
                    )
        # Everything checked: write the bundle, manifest last.
        output_dir.mkdir(parents=True, exist_ok=True)
        if keep_backbone:
            backbone_file = {field: old_backbone[field] for field in ("file", "sha256", "bytes")}
        elif needs_backbone:
            backbone_file = bundle.write_file(output_dir, bundle.BACKBONE_FILE, paths["backbone"].read_bytes())
        else:
            backbone_file = None  # whole tasks only: no backbone file
        tokenizer = backbone.tokenizer(max_length).to_str().encode()
        tokenizer_file = bundle.write_file(output_dir, bundle.TOKENIZER_FILE, tokenizer)
        entries = dict(kept_tasks)
        for key, (model_dir, config) in tasks.items():
            task_file = bundle.write_file(output_dir, bundle.task_file(key), paths[key, "task"].read_bytes())
            fused = None
            if (key, "fused") in paths:
                fused = bundle.write_file(output_dir, bundle.fused_file(key), paths[key, "fused"].read_bytes())
            lora_merged = options.lora_merged if config["method"]["name"] == "lora" else None
            entries[key] = bundle.task_entry(task_file, config, deployments[key], options.weights,
                                             read_dev_metrics(model_dir), reference_inputs(dev_examples[key]),
                                             fused, lora_merged)
        backbone_block = bundle.backbone_entry(backbone_file, backbone, max_length, options.weights)
        manifest = bundle.write_manifest(output_dir, backbone_block, tokenizer_file, entries)
    remove_stale_files(output_dir, existing, manifest)
    log(size_table(output_dir, manifest))
    return manifest


def remove_stale_files(output_dir: Path, existing: dict | None, manifest: dict):
    """Files the new manifest no longer lists leave the bundle: a task's old fused file (re-converted
    without --fused, or now deployed whole) and the backbone once no split task needs it."""
    for key, old_entry in (existing or {}).get("tasks", {}).items():
        stale = old_entry.get("fused", {}).get("file")
        new_entry = manifest["tasks"].get(key, {})
        if stale and new_entry.get("fused", {}).get("file") != stale:
            (output_dir / stale).unlink(missing_ok=True)
            why = ("(pass --fused to rebuild it)" if new_entry.get("deployment") == bundle.SPLIT
                   else f"({key} is now deployed whole)")
            log(f"removed {stale}: built from the replaced {key} weights {why}")
    old_backbone = (existing or {}).get("backbone", {}).get("file")
    if old_backbone and "file" not in manifest["backbone"]:
        (output_dir / old_backbone).unlink(missing_ok=True)
        log(f"removed {old_backbone}: no split task in the bundle needs it any more")


def convert_files(scratch: Path, backbone, models: dict, tasks: dict, deployments: dict, max_length: int,
                  options: Options, needs_backbone: bool, keep_backbone: bool) -> dict:
    """Convert everything into ``scratch``; returns the paths: "backbone" (the kept one in the output
    directory if unchanged; absent if no split task needs it), (key, "task"), (key, "fused") for split
    tasks with --fused, and with a parity check of a quantized bundle the float32 twins
    "float_backbone" and (key, "float_task"). A whole task is converted at its own max length."""
    from spartan_tf import export

    output_dir, weights = Path(options.output_dir), options.weights
    float_twins = options.check_samples != 0 and weights != "float32"
    paths = {}
    if keep_backbone:
        log(f"{bundle.BACKBONE_FILE}: unchanged (same fingerprint, {weights} weights, max length {max_length}): kept")
        paths["backbone"] = output_dir / bundle.BACKBONE_FILE
    elif needs_backbone:
        paths["backbone"] = convert_to(scratch / bundle.BACKBONE_FILE,
                                       export.backbone_signatures(backbone, max_length), weights)
    if float_twins and bundle.SPLIT in deployments.values():
        paths["float_backbone"] = convert_to(scratch / "backbone.float32.tflite",
                                             export.backbone_signatures(backbone, max_length), "float32")
    elif "backbone" in paths:
        paths["float_backbone"] = paths["backbone"]
    for key, model in models.items():
        whole = deployments[key] == bundle.WHOLE
        # Built once for both conversions: for merged LoRA this loads and merges a backbone copy.
        signatures = (export.whole_signatures(model, tasks[key][1]["max_seq_length"], options.lora_merged) if whole
                      else export.task_signatures(model))
        # per_channel=False for a split task file: its size goal, see spartan_tf.export.to_tflite
        paths[key, "task"] = convert_to(scratch / bundle.task_file(key), signatures, weights, per_channel=whole)
        if options.fused and not whole:  # whole tasks are one graph already
            paths[key, "fused"] = convert_to(scratch / bundle.fused_file(key),
                                             export.fused_signatures(backbone, model, max_length), weights)
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


def check_parity(key, config, model, backbone, examples, paths: dict, weights: str, deployment: str) -> list:
    """Keras vs each bundle path on ``examples`` (paths from convert_files); prints the table;
    returns the rows, the float32 path first. A whole task's Keras reference is the trained model
    itself (for merged LoRA: unmerged), so the check also covers the merge."""
    from spartan_tf import data, parity
    from spartan_tf.metrics import compute_metrics

    task = artifacts.task_from_config(config)
    encoded = data.encode(backbone.tokenizer(config["max_seq_length"]), examples)
    labels = [example.label for example in examples]
    start = time.perf_counter()
    reference = parity.keras_logits(model, task, encoded)

    def split(backbone_path, task_path):
        return parity.run_one_by_one(parity.SplitBundle(backbone_path, task_path), encoded)

    def whole(path):
        return parity.run_one_by_one(parity.FusedBundle(path), encoded)

    if deployment == bundle.WHOLE:
        rows = [parity.compare("float32 whole model (no quantization)", task, reference,
                               whole(paths[key, "float_task"]), labels)]
        if weights != "float32":
            rows.append(parity.compare(f"{weights} whole model (written)", task, reference,
                                       whole(paths[key, "task"]), labels))
    else:
        rows = [parity.compare("float32 (Keras graph, no quantization)", task, reference,
                               split(paths["float_backbone"], paths[key, "float_task"]), labels)]
        if weights != "float32":
            rows.append(parity.compare(f"{weights} backbone + float32 task", task, reference,
                                       split(paths["backbone"], paths[key, "float_task"]), labels))
            rows.append(parity.compare(f"{weights} backbone + {weights} task (written)", task, reference,
                                       split(paths["backbone"], paths[key, "task"]), labels))
        if (key, "fused") in paths:
            rows.append(parity.compare(f"{weights} fused (written)", task, reference, whole(paths[key, "fused"]),
                                       labels))
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
    """Bytes of every bundle file and each split task's ratio to the backbone (goal: at most 2%)."""
    backbone = manifest["backbone"]
    lines = [f"bundle {output_dir} ({backbone['weights']} weights, max length {backbone['max_length']}):",
             f"  {'file':<28} {'bytes':>12} {'of backbone':>12}"]
    if "file" in backbone:
        lines.append(f"  {backbone['file']:<28} {backbone['bytes']:>12,}")
    for entry in manifest["tasks"].values():
        ratio = entry.get("size_ratio_to_backbone")
        if ratio is None:  # a whole task: the model itself
            lines.append(f"  {entry['file']:<28} {entry['bytes']:>12,} {'(whole, ' + entry['method']['name'] + ')':>12}")
            continue
        mark = "" if ratio <= 0.02 else "  (over the 2% goal)"
        lines.append(f"  {entry['file']:<28} {entry['bytes']:>12,} {100 * ratio:>11.2f}%{mark}")
        if "fused" in entry:
            lines.append(f"  {entry['fused']['file']:<28} {entry['fused']['bytes']:>12,}")
    return "\n".join(lines)
