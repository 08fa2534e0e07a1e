"""Deduplicate a labelled custom file and split it into seeded, stratified train and test files.

    python -m spartan_tf.split_data --input bbc_news.tsv --test-fraction 0.2 --seed 42 --output-dir data/bbc

Writes ``train.<ext>`` and ``test.<ext>`` (same format as the input: .tsv, .csv or .jsonl, columns
text[, text_pair], label) and ``split.json`` (input sha256, seed, counts, dropped duplicates).
"""

import argparse
import csv
import hashlib
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spartan_tf.data import Example, read_custom_file
from spartan_tf.errors import SpartanError, run_cli
from spartan_tf.tasks import CLASSIFICATION, REGRESSION


def dedup_key(example: Example) -> tuple:
    """What makes two examples the same input: texts equal up to case and runs of whitespace."""
    norm = lambda text: None if text is None else " ".join(text.split()).casefold()  # noqa: E731
    return norm(example.text), norm(example.text_pair)


def drop_duplicates(examples: Sequence[Example]) -> tuple[list[Example], int, int]:
    """Keep the first of each group of duplicate inputs (see ``dedup_key``).

    A duplicated input whose copies carry different labels is ambiguous: every copy is dropped.
    Returns (kept examples in file order, number of duplicate copies dropped, number of inputs
    dropped for conflicting labels).
    """
    groups: dict[tuple, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(dedup_key(example), []).append(index)
    keep, duplicates, conflicts = [], 0, 0
    for indexes in groups.values():
        labels = {examples[i].label for i in indexes}
        if len(labels) > 1:
            conflicts += 1
            continue
        keep.append(indexes[0])
        duplicates += len(indexes) - 1
    return [examples[i] for i in sorted(keep)], duplicates, conflicts


def split_examples(examples: Sequence[Example], test_fraction: float, seed: int,
                   stratify: bool = True) -> tuple[list[Example], list[Example]]:
    """A seeded split (train, test), each in the input's order.

    Stratified (classification): each class gives ``round(n_class * test_fraction)`` examples to test
    (at least 1 and at most n_class - 1 when it has 2 or more); otherwise a uniform seeded sample.
    """
    if not 0 < test_fraction < 1:
        raise SpartanError(f"--test-fraction {test_fraction}: must be between 0 and 1 (exclusive)")
    rng = np.random.default_rng(seed)
    if stratify:
        by_class: dict = {}
        for index, example in enumerate(examples):
            by_class.setdefault(example.label, []).append(index)
        test = []
        for label in sorted(by_class):
            members = by_class[label]
            take = int(round(len(members) * test_fraction))
            if len(members) >= 2:
                take = min(max(take, 1), len(members) - 1)
            test.extend(rng.permutation(members)[:take].tolist())
    else:
        take = int(round(len(examples) * test_fraction))
        test = rng.permutation(len(examples))[:take].tolist()
    test_set = set(test)
    train_part = [ex for i, ex in enumerate(examples) if i not in test_set]
    test_part = [ex for i, ex in enumerate(examples) if i in test_set]
    if not train_part or not test_part:
        raise SpartanError(f"--test-fraction {test_fraction}: leaves an empty train or test part "
                           f"({len(train_part)} / {len(test_part)} of {len(examples)} examples)")
    return train_part, test_part


def render(examples: Sequence[Example], label_names: Sequence[str], suffix: str) -> bytes:
    """``examples`` as a custom-layout file (.tsv / .csv / .jsonl) that ``read_custom_file`` reads back."""
    has_pair = any(ex.text_pair is not None for ex in examples)
    label = (lambda ex: label_names[ex.label]) if label_names else (lambda ex: repr(float(ex.label)))  # noqa: E731
    if suffix == ".jsonl":
        lines = []
        for ex in examples:
            record = {"text": ex.text}
            if ex.text_pair is not None:
                record["text_pair"] = ex.text_pair
            record["label"] = label(ex)
            lines.append(json.dumps(record, ensure_ascii=False))
        return ("\n".join(lines) + "\n").encode("utf-8")
    header = ["text", "text_pair", "label"] if has_pair else ["text", "label"]
    rows = [[ex.text, ex.text_pair, label(ex)] if has_pair else [ex.text, label(ex)] for ex in examples]
    if suffix == ".tsv":  # read verbatim (no quoting): a tab or line break inside a field cannot be stored
        for row in rows:
            if any(ch in field for field in row for ch in "\t\r\n"):
                raise SpartanError("a text holds a tab or line break, which a .tsv cannot store; use .csv or .jsonl")
        return "".join("\t".join(row) + "\n" for row in [header, *rows]).encode("utf-8")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=",", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def label_counts(examples, label_names) -> dict:
    if not label_names:
        return {}
    counts = np.bincount([ex.label for ex in examples], minlength=len(label_names))
    return {name: int(count) for name, count in zip(label_names, counts)}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m spartan_tf.split_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a .tsv, .csv or .jsonl with text[, text_pair], label")
    parser.add_argument("--output-dir", required=True, help="where train.<ext>, test.<ext> and split.json go")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="default 0.2")
    parser.add_argument("--seed", type=int, default=42, help="default 42")
    parser.add_argument("--problem-type", choices=(CLASSIFICATION, REGRESSION), default=CLASSIFICATION,
                        help="regression: float labels, unstratified split")
    parser.add_argument("--overwrite", action="store_true", help="replace split files already in --output-dir")
    return parser


def main(argv=None):
    from spartan_tf.artifacts import atomic_write_bytes, atomic_write_json

    args = build_parser().parse_args(argv)
    source = Path(args.input)
    examples, label_names = read_custom_file(source, None, args.problem_type)
    suffix = source.suffix.lower()
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpartanError(f"--output-dir {out_dir}: exists and is not a directory")
    targets = [out_dir / f"train{suffix}", out_dir / f"test{suffix}", out_dir / "split.json"]
    if not args.overwrite and any(path.exists() for path in targets):
        raise SpartanError(f"--output-dir {out_dir}: already holds a split; pass --overwrite to replace it")

    kept, duplicates, conflicts = drop_duplicates(examples)
    train, test = split_examples(kept, args.test_fraction, args.seed, stratify=args.problem_type == CLASSIFICATION)
    atomic_write_bytes(targets[0], render(train, label_names, suffix))
    atomic_write_bytes(targets[1], render(test, label_names, suffix))
    summary = {
        "input": str(source.resolve()),
        "input_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "input_examples": len(examples),
        "duplicates_dropped": duplicates,
        "conflicting_inputs_dropped": conflicts,
        "dedup_rule": "texts equal up to case and whitespace; first copy kept; all copies dropped if labels differ",
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "stratified": args.problem_type == CLASSIFICATION,
        "train": {"file": targets[0].name, "examples": len(train), "labels": label_counts(train, label_names)},
        "test": {"file": targets[1].name, "examples": len(test), "labels": label_counts(test, label_names)},
    }
    atomic_write_json(targets[2], summary)
    print(json.dumps({key: summary[key] for key in ("input_examples", "duplicates_dropped", "conflicting_inputs_dropped")}
                     | {"train": len(train), "test": len(test), "output_dir": str(out_dir)}))


if __name__ == "__main__":
    sys.exit(run_cli(main))
