"""Which parents specialise in what: record a SPARTAN model's parent weights per input, and score them.

Recording (needs TensorFlow): the model runs embed -> (layer i -> memory i)* -> head exactly as in
:class:`spartan_tf.model.TaskModel`; before memory i is applied, its parent weights [B, S, E]
(``SparseMemory.parent_weights``, 0 outside the top-k) and its top-k membership [B, S, E] (1 for the
k chosen parents) are averaged over each input's real tokens (padding excluded).

Statistics (NumPy only), per layer, from W [N, E] (mean parent weights; each row sums to 1),
T [N, E] (fraction of the input's tokens that chose each parent; each row sums to k) and labels [N]:
    heatmap        mean of W over the inputs of each label          [K, E]
    usage          mean of W over all inputs                        [E] (sums to 1)
    topk_rate      mean of T over all inputs                        [E] (sums to k)
    usage entropy  H(usage) / log E: 1 = every parent used equally, 0 = one parent takes everything
    dead parents   never among the top-k of any token;  rare: in the top-k of < 1% of tokens
    specialisation normalised mutual information (NMI) between the label and
                   (a) each input's argmax parent (argmax of its row of W), and
                   (b) membership of parent e in the input's k heaviest parents, averaged over e;
                   each beside the same score for shuffled labels (the chance level of this N).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spartan_tf.errors import SpartanError

RARE_RATE = 0.01  # a parent in the top-k of fewer than this fraction of tokens is "rare"


# --------------------------------------------------------------------------- reading a labelled file


def read_labelled_file(path, task, label_column: str = "label"):
    """Examples of ``path`` for a trained task (labels = the task's classes).

    Custom layout (.tsv/.csv/.jsonl with text[, text_pair] and a label column) for every task;
    a GLUE task also reads its own GLUE TSV layout (a .tsv without a ``text`` column).
    ``label_column`` names the label column of a custom-layout file.
    """
    from spartan_tf import data

    path = Path(path)
    if not path.is_file():
        raise SpartanError(f"--data {path}: " + ("no such file" if not path.exists() else "not a file"))
    if task.is_regression:
        raise SpartanError(f"task {task.name} is a regression task: parent specialisation by label needs classes")
    suffix = path.suffix.lower()
    header = _header(path, suffix)
    if suffix in (".tsv", ".csv") and not header:
        raise SpartanError(f"{path}: no examples (the file is empty)")
    if task.name != "custom" and suffix == ".tsv" and "text" not in header:  # the task's GLUE layout
        if label_column != "label":
            raise SpartanError(f"--label-column {label_column}: a file in {task.name}'s GLUE layout has a fixed "
                               "label column; --label-column is for text[, text_pair], label files")
        return data.read_task_file(task, path)
    if suffix in (".tsv", ".csv") and label_column not in header:
        raise SpartanError(f"{path}: missing label column {label_column!r} (--label-column); "
                           f"found columns: {', '.join(header)}")
    return data.read_custom_file(path, task.label_names, task.problem_type, label_column)[0]


def _header(path: Path, suffix: str) -> list[str]:
    """Column names of a .tsv/.csv (first non-blank line); [] for .jsonl."""
    if suffix not in (".tsv", ".csv"):
        return []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        try:
            for line in handle:
                if line.strip():
                    if suffix == ".tsv":
                        return [name.strip() for name in line.rstrip("\r\n").split("\t")]
                    return [name.strip() for name in next(csv.reader([line]))]
        except UnicodeDecodeError:
            raise SpartanError(f"{path}: is not UTF-8 text") from None
    return []


# --------------------------------------------------------------------------- recording (TensorFlow)


@dataclass
class Recording:
    """Per input n (in the order of the examples), per layer l, per parent e:

    weights  [N, L, E]  mean parent weight over the input's real tokens (rows sum to 1)
    topk     [N, L, E]  fraction of the input's real tokens whose top-k holds parent e (rows sum to k)
    labels   [N]        class index;  logits [N, K]: the model's output for the input
    """

    weights: np.ndarray
    topk: np.ndarray
    labels: np.ndarray
    logits: np.ndarray


def memory_layers(model):
    """The model's SparseMemory layers; SpartanError if its method has no parents."""
    layers = list(model.after_layers)
    if any(layer is None for layer in layers):
        first = next((index for index, layer in enumerate(layers) if layer is not None), len(layers))
        raise SpartanError(f"this model has memories on encoder layers {first} and up only "
                           "(--first-memory-layer); the analysis needs one on every layer")
    from spartan_tf.methods.sublayer_memories import SublayerMemories

    if any(isinstance(layer, SublayerMemories) for layer in layers):
        raise SpartanError("this model has two memories on every encoder layer (--memory-site attention+feed-forward) "
                           "or tuned LayerNorms (--tune-layer-norms); the analysis reads one bare memory per layer")
    if not layers or not all(hasattr(layer, "parent_weights") and hasattr(layer, "select_parents") for layer in layers):
        raise SpartanError("this model's method has no parent cells to analyse (expected a SPARTAN model)")
    return layers


def _forward_fn(model):
    """A tf.function: features {[B, S] int32} -> (weights [B, L, E], topk [B, L, E], logits [B, K])."""
    import tensorflow as tf

    backbone, memories = model.backbone, memory_layers(model)
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[{"input_ids": spec, "attention_mask": spec, "token_type_ids": spec}])
    def forward(features):
        mask = features["attention_mask"]
        hidden = backbone.embed(features["input_ids"], features["token_type_ids"])
        bias = backbone.attention_bias(mask, hidden.dtype)
        real = tf.cast(mask, hidden.dtype)[..., None]  # [B, S, 1]
        tokens = tf.maximum(tf.reduce_sum(real, axis=1), 1.0)  # [B, 1]
        weights, topk = [], []
        for index, memory in enumerate(memories):
            read = []  # what the memory reads: the layer's output, or its feed-forward output (the method's site)

            def run_memory(memory_input, attention_mask=None, training=None, memory=memory, read=read):
                read.append(memory_input)
                return memory(memory_input, attention_mask=attention_mask, training=training)
            hidden = model.method.forward_layer(backbone, index, hidden, bias, mask, run_memory)
            parent_weights = memory.parent_weights(read[0])  # [B, S, E]
            _, top_indices = memory.select_parents(memory.query(read[0]))  # [B, S, k]
            chosen = tf.reduce_sum(tf.one_hot(top_indices, memory.num_parents, dtype=hidden.dtype), axis=2)
            weights.append(tf.reduce_sum(parent_weights * real, axis=1) / tokens)
            topk.append(tf.reduce_sum(chosen * real, axis=1) / tokens)
        logits = model.head(hidden, attention_mask=mask, training=False)
        return tf.stack(weights, axis=1), tf.stack(topk, axis=1), logits

    return forward


def record(model, task, examples, tokenizer, batch_size: int = 32) -> Recording:
    """Run ``model`` over ``examples`` and record every layer's parent weights per input."""
    from spartan_tf import data

    if not examples:
        raise SpartanError("no examples to analyse")
    encoded = data.encode(tokenizer, examples)
    labels = np.array([example.label for example in examples], dtype=np.int64)
    order = data.length_order(encoded)  # the dataset's element order (similar lengths batched together)
    dataset = data.make_dataset(encoded, labels, batch_size, shuffle=False, seed=0, task=task, order_by_length=True)
    forward = _forward_fn(model)
    parts = [[], [], []]
    for features, _ in dataset:
        for part, value in zip(parts, forward(features)):
            part.append(value.numpy())
    weights, topk, logits = (np.concatenate(part) for part in parts)
    unsorted = np.empty_like(order)
    unsorted[order] = np.arange(len(order))  # dataset position of example i
    return Recording(weights[unsorted], topk[unsorted], labels, logits[unsorted])


# --------------------------------------------------------------------------- statistics (NumPy)


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a distribution (zeros allowed; normalised first)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats between two discrete label vectors [N]."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(max((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum(), 0.0))


def nmi(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information I / mean(H(labels), H(clusters)) in [0, 1] (sklearn's
    "arithmetic" NMI); 0 when either side is constant."""
    h_labels = entropy(np.unique(labels, return_counts=True)[1])
    h_clusters = entropy(np.unique(clusters, return_counts=True)[1])
    if h_labels == 0 or h_clusters == 0:
        return 0.0
    return float(min(mutual_information(labels, clusters) / ((h_labels + h_clusters) / 2), 1.0))


def topk_members(weights: np.ndarray, k: int) -> np.ndarray:
    """[N, E] bool: parent e is among the k largest of the input's mean weights (ties by index)."""
    order = np.argsort(-weights, axis=1, kind="stable")[:, :k]
    members = np.zeros(weights.shape, dtype=bool)
    np.put_along_axis(members, order, True, axis=1)
    return members


def specialisation_scores(weights: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """NMI(label; argmax parent) and mean over parents of NMI(label; parent e in the input's k
    heaviest). weights [N, E], labels [N]."""
    members = topk_members(weights, k)
    return {
        "nmi_argmax": nmi(labels, weights.argmax(axis=1)),
        "nmi_topk": float(np.mean([nmi(labels, members[:, e]) for e in range(weights.shape[1])])),
    }


def shuffled_scores(weights: np.ndarray, labels: np.ndarray, k: int, shuffles: int, seed: int) -> dict:
    """The same scores for ``shuffles`` seeded permutations of the labels: {name: [shuffles]}."""
    rng = np.random.default_rng(seed)
    runs = [specialisation_scores(weights, rng.permutation(labels), k) for _ in range(shuffles)]
    return {name: [run[name] for run in runs] for name in runs[0]} if runs else {}


def layer_statistics(weights: np.ndarray, topk: np.ndarray, labels: np.ndarray, num_labels: int, k: int,
                     shuffles: int = 20, seed: int = 0) -> dict:
    """Every statistic of one layer (see the module docstring). weights, topk [N, E]; labels [N]."""
    num_parents = weights.shape[1]
    heatmap = np.zeros((num_labels, num_parents))
    counts = np.bincount(labels, minlength=num_labels)
    np.add.at(heatmap, labels, weights)
    heatmap = heatmap / np.maximum(counts, 1)[:, None]
    usage = weights.mean(axis=0)
    topk_rate = topk.mean(axis=0)
    usage_entropy = entropy(usage)
    scores = specialisation_scores(weights, labels, k)
    chance = shuffled_scores(weights, labels, k, shuffles, seed)
    argmax_counts = np.bincount(weights.argmax(axis=1), minlength=num_parents)
    return {
        "heatmap": heatmap.tolist(),
        "usage": usage.tolist(),
        "topk_rate": topk_rate.tolist(),
        "argmax_counts": argmax_counts.tolist(),
        "usage_entropy": usage_entropy / np.log(num_parents) if num_parents > 1 else 0.0,
        "effective_parents": float(np.exp(usage_entropy)),
        "dead_parents": [int(e) for e in np.flatnonzero(topk_rate == 0)],
        "rare_parents": [int(e) for e in np.flatnonzero((topk_rate > 0) & (topk_rate < RARE_RATE))],
        **scores,
        **{f"{name}_shuffled_mean": float(np.mean(values)) for name, values in chance.items()},
        **{f"{name}_shuffled_std": float(np.std(values)) for name, values in chance.items()},
        **{f"{name}_shuffled_max": float(np.max(values)) for name, values in chance.items()},
    }


def lift(heatmap: np.ndarray, usage: np.ndarray) -> np.ndarray:
    """log2(mean weight given the label / mean weight overall) [K, E]; 0 where a parent is unused."""
    heatmap, usage = np.asarray(heatmap), np.asarray(usage)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(usage[None, :] > 0, heatmap / usage[None, :], 1.0)
    return np.log2(np.maximum(ratio, 1e-6))


def analyse(recording: Recording, label_names: Sequence[str], k: int, shuffles: int = 20, seed: int = 0) -> list[dict]:
    """layer_statistics for every layer of a recording, with ``layer`` (0-based) added."""
    return [
        {"layer": layer, **layer_statistics(recording.weights[:, layer], recording.topk[:, layer], recording.labels,
                                            len(label_names), k, shuffles, seed)}
        for layer in range(recording.weights.shape[1])
    ]
