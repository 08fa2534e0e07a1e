"""docs/results.md's "Where SPARTAN stands": its paired figures are what compare_ablations computes
from the stored runs, so the summary cannot drift from the JSON (a new seed must update both)."""

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
    ("10,293 rows x 3 epochs, QNLI", "defaults"): (
        "qnli_full_budget.json:adapters", "qnli_full_budget.json:spartan", "qnli"),
    ("the same, each at its best", "--backbone-dropout --tune-layer-norms"): (
        "qnli_full_budget.json:adapters+backbone-dropout+tuned-norms",
        "qnli_full_budget.json:spartan+backbone-dropout+tuned-norms", "qnli"),
}


def quality_table() -> list:
    """The rows of the section's quality table, each a {column: cell} dict."""
    text = (REPO / "docs" / "results.md").read_text()
    section = text[text.index("## Where SPARTAN stands"):]
    section = section[section.index("**Quality (issue 15).**"):]
    lines = [line for line in section.split("\n\n| ", 1)[1].split("\n\n", 1)[0].splitlines()]
    lines[0] = "| " + lines[0]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[2:]
    return [dict(zip(header, row)) for row in rows]


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
