"""``rnnlab eval`` and ``score`` with ``--cache``, ``--dynamic`` and ``--tune-adaptation``: the
settings named in every result, the run directory untouched but for ``adaptation.json``, and
bad values refused in one line."""

import json
import shutil

import pytest

from rnnlab.cli import main
from rnnlab.evaluation.tuning import SETTINGS_FILE

SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample"]
FAST = ["--threads", "1", "--no-progress"]


def assert_one_line_error(code, err, *mentions):
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rnnlab: error:"), err
    for m in mentions:
        assert m in lines[0], lines[0]


def snapshot(directory) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_fox_file):
    """One small character-level run, shared by the read-only tests."""
    d = tmp_path_factory.mktemp("adapt")
    text = make_fox_file(d, "english.txt")
    out = d / "char"
    args = ["train", "--text", text, "--max-steps", "20", *SMALL, *QUIET, "--out", out]
    assert main([str(a) for a in args]) == 0
    return out


@pytest.fixture
def run_copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "copy")


def eval_json(run_cli, run, *args):
    code, out, err = run_cli("eval", run, *FAST, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_cache_with_lambda_zero_equals_static_eval_and_names_its_settings(run, run_cli):
    static = eval_json(run_cli, run)
    cached = eval_json(run_cli, run, "--cache", "--cache-lambda", "0", "--cache-size", "7")
    assert "adaptation" not in static
    assert cached["loss"] == static["loss"]
    assert cached["adaptation"]["cache"] == {
        "size": 7,
        "theta": 0.3,
        "lambda": 0.0,
        "source": "defaults, not tuned; given: size, lambda",
    }
    code, out, _ = run_cli("eval", run, *FAST, "--cache", "--cache-theta", "0.5")
    assert code == 0
    assert "with cache size 500, theta 0.5, lambda 0.1 [defaults, not tuned; given: theta]" in out


def test_dynamic_lr_zero_equals_static_and_leaves_the_run_untouched(run_copy, run_cli):
    before = snapshot(run_copy)
    static = eval_json(run_cli, run_copy)
    dyn = eval_json(run_cli, run_copy, "--dynamic", "--dynamic-lr", "0")
    assert dyn["loss"] == pytest.approx(static["loss"], rel=1e-7)
    adapted = eval_json(run_cli, run_copy, "--cache", "--dynamic", "--dynamic-lr", "0.01")
    assert adapted["adaptation"]["dynamic"]["method"] == "rms"
    assert adapted["adaptation"]["dynamic"]["lr"] == 0.01
    assert adapted["loss"] != static["loss"]
    whole = eval_json(run_cli, run_copy, "--dynamic", "--dynamic-stat-windows", "0")
    assert whole["adaptation"]["dynamic"]["stat_windows"] == 0  # the whole training split
    sgd = eval_json(run_cli, run_copy, "--dynamic", "--dynamic-method", "sgd")
    assert sgd["adaptation"]["dynamic"]["lr"] == 0.1  # sgd's own default rate
    assert snapshot(run_copy) == before


def test_tune_writes_only_its_settings_file_and_eval_uses_it(run_copy, run_cli):
    before = snapshot(run_copy)
    code, out, err = run_cli("eval", run_copy, *FAST, "--tune-adaptation")
    assert code == 0, err
    assert "settings written to" in out
    after = snapshot(run_copy)
    assert set(after) == set(before) | {SETTINGS_FILE}
    assert {k: v for k, v in after.items() if k != SETTINGS_FILE} == before
    stored = json.loads((run_copy / SETTINGS_FILE).read_text())
    assert stored["cache"]["tuned_on"]["split"] == "valid"
    assert len(stored["cache"]["grid"]) > 1 and len(stored["dynamic"]["grid"]) > 1
    cache, dynamic = stored["cache"]["settings"], stored["dynamic"]["settings"]
    best = min(g["perplexity"] for g in stored["cache"]["grid"])
    assert stored["cache"]["valid"]["perplexity"] == best

    both = eval_json(run_cli, run_copy, "--cache", "--dynamic")
    tuned = "tuned on valid (adaptation.json)"
    assert both["adaptation"]["cache"] == dict(cache, source=tuned)
    # together they use the rates tuned with that cache on, and say so
    joint = stored["dynamic"]["with_cache"]
    assert joint["valid"]["cache_perplexity"] == pytest.approx(
        stored["cache"]["valid"]["perplexity"], rel=1e-9
    )
    assert joint["valid"]["perplexity"] <= joint["valid"]["cache_perplexity"]
    assert joint["grid"][0]["lr"] == 0.0  # rate 0: the cache alone
    assert both["adaptation"]["dynamic"] == dict(
        joint["settings"], source="tuned on valid with the cache (adaptation.json)"
    )
    alone = eval_json(run_cli, run_copy, "--dynamic")
    assert alone["adaptation"]["dynamic"] == dict(dynamic, source=tuned)
    dynamic = joint["settings"]
    explicit = eval_json(
        run_cli,
        run_copy,
        "--cache",
        "--cache-size",
        cache["size"],
        "--cache-theta",
        cache["theta"],
        "--cache-lambda",
        cache["lambda"],
        "--dynamic",
        "--dynamic-lr",
        dynamic["lr"],
        "--dynamic-decay",
        dynamic["decay"],
    )
    assert explicit["loss"] == both["loss"]
    assert explicit["adaptation"]["cache"]["source"] == "given"
    # the tuned validation figure is what eval gives on valid with those settings
    valid = eval_json(run_cli, run_copy, "--cache", "--split", "valid")
    assert valid["perplexity"] == pytest.approx(stored["cache"]["valid"]["perplexity"], rel=1e-9)
    code, out, _ = run_cli("eval", run_copy, *FAST, "--cache")
    assert f"[{tuned}]" in out
    # the sgd update was not tuned: its own defaults, said so
    sgd = eval_json(run_cli, run_copy, "--dynamic", "--dynamic-method", "sgd")
    assert sgd["adaptation"]["dynamic"]["source"] == "defaults, not tuned"
    assert {k: v for k, v in snapshot(run_copy).items() if k != SETTINGS_FILE} == before


def test_a_best_value_at_the_grids_edge_extends_the_search(monkeypatch):
    """The cache's theta and the dynamic rate: while the best is at an edge of the values
    tried, the next value past it is tried (x3 or /3), up to EDGE_STEPS."""
    import math

    from rnnlab.evaluation import tuning

    def bowl(x, best):  # a loss whose minimum is at ``best``
        return 1.0 + (math.log(x) - math.log(best)) ** 2

    def loss_of(lr, decay):
        return 5.0 if lr == 0 else bowl(lr, 0.03) + decay

    monkeypatch.setattr(tuning, "DYNAMIC_LRS", {"rms": (1e-4, 3e-4, 1e-3, 3e-3)})
    (lr, decay), best, base, grid = tuning._search_rates(loss_of, "rms")
    rates = sorted({k[0] for k in grid})
    # x3 past the edge while it wins, then the half steps around the best (x / sqrt 3, x sqrt 3)
    halves = [1.6e-2, 4.7e-2]
    assert rates == pytest.approx(
        sorted([0, 1e-4, 3e-4, 1e-3, 3e-3, 9e-3, 2.7e-2, 8.1e-2, *halves])
    )
    assert lr == pytest.approx(2.7e-2) and decay == 0.0 and base == 5.0
    # below the grid, the same (the rate search of the batch-1 case): three steps down to the
    # bound, 1e-4 / 27, then the half step below it
    (lr, _), *_ = tuning._search_rates(lambda r, d: 5.0 if r == 0 else bowl(r, 1e-6), "rms")
    assert lr == pytest.approx(2.1e-6)
    # a minimum between two x3 steps: the half step finds it
    (lr, _), _, _, grid = tuning._search_rates(lambda r, d: 5.0 if r == 0 else bowl(r, 5e-3), "rms")
    assert lr == pytest.approx(5.2e-3) and (1.7e-3, 0.02) in grid
    # no rate helps: no half steps, no decays, rate 0 kept
    (lr, _), _, _, grid = tuning._search_rates(lambda r, d: 1.0 if r == 0 else 2.0 + r, "rms")
    assert lr == 0.0 and len(grid) == 1 + 4 + 3  # rate 0, the grid, three steps below it

    calls = []
    best_theta = 3.0

    def fake_grid(model, ids, *, thetas, sizes, lambdas, **kw):
        calls.append(tuple(thetas))
        losses = {
            (t, s, m): bowl(t, best_theta) + m for t in thetas for s in sizes for m in lambdas
        }
        return 2.0, losses

    monkeypatch.setattr(tuning, "cache_grid_losses", fake_grid)
    monkeypatch.setattr(tuning, "CACHE_THETAS", (0.1, 0.3, 1.0))
    static, losses = tuning._search_cache(None, None)
    assert calls == [(0.1, 0.3, 1.0), (3.0,), (9.0,)]  # 3 is then inside: stop
    assert min(losses, key=losses.get)[0] == 3.0 and static == 2.0
    calls.clear()
    best_theta = 0.001
    tuning._search_cache(None, None)
    assert [c[0] for c in calls[1:]] == pytest.approx([0.1 / 3, 0.1 / 9, 0.1 / 27])  # the bound
    calls.clear()
    monkeypatch.setattr(tuning, "CACHE_THETAS", (1.0, 3.0, 9.0))
    best_theta = 3.0
    tuning._search_cache(None, None)
    assert calls == [(1.0, 3.0, 9.0)]  # the best inside the grid: one pass


def test_tuning_keeps_the_statistics_window_it_was_given(run_copy, run_cli):
    args = ("--tune-adaptation", "--dynamic", "--dynamic-stat-windows", "0")
    code, _, err = run_cli("eval", run_copy, *FAST, *args)
    assert code == 0, err
    saved = json.loads((run_copy / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert saved["dynamic"]["settings"]["stat_windows"] == 0
    assert eval_json(run_cli, run_copy, "--dynamic")["adaptation"]["dynamic"]["stat_windows"] == 0
    # rates tuned for the whole split, used over 3 windows: the source line says which was given
    other = eval_json(run_cli, run_copy, "--dynamic", "--dynamic-stat-windows", "3")
    assert other["adaptation"]["dynamic"]["stat_windows"] == 3
    tuned = "tuned on valid (adaptation.json)"
    assert other["adaptation"]["dynamic"]["source"] == f"{tuned}; given: stat_windows"
    rates = ("--dynamic-lr", "0.001", "--dynamic-decay", "0")
    partly = eval_json(run_cli, run_copy, "--dynamic", *rates)
    assert partly["adaptation"]["dynamic"]["source"] == f"{tuned}; given: lr, decay"
    every = eval_json(run_cli, run_copy, "--dynamic", *rates, "--dynamic-stat-windows", "3")
    assert every["adaptation"]["dynamic"]["source"] == "given"
    sgd = ("--dynamic", "--dynamic-method", "sgd", "--dynamic-lr", "0.1", "--dynamic-decay", "0")
    assert eval_json(run_cli, run_copy, *sgd)["adaptation"]["dynamic"]["source"] == "given"


def test_tuning_one_part_keeps_the_other(run_copy, run_cli):
    code, _, err = run_cli("eval", run_copy, *FAST, "--tune-adaptation", "--cache")
    assert code == 0, err
    stored = json.loads((run_copy / SETTINGS_FILE).read_text())
    assert "cache" in stored and "dynamic" not in stored
    code, _, err = run_cli(
        "eval", run_copy, *FAST, "--tune-adaptation", "--dynamic", "--dynamic-method", "sgd"
    )
    assert code == 0, err
    again = json.loads((run_copy / SETTINGS_FILE).read_text())
    assert again["cache"] == stored["cache"]
    assert again["dynamic"]["settings"]["method"] == "sgd"
    assert len(again["dynamic"]["grid"]) > 1


def test_a_damaged_settings_file_is_one_line(run_copy, run_cli):
    (run_copy / SETTINGS_FILE).write_text('{"cache": {"settings": {"size": -4}}}')
    code, _, err = run_cli("eval", run_copy, *FAST, "--cache")
    assert_one_line_error(code, err, SETTINGS_FILE, "--tune-adaptation")
    code, _, err = run_cli("score", run_copy, "--text", run_copy / "run.json", "--cache")
    assert_one_line_error(code, err, SETTINGS_FILE)


BAD = [
    (["--cache", "--cache-size", "-1"], ["--cache-size must be a positive integer"]),
    (["--cache", "--cache-size", "0"], ["--cache-size"]),
    (["--cache", "--cache-lambda", "1.5"], ["--cache-lambda must be between 0 and 1"]),
    (["--cache", "--cache-lambda", "-0.2"], ["--cache-lambda"]),
    (["--cache", "--cache-theta", "-1"], ["--cache-theta must be 0 or more"]),
    (["--cache", "--cache-theta", "nan"], ["--cache-theta must be a finite number"]),
    (["--dynamic", "--dynamic-lr", "-0.1"], ["--dynamic-lr must be 0 or more"]),
    (["--dynamic", "--dynamic-decay", "2"], ["--dynamic-decay must be between 0 and 1"]),
    (["--cache-lambda", "0.2"], ["--cache-lambda is a setting of --cache"]),
    (["--dynamic-lr", "0.2"], ["--dynamic-lr is a setting of --dynamic"]),
    (["--dynamic", "--dynamic-stat-windows", "-2"], ["--dynamic-stat-windows must be 0"]),
]


@pytest.mark.parametrize("args,mentions", BAD)
def test_eval_bad_values_are_one_line(run, run_cli, args, mentions):
    code, _, err = run_cli("eval", run, *FAST, *args)
    assert_one_line_error(code, err, *mentions)


@pytest.mark.parametrize("args,mentions", BAD)
def test_score_bad_values_are_one_line(run, tmp_path, run_cli, args, mentions):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox", encoding="utf-8")
    code, _, err = run_cli("score", run, "--text", text, *args)
    assert_one_line_error(code, err, *mentions)


@pytest.mark.parametrize(
    "args,mentions",
    [
        (["--tune-tokens", "50"], ["--tune-tokens is a setting of --tune-adaptation"]),
        (["--tune-adaptation", "--tune-tokens", "1"], ["--tune-tokens must be at least 2"]),
        (["--tune-adaptation", "--cache", "--cache-size", "9"], ["chooses the settings itself"]),
        (["--tune-adaptation", "--split", "train"], ["validation split"]),
    ],
)
def test_tune_bad_requests_are_one_line(run_copy, run_cli, args, mentions):
    code, _, err = run_cli("eval", run_copy, *FAST, *args)
    assert_one_line_error(code, err, *mentions)
    assert not (run_copy / SETTINGS_FILE).exists()


def test_score_with_adaptation(run, tmp_path, run_cli):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 6, encoding="utf-8")
    code, out, err = run_cli("score", run, "--text", text, "--json")
    assert code == 0, err
    static = json.loads(out)
    code, out, err = run_cli(
        "score", run, "--text", text, "--json", "--cache", "--cache-lambda", "0"
    )
    assert code == 0, err
    zero = json.loads(out)
    assert zero["count"] == static["count"]
    assert zero["adaptation"]["cache"]["lambda"] == 0.0
    for a, b in zip(zero["tokens"], static["tokens"], strict=True):
        assert a["logprob"] == pytest.approx(b["logprob"], rel=1e-5, abs=1e-5)
    # a repetitive document: the cache and dynamic evaluation both help after the first lap
    args = ["--cache", "--cache-lambda", "0.3", "--dynamic", "--dynamic-method", "sgd"]
    code, out, err = run_cli("score", run, "--text", text, "--json", *args)
    assert code == 0, err
    adapted = json.loads(out)
    assert adapted["adaptation"]["dynamic"]["method"] == "sgd"
    assert adapted["total_logprob"] > static["total_logprob"]
    first = len("the quick brown fox jumps over the lazy dog. ")
    for a, b in zip(adapted["tokens"][:1], static["tokens"][:1], strict=True):
        assert a["logprob"] == pytest.approx(b["logprob"], rel=1e-5)
    assert len(adapted["tokens"]) == 6 * first
    code, out, _ = run_cli("score", run, "--text", text, *args)
    assert code == 0
    assert out.strip().splitlines()[-1].endswith("decay 0.02 [defaults, not tuned]")


def test_rms_dynamic_needs_the_training_data_and_says_so(tmp_path, make_fox_file, run_cli):
    text = make_fox_file(tmp_path, "gone.txt")
    out = tmp_path / "run"
    args = ["train", "--text", text, "--max-steps", "4", *SMALL, *QUIET, "--out", out]
    assert run_cli(*args)[0] == 0
    doc = tmp_path / "doc.txt"
    doc.write_text("the quick brown fox", encoding="utf-8")
    text.unlink()
    code, _, err = run_cli("score", out, "--text", doc, "--dynamic")
    assert_one_line_error(code, err, "training data", "--dynamic-method sgd")
    code, _, err = run_cli("eval", out, *FAST, "--text", doc, "--dynamic")
    assert_one_line_error(code, err, "training data", "--dynamic-method sgd")
    code, _, err = run_cli("score", out, "--text", doc, "--dynamic", "--dynamic-method", "sgd")
    assert code == 0, err


def test_tuning_never_chooses_a_rate_that_hurts_on_validation(run_copy, run_cli, monkeypatch):
    """Where every rate makes validation worse (PTB at batch 1 did), the tuner keeps rate 0
    (exactly static) and says so; a winning lowest rate first sends the search lower."""
    from rnnlab.evaluation import tuning

    monkeypatch.setattr(tuning, "DYNAMIC_LRS", {"rms": (3.0,), "sgd": (3.0,)})
    monkeypatch.setattr(tuning, "EDGE_STEPS", 1)
    short = ["--bptt", "4", "--batch-size", "1"]  # many segments, so the updates score
    code, out, err = run_cli("eval", run_copy, *FAST, *short, "--tune-adaptation", "--dynamic")
    assert code == 0, err
    stored = json.loads((run_copy / SETTINGS_FILE).read_text(encoding="utf-8"))["dynamic"]
    assert stored["settings"]["lr"] == 0
    assert stored["valid"]["perplexity"] == stored["valid"]["static_perplexity"]
    assert sorted(g["lr"] for g in stored["grid"]) == pytest.approx([0.0, 1.0, 3.0])
    assert all(g["perplexity"] > stored["valid"]["static_perplexity"] for g in stored["grid"][1:])
    # evaluating with the tuned settings is then the static figure exactly
    static = eval_json(run_cli, run_copy, *short, "--split", "valid")
    tuned = eval_json(run_cli, run_copy, *short, "--split", "valid", "--dynamic")
    assert tuned["loss"] == pytest.approx(static["loss"], rel=1e-8)  # float32 sums, other order
