"""Corpora: local files and their errors, the download/checksum machinery (no network), Tang
cleaning, the offline default, and split sizes of the real corpora (with RNNLAB_DATA_DIR)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from rnnlab.data import fetch, tang
from rnnlab.data.corpora import load_corpus
from rnnlab.data.default_corpus import default_corpus
from rnnlab.data.fetch import corpus_file, corpus_status, fetch_url
from rnnlab.data.registry import CorpusSpec, get_spec, list_corpora
from rnnlab.data.tang import clean_tang_poem
from rnnlab.data.text_files import load_text_file, read_text_file
from rnnlab.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own empty cache; the mirror is only used where a test asks."""
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# --- local text files ------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_contiguous_split_keeps_every_character_in_order(tmp_path: Path) -> None:
    text = "".join(f"line {i} 😀\n" for i in range(200))
    corpus = load_text_file(_write(tmp_path / "t.txt", text.encode()))
    s = corpus.splits
    assert s["train"] + s["valid"] + s["test"] == text
    assert len(s["valid"]) == round(0.05 * len(text)) == len(s["test"])
    assert corpus.level == "char" and corpus.name == "t.txt"


def test_word_level_cuts_at_whitespace(tmp_path: Path) -> None:
    text = " ".join(f"word{i}" for i in range(500)) + "\n"
    corpus = load_text_file(_write(tmp_path / "w.txt", text.encode()), level="word")
    assert "".join(corpus.splits.values()) == text
    for split in ("valid", "test"):
        assert corpus.splits[split][0].isspace()  # no word is cut in two


def test_explicit_valid_and_test_files(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.txt", b"abc" * 100)
    valid = _write(tmp_path / "valid.txt", b"valid text")
    test = _write(tmp_path / "test.txt", b"test text")
    corpus = load_text_file(train, valid_path=valid, test_path=test)
    assert corpus.splits == {"train": "abc" * 100, "valid": "valid text", "test": "test text"}
    only_valid = load_text_file(train, valid_path=valid, test_fraction=0.1)
    assert only_valid.valid == "valid text" and len(only_valid.test) == 30


def test_bom_is_stripped_and_crlf_normalised(tmp_path: Path) -> None:
    path = _write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + "héllo 𝄞\r\nworld\r\n".encode() * 50)
    corpus = load_text_file(path)
    text = "".join(corpus.splits.values())
    assert not text.startswith("\ufeff") and "\r" not in text
    assert text.startswith("héllo 𝄞\nworld\n")


def test_other_encodings(tmp_path: Path) -> None:
    text = "déjà vu, naïve café\n" * 20
    latin = _write(tmp_path / "latin.txt", text.encode("latin-1"))
    assert "".join(load_text_file(latin, encoding="latin-1").splits.values()) == text
    wide = _write(tmp_path / "wide.txt", ("汉字😀\n" * 30).encode("utf-16"))
    assert "".join(load_text_file(wide, encoding="utf-16").splits.values()) == "汉字😀\n" * 30


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: d / "missing.txt", "not found"),
        (lambda d: d, "directory"),
        (lambda d: _write(d / "empty.txt", b""), "empty"),
        (lambda d: _write(d / "bom-only.txt", b"\xef\xbb\xbf"), "empty"),
        (lambda d: _write(d / "nul.bin", b"text\x00\x01\x02more text"), "binary"),
        (lambda d: _write(d / "noise.bin", bytes(range(128, 256)) * 8), "binary"),
        (lambda d: _write(d / "tiny.txt", b"ab"), "too short"),
    ],
)
def test_bad_files_give_one_line_data_errors(setup, match: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_text_file(setup(tmp_path))
    assert match in _one_line(info)


def test_wrong_encoding_names_the_option_and_offset(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin.txt", "plain ascii then café".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_text_file(path)
    message = _one_line(info)
    assert "--encoding" in message and "byte offset 20" in message


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.txt", b"some text " * 20)
    with pytest.raises(ConfigError, match="encoding"):
        load_text_file(path, encoding="no-such-codec")
    with pytest.raises(ConfigError):
        load_text_file(path, valid_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError):
        load_text_file(path, level="byte")


# --- the registry ----------------------------------------------------------------------------


def test_registry_lists_the_named_corpora() -> None:
    names = [s.name for s in list_corpora()]
    assert names == ["ptb", "wikitext2", "tinyshakespeare", "linux", "poetry-zh", "tang"]
    for spec in list_corpora():
        assert set(spec.urls) == set(spec.sha256) == set(spec.files)
        assert all(len(h) == 64 for h in spec.sha256.values())
        assert all(u.startswith("https://raw.githubusercontent.com/") for u in spec.urls.values())
    assert len(get_spec("tang").files) == 58
    assert get_spec("ptb").urls["ptb/train.txt"].endswith("ptb.train.txt.gz")


def test_unknown_corpus_and_option() -> None:
    with pytest.raises(ConfigError) as info:
        load_corpus("shakespeare")
    assert "tinyshakespeare" in _one_line(info)
    with pytest.raises(ConfigError, match="script"):
        load_corpus("ptb", script="traditional")
    with pytest.raises(ConfigError):
        load_corpus("tang", script="cursive", download=False)


def test_offline_error_says_how_to_provide_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNLAB_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        load_corpus("ptb", download=False)
    message = _one_line(info)
    assert "RNNLAB_DATA_DIR" in message and "ptb/train.txt" in message and "online" in message


# --- download, checksum, cache: a fake corpus served from file:// URLs ------------------------


def _fake_spec(tmp_path: Path, content: bytes, *, gz: bool = False) -> CorpusSpec:
    upstream = tmp_path / "upstream" / ("data.txt.gz" if gz else "data.txt")
    upstream.parent.mkdir(parents=True, exist_ok=True)
    upstream.write_bytes(gzip.compress(content) if gz else content)
    rel = "fake/data.txt"
    return CorpusSpec(
        name="fake",
        description="a test corpus",
        level="char",
        files=(rel,),
        urls={rel: upstream.as_uri()},
        sha256={rel: hashlib.sha256(content).hexdigest()},
        license="none",
        source="test",
    )


@pytest.fixture
def no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNLAB_DATA_DIR", raising=False)


def _cache_leftovers() -> list[Path]:
    root = fetch.cache_dir() / "data"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("gz", [False, True])
def test_download_verifies_and_caches(tmp_path: Path, no_mirror: None, gz: bool) -> None:
    spec = _fake_spec(tmp_path, "upstream text ✓\n".encode(), gz=gz)
    assert corpus_status(spec) == "downloadable"
    path = corpus_file(spec, "fake/data.txt")  # real urllib on a file:// URL
    assert path.read_bytes() == "upstream text ✓\n".encode()
    assert path == fetch.cache_dir() / "data" / "fake/data.txt"
    assert corpus_status(spec) == "cached"
    assert _cache_leftovers() == [path]  # no temporary files left behind

    def offline(url: str, timeout: float) -> bytes:
        raise AssertionError("a cached file must not be downloaded again")

    assert corpus_file(spec, "fake/data.txt", fetch=offline) == path


def test_checksum_mismatch_is_refused_and_removed(tmp_path: Path, no_mirror: None) -> None:
    spec = _fake_spec(tmp_path, b"the real text")
    with pytest.raises(DataError) as info:
        corpus_file(spec, "fake/data.txt", fetch=lambda url, timeout: b"tampered text")
    message = _one_line(info)
    assert "checksum mismatch" in message and "deleted" in message
    assert _cache_leftovers() == []


def test_corrupt_cached_file_is_replaced(tmp_path: Path, no_mirror: None) -> None:
    spec = _fake_spec(tmp_path, b"good bytes")
    cached = fetch.cache_dir() / "data" / "fake/data.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"bad bytes")
    assert corpus_file(spec, "fake/data.txt").read_bytes() == b"good bytes"


def test_mirror_is_used_first_and_checked(tmp_path: Path, no_mirror: None) -> None:
    spec = _fake_spec(tmp_path, b"mirror bytes")
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    (mirror / "fake/data.txt").write_bytes(b"mirror bytes")

    def offline(url: str, timeout: float) -> bytes:
        raise AssertionError("the mirror must be used without downloading")

    assert corpus_file(spec, "fake/data.txt", data_dir=mirror, fetch=offline).parent.parent == (
        mirror
    )
    assert corpus_status(spec, data_dir=mirror) == "mirror"
    (mirror / "fake/data.txt").write_bytes(b"altered bytes")
    with pytest.raises(DataError, match="sha256"):
        corpus_file(spec, "fake/data.txt", data_dir=mirror, fetch=offline)


def test_network_failure_is_a_data_error(tmp_path: Path, no_mirror: None) -> None:
    spec = _fake_spec(tmp_path, b"x")
    (tmp_path / "upstream" / "data.txt").unlink()  # the file:// URL now fails like a 404
    with pytest.raises(DataError) as info:
        corpus_file(spec, "fake/data.txt")
    assert "cannot download" in _one_line(info) and "RNNLAB_DATA_DIR" in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_data_dir_set_to_a_missing_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    spec = _fake_spec(tmp_path, b"upstream bytes")
    wrong = tmp_path / "no-such-mirror"
    if kind == "file":
        wrong.write_text("not a folder")
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(wrong))
    what = "a file, not a folder" if kind == "file" else "a folder that does not exist"
    with pytest.raises(DataError) as info:  # offline: the cache does not hold it
        corpus_file(spec, "fake/data.txt", download=False)
    message = _one_line(info)
    assert f"RNNLAB_DATA_DIR is set to {wrong}, {what}" in message and "fake/data.txt" in message

    def offline(url: str, timeout: float) -> bytes:
        raise urllib.error.URLError("no network")

    with pytest.raises(DataError) as info:  # online but the download fails
        corpus_file(spec, "fake/data.txt", fetch=offline)
    message = _one_line(info)
    assert f"RNNLAB_DATA_DIR is set to {wrong}, {what}" in message
    assert "cannot download" in message and "no network" in message
    with caplog.at_level("WARNING", logger="rnnlab"):  # the download works: said, then used
        path = corpus_file(spec, "fake/data.txt")
    assert path.read_bytes() == b"upstream bytes"
    assert f"RNNLAB_DATA_DIR is set to {wrong}" in caplog.text and "cache" in caplog.text


def test_fetch_url_reads_file_urls(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.bin", b"\x00\x01bytes")
    assert fetch_url(path.as_uri(), 5.0) == b"\x00\x01bytes"


# --- Tang cleaning (synthetic poems) -------------------------------------------------------


@pytest.mark.parametrize(
    ("paragraphs", "expected"),
    [
        (
            ["秦川雄帝宅，函谷壯皇居。", "綺殿千尋起，離宮百雉餘。"],
            "秦川雄帝宅，函谷壯皇居。綺殿千尋起，離宮百雉餘。",
        ),
        (["邏人（一作「叉」）橫鳥道，江祖出魚梁。"], "邏人橫鳥道，江祖出魚梁。"),
        (["白日依山盡，黃河入海流。（注（內）文）"], "白日依山盡，黃河入海流。"),  # nested
        (["欲窮千里目，更上一層樓。（未完的注"], "欲窮千里目，更上一層樓。"),  # unclosed
        (["[爽]節在重九，物華新雨餘。"], "爽節在重九，物華新雨餘。"),  # restored char kept
        (["南橋昏曉人萬萬[二]，北邙新故塚千千。"], "南橋昏曉人萬萬，北邙新故塚千千。"),
        (["教人眼暫明。（注）。"], "教人眼暫明。"),  # punctuation collapsed
        ([" 山 中 \n"], "山中"),
        (["妖韶援綠{𥫗/戢}。"], None),  # composed character
        (["□□常相隨，吳門與南畝。"], None),  # lost characters
        (["●●啼深竹，鵁鶄老溼沙。"], None),
        (["拭淚聽猿嗁/。"], None),  # stray editorial mark
        (["（全是注釋）"], None),
        ([], None),
    ],
)
def test_clean_tang_poem(paragraphs: list[str], expected: str | None) -> None:
    text, verdict = clean_tang_poem(paragraphs)
    assert text == expected
    assert (verdict == "kept") == (expected is not None)


# --- the offline default ---------------------------------------------------------------------


def test_default_corpus_is_the_bundled_tiny_shakespeare_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mirror, an empty cache and no network: the package's own copy is unpacked, checked
    against the upstream sha256 and split 90/10 (test = valid) like the named corpus."""
    monkeypatch.delenv("RNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    spec = get_spec("tinyshakespeare")
    assert corpus_status(spec) == "bundled"
    full = default_corpus()
    assert full.name == "tinyshakespeare" and full.level == "char"
    assert len(full.train) == 1_003_854 and full.valid == full.test
    assert len(full.train) + len(full.valid) == 1_115_394
    assert full.train.startswith("First Citizen:\nBefore we proceed any further")
    assert corpus_status(spec) == "cached"  # unpacked once, verified, reused
    small = default_corpus(max_chars=60_000)
    assert len(small.train) == 54_000 and small.valid == small.test and len(small.valid) == 6_000
    assert small.train == full.train[:54_000]


def test_a_corrupt_bundled_copy_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    spec = get_spec("tinyshakespeare")
    monkeypatch.setattr(fetch.lzma, "decompress", lambda data: b"First Citizen:\n")
    with pytest.raises(DataError, match="shipped with rnnlab fails its checksum"):
        corpus_file(spec, "tinyshakespeare/input.txt", download=False)
    assert not (tmp_path / "cache" / "data" / "tinyshakespeare" / "input.txt").exists()


def test_default_corpus_rejects_tiny_sizes() -> None:
    with pytest.raises(ConfigError):
        default_corpus(max_chars=10)


# --- real corpora from the mirror ---------------------------------------------------------


def _data_dir() -> Path:
    env = os.environ.get("RNNLAB_DATA_DIR")
    if not env or not Path(env).is_dir():
        pytest.skip("RNNLAB_DATA_DIR is not set to the corpus mirror")
    return Path(env)


def _offline(url: str, timeout: float) -> bytes:
    raise AssertionError(f"tests must not download ({url})")


@pytest.mark.corpus
def test_all_named_corpora_are_in_the_mirror() -> None:
    data_dir = _data_dir()
    assert {corpus_status(s, data_dir=data_dir) for s in list_corpora()} == {"mirror"}


@pytest.mark.corpus
def test_real_specs_download_through_a_fake_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve the mirror's bytes as if they were upstream (gzipped for .gz URLs): every URL
    names the right file, .gz is unpacked, and every sha256 in the registry matches."""
    data_dir = _data_dir()
    monkeypatch.delenv("RNNLAB_DATA_DIR")
    served = []

    def fake_fetch(url: str, timeout: float) -> bytes:
        spec_rel = next(r for s in list_corpora() for r, u in s.urls.items() if u == url)
        served.append(url)
        data = (data_dir / spec_rel).read_bytes()
        return gzip.compress(data) if url.endswith(".gz") else data

    for spec in list_corpora():
        for rel in spec.files[:3]:
            name = rel.rsplit("/", 1)[1]
            assert spec.urls[rel].endswith((f"/{name}", f".{name}.gz"))
            path = corpus_file(spec, rel, fetch=fake_fetch)
            assert path.read_bytes() == (data_dir / rel).read_bytes()
    assert any(u.endswith(".gz") for u in served)
    assert corpus_status(get_spec("ptb")) == "cached"


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["ptb", "wikitext2", "linux"])
def test_file_split_corpora_are_the_files(name: str) -> None:
    data_dir = _data_dir()
    corpus = load_corpus(name, data_dir=data_dir, fetch=_offline)
    folder = get_spec(name).files[0].split("/")[0]
    for split in ("train", "valid", "test"):
        expected = (data_dir / folder / f"{split}.txt").read_text(encoding="utf-8")
        assert corpus.splits[split] == expected


@pytest.mark.corpus
def test_tinyshakespeare_split() -> None:
    _data_dir()
    corpus = load_corpus("tinyshakespeare", fetch=_offline)  # mirror from RNNLAB_DATA_DIR
    n = 1_115_394  # characters, SOURCE.md
    assert len(corpus.train) == int(0.9 * n) and len(corpus.valid) == n - int(0.9 * n)
    assert corpus.test == corpus.valid  # no standard test split
    assert corpus.train.startswith("First Citizen:")


@pytest.mark.corpus
def test_poetry_zh_split_by_lines() -> None:
    corpus = load_corpus("poetry-zh", data_dir=_data_dir(), fetch=_offline)
    counts = {k: v.count("\n") for k, v in corpus.splits.items()}
    assert sum(counts.values()) == 72_514  # lines, SOURCE.md
    assert counts["valid"] == counts["test"] == round(0.05 * 72_514)
    assert corpus.script == "simplified" and corpus.train.startswith("寒随穷律变，春逐鸟声开。")


@pytest.fixture(scope="module")
def tang_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One processed-text cache shared by the Tang tests, so each option set is built once."""
    yield tmp_path_factory.mktemp("tang-cache")


def _load_tang(cache: Path, monkeypatch: pytest.MonkeyPatch, **options: object):
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(cache))
    return load_corpus("tang", data_dir=_data_dir(), fetch=_offline, **options)


@pytest.mark.corpus
def test_tang_poems_are_clean_and_simplified(
    tang_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _load_tang(tang_cache, monkeypatch)
    stats = corpus.stats
    assert stats["poems_total"] == 57_607  # SOURCE.md
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    assert stats["kept"] + dropped == stats["poems_total"]
    assert stats["kept"] > 0.97 * stats["poems_total"]
    lines = {k: v.split("\n")[:-1] for k, v in corpus.splits.items()}
    assert sum(len(v) for v in lines.values()) == stats["kept"]
    assert len(lines["valid"]) == sum(1 for i in range(stats["kept"]) if i % 20 == 18)
    assert len(lines["test"]) == sum(1 for i in range(stats["kept"]) if i % 20 == 19)
    text = "".join(corpus.splits.values())
    for mark in "（）()[]{}□●":
        assert mark not in text
    assert corpus.script == "simplified" and "長" not in text and "长" in text
    first = lines["train"][0]  # the first poem of poet.tang.0.json, converted
    assert first.startswith("秦川雄帝宅，函谷壮皇居。绮殿千寻起，离宫百雉余。")
    assert first.endswith("云日隐层阙，风烟出绮疎。")


@pytest.mark.corpus
def test_tang_traditional_and_titles(tang_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trad = _load_tang(tang_cache, monkeypatch, script="traditional")
    assert trad.script == "traditional" and "長" in trad.train
    assert trad.train.startswith("秦川雄帝宅，函谷壯皇居。")
    titled = _load_tang(tang_cache, monkeypatch, titles=True)
    first = titled.train.split("\n")[0]
    assert first.startswith("帝京篇十首 一:秦川雄帝宅，函谷壮皇居。")
    assert titled.train.count("\n") == trad.train.count("\n")
    assert titled.title_sep == ":" and trad.title_sep is None
    for line in titled.train.split("\n")[:-1]:  # exactly one separator: the title's end
        assert line.count(":") == 1


@pytest.mark.corpus
def test_tang_second_load_comes_from_the_processed_cache(
    tang_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _load_tang(tang_cache, monkeypatch)
    assert list((tang_cache / "processed").glob("tang-*.json"))

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached text should have been used")

    monkeypatch.setattr(tang, "_build_tang", no_rebuild)
    assert _load_tang(tang_cache, monkeypatch) == first
    for path in (tang_cache / "processed").glob("tang-*.json"):
        assert set(json.loads(path.read_text(encoding="utf-8"))) == {"splits", "stats"}


def test_utf16_read_as_utf8_names_the_option(tmp_path):
    p = tmp_path / "utf16.txt"
    p.write_bytes("some text\nmore text\n".encode("utf-16"))
    with pytest.raises(DataError, match="--encoding utf-16"):
        read_text_file(p, encoding="utf-8")  # given: honoured exactly
    assert read_text_file(p, encoding="utf-16").startswith("some text")
    assert read_text_file(p) == "some text\nmore text\n"  # auto: the byte-order mark says so


def test_a_fifo_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_text_file(fifo)  # would block forever if it were opened
