"""``--poet``: one author's poems of the Tang corpus, in the whole corpus's split; the name in
either script; unknown names refused with close matches. A tiny fake Tang JSON stands in for
the corpus; the last tests read the real one (skipped without RNNLAB_DATA_DIR)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from rnnlab.config.run import RunConfig
from rnnlab.data import corpora
from rnnlab.data.corpora import load_corpus
from rnnlab.data.dataset import DataConfig
from rnnlab.data.registry import get_spec
from rnnlab.errors import ConfigError, DataError

DIGITS = "零一二三四五六七八九"  # the fake poems carry their index in these
POETS = ("李白", "王維", "杜甫")  # poem i is by POETS[i % 3]; a 61st poem is 孤雲's
N = 60
TINY = ["--layers", "1", "--hidden", "16", "--embed", "8", "--bptt", "8", "--batch-size", "2"]
QUIET = ["--eval-batch-size", "2", "--no-progress", "--no-sample", "--threads", "1"]


def fake_poems() -> list[dict]:
    poems = []
    for i in range(N):
        code = "".join(DIGITS[int(d)] for d in f"{i:02d}")
        poems.append(
            {
                "author": POETS[i % 3],
                "title": f"詩{code}",
                "paragraphs": [f"長安{code}月，", "春風吹不盡。"],
                "id": str(i),
            }
        )
    poems.append({"author": "孤雲", "title": "孤", "paragraphs": ["孤雲獨去閒。"], "id": "60"})
    return poems


def index_of(line: str) -> int:
    """The index a fake poem's line carries (between 安 and 月)."""
    code = line[line.index("安") + 1 : line.index("月")]
    return int("".join(str(DIGITS.index(c)) for c in code))


def indices(text: str) -> list[int]:
    return [index_of(line) for line in text.splitlines()]


@pytest.fixture
def fake_tang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-file Tang corpus in a mirror of its own, and an empty cache."""
    rel = "chinese-poetry/全唐诗/poet.tang.0.json"
    path = tmp_path / "mirror" / rel
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(fake_poems(), ensure_ascii=False), encoding="utf-8")
    real = get_spec("tang")
    spec = dataclasses.replace(
        real,
        files=(rel,),
        urls={rel: "https://example.invalid/poet.tang.0.json"},
        sha256={rel: hashlib.sha256(path.read_bytes()).hexdigest()},
    )
    monkeypatch.setattr(
        corpora, "get_spec", lambda name: spec if name == "tang" else get_spec(name)
    )
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_a_poet_keeps_his_poems_in_the_whole_corpus_split(fake_tang):
    corpus = load_corpus("tang", poet="李白", download=False)
    assert corpus.name == "tang:李白"
    mine = [i for i in range(N) if i % 3 == 0]
    assert indices(corpus.valid) == [i for i in mine if i % 20 == 18] == [18]
    assert indices(corpus.test) == [i for i in mine if i % 20 == 19] == [39]
    assert indices(corpus.train) == [i for i in mine if i % 20 < 18]
    assert corpus.stats["poems_train"] == len(indices(corpus.train))
    # simplified by default, as the whole corpus is
    assert corpus.train.startswith("长安零零月，春风吹不尽。\n")
    # the test poems of a poet are test poems of the whole corpus: never trained on by a run
    # on all the poems that a poet-only run is fine-tuned from
    whole = load_corpus("tang", download=False)
    assert set(indices(corpus.test)) <= set(indices(whole.test))
    assert set(indices(corpus.valid)) <= set(indices(whole.valid))
    assert not set(indices(corpus.train)) & set(indices(whole.test) + indices(whole.valid))


def test_the_split_is_deterministic_and_cached_per_poet(fake_tang):
    first = load_corpus("tang", poet="杜甫", download=False)
    again = load_corpus("tang", poet="杜甫", download=False)
    assert first == again
    cached = sorted((fake_tang / "cache" / "processed").glob("tang-*.json"))
    whole = load_corpus("tang", download=False)
    assert len(sorted((fake_tang / "cache" / "processed").glob("tang-*.json"))) == len(cached) + 1
    assert whole.name == "tang" and whole.stats["poems_total"] == N + 1


def test_the_name_in_either_script(fake_tang):
    traditional = load_corpus("tang", poet="王維", download=False)
    simplified = load_corpus("tang", poet="王维", download=False)
    assert traditional.splits == simplified.splits
    assert indices(traditional.test) == [19]
    kept = load_corpus("tang", poet="王维", script="traditional", download=False)
    assert kept.train.startswith("長安零一月，春風吹不盡。\n")  # poem 1, unconverted


def test_an_unknown_poet_lists_close_matches_in_the_script_asked_for(fake_tang):
    with pytest.raises(ConfigError) as e:
        load_corpus("tang", poet="李百", download=False)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("no poet '李百' in the tang corpus; close matches: 李白 (20 poems)")
    with pytest.raises(ConfigError, match=r"close matches: 王维 \(20 poems\)"):
        load_corpus("tang", poet="王唯", download=False)
    with pytest.raises(ConfigError, match=r"close matches: 王維 \(20 poems\)"):
        load_corpus("tang", poet="王唯", script="traditional", download=False)
    with pytest.raises(ConfigError, match="no close match among its 4 authors"):
        load_corpus("tang", poet="Li Bai", download=False)
    with pytest.raises(ConfigError, match="needs an author's name"):
        load_corpus("tang", poet="  ", download=False)


def test_a_poet_without_valid_or_test_poems_is_refused(fake_tang):
    with pytest.raises(DataError, match=r"'孤雲' has 1 poem .*none in valid or test"):
        load_corpus("tang", poet="孤雲", download=False)


def test_poet_is_only_for_the_tang_corpus():
    with pytest.raises(ConfigError, match="--poet keeps one poet's poems of the tang corpus"):
        DataConfig(corpus="ptb", corpus_options={"poet": "李白"})
    with pytest.raises(ConfigError, match="use --corpus tang or drop --poet"):
        DataConfig(text="/tmp/x.txt", corpus_options={"poet": "李白"})
    with pytest.raises(ConfigError, match="has no option poet"):
        load_corpus("ptb", poet="李白", download=False)


def test_train_and_config_with_poet(fake_tang, run_cli, tmp_path):
    code, out, err = run_cli("config", "--corpus", "tang", "--poet", "李白", "--json")
    assert code == 0, err
    assert json.loads(out)["data"]["corpus_options"] == {"poet": "李白"}
    run = tmp_path / "poet-run"
    code, out, err = run_cli(
        "train", "--corpus", "tang", "--poet", "李白", *TINY, "--max-steps", "3", "--out", run,
        *QUIET,
    )  # fmt: skip
    assert code == 0, err
    assert "tang:李白 (char)" in err.splitlines()[0]
    saved = RunConfig.from_dict(json.loads((run / "run.json").read_text(encoding="utf-8")))
    assert saved.data.corpus_options == {"poet": "李白"}
    code, _, err = run_cli("train", "--corpus", "tang", "--poet", "李百", *TINY, *QUIET)
    assert code == 2 and err.startswith("rnnlab: error: no poet '李百'") and err.count("\n") == 1
    code, _, err = run_cli("train", "--resume", run, "--poet", "杜甫", "--no-progress")
    assert code == 2 and "it cannot change --poet (allowed:" in err
    code, _, err = run_cli("config", "--corpus", "ptb", "--poet", "李白")
    assert code == 2 and "--poet keeps one poet's poems of the tang corpus" in err


def test_fine_tune_a_whole_corpus_run_on_one_poet(fake_tang, run_cli, tmp_path):
    source = tmp_path / "all"
    code, _, err = run_cli(
        "train", "--corpus", "tang", *TINY, "--max-steps", "3", "--out", source, *QUIET
    )
    assert code == 0, err
    tuned = tmp_path / "libai"
    code, _, err = run_cli(
        "train", "--init-from", source, "--corpus", "tang", "--poet", "李白",
        "--max-steps", "2", "--out", tuned, *QUIET,
    )  # fmt: skip
    assert code == 0, err
    first = err.splitlines()[0]
    assert "tang:李白 (char)" in first and "fine-tuned from" in first
    init = json.loads((tuned / "run.json").read_text(encoding="utf-8"))["train"]["init_from"]
    assert init["run"] == str(source.absolute()) and init["step"] == 3


# ----------------------------------------------------------------------------- real data
@pytest.mark.corpus
def test_libai_on_the_real_corpus(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))

    def offline(url: str, timeout: float) -> bytes:
        raise AssertionError(f"tests must not download ({url})")

    libai = load_corpus("tang", data_dir=data_dir, fetch=offline, poet="李白")
    whole = load_corpus("tang", data_dir=data_dir, fetch=offline)
    lines = {k: v.splitlines() for k, v in libai.splits.items()}
    total = sum(len(v) for v in lines.values())
    assert 1_100 < total <= 1_207  # his 1,207 records, less those the cleaning drops
    assert 0.03 * total < len(lines["test"]) < 0.07 * total
    # 静夜思 happens to be one of the corpus's test poems: held out from his training too
    assert "床前看月光，疑是地上霜。举头望山月，低头思故乡。" in lines["test"]
    assert any(line.startswith("君不见黄河之水天上来") for v in lines.values() for line in v)
    whole_lines = {k: set(v.splitlines()) for k, v in whole.splits.items()}
    for split in ("valid", "test"):  # held out from the whole corpus's training too
        assert set(lines[split]) <= whole_lines[split]
    assert (
        not set(lines["train"]) - whole_lines["train"] - whole_lines["valid"] - whole_lines["test"]
    )
