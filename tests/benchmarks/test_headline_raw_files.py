"""The headline figures in BENCHMARKS.md and the README agree with the raw files kept under
``benchmarks/results/`` (issue 16, item 6), and the ``ptb-hour`` figures were measured with the
preset as it is committed now."""

import json
import re
from pathlib import Path

import pytest

from rnnlab.config.resolve import resolve_config
from rnnlab.config.run import RunConfig

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def section(heading: str) -> str:
    """The text of BENCHMARKS.md under ``heading`` up to the next heading of any level."""
    start = BENCHMARKS_MD.index(heading)
    rest = BENCHMARKS_MD[start + len(heading) :]
    match = re.search(r"^#{2,3} ", rest, flags=re.MULTILINE)
    return rest[: match.start()] if match else rest


def test_ptb_small_table_is_its_metrics_file():
    text = section("## PTB, `--preset ptb-small`")
    results = read_json(RESULTS / "ptb_small" / "results.json")
    assert f"**Test perplexity {results['test']['perplexity']:.2f}**" in text
    assert f"valid {results['valid']['perplexity']:.2f}" in text
    rows = [json.loads(line) for line in (RESULTS / "ptb_small" / "metrics.jsonl").open()]
    valid = {r["epoch"]: r for r in rows if r["kind"] == "valid"}
    table = {
        int(cells[0]): cells
        for line in text.splitlines()
        if re.match(r"^\| \d+ \|", line)
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert sorted(table) == sorted(valid) == list(range(1, 14))
    for epoch, cells in table.items():
        assert cells[2] == f"{valid[epoch]['valid_ppl']:.2f}", epoch
        assert cells[4] == f"{valid[epoch]['wall_time'] / 60:.1f}", epoch
        applied = [r["lr"] for r in rows if r["kind"] == "train" and r["epoch"] == epoch]
        assert float(cells[1]) == pytest.approx(applied[0], rel=1e-3), epoch


# (run directory, adaptation report, the heading of its BENCHMARKS section)
PTB_HOUR_LOCKED = [
    (
        "ptb_hour_locked_hidden_0.3",
        "ptb-hour-locked343-stat0.json",
        "### Same day, 2026-12-01",
    ),
    (
        "ptb_hour_locked343_seed2",
        "ptb-hour-locked343-seed2-stat0.json",
        "### Second seed, 2026-12-01",
    ),
    ("ptb_hour_seed3", "ptb-hour-seed3-stat0.json", "### Third seed, 2026-12-02"),
]


@pytest.mark.parametrize("run,report,heading", PTB_HOUR_LOCKED)
def test_ptb_hour_figures_are_their_raw_files(run, report, heading):
    text = section(heading)
    results = read_json(RESULTS / run / "results.json")
    adapted = read_json(RESULTS / "adaptation" / report)["test"]
    static = f"{results['test']['perplexity']:.2f}"
    both = f"{adapted['cache+dynamic']['perplexity']:.2f}"
    assert f"{adapted['static']['perplexity']:.2f}" == static
    assert static in text and both in text
    # the README's preset row quotes every seed, static and adapted
    row = next(line for line in README.splitlines() if line.startswith("| `ptb-hour` |"))
    assert static in row and both in row


def assert_ran_the_preset(run: str, preset: str, corpus: str, **model_changes) -> None:
    """The run's model (but for ``model_changes``), optimiser, corpus and schedule are the
    preset's as committed today."""
    ran = RunConfig.from_dict(read_json(RESULTS / run / "run.json")).to_dict()
    now = resolve_config(preset).to_dict()
    ran["model"].pop("vocab_size"), now["model"].pop("vocab_size")
    assert ran["model"] == {**now["model"], **model_changes}, run
    assert ran["optim"] == now["optim"], run
    assert ran["data"]["corpus"] == now["data"]["corpus"] == corpus, run
    for key in ("bptt", "batch_size", "eval_batch_size", "max_minutes", "epochs"):
        assert ran["train"][key] == now["train"][key], (run, key)


@pytest.mark.parametrize("run", [run for run, _, _ in PTB_HOUR_LOCKED])
def test_ptb_hour_seeds_ran_the_committed_preset(run):
    """Seeds 1 and 2 ran the locked rates by flags, seed 3 by the preset: each run's model
    and schedule are the preset's today, so the figures describe ``--preset ptb-hour``."""
    assert_ran_the_preset(run, "ptb-hour", "ptb")


def test_wt2_hour_same_day_pair_is_its_raw_files():
    """The hour-long pair that kept ``wt2-hour`` on per-token dropout: the preset's run as
    committed, the locked run the same but for its dropout, and the figures as recorded."""
    text = section("### `wt2-hour` with locked dropout, an hour-long same-day pair")
    preset = read_json(RESULTS / "wt2_hour_2026-12-02" / "results.json")
    locked = read_json(RESULTS / "wt2_hour_locked" / "results.json")
    adapted = read_json(RESULTS / "adaptation" / "wt2-hour-2026-12-02.json")["test"]
    for results in (preset, locked):
        assert f"{results['test']['perplexity']:.2f}" in text
        assert f"{results['valid']['perplexity']:.2f}" in text
    assert f"{adapted['static']['perplexity']:.2f}" == f"{preset['test']['perplexity']:.2f}"
    both = adapted["cache+dynamic"]["perplexity"]
    assert f"{both:.2f}" in text
    row = next(line for line in README.splitlines() if line.startswith("| `wt2-hour` |"))
    assert f"{preset['test']['perplexity']:.1f}" in row and f"{both:.1f}" in row

    assert_ran_the_preset("wt2_hour_2026-12-02", "wt2-hour", "wikitext2")
    locked = {"dropout_input": 0.3, "dropout_hidden": 0.3, "dropout_output": 0.3}
    assert_ran_the_preset("wt2_hour_locked", "wt2-hour", "wikitext2", dropout=0.0, **locked)
