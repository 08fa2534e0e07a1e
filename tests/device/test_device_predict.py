"""The device client end to end (subprocess) on bundles converted from tiny trained tasks:
its numbers against the Keras model, its input and output formats, several tasks in one process."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from client_support import CLIENT, ITEMS, REPO, SAMPLES, TASK_LENGTHS, json_lines, mixed_input, run_client


@pytest.mark.parametrize("form", ["shared", "whole"])
def test_mixed_tasks_match_keras_float(float_bundle, whole_bundle, reference, tmp_path, form):
    """float32 bundle: every logit within 1e-4 of Keras, batched and padded as the client likes; both
    tasks on one shared graph (switching tasks between batches), or each fused into its own graph."""
    order = mixed_input(tmp_path / "mixed.jsonl")
    bundle = float_bundle if form == "shared" else whole_bundle
    done = run_client("--bundle", bundle, "--input", tmp_path / "mixed.jsonl", "--batch-size", 3, check_rc=0)
    rows = json_lines(done.stdout)
    assert [row["id"] for row in rows] == [f"i{i}" for i in range(len(order))]
    for row, (task, index) in zip(rows, order):
        assert row["task"] == task
        np.testing.assert_allclose(row["logits"], reference[task][index], atol=1e-4, err_msg=f"{task} #{index}")
        labels = ["entailment", "not_entailment"] if task == "qnli" else ["negative", "positive"]
        assert row["label"] == labels[int(np.argmax(reference[task][index]))]
        probs = np.exp(reference[task][index]) / np.exp(reference[task][index]).sum()
        np.testing.assert_allclose([row["scores"][name] for name in labels], probs, atol=1e-4)


def test_int8_close_to_keras(int8_bundle, reference, tmp_path):
    order = mixed_input(tmp_path / "mixed.jsonl")
    shared = json_lines(run_client("--bundle", int8_bundle, "--input", tmp_path / "mixed.jsonl", check_rc=0).stdout)
    assert len(shared) == len(order)
    for a, (task, index) in zip(shared, order):
        expected = reference[task][index]
        scale = max(float(np.abs(expected).max()), 0.1)
        assert np.abs(np.array(a["logits"]) - expected).max() <= 0.15 * scale + 0.02, (task, index, a, expected)


def test_one_text_prints_label_and_scores(float_bundle, reference):
    text, pair = ITEMS["qnli"][0]
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--text", text, "--text-pair", pair, check_rc=0)
    lines = done.stdout.splitlines()
    expected = ["entailment", "not_entailment"][int(np.argmax(reference["qnli"][0]))]
    assert lines[0] == f"qnli: {expected}"
    scores = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
    assert set(scores) == {"entailment", "not_entailment"}
    assert abs(sum(scores.values()) - 1) < 1e-3

    as_json = json.loads(run_client("--bundle", float_bundle, "--task", "qnli", "--text", text, "--text-pair", pair,
                                    "--json", check_rc=0).stdout)
    np.testing.assert_allclose(as_json["logits"], reference["qnli"][0], atol=1e-4)
    assert as_json["label"] == expected


def test_glue_tsv_layouts(float_bundle, tmp_path):
    """QNLI dev (question/sentence, index ids) and SST-2 dev (sentence) as GLUE ships them."""
    out = tmp_path / "qnli.jsonl"
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--input", SAMPLES / "QNLI" / "dev.tsv",
                      "--output", out, check_rc=0)
    assert done.stdout == ""
    rows = json_lines(out.read_text())
    ids = [line.split("\t")[0] for line in (SAMPLES / "QNLI" / "dev.tsv").read_text().splitlines()[1:]]
    assert [row["id"] for row in rows] == ids
    assert {row["task"] for row in rows} == {"qnli"}

    done = run_client("--bundle", float_bundle, "--task", "sst2", "--input", SAMPLES / "SST-2" / "dev.tsv",
                      "--progress", check_rc=0)
    assert "48/48 lines" in done.stderr and "texts/s" in done.stderr  # the progress bar, forced on
    rows = json_lines(done.stdout)
    assert len(rows) == len((SAMPLES / "SST-2" / "dev.tsv").read_text().splitlines()) - 1
    assert rows[0]["id"] == 2  # no id column: the line number (line 1 is the header)
    assert {row["label"] for row in rows} <= {"negative", "positive"}


def test_tsv_matches_jsonl(float_bundle, tmp_path):
    rows = [("Who wrote Hamlet?", "Hamlet was written by Shakespeare."), ("Why?", "Because.")]
    (tmp_path / "in.tsv").write_text("question\tsentence\n" + "".join(f"{q}\t{s}\n" for q, s in rows))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": q, "text_pair": s}) + "\n" for q, s in rows))
    tsv = json_lines(run_client("--bundle", float_bundle, "--task", "qnli", "--input", tmp_path / "in.tsv",
                                check_rc=0).stdout)
    jsonl = json_lines(run_client("--bundle", float_bundle, "--task", "qnli", "--input", tmp_path / "in.jsonl",
                                  check_rc=0).stdout)
    assert [r["logits"] for r in tsv] == [r["logits"] for r in jsonl]


def test_shared_graph_loads_once_tasks_lazily(float_bundle, tmp_path):
    """Texts alternating between two tasks, one per batch: the shared graph is loaded once, each task
    file once, and switching back and forth loads nothing."""
    mixed_input(tmp_path / "mixed.jsonl")
    done = run_client("--bundle", float_bundle, "--input", tmp_path / "mixed.jsonl", "--batch-size", 1, "--verbose",
                      check_rc=0)
    loads = [line for line in done.stderr.splitlines() if line.startswith("loaded ")]
    assert [line.split()[1:4] for line in loads] == [["shared", "graph", "spartan-16x3-mean"], ["task", "qnli", "qnli.npz"],
                                                     ["task", "sst2", "sst2.npz"]]
    only_sst2 = run_client("--bundle", float_bundle, "--task", "sst2", "--text", "fine", "--verbose", check_rc=0)
    assert "qnli" not in only_sst2.stderr


def test_output_file_is_atomic_and_not_overwritten(float_bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--input", SAMPLES / "SST-2" / "dev.tsv",
                      "--output", out, check_rc=2)
    assert f"error: --output {out}: already exists; pass --force" in done.stderr
    assert out.read_text() == "keep me\n"
    run_client("--bundle", float_bundle, "--task", "sst2", "--input", SAMPLES / "SST-2" / "dev.tsv", "--output", out,
               "--force", check_rc=0)
    assert len(json_lines(out.read_text())) == 48
    # a fatal error (here: the TSV has no text column) leaves no file and no temporary behind
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--input", tmp_path / "bad.tsv",
                      "--output", tmp_path / "new.jsonl", check_rc=2)
    assert "no text column" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "out.jsonl"]


def test_stdin_streams_each_line_before_the_next_arrives(float_bundle):
    process = subprocess.Popen([sys.executable, str(CLIENT), "--bundle", str(float_bundle), "--task", "sst2",
                                "--input", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO)
    watchdog = threading.Timer(180, process.kill)  # a client that waits for EOF fails instead of hanging
    watchdog.start()
    try:
        process.stdin.write(json.dumps({"text": "a fine film", "id": "first"}) + "\n")
        process.stdin.flush()
        start = time.monotonic()
        first = json.loads(process.stdout.readline())  # stdin is still open
        assert first["id"] == "first" and time.monotonic() - start < 60
        process.stdin.write("a dull film\n")  # the first line made this JSON lines: a bad line, reported
        process.stdin.write(json.dumps({"text": "a dull film", "id": "second"}) + "\n")
        process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(timeout=60) == 1
    finally:
        watchdog.cancel()
        process.kill()
    assert [row["id"] for row in json_lines(rest)] == ["second"]
    assert "<stdin>, line 2: not valid JSON" in process.stderr.read()


def test_list_shows_tasks_sizes_labels(float_bundle):
    done = run_client("--bundle", float_bundle, "--list", check_rc=0)
    assert "graph spartan-16x3-mean  backbone.spartan-16x3-mean.tflite" in done.stdout
    for line, labels in (("task qnli", "entailment, not_entailment"), ("task sst2", "negative, positive")):
        row = next(x for x in done.stdout.splitlines() if x.startswith(line))
        assert labels in row and row.endswith("[ok]")
    data = json.loads(run_client("--bundle", float_bundle, "--list", "--json", check_rc=0).stdout)
    assert {t["task"]: t["max_length"] for t in data["tasks"]} == TASK_LENGTHS
    for task in data["tasks"]:
        assert task["bytes"] == (float_bundle / task["file"]).stat().st_size


@pytest.mark.parametrize("form", ["shared", "whole"])
def test_benchmark_json(float_bundle, whole_bundle, form):
    bundle = float_bundle if form == "shared" else whole_bundle
    done = run_client("--bundle", bundle, "--task", "qnli", "--benchmark", "--num-texts", 20, "--threads", 1,
                      "--batch-size", 2, "--json", check_rc=0)
    figures = json.loads(done.stdout)
    assert figures["texts"] == 20 and figures["deployment"] == form and figures["threads"] == 1
    assert list(figures["task_load_ms"]) == ["qnli"] and figures["rss_after_load_mb"]["qnli"] > 10
    lat = figures["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert figures["texts_per_s"] > 0 and figures["peak_rss_mb"] > 10
    assert 0 < figures["cpu_ms_per_text"] < 2 * 1000 * figures["total_s"] / figures["texts"] * figures["threads"]
    assert figures["runtime"].startswith("ai_edge_litert")
    text = run_client("--bundle", float_bundle, "--task", "qnli", "--benchmark", "--num-texts", 4, check_rc=0).stdout
    assert "p50" in text and "texts/s" in text and "peak memory" in text


def test_benchmark_at_a_fixed_sequence_length(float_bundle):
    """--seq-length N: every input is cut and padded to N tokens, so the cost is that of N tokens; the
    real tokens counted stay below N (SST-2 sentences are short), and above a task's max_length it stops."""
    figures = json.loads(run_client("--bundle", float_bundle, "--task", "sst2", "--benchmark", "--input",
                                    SAMPLES / "SST-2" / "dev.tsv", "--seq-length", 24, "--json", check_rc=0).stdout)
    assert figures["seq_length"] == 24 and 2 < figures["mean_tokens"] <= 24
    text = run_client("--bundle", float_bundle, "--task", "sst2", "--benchmark", "--seq-length", 8,
                      "--num-texts", 4, check_rc=0).stdout
    assert "padded to 8" in text
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--benchmark", "--seq-length", 33, check_rc=2)
    assert done.stderr.strip() == "error: --seq-length 33: task sst2 takes at most 32 tokens (its max_length)"
    done = run_client("--bundle", float_bundle, "--task", "sst2", "--text", "hi", "--seq-length", 8, check_rc=2)
    assert "--seq-length 8: goes with --benchmark" in done.stderr


def test_benchmark_from_input_file(float_bundle):
    figures = json.loads(run_client("--bundle", float_bundle, "--task", "sst2", "--benchmark", "--input",
                                    SAMPLES / "SST-2" / "dev.tsv", "--json", check_rc=0).stdout)
    assert figures["texts"] == 48 and figures["tasks"] == ["sst2"]


def test_tensorflow_runtime_gives_the_same_numbers(float_bundle, reference):
    text, pair = ITEMS["qnli"][1]
    done = run_client("--bundle", float_bundle, "--task", "qnli", "--text", text, "--text-pair", pair, "--json",
                      "--runtime", "tensorflow", "--verbose", check_rc=0)
    assert "runtime tensorflow" in done.stderr
    np.testing.assert_allclose(json.loads(done.stdout)["logits"], reference["qnli"][1], atol=1e-4)


def test_client_imports_neither_tensorflow_nor_spartan_tf(float_bundle):
    probe = (
        "import runpy, sys\n"
        "bundle, client = sys.argv[1:3]\n"
        "sys.argv = [client, '--bundle', bundle, '--task', 'sst2', '--text', 'ok']\n"
        "try:\n    runpy.run_path(client, run_name='__main__')\nexcept SystemExit as done:\n    print('EXIT', done.code)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'spartan_tf', 'transformers', 'tf_keras')]\n"
        "print('IMPORTED', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(float_bundle), str(CLIENT)], capture_output=True,
                          text=True, cwd=REPO)
    assert "EXIT 0" in done.stdout and "IMPORTED []" in done.stdout, done.stdout + done.stderr
