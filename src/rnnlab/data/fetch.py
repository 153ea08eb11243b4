"""Finding, checking and downloading the files of named corpora.

A file of a :class:`~rnnlab.data.registry.CorpusSpec` is looked up, in order, in

1. ``data_dir`` (argument) or the folder named by the env var ``RNNLAB_DATA_DIR``: a local
   mirror with the same relative paths (e.g. ``ptb/train.txt``);
2. the user cache, ``platformdirs.user_cache_dir("rnnlab")/data`` (override the cache root
   with the env var ``RNNLAB_CACHE_DIR``);
3. the copy shipped inside the package, for a corpus that has one (``CorpusSpec.bundled``:
   Tiny Shakespeare, the offline default): unpacked from ``rnnlab/data/bundled/`` into the
   cache, so ``rnnlab train`` needs no network and no mirror;
4. upstream, when ``download=True``: fetched with :func:`fetch_url` (or the ``fetch`` you
   pass), gunzipped if the URL ends in ``.gz``, its sha256 checked, then written atomically
   (:func:`rnnlab.atomic.write_atomic`). A file whose checksum differs is deleted and refused.

Every file used is checked against its sha256, mirror files included.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import lzma
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import platformdirs

from rnnlab.atomic import write_atomic
from rnnlab.data.registry import CorpusSpec
from rnnlab.errors import DataError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "RNNLAB_DATA_DIR"
CACHE_DIR_ENV = "RNNLAB_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 60.0

Fetch = Callable[[str, float], bytes]
"""A downloader: ``fetch(url, timeout_s) -> bytes``. Tests pass a fake one."""


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


def mirror_problem() -> str | None:
    """What is wrong with ``$RNNLAB_DATA_DIR`` when it is set to something that is not a folder
    (a path that does not exist, or a file), for the messages of a corpus not found; else None."""
    env = os.environ.get(DATA_DIR_ENV)
    if not env or Path(env).is_dir():
        return None
    what = "a file, not a folder" if Path(env).exists() else "a folder that does not exist"
    return f"{DATA_DIR_ENV} is set to {env}, {what}"


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
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

    def mismatch(got: str) -> str:
        return (
            f"checksum mismatch for {rel} downloaded from {url}: sha256 {got[:12]}... "
            f"expected {spec.sha256[rel][:12]}...; the file was deleted; {hint}"
        )

    _write_checked(spec, rel, target, data, mismatch, f" or {DATA_DIR_ENV} to a folder with {rel}")


def _write_checked(
    spec: CorpusSpec,
    rel: str,
    target: Path,
    data: bytes,
    mismatch: Callable[[str], str],
    also: str = "",
) -> None:
    """Write ``data`` to ``target`` atomically if its sha256 is ``spec``'s for ``rel``: the
    bytes are checked in the temporary file and renamed only if they match, so wrong bytes
    never appear under the real name (``mismatch(got)`` is the error; ``also`` extends the
    advice when the folder is not writable)."""

    def check(tmp: Path) -> None:
        got = sha256_file(tmp)
        if got != spec.sha256[rel]:
            raise DataError(mismatch(got))

    try:
        write_atomic(target, data, check=check)
    except OSError as exc:
        raise DataError(
            f"cannot write {target} ({exc.strerror or exc}); set {CACHE_DIR_ENV} to a writable "
            f"folder{also}"
        ) from None


def _unpack_bundled(spec: CorpusSpec, rel: str, target: Path) -> None:
    """Unpack the package's xz copy of ``rel`` into ``target``, checked like a download."""
    name = (spec.bundled or {})[rel]
    try:
        data = lzma.decompress(
            resources.files("rnnlab.data").joinpath("bundled", name).read_bytes()
        )
    except (OSError, lzma.LZMAError) as exc:
        raise DataError(
            f"the copy of {rel} shipped with rnnlab is unreadable ({exc}); reinstall rnnlab, or "
            f"set {DATA_DIR_ENV} to a folder with {rel}"
        ) from None

    def mismatch(got: str) -> str:
        return f"the copy of {rel} shipped with rnnlab fails its checksum; reinstall rnnlab"

    _write_checked(spec, rel, target, data, mismatch)


def corpus_file(
    spec: CorpusSpec,
    rel: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    fetch: Fetch | None = None,
) -> Path:
    """Path of one checksum-verified file ``rel`` of ``spec``: from the mirror (``data_dir``
    or ``$RNNLAB_DATA_DIR``), else the user cache, else the package's own copy or a download,
    unpacked into the cache."""
    expected = spec.sha256[rel]
    for mirror in _mirrors(data_dir):
        path = mirror / rel
        if path.is_file():
            got = sha256_file(path)
            if got != expected:
                raise DataError(
                    f"{path} has sha256 {got[:12]}... but {spec.name} expects "
                    f"{expected[:12]}...; replace it with the upstream file {spec.urls[rel]}"
                )
            return path
    cached = cache_dir() / "data" / rel
    if cached.is_file():
        if sha256_file(cached) == expected:
            return cached
        logger.warning("cached %s fails its checksum; removing it", cached)
        cached.unlink(missing_ok=True)
    if spec.bundled and rel in spec.bundled:
        _unpack_bundled(spec, rel, cached)
        return cached
    problem = mirror_problem()  # only a missing file needs the mirror's problem explained
    if not download:
        if problem is not None:
            raise DataError(
                f"corpus '{spec.name}' needs {rel}, but {problem}, and the cache "
                f"{cache_dir() / 'data'} does not hold it; set {DATA_DIR_ENV} to the corpus "
                f"mirror (a folder with {rel}), or go online"
            )
        where = f"{DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV) else f"{DATA_DIR_ENV} (unset)"
        raise DataError(
            f"corpus '{spec.name}' needs {rel}, found neither in {where} nor in the cache "
            f"{cache_dir() / 'data'}; set {DATA_DIR_ENV} to a folder with {rel}, or go online"
        )
    try:
        _download(spec, rel, cached, fetch or fetch_url)
    except DataError as e:
        if problem is None:
            raise
        raise DataError(f"{problem}, so {rel} was not found there; {e}") from None
    if problem is not None:
        logger.warning("%s; downloaded %s into the cache %s instead", problem, rel, cached)
    return cached


def corpus_status(spec: CorpusSpec, *, data_dir: str | Path | None = None) -> str:
    """Where ``spec``'s files are: ``"mirror"``, ``"cached"`` (some or all in the user cache,
    the rest in a mirror), ``"bundled"`` (shipped inside the package, unpacked on first use) or
    ``"downloadable"`` (some are missing and will be downloaded on first use). Checks existence
    only (no hashing), so it is instant."""
    mirrors = _mirrors(data_dir)
    in_mirror = [any((m / rel).is_file() for m in mirrors) for rel in spec.files]
    if all(in_mirror):
        return "mirror"
    cache = cache_dir() / "data"
    if all(m or (cache / rel).is_file() for m, rel in zip(in_mirror, spec.files, strict=True)):
        return "cached"
    bundled = spec.bundled or {}
    if all(
        m or (cache / rel).is_file() or rel in bundled
        for m, rel in zip(in_mirror, spec.files, strict=True)
    ):
        return "bundled"
    return "downloadable"
