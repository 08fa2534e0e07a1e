"""The client's pieces in-process: input parsing (column rule, line numbers) and tokenization parity
with training. No bundle needed."""

import sys

import numpy as np
import pytest

from client_support import REPO, SAMPLES

sys.path.insert(0, str(REPO / "device"))

from spartan_device.engine import Tokenization, pad  # noqa: E402
from spartan_device.errors import DeviceError  # noqa: E402
from spartan_device.inputs import BadLine, Record, read_records  # noqa: E402


def records(text: str | bytes, name="in.tsv", task="qnli", columns=None, fmt="auto"):
    data = text.encode() if isinstance(text, str) else text
    return list(read_records(data.splitlines(keepends=True), name, fmt, task, columns))


@pytest.mark.parametrize("header,row,text,pair", [
    ("index\tquestion\tsentence\tlabel", "7\tQ?\tS.\tentailment", "Q?", "S."),                 # QNLI
    ("index\tsentence1\tsentence2\tlabel", "7\tA.\tB.\tentailment", "A.", "B."),               # RTE, STS-B...
    ("sentence\tlabel", "Nice film .\t1", "Nice film .", None),                                # SST-2
    ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tA.\tB.", "A.", "B."),           # MRPC
    ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "7\t1\t2\tA?\tB?\t0", "A?", "B?"),  # QQP
    ("text\ttext_pair\tlabel", "A\tB\tx", "A", "B"),                                           # custom
    ("index\tsentence", "7\tOnly one.", "Only one.", None),                                    # CoLA test
])
def test_tsv_column_rule(header, row, text, pair):
    (record,) = records(f"{header}\n{row}\n")
    assert (record.text, record.text_pair) == (text, pair)
    assert record.id == ("7" if "7\t" in row else 2)
    assert record.line == 2 and record.task == "qnli"


def test_columns_override_and_task_column():
    rows = records("task\tq\ts\nsst2\tNice .\tignored\n\tWhy?\tBecause.\n", columns=("q", "s"))
    assert [(r.task, r.text, r.text_pair) for r in rows] == [("sst2", "Nice .", "ignored"),
                                                             ("qnli", "Why?", "Because.")]
    with pytest.raises(DeviceError, match="--columns: no column 'x' in the header"):
        records("q\ts\na\tb\n", columns=("x",))


def test_cola_files_without_header():
    rows = records((SAMPLES / "CoLA" / "dev.tsv").read_bytes(), name="dev.tsv", task="cola")
    first = (SAMPLES / "CoLA" / "dev.tsv").read_text().splitlines()[0].split("\t")
    assert all(isinstance(r, Record) for r in rows) and len(rows) == 48
    assert (rows[0].line, rows[0].text, rows[0].text_pair) == (1, first[3], None)


def test_format_detection_and_blank_lines():
    rows = records('\n{"text": "a", "id": 5}\n\n{"text": "b"}\n', name="<stdin>")
    assert [(r.line, r.id, r.text) for r in rows] == [(2, 5, "a"), (4, 4, "b")]
    rows = records("sentence\n\nfine\n", name="<stdin>")
    assert [(r.line, r.text) for r in rows] == [(3, "fine")]
    assert records("", name="<stdin>") == []


def test_bad_lines_keep_their_numbers():
    rows = records(b'\xef\xbb\xbf{"text": "bom ok"}\n{"text": 3}\n{"text": "a", "task": 7}\n{"text": "x", "text_pair": 2}\n',
                   name="x.jsonl", task=None)
    assert isinstance(rows[0], BadLine) and rows[0].message == "no task: pass --task, or give each line a task"
    assert [r.line for r in rows] == [1, 2, 3, 4]
    assert rows[1].message == "text must be a string, got 3"
    assert rows[2].message == 'field "task" must be a string, got 7'
    assert rows[3].message == "text_pair must be a string, got 2"


def test_tokenization_matches_training(tiny_backbone, tiny_model_dir):
    """The bundle's tokenizer.json (padding to 128 built in, as shipped) used as in training."""
    from spartan_tf import data

    long_text = " ".join(["tokenization"] * 90)
    items = [("Who wrote Hamlet?", "Shakespeare."), ("Why?", long_text), (long_text, "short"),
             (long_text, long_text + " more"), ("single sentence only", None), (long_text, None)]
    client = Tokenization(tiny_model_dir / "tokenizer.json")
    for max_length in (16, 128):
        expected = data.encode(tiny_backbone.tokenizer(max_length), [data.Example(t, p, 0) for t, p in items])
        encodings = client.encode(items, max_length)
        assert [e.ids for e in encodings] == expected["input_ids"]
        assert [e.type_ids for e in encodings] == expected["token_type_ids"]
        assert [e.attention_mask for e in encodings] == expected["attention_mask"]
        assert max(len(e.ids) for e in encodings) == max_length  # truncated, and never padded
    batch = pad(client.encode(items[:2], 128))
    lengths = [len(e.ids) for e in client.encode(items[:2], 128)]
    assert batch.input_ids.shape == (2, max(lengths)) and batch.input_ids.dtype == np.int32
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert batch.input_ids[0, lengths[0]:].tolist() == [0] * (max(lengths) - lengths[0])


def test_scores_classification_and_regression():
    from spartan_device.bundle import FileEntry, TaskInfo
    from spartan_device.engine import scores

    def info(labels, problem_type):
        return TaskInfo("t", FileEntry("t.npz", "0" * 64), "fp", tuple(labels), problem_type, 128, "int8", (), {},
                        graph="g")

    (row,) = scores(info(["a", "b", "c"], "classification"), np.array([[1.0, 3.0, 2.0]], dtype=np.float32))
    probs = np.exp([1.0, 3.0, 2.0]) / np.exp([1.0, 3.0, 2.0]).sum()
    assert row["label"] == "b" and row["logits"] == [1.0, 3.0, 2.0]
    np.testing.assert_allclose([row["scores"][k] for k in "abc"], probs, atol=1e-6)
    (row,) = scores(info([], "regression"), np.array([[3.25]], dtype=np.float32))
    assert row == {"label": 3.25, "scores": {"score": 3.25}, "logits": [3.25]}


def test_pad_to_a_fixed_width(tiny_model_dir):
    """pad(..., width): [B, width] arrays, each row's real tokens first, then zeros with mask 0."""
    encodings = Tokenization(tiny_model_dir / "tokenizer.json").encode([("Who wrote Hamlet?", None), ("Why?", None)], 16)
    lengths = [len(e.ids) for e in encodings]
    batch = pad(encodings, 16)
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_type_ids.shape == (2, 16)
    assert batch.attention_mask.sum(1).tolist() == lengths and batch.num_tokens == sum(lengths)
    for row, encoding in enumerate(encodings):
        assert batch.input_ids[row].tolist() == encoding.ids + [0] * (16 - lengths[row])


def test_peak_memory_is_the_programs_own_not_its_parents():
    """The --benchmark peak memory of a client started by a large process is the client's: getrusage's
    ru_maxrss would report the parent's 300 MB (it survives fork and exec)."""
    import subprocess

    from spartan_device.bench import peak_rss_mb

    ballast = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    parent = peak_rss_mb()
    child = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from spartan_device.bench import peak_rss_mb; print(peak_rss_mb())", str(REPO / "device")],
                           capture_output=True, text=True, check=True)
    assert parent > 300 and ballast.sum() > 0
    assert 1 < float(child.stdout) < 100


def mapped_rss_kb(path) -> int:
    """Resident KB of this process's mappings of ``path`` (/proc/self/smaps)."""
    import os

    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            fields = line.split(None, 5)
            if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                inside = len(fields) == 6 and fields[5].rstrip("\n") == target
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise: Linux only")
def test_release_file_pages_drops_read_only_mappings_and_keeps_their_data(tmp_path):
    import mmap

    from spartan_device.runtime import release_file_pages

    data = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()  # 4 MB
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    assert bytes(mapped[:]) == data  # every page read: resident
    assert mapped_rss_kb(path) >= 4000
    assert release_file_pages(path) == len(data)
    assert mapped_rss_kb(path) < 100
    assert bytes(mapped[:]) == data  # the pages fault back in from the file, unchanged
    mapped.close()
    # a writable (copy-on-write) mapping is never touched: its pages may hold the only copy of a change
    with open(path, "r+b") as handle:
        private = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    private[:4] = b"SPRT"
    _ = bytes(private[:])
    before = mapped_rss_kb(path)
    assert release_file_pages(path) == 0
    assert mapped_rss_kb(path) == before and private[:4] == b"SPRT"
    private.close()
    assert release_file_pages(tmp_path / "not-mapped.tflite") == 0


def test_task_tensors_dequantize_each_stored_kind(tmp_path):
    """A task file as docs/bundle-format.md stores it: an int8 matrix with a scale per row becomes
    int8 * scale, float16 vectors become their float32 values, float32 stays; into buffers reused
    across tasks."""
    from spartan_device.shared import TaskTensors

    kernel = np.int8([[127, -3], [0, 64]])
    scale = np.float32([0.5, 0.01])
    multiplier = np.float16([1.0009765625, 0.5])  # exactly representable: float16 -> float32 is exact
    bias = np.float32([0.25, -1e-7])
    np.savez(tmp_path / "task.npz", kernel=kernel, **{"kernel.scale": scale}, multiplier=multiplier, bias=bias)
    tensors = TaskTensors(tmp_path / "task.npz", "task qnli")
    assert tensors.names == ["bias", "kernel", "multiplier"]
    buffers = {"stale": np.zeros(3, np.float32)}
    out = tensors.float32_into(buffers)
    assert out is buffers and sorted(out) == tensors.names and {v.dtype for v in out.values()} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(out["kernel"], np.float32([[63.5, -1.5], [0.0, 0.64]]))
    np.testing.assert_array_equal(out["multiplier"], np.float32([1.0009765625, 0.5]))
    np.testing.assert_array_equal(out["bias"], bias)
    kernel_buffer = out["kernel"]
    assert tensors.float32_into(out)["kernel"] is kernel_buffer  # a second switch allocates nothing
