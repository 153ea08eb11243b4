"""The poem benchmarks (``benchmarks/poem_sheet.py``, ``benchmarks/poem_scores.py``) on a tiny
titled model trained for two steps on a made-up Tang corpus of 1,300 poems: the reading sheet's
key matches the sheet and the test split, and the scores report what it promises."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from rnnlab.data import corpora
from rnnlab.data.corpora import load_corpus
from rnnlab.data.registry import get_spec

POOL = (
    "春花秋月山水风云江河天地日夜人心长短高低来去红白青黄东西南北远近朝暮雨雪霜露"
    "松竹梅兰鸟鱼龙马金玉诗酒歌舞楼台城门归客行舟烟波明清寒暖孤独千万夏冬色"
)
N = 1300


def fake_poems() -> list[dict]:
    """Mostly five-character quatrains, some seven-character ones and some short poems."""
    rng = random.Random(7)

    def line(n: int) -> str:
        return "".join(rng.choice(POOL) for _ in range(n))

    poems = []
    for _ in range(N):
        kind = rng.randrange(10)
        if kind < 7:
            paragraphs = [f"{line(5)}，{line(5)}。", f"{line(5)}，{line(5)}。"]
        elif kind < 9:
            paragraphs = [f"{line(7)}，{line(7)}。", f"{line(7)}，{line(7)}。"]
        else:
            paragraphs = [f"{line(5)}，{line(5)}。"]
        poems.append({"author": "某", "title": line(rng.randint(2, 4)), "paragraphs": paragraphs})
    return poems


@pytest.fixture(scope="module")
def fake_tang(tmp_path_factory):
    """A made-up Tang corpus in a mirror of its own, with an empty cache."""
    tmp = tmp_path_factory.mktemp("tang")
    rel = "chinese-poetry/全唐诗/poet.tang.0.json"
    path = tmp / "mirror" / rel
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(fake_poems(), ensure_ascii=False), encoding="utf-8")
    real = get_spec("tang")
    spec = dataclasses.replace(
        real,
        files=(rel,),
        urls={rel: "https://example.invalid/poet.tang.0.json"},
        sha256={rel: hashlib.sha256(path.read_bytes()).hexdigest()},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpora, "get_spec", lambda name: spec if name == "tang" else get_spec(name))
        mp.setenv("RNNLAB_DATA_DIR", str(tmp / "mirror"))
        mp.setenv("RNNLAB_CACHE_DIR", str(tmp / "cache"))
        yield tmp


@pytest.fixture(scope="module")
def titled_run(fake_tang):
    from rnnlab.cli import main

    out = fake_tang / "run"
    code = main(
        ["train", "--preset", "tang-hour", "--layers", "1", "--hidden", "16", "--embed", "16",
         "--bptt", "16", "--batch-size", "4", "--eval-batch-size", "4", "--max-steps", "2",
         "--no-progress", "--no-sample", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out


def read_sheet(path: Path) -> dict[int, tuple[str, str]]:
    """number -> (title, poem on one line) as the sheet shows them."""
    found: dict[int, tuple[str, str]] = {}
    blocks = re.split(r"^## ", path.read_text(encoding="utf-8"), flags=re.M)[1:]
    for block in blocks:
        head, _, body = block.partition("\n")
        match = re.fullmatch(r"(\d+)\. 《(.*)》", head.strip())
        if match is None:
            continue  # the answers grid
        number = int(match.group(1))
        assert number not in found, f"poem {number} appears twice"
        found[number] = (match.group(2), "".join(line.strip() for line in body.splitlines()))
    return found


def test_the_sheet_and_its_key_agree_with_the_test_split(bench, titled_run, tmp_path):
    out = tmp_path / "sheet"
    bench("poem_sheet").main([str(titled_run), "--out", str(out), "--candidates", "3",
                              "--threads", "1"])  # fmt: skip
    sheet = read_sheet(out / "sheet.md")
    key = json.loads((out / "key.json").read_text(encoding="utf-8"))
    assert sorted(sheet) == list(range(1, 41))
    assert sorted(map(int, key["poems"])) == list(range(1, 41))
    kinds = [entry["kind"] for entry in key["poems"].values()]
    assert kinds.count("real") == 20 and kinds.count("generated") == 20
    assert key["machine"]["cpu_count"] and key["settings"]["candidates"] == 3

    test = load_corpus("tang", titles=True).test.splitlines()
    pairs = {tuple(line.split(":", 1)) for line in test}
    texts = {text for _, text in pairs}
    used_titles = set()
    for number, (title, text) in sheet.items():
        entry = key["poems"][str(number)]
        assert (entry["title"], entry["text"]) == (title, text)
        assert len(text) == 24 and text[5::6] == "，。，。"
        if entry["kind"] == "real":
            assert (title, text) in pairs  # a held-out poem, under its own title
            assert test[entry["test_index"]] == f"{title}:{text}"
            assert entry["corpus_index"] == 20 * entry["test_index"] + 19
        else:
            assert text not in texts  # written by the model
            source = test[entry["title_from"]["test_index"]]
            assert source.split(":", 1)[0] == title and entry["written_for_title"]
            used_titles.add(entry["title_from"]["test_index"])
    real = {e["test_index"] for e in key["poems"].values() if e["kind"] == "real"}
    assert len(used_titles) == 20 and not used_titles & real  # titles of 20 OTHER poems


def test_the_scores_report_covers_every_set(bench, titled_run, tmp_path, capsys):
    out = tmp_path / "scores.json"
    report = bench("poem_scores").main(
        [str(titled_run), "--count", "4", "--candidates", "2", "--beam", "2", "--threads", "1",
         "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text(encoding="utf-8"))["settings"] == report["settings"]
    results = json.loads((titled_run / "results.json").read_text())
    used = report["titles_used"]
    # the true titles give the run's own test perplexity (same poems, same batch size)
    assert used["true_titles"]["perplexity"] == pytest.approx(
        results["test"]["perplexity"], rel=1e-6
    )
    assert used["other_titles"]["scored_tokens"] == used["true_titles"]["scored_tokens"]
    fresh = used["true_titles_fresh_state"]
    # from a fresh state per poem: every poem character, not the newlines after the poems
    assert fresh["scored_tokens"] == used["true_titles"]["scored_tokens"] - used["poems"]
    assert set(report["sets"]) == {"real", "notes", "sampled", "candidates", "beam"}
    for name, s in report["sets"].items():
        assert s["poems"] == 4, name
        assert s["perplexity"] == pytest.approx(2.718281828 ** -s["mean_score"])
    for name in ("sampled", "candidates", "beam"):
        assert report["sets"][name]["form"] == 1.0
        assert report["sets"][name]["rescored_max_gap"] < 1e-5
        assert report["constrained"][name]["constraints_met"] == 1.0
    assert report["notes_quatrain"]["line_lengths"] == [4, 5, 5, 5]
    assert report["notes_quatrain"]["form_5x4"] is False
    assert report["sets"]["notes"]["form"] == 0.0
    # the real quatrains are the picked test poems, scored given their titles
    assert [r["title"] for r in report["poems"]["real"]] == [
        r["title"] for r in report["poems"]["sampled"]
    ]
    kinds = [e["kind"] for e in report["examples"]]
    assert kinds.count("plain") == kinds.count("acrostic") == kinds.count("title") == 5
    printed = capsys.readouterr().out
    assert "| real held-out quatrains | 4 |" in printed and "### Examples" in printed
