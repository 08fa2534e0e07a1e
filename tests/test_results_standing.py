"""docs/results.md's "Where SPARTAN stands": its paired figures are what compare_ablations computes
from the stored runs, and its device and speed figures what the benchmarks' JSON holds, so the
summary cannot drift from the JSON (a new seed must update both)."""

import json
import re

import pytest

from benchmarks import compare_ablations
from repo_paths import REPO

RESULTS = REPO / "docs" / "results"

# (the row's budget cell, a phrase of its flags cell) -> (base FILE:VARIANT, candidate FILE:VARIANT, task or "mean")
ROWS = {
    ("200 x 10 epochs, SST-2", "few-shot"): (
        "ablation_fewshot_layers_key_init.json:adapters",
        "ablation_fewshot_layers_key_init.json:recipe+from-layer-2+key-init-data", "sst2"),
    ("200 x 10 epochs, QNLI", "few-shot"): (
        "ablation_fewshot_layers_key_init.json:adapters",
        "ablation_fewshot_layers_key_init.json:recipe+from-layer-2+key-init-data", "qnli"),
    ("200 x 10 epochs, STS-B", "--memory-dropout 0.1"): (
        "ablation_fewshot_stsb.json:adapters", "ablation_fewshot_stsb.json:recipe+two-sites+memory-dropout-0.1", "stsb"),
    ("1,000 x 3 epochs, five-task mean", "the pair with its dropout"): (
        "ablation_five_seeds.json:adapters", "ablation_five_seeds.json:recipe+two-sites+memory-dropout-0.1", "mean"),
    ("the same, STS-B alone", "the same"): (
        "ablation_five_seeds.json:adapters", "ablation_five_seeds.json:recipe+two-sites+memory-dropout-0.1", "stsb"),
    ("1,000 x 3 epochs, five-task mean", "--tune-layer-norms"): (
        "ablation_five_seeds.json:adapters",
        "ablation_tuned_layer_norms.json:recipe+two-sites+memory-dropout-0.1+tuned-norms", "mean"),
    ("10,293 rows x 1 epoch, QNLI", "defaults"): (
        "qnli_one_epoch.json:adapters", "qnli_one_epoch.json:default", "qnli"),
    ("10,293 rows x 3 epochs, QNLI", "defaults"): (
        "qnli_full_budget.json:adapters", "qnli_full_budget.json:spartan", "qnli"),
    ("the same, each at its best", "--backbone-dropout --tune-layer-norms"): (
        "qnli_full_budget.json:adapters+backbone-dropout+tuned-norms",
        "qnli_full_budget.json:spartan+backbone-dropout+tuned-norms", "qnli"),
}


def table_after(marker: str) -> list:
    """The rows of the first Markdown table after ``marker`` in "Where SPARTAN stands", each a
    {column: cell} dict."""
    text = (REPO / "docs" / "results.md").read_text()
    section = text[text.index("## Where SPARTAN stands"):]
    after = section[section.index(marker):]
    lines = ("| " + after.split("\n\n| ", 1)[1]).split("\n\n", 1)[0].splitlines()
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def quality_table() -> list:
    return table_after("**Quality (issue 15).**")


def results_json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def matches(cell: str, value: float) -> bool:
    """``cell`` is ``value`` rounded to the cell's own decimals (bold and signs allowed)."""
    number = cell.strip("*")
    decimals = len(number.split(".")[1]) if "." in number else 0
    return abs(float(number) - value) <= 0.5 * 10 ** -decimals + 1e-9


def test_every_paired_row_is_what_compare_ablations_computes_from_the_stored_runs():
    table = quality_table()
    checked = 0
    for (budget, flags_phrase), (base, candidate, task) in ROWS.items():
        found = [row for row in table if row["budget"] == budget and flags_phrase in row["SPARTAN flags"]]
        assert len(found) == 1, f"{budget!r} / {flags_phrase!r}: {len(found)} rows in the table"
        row = found[0]
        result = compare_ablations.compare(compare_ablations.load_side(f"{RESULTS}/{base}"),
                                           compare_ablations.load_side(f"{RESULTS}/{candidate}"))
        paired = result["mean_over_tasks"] if task == "mean" else result["tasks"][task]
        seeds = paired["seeds"]
        assert row["seeds"] == f"{seeds[0]}-{seeds[-1]}" and seeds == list(range(seeds[0], seeds[-1] + 1)), budget
        assert matches(row["SPARTAN"], paired["candidate_mean"]), (budget, row["SPARTAN"], paired["candidate_mean"])
        assert matches(row["adapters"], paired["base_mean"]), (budget, row["adapters"], paired["base_mean"])
        difference, low, high = re.fullmatch(r"\**([-+]?[\d.]+) \[([-+]?[\d.]+), ([-+]?[\d.]+)\]\**",
                                             row["difference [95%]"]).groups()
        for cell, value in zip((difference, low, high), (paired["difference"], *paired["ci95"])):
            assert matches(cell, 100 * value), (budget, row["difference [95%]"], 100 * value)
        assert row["ahead"] == f"{paired['candidate_ahead']} of {len(seeds)}", budget
        # bold marks exactly the intervals wholly above zero
        assert row["difference [95%]"].startswith("**") == (paired["ci95"][0] > 0), budget
        checked += 1
    assert checked == len(ROWS)


@pytest.mark.parametrize("cell, value, expected", [
    ("-0.44", -0.4398, True), ("-0.44", -0.4349, False), ("**+2.7**", 2.66, True), ("0.8157", 0.81576, False)])
def test_a_cell_matches_only_its_own_rounding(cell, value, expected):
    assert matches(cell, value) is expected


def ratio_range(document: dict, row: str, against: str) -> tuple:
    """(lowest, highest) over the benchmark's cells of ``row``'s CPU time per text over ``against``'s."""
    ratios = [cell[row]["cpu_ms_per_text"] / cell[against]["cpu_ms_per_text"] for cell in document["cells"].values()]
    return min(ratios), max(ratios)


def test_every_device_figure_is_what_the_benchmark_json_holds():
    table = {row["what"]: row for row in table_after("**On the device (issue 14).**")}
    avx2, avx2_second, family25, family25_second, fast = (
        results_json(name) for name in ("device_avx2.json", "device_avx2_sorted.json", "device_family25.json",
                                        "device_family25_sorted.json", "device_two_sites.json"))
    columns = {"AVX2-only VM, family 23 (2026-12-06, quiet)": avx2,
               "AVX2 VM, family 25 (2026-12-07, quiet)": family25,
               "fast VM, AVX-512 VNNI (2026-12-05, quiet)": fast}
    for what, against in [("CPU per text, shared SPARTAN / adapters in one graph", "adapters whole"),
                          ("the same / shared adapters", "adapters shared"),
                          ("shared SPARTAN / its fused graph", "SPARTAN fused")]:
        for column, document in columns.items():
            low, high = re.match(r"([\d.]+)-([\d.]+)x", table[what][column]).groups()
            computed = ratio_range(document, "SPARTAN shared", against)
            assert matches(low, computed[0]) and matches(high, computed[1]), (what, column, computed)

    def speedup(document):
        cell = document["cells"]["1 thread, length real"]
        return cell["SPARTAN shared"]["texts_per_s"] / cell["fixed-128 one graph"]["texts_per_s"]

    fixed = table["texts/s against a fixed-128 graph, real lengths, 1 thread"]
    for column, document, second_run in [("AVX2-only VM, family 23 (2026-12-06, quiet)", avx2, avx2_second),
                                         ("AVX2 VM, family 25 (2026-12-07, quiet)", family25, family25_second)]:
        first, second = re.match(r"([\d.]+)x and ([\d.]+)x", fixed[column]).groups()
        assert matches(first, speedup(document)) and matches(second, speedup(second_run)), column
    assert matches(fixed["fast VM, AVX-512 VNNI (2026-12-05, quiet)"].rstrip("x"), speedup(fast))

    memory = table["peak memory, one task; a second task"]
    for column, document in columns.items():
        peak, load = re.match(r"([\d.]+) MB; (?:loaded in )?([\d.]+) ms", memory[column]).groups()
        assert matches(peak, document["memory"]["SPARTAN shared"]["peak_rss_mb"]), column
        assert matches(load, document["memory"]["SPARTAN shared, 2 tasks switching"]["task_load_ms"]["sst2"]), column


def test_the_few_shot_speed_row_is_the_runs_training_time_against_adapters():
    """Training seconds (k-means and the frozen layers' pass included) of adapters over SPARTAN's, per run."""
    row = next(row for row in quality_table() if row["budget"] == "200 x 10 epochs, training speed")
    runs = results_json("ablation_fewshot_layers_key_init.json")["runs"]
    ratios = {key: runs[f"adapters/{key.split('/', 1)[1]}"]["train_seconds"] / run["train_seconds"]
              for key, run in runs.items() if key.startswith("recipe+from-layer-2+key-init-data/")}
    low, high = re.match(r"([\d.]+)-([\d.]+)x adapters' examples/s", row["SPARTAN"]).groups()
    assert matches(low, min(ratios.values())) and matches(high, max(ratios.values()))
    fast_enough = sum(ratio >= 1.34 for ratio in ratios.values())
    assert row["ahead"] == f"{fast_enough} of {len(ratios)} runs >= 1.34x"
    on_the_bar_seeds = [ratio for key, ratio in ratios.items() if int(key.rsplit("/", 1)[1]) in (42, 43, 44)]
    low, high = re.search(r"met on 42-44 \(([\d.]+)-([\d.]+)x", row["the bar"]).groups()
    assert matches(low, min(on_the_bar_seeds)) and matches(high, max(on_the_bar_seeds))
