"""Reading text in any encoding: UTF-8 first, byte-order marks and UTF-16 patterns, detection
with a confidence rule, binary files refused, and the given / recorded / hint policies.

Every sample is real-looking text of a few hundred characters, written into the test: Chinese
prose (simplified for GBK/GB18030, traditional for Big5), Japanese for Shift-JIS, English and
French with typographic punctuation for Windows-1252.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

import pytest

from rnnlab.data.dataset import DataConfig, load_data
from rnnlab.data.encodings import AUTO, check_encoding, decode_text, detect_encoding
from rnnlab.data.text_files import load_text_file, read_text, read_text_file
from rnnlab.errors import ConfigError, DataError

SIMPLIFIED = (
    "春天来了，公园里的桃花和杏花都开了，远远望去像一片粉红色的云。"
    "早晨，老人们在湖边打太极拳，孩子们在草地上放风筝，年轻人沿着小路慢跑。"
    "我和妹妹带着面包去喂湖里的鸭子，它们一看见我们就游了过来，叫个不停。"
    "中午的阳光很暖和，我们坐在长椅上读书，听见树上的小鸟在唱歌。"
    "妈妈说，春天是一年里最适合学习新东西的季节，因为万物都在生长。"
    "下午我们去了图书馆，借了几本关于历史和自然的书，准备在周末慢慢地看。"
    "回家的路上，街边的小店飘出包子和豆浆的香味，我们忍不住买了一些。"
    "晚上，爸爸给我们讲了他小时候在农村放牛的故事，大家都听得很入迷。\n"
)
TRADITIONAL = (
    "春天來了，公園裡的桃花和杏花都開了，遠遠望去像一片粉紅色的雲。"
    "早晨，老人們在湖邊打太極拳，孩子們在草地上放風箏，年輕人沿著小路慢跑。"
    "我和妹妹帶著麵包去餵湖裡的鴨子，牠們一看見我們就游了過來，叫個不停。"
    "中午的陽光很暖和，我們坐在長椅上讀書，聽見樹上的小鳥在唱歌。"
    "媽媽說，春天是一年裡最適合學習新東西的季節，因為萬物都在生長。"
    "下午我們去了圖書館，借了幾本關於歷史和自然的書，準備在週末慢慢地看。"
    "回家的路上，街邊的小店飄出包子和豆漿的香味，我們忍不住買了一些。\n"
)
JAPANESE = (
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
    "何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。"
    "今朝は早く起きて、駅前のパン屋でクロワッサンとコーヒーを買いました。"
    "電車の中では、友達から借りた小説を読みながら、窓の外の景色を眺めていました。"
    "会社に着くと、山田さんが新しいプロジェクトの資料を準備してくれていました。"
    "昼休みには近くの公園へ行き、桜の木の下でお弁当を食べました。"
    "夕方になると雨が降り始めたので、傘を持っていない私はコンビニで傘を買いました。\n"
)
WESTERN = (
    "“Well,” she said, “I don’t think we’ll make it before dark — the road’s too long.” "
    "He shrugged… ‘Perhaps,’ he replied, ‘but the café in Saint-Rémy stays open late.’\n"
    "Le garçon apporta deux crèmes brûlées et une bouteille de rosé ; c’était déjà l’été. "
    "« Où est la gare ? » demanda-t-elle — personne ne répondit. Sa sœur aînée, qui "
    "préparait un gâteau aux pêches, lui a crié : « Reviens ! » mais il était déjà loin. "
    "À midi, le maître a félicité les élèves qui avaient réussi l’exercice de géométrie.\n"
)
FRENCH_LATIN1 = (
    "Le garçon est allé à l'école très tôt ce matin ; il a oublié son cahier de français sur "
    "la table de la cuisine. Sa sœur aînée, qui prépare un gâteau aux pêches, lui a crié : "
    "« Reviens ! » mais il était déjà loin. À midi, le maître a félicité les élèves.\n"
).replace("œ", "oe")

# the simplified text less the characters whose UTF-16 form holds a 0x00 byte (such as 一)
NO_NUL = "".join(ch for ch in SIMPLIFIED if 0 not in ch.encode("utf-16-le"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rnnlab.data.encodings"]


def _one_line(info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------- one per encoding
@pytest.mark.parametrize(
    ("text", "written_as", "read_as"),
    [
        (SIMPLIFIED, "gbk", "gb18030"),
        (SIMPLIFIED + "欧元符号€与生僻字𠀀。\n", "gb18030", "gb18030"),  # outside GBK
        (TRADITIONAL, "big5", "big5"),
        (JAPANESE, "shift_jis", "cp932"),
        (JAPANESE + "①②③と㈱は機種依存文字です。\n", "cp932", "cp932"),
        (WESTERN, "cp1252", "cp1252"),
        (FRENCH_LATIN1, "latin-1", "latin-1"),  # no 0x80-0x9F byte: cp1252 and latin-1 agree
    ],
)
def test_a_file_in_a_legacy_encoding_is_detected(
    tmp_path, caplog, text, written_as, read_as
) -> None:
    path = _write(tmp_path / "notes.txt", text.encode(written_as))
    with caplog.at_level(logging.WARNING):
        decoded = read_text(path)
    assert decoded.text == text and decoded.encoding == read_as
    assert _notices(caplog) == [
        f"{path} is not UTF-8; reading it as {read_as} (detected; give --encoding to override)"
    ]


@pytest.mark.parametrize(
    ("text", "written_as", "read_as", "how"),
    [
        (SIMPLIFIED, "utf-16", "utf-16", "byte-order mark"),  # LE, with a mark
        (SIMPLIFIED, "utf-16-le", "utf-16-le", "UTF-16 pattern of NULs"),
        (SIMPLIFIED, "utf-16-be", "utf-16-be", "UTF-16 pattern of NULs"),
        (WESTERN, "utf-16-le", "utf-16-le", "UTF-16 pattern of NULs"),
        (WESTERN, "utf-16-be", "utf-16-be", "UTF-16 pattern of NULs"),
        (NO_NUL, "utf-16-le", "utf-16-le", "detected"),  # no NUL byte: detection's call
        (NO_NUL, "utf-16-be", "utf-16-be", "detected"),
        (JAPANESE, "utf-32-le", "utf-32-le", "UTF-32 pattern of NULs"),
    ],
)
def test_utf16_and_utf32_with_and_without_a_byte_order_mark(
    tmp_path, caplog, text, written_as, read_as, how
) -> None:
    path = _write(tmp_path / "wide.txt", text.encode(written_as))
    with caplog.at_level(logging.WARNING):
        decoded = read_text(path)
    assert decoded.text == text and decoded.encoding == read_as
    assert _notices(caplog) == [
        f"{path} is not UTF-8; reading it as {read_as} ({how}; give --encoding to override)"
    ]


def test_utf16_with_a_big_endian_mark(tmp_path) -> None:
    path = _write(tmp_path / "be.txt", codecs.BOM_UTF16_BE + WESTERN.encode("utf-16-be"))
    assert read_text(path) == read_text(path)  # deterministic
    assert read_text_file(path) == WESTERN


def test_utf8_with_or_without_a_mark_is_read_silently(tmp_path, caplog) -> None:
    plain = _write(tmp_path / "plain.txt", SIMPLIFIED.encode())
    marked = _write(tmp_path / "marked.txt", codecs.BOM_UTF8 + SIMPLIFIED.encode())
    with caplog.at_level(logging.WARNING):
        assert read_text(plain).text == read_text(marked).text == SIMPLIFIED
        assert read_text(marked).encoding == "utf-8"
    assert _notices(caplog) == []


def test_crlf_becomes_lf_in_every_encoding(tmp_path) -> None:
    text = TRADITIONAL.replace("。", "。\r\n")
    path = _write(tmp_path / "crlf.txt", text.encode("big5"))
    assert read_text_file(path) == text.replace("\r\n", "\n")


# ------------------------------------------------------------------------- short / ambiguous
@pytest.mark.parametrize(
    ("text", "written_as", "candidate"),
    [
        ("春天来了，公园里的桃花", "gbk", "gb18030"),  # 11 characters: GBK, Big5, EUC-KR...
        ("春天來了，公園裡的桃花", "big5", "big5"),
        ("今朝は早く起きて", "shift_jis", "cp932"),
        ("plain ascii text, " * 40 + "café", "latin-1", "latin-1"),  # one accented letter
    ],
)
def test_too_little_to_tell_is_an_error_naming_the_candidates(
    tmp_path, text, written_as, candidate
) -> None:
    path = _write(tmp_path / "short.txt", text.encode(written_as))
    with pytest.raises(DataError) as info:
        read_text_file(path)
    message = _one_line(info)
    assert "not valid utf-8 at byte offset" in message and "--encoding" in message
    listed = message[message.index("it could be ") :].split(")")[0]
    assert candidate in listed
    assert read_text_file(path, encoding=candidate) == text  # naming it works


def test_detection_is_right_or_refuses_on_every_prefix() -> None:
    """The measurement behind the confidence rule, on the samples: every prefix is read right
    or refused, never misread; long enough prefixes are read."""
    samples = [
        (SIMPLIFIED, "gbk", 48),
        (TRADITIONAL, "big5", 48),
        (JAPANESE, "shift_jis", 64),
        (WESTERN, "cp1252", 256),
    ]
    for text, written_as, enough in samples:
        for n in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, len(text)):
            piece = text[:n]
            data = piece.encode(written_as)
            found = detect_encoding(data)
            if found.encoding is not None:
                assert data.decode(found.encoding) == piece, (written_as, n, found)
            else:
                assert n < enough, (written_as, n, found)


def test_a_tie_between_latin_readings_goes_to_windows_1252_only_when_it_fits() -> None:
    czech = (
        "Příliš žluťoučký kůň úpěl ďábelské ódy. Včera jsme šli do města, kde na náměstí hrála "
        "kapela a lidé tančili až do večera. Babička upekla koláče se švestkami a dědeček "
        "vyprávěl příběhy o válce. Řeka se leskla ve slunci a děti házely kamínky do vody.\n"
    )
    assert detect_encoding(czech.encode("cp1250")).encoding == "cp1250"
    assert detect_encoding(WESTERN.encode("cp1252")).encoding == "cp1252"


# ------------------------------------------------------------------------- binary
@pytest.mark.parametrize(
    ("data", "mentions", "suggests_encoding"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "a PNG image", False),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4, "a zip archive", False),
        (b"text\x00\x01\x02more text", "NUL bytes", True),
        (bytes(range(256)) * 20, "NUL bytes", True),  # NULs on even offsets, but not UTF-16
        (bytes(range(128, 256)) * 8, "no text encoding reads it", True),
    ],
)
def test_binary_files_are_refused_in_one_line(tmp_path, data, mentions, suggests_encoding) -> None:
    path = _write(tmp_path / "blob.bin", data)
    with pytest.raises(DataError) as info:
        read_text_file(path)
    message = _one_line(info)
    assert "binary" in message and mentions in message
    assert ("--encoding" in message) == suggests_encoding


# ------------------------------------------------------------------------- the policies
def test_a_given_encoding_is_honoured_exactly(tmp_path, caplog) -> None:
    path = _write(tmp_path / "gbk.txt", SIMPLIFIED.encode("gbk"))
    with caplog.at_level(logging.WARNING):
        mojibake = read_text(path, encoding="latin-1")
    assert mojibake.encoding == "latin-1" and mojibake.text == SIMPLIFIED.encode("gbk").decode(
        "latin-1"
    )
    assert _notices(caplog) == []
    with pytest.raises(DataError) as info:
        read_text_file(path, encoding="utf-8")
    message = _one_line(info)
    assert "not utf-8 text" in message and "--encoding gb18030" in message


def test_a_given_utf8_on_a_cp1252_file_names_the_offset_and_the_likely_encoding(
    tmp_path,
) -> None:
    path = _write(tmp_path / "w.txt", WESTERN.encode("cp1252"))
    with pytest.raises(DataError) as info:
        read_text_file(path, encoding="utf-8")
    message = _one_line(info)
    assert "not valid utf-8 at byte offset 0" in message and "--encoding cp1252" in message


def test_unknown_and_non_text_codecs_are_config_errors() -> None:
    for name in ("no-such-codec", "base64", "rot13"):
        with pytest.raises(ConfigError, match="--encoding"):
            check_encoding(name)
    with pytest.raises(ConfigError, match="--encoding"):
        DataConfig(text="x.txt", encoding="zlib")
    assert check_encoding(AUTO) == AUTO


def test_the_recorded_encoding_is_tried_first(tmp_path, caplog) -> None:
    short = "春天来了，公园里的桃花"  # too short to detect, fine as recorded
    path = _write(tmp_path / "short.txt", short.encode("gbk"))
    with caplog.at_level(logging.WARNING):
        assert decode_text(path.read_bytes(), "short.txt", "gb18030", policy="recorded").text == (
            short
        )
        # latin-1 read a UTF-8 file at training: reading it again gives the same text
        same = decode_text("café".encode(), "f", "latin-1", policy="recorded")
    assert same.text == "cafÃ©" and same.encoding == "latin-1"
    assert _notices(caplog) == []


def test_a_file_the_recorded_encoding_fails_on_is_detected_with_a_notice(caplog) -> None:
    data = TRADITIONAL.encode("utf-16")
    with caplog.at_level(logging.WARNING):
        decoded = decode_text(data, "notes.txt", "gb18030", policy="recorded")
    assert decoded.text.lstrip("\ufeff") == TRADITIONAL and decoded.encoding == "utf-16"
    assert _notices(caplog) == [
        "notes.txt is not in the run's encoding gb18030; reading it as utf-16 "
        "(byte-order mark; give --encoding to override)"
    ]


def test_a_hint_keeps_valid_utf8_and_reads_the_rest_in_the_runs_encoding(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        typed = decode_text("春天来了\n".encode(), "standard input", "gb18030", policy="hint")
        ascii_only = decode_text(b"plain text\n", "f", "gb18030", policy="hint")
        short = decode_text("春天来了".encode("gbk"), "f", "gb18030", policy="hint")
    assert typed.text == "春天来了\n" and typed.encoding == "utf-8"
    assert ascii_only.encoding == "gb18030" and short.text == "春天来了"
    assert _notices(caplog) == [
        "standard input is UTF-8, not the run's gb18030; reading it as utf-8 "
        "(valid UTF-8; give --encoding to override)"
    ]


def test_a_hint_that_fails_falls_back_to_detection(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        decoded = decode_text(JAPANESE.encode("cp932"), "ja.txt", "big5", policy="hint")
    assert decoded.text == JAPANESE and decoded.encoding == "cp932"
    assert _notices(caplog) == [
        "ja.txt is not in the run's encoding big5; reading it as cp932 "
        "(detected; give --encoding to override)"
    ]


# ------------------------------------------------------------------------- corpora and data
def test_the_corpus_and_the_data_record_the_encoding(tmp_path) -> None:
    path = _write(tmp_path / "zh.txt", (SIMPLIFIED * 4).encode("gbk"))
    corpus = load_text_file(path)
    assert corpus.encoding == "gb18030" and "".join(corpus.splits.values()) == SIMPLIFIED * 4
    data = load_data(DataConfig(text=str(path)))
    assert data.encoding == "gb18030"
    assert load_data(DataConfig(text=str(path), encoding="gbk")).encoding == "gbk"


def test_valid_and_test_files_are_each_detected(tmp_path) -> None:
    train = _write(tmp_path / "train.txt", (SIMPLIFIED * 3).encode("gbk"))
    valid = _write(tmp_path / "valid.txt", SIMPLIFIED.encode("utf-16"))
    test = _write(tmp_path / "test.txt", SIMPLIFIED.encode("utf-8"))
    corpus = load_text_file(train, valid_path=valid, test_path=test)
    assert corpus.splits["valid"] == corpus.splits["test"] == SIMPLIFIED
    assert corpus.encoding == "gb18030"


def test_large_files_are_judged_on_their_beginning(tmp_path, monkeypatch) -> None:
    from rnnlab.data import encodings

    monkeypatch.setattr(encodings, "SAMPLE_BYTES", 2000)
    text = SIMPLIFIED * 20
    path = _write(tmp_path / "big.txt", text.encode("gb18030"))
    assert read_text(path).text == text
    one_line = _write(tmp_path / "one-line.txt", text.replace("\n", "").encode("gb18030"))
    assert read_text(one_line).encoding == "gb18030"
