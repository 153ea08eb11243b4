"""The comparison grid: parameter matching, resuming, the table, the summary and the plots."""

import csv
import json
import math
import statistics
from dataclasses import replace

import pytest
import torch

from rnnlab.config.run import OptimConfig, TrainConfig
from rnnlab.data.dataset import DataConfig, load_data
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.lab import runner
from rnnlab.lab.grid import (
    PERPLEXITY,
    GridConfig,
    fraction_data,
    match_hidden_size,
    plan_grid,
    sized,
)
from rnnlab.lab.report import write_summary
from rnnlab.lab.results import chosen_rates, csv_columns, summarize, valid_curve, write_csv
from rnnlab.lab.runner import load_grid_data, run_grid
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.nn.recurrent import CELL_NAMES
from rnnlab.runs.checkpoint import load_checkpoint
from rnnlab.training.trainer import Trainer


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, make_fox_file):
    return make_fox_file(tmp_path_factory.mktemp("text"), repeat=30)  # 30 of each, not 40


def grid_config(text_file, **kw) -> GridConfig:
    settings = dict(
        data=DataConfig(text=str(text_file)),
        model=LanguageModelConfig(num_layers=1, embed_size=8),
        optim=OptimConfig(optimizer="adam", lr=0.01, clip=1.0, schedule="constant"),
        train=TrainConfig(batch_size=4, eval_batch_size=4, epochs=1000, max_steps=12),
        cells=("rnn", "lstm"),
        params=3000,
        seeds=(1, 2),
        eval_points=3,
    )
    settings.update(kw)
    return GridConfig(**settings)


# ------------------------------------------------------------------------- parameter matching
@pytest.mark.parametrize(
    "budget,vocab,layers,follows",
    [
        (20_000, 65, 1, False),
        (300_000, 65, 1, False),
        (5_000_000, 65, 1, False),
        (20_000, 65, 2, True),
        (300_000, 65, 2, True),
        (5_000_000, 65, 2, True),
        (5_000_000, 10_000, 2, False),  # PTB-sized vocabulary: most of the budget is embedding
        (20_000_000, 10_000, 1, True),
    ],
)
def test_matched_sizes_land_within_two_percent_for_every_cell(budget, vocab, layers, follows):
    for cell in CELL_NAMES:
        model = LanguageModelConfig(vocab_size=vocab, cell=cell, embed_size=32, num_layers=layers)
        m = match_hidden_size(model, budget, embed_follows_hidden=follows)
        assert abs(m.parameters - budget) <= 0.02 * budget, (cell, m)
        assert abs(m.deviation) <= 0.02
        # the closest integer: neither neighbour is closer
        for h in (m.hidden_size - 1, m.hidden_size + 1):
            if h >= 1:
                other = sized(model, h, follows).num_parameters()
                assert abs(other - budget) >= abs(m.parameters - budget)


def test_matched_count_is_the_built_models_count():
    model = LanguageModelConfig(vocab_size=50, cell="gru", embed_size=12, num_layers=2)
    m = match_hidden_size(model, 40_000)
    built = LanguageModel(replace(model, hidden_size=m.hidden_size))
    assert built.num_parameters() == m.parameters
    recurrent = sum(p.numel() for p in built.rnn.parameters())
    assert recurrent == m.recurrent_parameters


def test_gated_cells_get_smaller_hidden_sizes():
    sizes = {
        cell: match_hidden_size(LanguageModelConfig(vocab_size=65, cell=cell), 500_000).hidden_size
        for cell in ("rnn", "gru", "lstm")
    }
    assert sizes["rnn"] > sizes["gru"] > sizes["lstm"]


def test_impossible_budget_is_a_config_error():
    model = LanguageModelConfig(vocab_size=10_000, cell="lstm", embed_size=200)
    with pytest.raises(ConfigError, match="--params"):
        match_hidden_size(model, 100_000)  # the embedding alone has 2,000,000


def test_grid_config_rejects_bad_axes(text_file):
    with pytest.raises(ConfigError, match="unknown cell"):
        grid_config(text_file, cells=("rnn", "transformer"))
    with pytest.raises(ConfigError, match="fraction"):
        grid_config(text_file, data_fractions=(0.0, 1.0))
    with pytest.raises(ConfigError, match="repeat"):
        grid_config(text_file, bptts=(5, 5))


# ------------------------------------------------------------------------- data and plan
def test_fraction_data_matches_load_data_with_the_shared_vocabulary(text_file):
    grid = grid_config(text_file)
    full = load_grid_data(grid)
    part = fraction_data(full, 0.3)
    ref = load_data(DataConfig(text=str(text_file), data_fraction=0.3), vocab=full.vocab)
    assert torch.equal(part.train, ref.train)
    assert torch.equal(part.valid, full.valid) and part.vocab == full.vocab


def test_token_budget_sets_steps_per_window(text_file):
    grid = grid_config(
        text_file,
        train=TrainConfig(batch_size=4, epochs=1000),
        max_tokens=400,
        bptts=(4, 10),
        seeds=(1,),
    )
    runs = plan_grid(grid, load_grid_data(grid))
    steps = {r.bptt: r.config.train.max_steps for r in runs}
    assert steps == {4: math.ceil(400 / 16), 10: math.ceil(400 / 40)}


def test_too_little_text_for_a_grid_point_fails_before_training(text_file, tmp_path):
    grid = grid_config(text_file, data_fractions=(0.01, 1.0), bptts=(35,))
    with pytest.raises(DataError, match="data fraction 0.01"):
        run_grid(grid, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_periodic_validation_does_not_change_training(text_file, tmp_path):
    """eval_every only logs (and may save the best checkpoint): the weights end identical."""
    grid = grid_config(text_file, cells=("lstm",), seeds=(1,), bptts=(5,))
    run = plan_grid(grid, load_grid_data(grid))[0]
    ends = []
    for every in (None, 3):
        config = replace(run.config, train=replace(run.config.train, eval_every=every))
        result = Trainer(config, tmp_path / f"every-{every}").fit()
        ends.append(
            load_checkpoint(tmp_path / f"every-{every}" / "last.safetensors").group("model")
        )
        valid_steps = [r["step"] for r in result.history if r["kind"] == "valid"]
        assert valid_steps == ([12] if every is None else [3, 6, 9, 12])
    for k in ends[0]:
        assert torch.equal(ends[0][k], ends[1][k]), k


# ------------------------------------------------------------------------- a whole grid
@pytest.fixture(scope="module")
def grid_run(text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    grid = grid_config(text_file, data_fractions=(0.5, 1.0), bptts=(4, 8))
    report = run_grid(grid, out)
    return grid, out, report


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_has_one_row_per_run(grid_run):
    grid, out, report = grid_run
    rows = read_csv(out / "results.csv")
    n = len(grid.cells) * len(grid.data_fractions) * len(grid.bptts) * len(grid.seeds)
    assert len(rows) == n == len(report.rows)
    assert len({r["run_id"] for r in rows}) == n
    for r in rows:
        assert abs(int(r["params"]) - grid.params) <= 0.02 * grid.params
        assert r["status"] == "ok" and float(r["valid_ppl"]) > 1 and float(r["test_bpc"]) > 0
        assert float(r["tokens_per_s"]) > 0
        # the default target is the worst final perplexity, so every run reaches it
        assert r["tokens_to_target"] and r["wall_time_to_target_s"]
        assert int(r["steps"]) == 12
    target = max(float(r["valid_ppl"]) for r in rows)
    assert float(rows[0]["target_ppl"]) == pytest.approx(target, rel=1e-5)


def test_learning_curves_come_from_periodic_validation(grid_run):
    _, out, report = grid_run
    curve = valid_curve(out / "runs" / report.rows[0]["run_id"])
    assert [p["step"] for p in curve] == [4, 8, 12]  # 12 steps / 3 eval points


def test_summary_has_mean_and_std_over_seeds(grid_run):
    _, out, report = grid_run
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert "mean ± std" in text
    group = [
        r
        for r in report.rows
        if r["cell"] == "lstm" and r["data_fraction"] == 1.0 and r["bptt"] == 8
    ]
    assert len(group) == 2
    ppl = [r["valid_ppl"] for r in group]
    expected = f"{statistics.fmean(ppl):.2f} ± {statistics.stdev(ppl):.2f}"
    assert expected in text


def test_plots_are_written_and_load(grid_run):
    import matplotlib.image as mpimg

    _, out, report = grid_run
    names = {"learning_curves_tokens.png", "learning_curves_time.png"}
    names |= {"ppl_vs_data_fraction.png", "ppl_vs_bptt.png"}
    assert names <= {p.name for p in report.files}
    for name in names:
        path = out / name
        assert path.stat().st_size > 0
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 0  # not a blank canvas


# ------------------------------------------------------------------------- resuming
def test_interrupted_grid_resumes_without_redoing_finished_runs(text_file, tmp_path, monkeypatch):
    grid = grid_config(text_file, cells=("rnn", "gru"))
    reference = run_grid(grid, tmp_path / "reference")

    # interrupt the second run midway (Ctrl-C at step 8 of 12), as if the grid had died there
    out = tmp_path / "grid"
    data = load_grid_data(grid)
    runs = plan_grid(grid, data)
    victim = runs[1]
    trainer = Trainer(victim.config, out / "runs" / victim.run_id, data=data)

    def ctrl_c(row):
        if row["kind"] == "train" and row["step"] == 8:
            trainer.request_stop()

    trainer.on_log = ctrl_c
    with pytest.raises(RnnlabError):
        trainer.fit()

    seen = []
    report = run_grid(grid, out, on_run=lambda i, n, run, status: seen.append((run.run_id, status)))
    assert seen[1] == (victim.run_id, "resume")
    assert [s for _, s in seen].count("start") == len(runs) - 1
    # bit-exact resume: the same numbers as the uninterrupted grid
    for a, b in zip(report.rows, reference.rows, strict=True):
        assert a["run_id"] == b["run_id"] and a["valid_ppl"] == b["valid_ppl"]

    # drop one finished run's result: a re-run trains that one only
    lost = runs[2]
    keep = {r.run_id: (out / "runs" / r.run_id / "results.json").stat().st_mtime_ns for r in runs}
    (out / "runs" / lost.run_id / "results.json").unlink()
    built = []

    class CountingTrainer(Trainer):
        def __init__(self, config, run_dir, **kw):
            built.append(run_dir.name)
            super().__init__(config, run_dir, **kw)

    monkeypatch.setattr(runner, "Trainer", CountingTrainer)
    seen.clear()
    again = run_grid(grid, out, on_run=lambda i, n, run, status: seen.append(status))
    assert built == [lost.run_id]
    assert seen.count("done") == len(runs) - 1
    for r in runs:
        if r.run_id != lost.run_id:
            assert (out / "runs" / r.run_id / "results.json").stat().st_mtime_ns == keep[r.run_id]
    assert len(again.rows) == len(runs)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "ppl_vs_bptt.png not drawn" in summary  # a single tau: that plot is skipped, and said so


def test_other_settings_in_the_same_directory_are_refused(text_file, tmp_path):
    grid = grid_config(
        text_file, cells=("rnn",), seeds=(1,), train=TrainConfig(batch_size=4, max_steps=3)
    )
    run_grid(grid, tmp_path)
    changed = replace(grid, optim=OptimConfig(optimizer="adam", lr=0.05, schedule="constant"))
    with pytest.raises(ConfigError, match="other settings"):
        run_grid(changed, tmp_path)


def test_a_diverging_run_is_recorded_and_the_grid_goes_on(text_file, tmp_path):
    grid = grid_config(
        text_file,
        cells=("rnn", "gru"),
        seeds=(1,),
        optim=OptimConfig(optimizer="sgd", lr=1e6, clip=0.0, schedule="constant"),
        train=TrainConfig(batch_size=4, max_steps=6),
        target_ppl=5.0,
    )
    report = run_grid(grid, tmp_path)
    assert len(report.rows) == 2
    assert all(r["status"] == "diverged" for r in report.rows)
    saved = json.loads((tmp_path / "runs" / report.rows[0]["run_id"] / "results.json").read_text())
    assert "diverged" in saved
    assert "no finished run" in " ".join(report.notes)


# ------------------------------------------------------------------------- two-stage rate search
def test_a_searched_grid_hands_each_cell_its_chosen_rate(text_file, tmp_path):
    search = grid_config(
        text_file,
        cells=("rnn", "lstm"),
        seeds=(1,),
        lrs=(1e-4, 3e-2),
        train=TrainConfig(batch_size=4, eval_batch_size=4, max_steps=8),
    )
    report = run_grid(search, tmp_path / "search")
    best = {}
    for row in report.rows:  # the chosen rate is the one with the lower validation perplexity
        if row["cell"] not in best or row["valid_ppl"] < best[row["cell"]][1]:
            best[row["cell"]] = (row["lr"], row["valid_ppl"])
    chosen = chosen_rates(tmp_path / "search")
    assert chosen == {cell: lr for cell, (lr, _) in best.items()}

    main = replace(search, lrs=(), cell_lrs=chosen, seeds=(1, 2))
    runs = plan_grid(main, load_grid_data(main))
    assert len(runs) == 4  # no rate axis: one rate per cell
    for run in runs:
        assert run.config.optim.lr == chosen[run.cell]
        assert run.run_id.endswith(f"-lr{chosen[run.cell]:g}-s{run.seed}")
    run_grid(main, tmp_path / "main")
    summary = (tmp_path / "main" / "summary.md").read_text(encoding="utf-8")
    assert f"per cell rnn {chosen['rnn']:g}, lstm {chosen['lstm']:g}" in summary
    assert "Selected by validation" not in summary  # nothing was searched in this grid
    with (tmp_path / "main" / "results.csv").open(encoding="utf-8") as f:
        rates = {(r["cell"], float(r["lr"])) for r in csv.DictReader(f)}
    assert rates == set(chosen.items())


def test_chosen_rates_refuses_what_it_cannot_read_or_decide(text_file, tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        chosen_rates(tmp_path / "nothing-here")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "results.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a results table"):
        chosen_rates(tmp_path / "foreign")
    head = "run_id,cell,data_fraction,bptt,seed,lr,status,valid_ppl\n"
    split = head + "".join(
        f"r{i},gru,{f},35,1,{lr},ok,{v}\n"
        for i, (f, lr, v) in enumerate([(0.1, 1e-3, 9), (0.1, 1e-2, 8), (1, 1e-3, 5), (1, 1e-2, 6)])
    )
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "results.csv").write_text(split, encoding="utf-8")
    with pytest.raises(ConfigError, match="different rates for gru"):
        chosen_rates(tmp_path / "split")


def test_per_cell_rates_must_cover_the_cells_and_exclude_a_search(text_file):
    with pytest.raises(ConfigError, match="no learning rate for cell"):
        grid_config(text_file, cell_lrs={"rnn": 1e-3})
    with pytest.raises(ConfigError, match="not both"):
        grid_config(text_file, lrs=(1e-3, 1e-2), cell_lrs={"rnn": 1e-3, "lstm": 1e-3})
    with pytest.raises(ConfigError, match="positive"):
        grid_config(text_file, cell_lrs={"rnn": 1e-3, "lstm": -1.0})


# ------------------------------------------------------------------------- the report's layout
def fixed_rows():
    """Rows of a rate search (one diverged run), with set numbers: the report's layout only."""
    rows = []
    for i, (cell, lr, seed, ppl) in enumerate(
        [
            ("rnn", 0.01, 1, 12.5),
            ("rnn", 0.01, 2, 13.25),
            ("rnn", 0.1, 1, None),
            ("lstm", 0.1, 1, 9.75),
        ]
    ):
        ok = ppl is not None
        rnn = cell == "rnn"
        row = {
            "run_id": f"{cell}-lr{lr:g}-s{seed}", "cell": cell, "params": 3006 if rnn else 2950,
            "recurrent_params": 1656 if rnn else 2000, "hidden": 36 if rnn else 18, "embed": 8,
            "layers": 1, "data_fraction": 1.0, "bptt": 35, "seed": seed, "lr": lr,
            "status": "ok" if ok else "diverged", "steps": 12 if ok else 3,
            "tokens": 1680 if ok else 420, "wall_time_s": 1.5 + i / 3 if ok else None,
            "valid_ppl": ppl, "test_ppl": ppl * 1.01 if ok else None,
            "valid_bpc": 3.6 + i / 7 if ok else None, "test_bpc": 3.62 + i / 7 if ok else None,
            "tokens_per_s": 1234.5678 + 100 * i if ok else None, "target_ppl": 13.25,
            "tokens_to_target": 1120 if ok else None, "steps_to_target": 8 if ok else None,
            "wall_time_to_target_s": 0.9 + i / 10 if ok else None,
        }  # fmt: skip
        rows.append(row)
    return rows


PINNED_SUMMARY = """\
# rnnlab compare

Text: corpus.txt (char level). Budget per run: 12 steps. Optimizer adam, lr 0.01, 0.1, clip 1, schedule constant; batch 4; 1 layer(s); weight noise 0.05; early stopping after 2 epochs without improvement.

Sizes are matched by the parameter count of the whole model (embedding + recurrent + decoder) to a budget of 3,000.

| cell | hidden | embed | params | recurrent params | vs budget |
| --- | --- | --- | --- | --- | --- |
| rnn | 36 | 8 | 3006 | 1656 | +0.20% |
| lstm | 18 | 8 | 2950 | 2000 | -1.67% |

## Summary: mean ± std over seeds

Target perplexity 13.25 (the worst final validation perplexity of the grid); time to target is the wall time (training plus the periodic validations) at the first logged validation at or below it. Std is the sample standard deviation (n/a for one seed); tokens/s counts training steps only.

| cell | params | fraction | τ | lr | n | valid ppl | test ppl | test bpc | tokens/s | time to target (s) | tokens to target |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| rnn | 3006 | 1 | 35 | 0.01 | 2 | 12.88 ± 0.53 | 13.00 ± 0.54 | 3.691 ± 0.101 | 1285 ± 71 | 0.9 ± 0.1 | 1120 ± 0 |
| rnn | 3006 | 1 | 35 | 0.1 | 0 | – | – | – | – | – | – |
| lstm | 2950 | 1 | 35 | 0.1 | 1 | 9.75 ± n/a | 9.85 ± n/a | 4.049 ± n/a | 1535 ± n/a | 1.2 ± n/a | 1120 ± n/a |

## Selected by validation

Per cell, fraction and τ, the learning rate with the best mean validation perplexity; its test figure is the result.

| cell | fraction | τ | lr | n | valid ppl | test ppl |
| --- | --- | --- | --- | --- | --- | --- |
| rnn | 1 | 35 | 0.01 | 2 | 12.88 ± 0.53 | 13.00 ± 0.54 |
| lstm | 1 | 35 | 0.1 | 1 | 9.75 ± n/a | 9.85 ± n/a |

## Every run

| run_id | params | data_fraction | bptt | seed | lr | status | valid_ppl | test_ppl | test_bpc | tokens_per_s | wall_time_s | tokens_to_target | wall_time_to_target_s |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| rnn-lr0.01-s1 | 3006 | 1 | 35 | 1 | 0.01 | ok | 12.5 | 12.625 | 3.62 | 1234.6 | 1.5 | 1120 | 0.9 |
| rnn-lr0.01-s2 | 3006 | 1 | 35 | 2 | 0.01 | ok | 13.25 | 13.383 | 3.7629 | 1334.6 | 1.8333 | 1120 | 1 |
| rnn-lr0.1-s1 | 3006 | 1 | 35 | 1 | 0.1 | diverged |  |  |  |  |  |  |  |
| lstm-lr0.1-s1 | 2950 | 1 | 35 | 1 | 0.1 | ok | 9.75 | 9.8475 | 4.0486 | 1534.6 | 2.5 | 1120 | 1.2 |

## Plots

![ppl_vs_bptt](ppl_vs_bptt.png)

- a note
"""

PINNED_CSV = """\
run_id,cell,params,recurrent_params,hidden,embed,layers,data_fraction,bptt,seed,lr,status,steps,tokens,valid_ppl,test_ppl,valid_bpc,test_bpc,tokens_per_s,wall_time_s,target_ppl,tokens_to_target,steps_to_target,wall_time_to_target_s
rnn-lr0.01-s1,rnn,3006,1656,36,8,1,1,35,1,0.01,ok,12,1680,12.5,12.625,3.6,3.62,1234.57,1.5,13.25,1120,8,0.9
rnn-lr0.01-s2,rnn,3006,1656,36,8,1,1,35,2,0.01,ok,12,1680,13.25,13.3825,3.74286,3.76286,1334.57,1.83333,13.25,1120,8,1
rnn-lr0.1-s1,rnn,3006,1656,36,8,1,1,35,1,0.1,diverged,3,420,,,,,,,13.25,,,
lstm-lr0.1-s1,lstm,2950,2000,18,8,1,1,35,1,0.1,ok,12,1680,9.75,9.8475,4.02857,4.04857,1534.57,2.5,13.25,1120,8,1.2
"""


def test_summary_and_csv_keep_their_layout(tmp_path):
    """summary.md and results.csv of fixed rows, byte for byte as the report wrote them before
    rnnlab.lab.experiments was split into grid, runner, results, report and plots."""
    grid = GridConfig(
        data=DataConfig(text="corpus.txt"),
        model=LanguageModelConfig(num_layers=1, embed_size=8),
        optim=OptimConfig(
            optimizer="adam", lr=0.01, clip=1.0, schedule="constant", weight_noise=0.05
        ),
        train=TrainConfig(batch_size=4, max_steps=12, patience=2),
        cells=("rnn", "lstm"),
        seeds=(1, 2),
        lrs=(0.01, 0.1),
        params=3000,
    )
    plots = [tmp_path / "ppl_vs_bptt.png"]
    path = write_summary(
        tmp_path / "summary.md", grid, fixed_rows(), 13.25, "char", plots, ["a note"]
    )
    assert path.read_bytes() == PINNED_SUMMARY.encode("utf-8")
    path = write_csv(tmp_path / "results.csv", fixed_rows(), csv_columns(PERPLEXITY))
    assert path.read_bytes() == PINNED_CSV.replace("\n", "\r\n").encode("utf-8")
    summary = summarize(fixed_rows(), PERPLEXITY)  # the dicts rnnlab compare prints from
    assert summary[0]["valid_ppl"] == "12.88 ± 0.53" and summary[1]["n"] == 0
    assert list(summary[0]) == [
        "cell", "params", "data_fraction", "bptt", "lr", "n", "diverged", "valid_ppl",
        "test_ppl", "tokens_per_s", "wall_time_to_target_s", "tokens_to_target", "test_bpc",
    ]  # fmt: skip
