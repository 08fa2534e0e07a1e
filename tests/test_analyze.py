"""python -m spartan_tf.analyze: recorded parent weights against NumPy, the scores, the files, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spartan_tf import tasks
from spartan_tf.data import Example
from spartan_tf.errors import SpartanError, run_cli
from spartan_tf.specialisation import (
    entropy,
    layer_statistics,
    nmi,
    read_labelled_file,
    specialisation_scores,
    shuffled_scores,
    topk_members,
)

REPO = Path(__file__).resolve().parents[1]
QNLI_DEV = REPO / "samples" / "glue" / "QNLI" / "dev.tsv"
TOPICS = ("sport", "tech", "politics")
TEXTS = [
    ("The striker scored twice in the second half and the home side won the cup final.", "sport"),
    ("New chips double battery life.", "tech"),
    ("Parliament voted on the budget after a long debate about taxes, schools and hospitals.", "politics"),
    ("Goal!", "sport"),
    ("The software update fixes a security flaw in the phone's browser and adds a dark mode.", "tech"),
    ("The minister resigned.", "politics"),
    ("A late penalty decided the derby.", "sport"),
]


# --------------------------------------------------------------------------- helpers


def tiny_method(balance=0.0, path="dense"):
    from spartan_tf.methods.spartan import SpartanMethod

    return SpartanMethod(num_parents=6, children_per_parent=2, top_k=3, temperature=1.3,
                         balance_loss_scale=balance, path=path)


def tiny_model(backbone, method, num_outputs, seed=3):
    """A tiny SPARTAN model with large random memory weights, so that the memories change the hidden
    states and the top-k choice is far from ties."""
    from spartan_tf.model import build_task_model

    model = build_task_model(backbone, method, num_outputs, head_dropout=0.1, seed=seed)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype(np.float32))
    return model


def save_tiny_task(out_dir, model, backbone, task, method, max_seq_length=32):
    from spartan_tf import artifacts

    config = {
        "task": {"name": task.name, "problem_type": task.problem_type, "label_names": list(task.label_names),
                 "metric_names": list(task.metric_names), "data": {"kind": "files"}},
        "backbone": backbone.describe(),
        "method": method.to_dict(),
        "head": {"dropout": 0.1},
        "max_seq_length": max_seq_length,
        "training": {"seed": 11},
    }
    artifacts.save_task(out_dir, model, config, {"final": {}})
    return Path(out_dir)


def write_tsv(path, rows, header=("text", "label")):
    path.write_text("".join("\t".join(row) + "\n" for row in [header, *rows]), encoding="utf-8")
    return path


def numpy_forward(model, backbone, tokenizer, example):
    """One unpadded example through embed -> (layer -> memory)*, the memories in float64 NumPy from their
    weights (DESIGN.md's formulas), the encoder layers from the backbone: (weights [L, E], topk [L, E])."""
    import tensorflow as tf

    encoding = tokenizer.encode(example.text)
    ids = tf.constant([encoding.ids], tf.int32)
    bias = backbone.attention_bias(tf.ones_like(ids), tf.float32)
    hidden = backbone.embed(ids, tf.constant([encoding.type_ids], tf.int32))
    weights, topk = [], []
    for index, memory in enumerate(model.after_layers):
        h = backbone.layer(index, hidden, bias).numpy()[0].astype(np.float64)  # [S, H]
        # the values as the memory reads them (stored x value_scale)
        P, K, V = (w.numpy().astype(np.float64) for w in (memory.parent_keys, memory.child_keys, memory.values()))
        logits = h @ P.T  # [S, E]
        keep = np.argsort(-logits, axis=1)[:, : memory.top_k]
        p = np.zeros_like(logits)
        for s in range(len(h)):
            chosen = np.exp(logits[s, keep[s]] - logits[s, keep[s]].max())
            p[s, keep[s]] = chosen / chosen.sum()
        child = np.einsum("sh,ech->sec", h, K) / memory.temperature
        q = np.exp(child - child.max(axis=-1, keepdims=True))
        q /= q.sum(axis=-1, keepdims=True)
        h = h + np.einsum("se,sec,ech->sh", p, q, V)
        weights.append(p.mean(axis=0))
        topk.append((p > 0).mean(axis=0))
        hidden = tf.constant(h[None], tf.float32)
    return np.array(weights), np.array(topk)


# --------------------------------------------------------------------------- recording


@pytest.mark.parametrize("balance,path", [(0.0, "dense"), (1.0, "sparse")])
def test_recorded_weights_match_numpy(tiny_backbone, balance, path):
    from spartan_tf.specialisation import record

    task = tasks.custom_task(TOPICS, "classification")
    method = tiny_method(balance, path)
    model = tiny_model(tiny_backbone, method, task.num_outputs)
    examples = [Example(text, None, TOPICS.index(label)) for text, label in TEXTS]
    tokenizer = tiny_backbone.tokenizer(32)
    # batch 3 over 7 inputs of very different lengths: padding inside every batch, order by length != input order
    recording = record(model, task, examples, tokenizer, batch_size=3)

    L, E = tiny_backbone.num_layers, method.num_parents
    assert recording.weights.shape == recording.topk.shape == (len(examples), L, E)
    np.testing.assert_array_equal(recording.labels, [ex.label for ex in examples])
    np.testing.assert_allclose(recording.weights.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(recording.topk.sum(axis=-1), method.top_k, atol=1e-5)
    for n, example in enumerate(examples):
        weights, topk = numpy_forward(model, tiny_backbone, tokenizer, example)
        np.testing.assert_allclose(recording.weights[n], weights, atol=2e-5, err_msg=example.text)
        np.testing.assert_allclose(recording.topk[n], topk, atol=1e-6, err_msg=example.text)
        single = {name: np.array([value]) for name, value in zip(
            ("input_ids", "attention_mask", "token_type_ids"),
            (lambda enc: (enc.ids, enc.attention_mask, enc.type_ids))(tokenizer.encode(example.text)))}
        np.testing.assert_allclose(recording.logits[n], model(single, training=False).numpy()[0], atol=1e-4)


def test_a_feed_forward_memory_is_recorded_on_what_it_reads(tiny_backbone):
    """--memory-site feed-forward: the recorded parent weights are the memory's on each layer's
    feed-forward output (BERT's layer and the memory written out in NumPy), not on the layer's output."""
    import dataclasses

    from test_memory import numpy_memory
    from test_methods import numpy_bert_layer

    from spartan_tf.specialisation import record

    task = tasks.custom_task(TOPICS, "classification")
    model = tiny_model(tiny_backbone, dataclasses.replace(tiny_method(), site="feed-forward"), task.num_outputs)
    examples = [Example(text, None, TOPICS.index(label)) for text, label in TEXTS[:3]]
    tokenizer = tiny_backbone.tokenizer(32)
    recording = record(model, task, examples, tokenizer, batch_size=2)
    for n, example in enumerate(examples):
        encoding = tokenizer.encode(example.text)
        hidden = tiny_backbone.embed(np.array([encoding.ids], np.int32), np.array([encoding.type_ids], np.int32))
        hidden = hidden.numpy().astype(np.float64)
        expected = []
        for index, memory in enumerate(model.after_layers):
            keys_and_values = [w.numpy().astype(np.float64) for w in (memory.parent_keys, memory.child_keys, memory.values())]

            def run_memory(feed_forward, memory=memory, keys_and_values=keys_and_values):
                out, parent_weights = numpy_memory(feed_forward, *keys_and_values, memory.top_k, memory.temperature)
                expected.append(parent_weights[0].mean(axis=0))  # [E]: the mean over the text's tokens
                return out
            hidden = numpy_bert_layer(tiny_backbone, index, hidden, np.ones((1, hidden.shape[1])), after_output=run_memory)
        np.testing.assert_allclose(recording.weights[n], np.array(expected), atol=2e-5, err_msg=example.text)


def test_record_refuses_a_model_without_parents(tiny_backbone):
    from spartan_tf.specialisation import memory_layers

    class NoParents:
        after_layers = [object()]

    with pytest.raises(SpartanError, match="no parent cells"):
        memory_layers(NoParents())


def test_record_refuses_a_model_with_memories_on_some_layers_only(tiny_backbone):
    """A model trained with --first-memory-layer has no parent weights to report on the layers below."""
    from spartan_tf.methods.spartan import SpartanMethod
    from spartan_tf.model import build_task_model
    from spartan_tf.specialisation import memory_layers

    model = build_task_model(tiny_backbone, SpartanMethod(num_parents=4, top_k=2, first_layer=1), 2, 0.1, seed=0)
    with pytest.raises(SpartanError, match="memories on encoder layers 1 and up only"):
        memory_layers(model)


@pytest.mark.parametrize("flags", [{"site": "attention+feed-forward"}, {"tune_layer_norms": True}])
def test_record_refuses_a_model_whose_layers_hold_more_than_a_memory(flags, tiny_backbone):
    """--memory-site attention+feed-forward (two memories a layer, where the report has room for one) or
    --tune-layer-norms (a layer's memory then sits in a SublayerMemories): one clear error."""
    from spartan_tf.methods.spartan import SpartanMethod
    from spartan_tf.model import build_task_model
    from spartan_tf.specialisation import memory_layers

    method = SpartanMethod(num_parents=4, top_k=2, **flags)
    model = build_task_model(tiny_backbone, method, 2, 0.1, seed=0)
    with pytest.raises(SpartanError, match=r"two memories on every encoder layer \(--memory-site attention\+feed-"
                                           r"forward\) or tuned LayerNorms \(--tune-layer-norms\)"):
        memory_layers(model)


# --------------------------------------------------------------------------- scores


def test_nmi_matches_sklearn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 4, 200), rng.integers(0, 7, 200)
        b[:80] = a[:80]  # partly dependent
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-10)
    assert nmi(a, np.zeros_like(a)) == 0.0
    assert nmi(a, a + 10) == pytest.approx(1.0)


def synthetic(num_inputs=1000, num_labels=5, parents=16, specialised=True, seed=0):
    """Mean parent weights [N, E] (rows sum to 1): each label prefers 'its' parent, or nothing does."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, num_inputs)
    weights = rng.dirichlet(np.ones(parents), num_inputs)
    if specialised:
        weights[np.arange(num_inputs), 3 * labels] += 1.0
        weights /= weights.sum(axis=1, keepdims=True)
    return weights, labels


def test_specialised_case_scores_high_and_shuffled_labels_score_about_zero():
    weights, labels = synthetic(specialised=True)
    scores = specialisation_scores(weights, labels, k=8)
    assert scores["nmi_argmax"] > 0.9
    chance = shuffled_scores(weights, labels, k=8, shuffles=10, seed=1)
    assert max(chance["nmi_argmax"]) < 0.03
    assert max(chance["nmi_topk"]) < 0.005
    # only 5 of the 16 parents carry the label, and a yes/no membership holds at most 1 bit of log2(5)
    assert scores["nmi_topk"] > 0.03 and scores["nmi_topk"] > 10 * max(chance["nmi_topk"])
    stats = layer_statistics(weights, np.ones_like(weights) / 2, labels, 5, 8, shuffles=10)
    assert stats["nmi_argmax"] > 10 * stats["nmi_argmax_shuffled_max"]


def test_unspecialised_case_scores_at_chance():
    weights, labels = synthetic(specialised=False)
    stats = layer_statistics(weights, np.ones_like(weights) / 2, labels, 5, 8, shuffles=20, seed=0)
    assert stats["nmi_argmax"] < 0.03
    assert stats["nmi_argmax"] < stats["nmi_argmax_shuffled_mean"] + 4 * stats["nmi_argmax_shuffled_std"]


def test_shuffles_are_seeded():
    weights, labels = synthetic()
    assert shuffled_scores(weights, labels, 8, 3, seed=5) == shuffled_scores(weights, labels, 8, 3, seed=5)
    assert shuffled_scores(weights, labels, 8, 3, seed=5) != shuffled_scores(weights, labels, 8, 3, seed=6)


def test_heatmap_usage_entropy_and_dead_parents():
    # 4 inputs, 4 parents, top-2; parent 3 is never chosen, parent 2 by one token in 200
    weights = np.array([[0.5, 0.5, 0, 0], [0.7, 0.3, 0, 0], [0.2, 0.8, 0, 0], [0.4, 0.0, 0.6, 0]])
    topk = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 0.995, 0.005, 0]])
    labels = np.array([0, 0, 1, 1])
    stats = layer_statistics(weights, topk, labels, num_labels=2, k=2, shuffles=2)
    np.testing.assert_allclose(stats["heatmap"], [[0.6, 0.4, 0, 0], [0.3, 0.4, 0.3, 0]])
    np.testing.assert_allclose(stats["usage"], [0.45, 0.4, 0.15, 0])
    np.testing.assert_allclose(stats["topk_rate"], [1, 0.99875, 0.00125, 0])
    assert stats["dead_parents"] == [3]
    assert stats["rare_parents"] == [2]
    assert stats["usage_entropy"] == pytest.approx(entropy([0.45, 0.4, 0.15]) / np.log(4))
    assert stats["argmax_counts"] == [2, 1, 1, 0]
    uniform = layer_statistics(np.full((4, 4), 0.25), np.full((4, 4), 0.5), labels, 2, 2, shuffles=2)
    assert uniform["usage_entropy"] == pytest.approx(1.0)
    assert uniform["effective_parents"] == pytest.approx(4.0)


def test_topk_members():
    weights = np.array([[0.1, 0.4, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_array_equal(topk_members(weights, 2), [[0, 1, 1, 0], [1, 1, 0, 0]])


# --------------------------------------------------------------------------- reading labelled files


def test_read_labelled_file_label_column_in_every_format(tmp_path):
    task = tasks.custom_task(TOPICS, "classification")
    tsv = write_tsv(tmp_path / "a.tsv", [("x y", "0", "tech"), ("z", "1", "sport")], header=("text", "label", "topic"))
    csv = tmp_path / "a.csv"
    csv.write_text('text,topic\n"x, y",tech\nz,sport\n', encoding="utf-8")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x y", "topic": "tech", "label": 7}\n\n{"text": "z", "topic": "sport"}\n')
    for path in (tsv, csv, jsonl):
        examples = read_labelled_file(path, task, "topic")
        assert [ex.label for ex in examples] == [1, 0], path
    assert read_labelled_file(csv, task, "topic")[0].text == "x, y"


def test_read_labelled_file_errors_name_the_users_file(tmp_path):
    task = tasks.custom_task(TOPICS, "classification")
    path = write_tsv(tmp_path / "a.tsv", [("x", "tech"), ("y", "cooking")], header=("text", "topic"))
    with pytest.raises(SpartanError, match=r"a\.tsv: missing label column 'label' \(--label-column\); found columns: text, topic"):
        read_labelled_file(path, task)
    with pytest.raises(SpartanError) as err:
        read_labelled_file(path, task, "topic")
    assert str(err.value).startswith(f"{path}, line 3: unknown label 'cooking'")
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "x", "topic": "tech"}\n{"text": "y"}\n')
    with pytest.raises(SpartanError, match=r"b\.jsonl, line 2: missing field 'topic'; found fields: text$"):
        read_labelled_file(jsonl, task, "topic")
    with pytest.raises(SpartanError, match="no such file"):
        read_labelled_file(tmp_path / "nope.tsv", task)


def test_read_labelled_file_glue_layout():
    examples = read_labelled_file(QNLI_DEV, tasks.get_task("qnli"))
    assert len(examples) == 300 and examples[0].text_pair and {ex.label for ex in examples} == {0, 1}
    with pytest.raises(SpartanError, match="GLUE layout has a fixed label column"):
        read_labelled_file(QNLI_DEV, tasks.get_task("qnli"), "topic")


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def saved_models(tiny_backbone, tmp_path_factory):
    """Two tiny saved SPARTAN models of the TOPICS task and one of QNLI."""
    root = tmp_path_factory.mktemp("analyze-models")
    task = tasks.custom_task(TOPICS, "classification")
    plain = save_tiny_task(root / "plain", tiny_model(tiny_backbone, tiny_method(), 3, seed=3),
                           tiny_backbone, task, tiny_method())
    balanced = save_tiny_task(root / "balanced", tiny_model(tiny_backbone, tiny_method(0.5), 3, seed=4),
                              tiny_backbone, task, tiny_method(0.5))
    qnli = tasks.get_task("qnli")
    glue = save_tiny_task(root / "qnli", tiny_model(tiny_backbone, tiny_method(), 2, seed=5), tiny_backbone,
                          qnli, tiny_method())
    return {"plain": plain, "balanced": balanced, "qnli": glue}


def cli(*args):
    """The CLI in a fresh interpreter: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "spartan_tf.analyze", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_cli_missing_model_dir(tmp_path):
    data = write_tsv(tmp_path / "d.tsv", [("x", "tech")])
    code, out, err = cli("--model-dir", tmp_path / "no-model", "--data", data)
    assert code == 2 and out == ""
    assert err == f"error: --model-dir {tmp_path / 'no-model'}: no such directory\n"


def test_cli_missing_label_column(saved_models, tmp_path):
    data = write_tsv(tmp_path / "d.tsv", [("x", "tech")], header=("text", "topic"))
    code, out, err = cli("--model-dir", saved_models["plain"], "--data", data)
    assert code == 2 and out == ""
    assert err == f"error: {data}: missing label column 'label' (--label-column); found columns: text, topic\n"
    code, _, err = cli("--model-dir", saved_models["plain"], "--data", data, "--label-column", "category")
    assert code == 2 and err.count("\n") == 1 and "missing label column 'category'" in err
    code, _, err = cli("--model-dir", saved_models["plain"], "--data", tmp_path / "none.tsv")
    assert code == 2 and err == f"error: --data {tmp_path / 'none.tsv'}: no such file\n"
    good = write_tsv(tmp_path / "good.tsv", [("x", "tech")])
    code, _, err = cli("--model-dir", saved_models["plain"], "--data", good, "--compare", tmp_path / "other")
    assert code == 2 and err == f"error: --compare {tmp_path / 'other'}: no such directory\n"


def test_cli_writes_report_and_compares(saved_models, tiny_backbone, tmp_path):
    from spartan_tf.analyze import main

    rows = [(text, label) for text, label in TEXTS] * 3
    data = write_tsv(tmp_path / "topics.tsv", rows, header=("text", "topic"))
    out_dir = tmp_path / "analysis"
    argv = ["--model-dir", str(saved_models["plain"]), "--data", str(data), "--label-column", "topic",
            "--output-dir", str(out_dir), "--untrained-control", "--shuffles", "3",
            "--compare", str(saved_models["balanced"])]
    assert run_cli(main, argv) == 0
    report = json.loads((out_dir / "report.json").read_text())
    assert report["examples"] == 21 and report["label_counts"] == {"sport": 9, "tech": 6, "politics": 6}
    assert len(report["layers"]) == 2 and report["compare"]["model_dir"] == str(saved_models["balanced"].resolve())
    for layer in report["layers"]:
        assert np.asarray(layer["heatmap"]).shape == (3, 6)
        assert sum(layer["topk_rate"]) == pytest.approx(3.0)
        assert 0.0 <= layer["nmi_argmax"] <= 1.0
    saved = np.load(out_dir / "parent_weights.npz")
    assert saved["weights"].shape == (21, 2, 6)
    np.testing.assert_allclose(np.asarray(report["layers"][1]["usage"]), saved["weights"][:, 1].mean(axis=0))
    for name in ("heatmap.png", "heatmap_lift.png", "usage.png", "specialisation.png", "compare.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (out_dir / "compare" / "report.md").is_file() and not (out_dir / "compare" / "compare.png").exists()
    # the untrained control is the same architecture rebuilt with the training seed, before any training
    from spartan_tf.model import build_task_model
    from spartan_tf.specialisation import analyse, read_labelled_file, record

    initial = build_task_model(tiny_backbone, tiny_method(), 3, 0.0, seed=11)
    again = build_task_model(tiny_backbone, tiny_method(), 3, 0.0, seed=11)
    np.testing.assert_array_equal(initial.after_layers[1].parent_keys.numpy(), again.after_layers[1].parent_keys.numpy())
    examples = read_labelled_file(data, tasks.custom_task(TOPICS, "classification"), "topic")
    task = tasks.custom_task(TOPICS, "classification")
    expected = analyse(record(initial, task, examples, tiny_backbone.tokenizer(32)), TOPICS, 3, 3, 0)
    assert report["untrained"]["seed"] == 11
    for got, want in zip(report["untrained"]["layers"], expected):
        assert got["nmi_argmax"] == pytest.approx(want["nmi_argmax"])
        assert got["usage_entropy"] == pytest.approx(want["usage_entropy"], abs=1e-6)
    assert report["untrained"]["layers"][0]["usage_entropy"] != pytest.approx(report["layers"][0]["usage_entropy"])
    text = (out_dir / "report.md").read_text()
    assert "## Against the untrained memories (initial weights, seed 11)" in text
    assert "## Side by side: plain (balance 0.0) vs balanced (balance 0.5)" in text
    assert "x86_64" in text or "aarch64" in text
    accuracy = float(np.mean(saved["logits"].argmax(1) == saved["labels"]))
    assert report["metrics"]["accuracy"] == pytest.approx(accuracy)
    # a second run without --compare removes the stale comparison figure
    assert run_cli(main, argv[:-2]) == 0
    assert not (out_dir / "compare.png").exists()
    assert "Side by side" not in (out_dir / "report.md").read_text()


def test_cli_glue_model_on_glue_layout(saved_models, tmp_path, capsys):
    from spartan_tf.analyze import main

    out_dir = tmp_path / "qnli-analysis"
    argv = ["--model-dir", str(saved_models["qnli"]), "--data", str(QNLI_DEV), "--max-examples", "40",
            "--output-dir", str(out_dir), "--shuffles", "2"]
    assert run_cli(main, argv) == 0
    report = json.loads((out_dir / "report.json").read_text())
    assert report["label_names"] == ["entailment", "not_entailment"] and report["examples"] == 40
    assert "accuracy" in report["metrics"] and capsys.readouterr().out.startswith("qnli: accuracy")


# --------------------------------------------------------------------------- the seeded, deduplicated split


def test_drop_duplicates_and_stratified_split():
    from spartan_tf.split_data import drop_duplicates, split_examples

    examples = [Example(f"text {i}", None, i % 2) for i in range(40)]
    examples += [Example("TEXT  3", None, 1), Example("text 4", None, 1), Example("text 4 ", None, 0)]
    kept, duplicates, conflicts = drop_duplicates(examples)
    assert (duplicates, conflicts) == (1, 1)  # "TEXT  3" repeats "text 3"; "text 4" has labels 0 and 1
    assert len(kept) == 39 and all(ex.text != "text 4" for ex in kept) and kept == sorted(kept, key=examples.index)
    train, test = split_examples(kept, 0.25, seed=7)
    assert len(test) == 10 and sorted(ex.label for ex in test) == [0] * 5 + [1] * 5  # 19 and 20 per class
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(kept)
    assert (train, test) == split_examples(kept, 0.25, seed=7)
    assert test != split_examples(kept, 0.25, seed=8)[1]
    with pytest.raises(SpartanError, match="between 0 and 1"):
        split_examples(kept, 1.0, seed=7)


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_split_data_cli_round_trip(tmp_path, suffix, capsys):
    from spartan_tf.data import read_custom_file
    from spartan_tf.split_data import main, render

    labels = ("ham", "spam")
    examples = [Example(f'mail "{i}", with a comma', f"pair {i}", i % 2) for i in range(30)]
    source = tmp_path / f"all{suffix}"
    source.write_bytes(render(examples + examples[:3], labels, suffix))
    out = tmp_path / "split"
    argv = ["--input", str(source), "--output-dir", str(out), "--test-fraction", "0.2", "--seed", "1"]
    assert run_cli(main, argv) == 0
    train, names = read_custom_file(out / f"train{suffix}")
    test, _ = read_custom_file(out / f"test{suffix}", names)
    assert names == labels and len(train) == 24 and len(test) == 6
    assert sorted(train + test, key=lambda ex: ex.text) == sorted(examples, key=lambda ex: ex.text)
    summary = json.loads((out / "split.json").read_text())
    assert summary["duplicates_dropped"] == 3 and summary["test"]["labels"] == {"ham": 3, "spam": 3}
    assert run_cli(main, argv) == 2
    assert "already holds a split; pass --overwrite" in capsys.readouterr().err


BBC = REPO.parent / "shared" / "data" / "topics" / "bbc_news.tsv"


@pytest.mark.skipif(not BBC.is_file(), reason="BBC News data not present")
def test_bbc_split_drops_its_duplicates(tmp_path):
    from spartan_tf.data import read_custom_file
    from spartan_tf.split_data import drop_duplicates, split_examples

    examples, names = read_custom_file(BBC)
    kept, duplicates, conflicts = drop_duplicates(examples)
    # 100 texts appear twice; one more pair differs only in letter case (identical to an uncased model)
    assert (len(examples), duplicates, conflicts, len(kept)) == (2225, 101, 0, 2124)
    train, test = split_examples(kept, 0.2, seed=42)
    assert (len(train), len(test)) == (1699, 425)


def test_report_renders_a_label_without_inputs(tmp_path):
    from spartan_tf.specialisation import Recording, analyse
    from spartan_tf.specialisation_report import write_report

    weights, labels = synthetic(num_inputs=60, num_labels=2, parents=6)
    weights[:, 5] = 0.0  # parent 5 never chosen: dead, and a lift of log2(0) for every label
    weights /= weights.sum(axis=1, keepdims=True)
    stacked = np.stack([weights, weights], axis=1)  # 2 layers
    recording = Recording(stacked, (stacked > 0).astype(float), labels, np.zeros((60, 3)))
    names = ["a", "b", "never"]
    report = {
        "model_name": "m", "model_dir": "/m", "output_dir": str(tmp_path), "backbone": "tiny", "task": "custom",
        "method": tiny_method().to_dict(), "data": "/d.tsv", "label_column": "label", "examples": 60,
        "label_names": names, "label_counts": {"a": int((labels == 0).sum()), "b": int((labels == 1).sum()), "never": 0},
        "metrics": {"accuracy": 0.5}, "shuffles": 2, "seed": 0, "command": "python -m spartan_tf.analyze ...",
        "machine": "x86_64", "seconds": 1.0, "layers": analyse(recording, names, 3, shuffles=2), "untrained": None,
    }
    assert report["layers"][0]["dead_parents"] == [5]
    written = write_report(tmp_path, report, recording)
    assert all(path.is_file() for path in written)
    text = (tmp_path / "report.md").read_text()
    assert "| never | (no inputs) | (no inputs) |" in text and "Against the untrained" not in text
