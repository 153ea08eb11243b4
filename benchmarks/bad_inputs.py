"""Try every bad or odd input we know of on the real command line; write the table of answers.

Each case runs ``rnnlab`` (in this process, through :func:`rnnlab.cli.main`, with exactly the
exit code ``python -m rnnlab`` would give) in a scratch directory, and records the exit code and
the last line on stderr. The table goes to ``docs/bad-inputs.md``::

    python benchmarks/bad_inputs.py                  # all cases -> docs/bad-inputs.md
    python benchmarks/bad_inputs.py --out /tmp/t.md  # elsewhere
    python benchmarks/bad_inputs.py --torchrun       # also the distributed cases (slow)

A case passes when it ends as the table says it should: the expected exit code and a one-line
message (no traceback). The script exits 1 if any case does not.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from rnnlab.cli import main
from rnnlab.runs import checkpoint as ck

ENGLISH = (
    "the quick brown fox jumps over the lazy dog. " * 40
    + "pack my box with five dozen liquor jugs.\n" * 40
)
SMALL = ["--hidden", "16", "--embed", "8", "--layers", "1", "--bptt", "8", "--batch-size", "4"]
QUIET = ["--no-progress", "--no-sample", "--threads", "1"]
HUGE = 5 * 2**20  # 5 MiB on one line


@dataclass
class Case:
    group: str
    what: str
    argv: list[str]
    expect: int  # exit code
    note: str = ""
    torchrun: bool = False
    result: dict = field(default_factory=dict)


class PickleBomb:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def make_files(d: Path) -> dict[str, Path]:
    """The bad and odd inputs, written once into ``d``."""
    f = {}

    def put(name: str, data: bytes) -> None:
        f[name] = d / name
        f[name].write_bytes(data)

    put("english.txt", ENGLISH.encode())
    put("empty.txt", b"")
    put("bom-only.txt", b"\xef\xbb\xbf")
    put("bom.txt", b"\xef\xbb\xbf" + ENGLISH.encode())
    put("binary.bin", bytes(range(256)) * 20)
    put("image.png", b"\x89PNG\r\n\x1a\n" + bytes((i * 7919) % 251 for i in range(4000)))
    put("latin1.txt", ("café au lait, crème brûlée. " * 100).encode("latin-1"))
    mixed = ENGLISH[:2000].encode() + "crème brûlée ".encode("latin-1") + ENGLISH[:2000].encode()
    put("mixed.txt", mixed)
    put("utf16.txt", ENGLISH.encode("utf-16"))
    put("emoji.txt", ("hi 😀 there 𝄞 ok 🦊 𠀀\n" * 60).encode())
    put("one-symbol.txt", b"a" * 5000)
    put("newlines.txt", b"\n" * 5000)
    put("spaces.txt", b"   \n  \n" * 500)
    words = ENGLISH.replace("\n", " ").encode()
    put("huge-line.txt", (words * (HUGE // len(words) + 1))[:HUGE])
    put("huge-word.txt", b"x" * HUGE)
    put("tiny.txt", b"ab")
    (d / "a-directory").mkdir()
    f["a-directory"] = d / "a-directory"
    f["missing"] = d / "missing.txt"
    return f


def make_checkpoints(d: Path, run: Path) -> dict[str, Path]:
    """Broken and hostile checkpoints, each alone in a directory (as ``best.safetensors``)."""
    good = (run / "best.safetensors").read_bytes()
    ckpt = ck.load_checkpoint(run / "best.safetensors")
    blobs = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "random": bytes((i * 7919 + 13) % 256 for i in range(5000)),
        "pickle": pickle.dumps({"weights": PickleBomb(d / "PWNED")}),
        "foreign": st_save({"weight": torch.zeros(4)}),
    }
    out = {}
    for name, blob in blobs.items():
        (d / name).mkdir()
        (d / name / "best.safetensors").write_bytes(blob)
        out[name] = d / name
    for name, change in {
        "huge-config": lambda m: m["model"].update(hidden_size=10_000_000),
        "vocab-mismatch": lambda m: m["vocab"]["itos"].pop(),
    }.items():
        meta = {**ckpt.meta, "model": dict(ckpt.meta["model"]), "vocab": dict(ckpt.meta["vocab"])}
        meta["vocab"]["itos"] = list(meta["vocab"]["itos"])
        change(meta)
        ck.save_checkpoint(d / name / "best.safetensors", ck.Checkpoint(meta, ckpt.tensors))
        out[name] = d / name
    # copies of the whole run with checkpoints cut in half, as a crash of a copy leaves them
    for name, cut in {
        "last-cut": ["last"],
        "best-cut": ["best"],
        "both-cut": ["last", "best"],
    }.items():
        shutil.copytree(run, d / name)
        for which in cut:
            path = d / name / f"{which}.safetensors"
            path.write_bytes(path.read_bytes()[: len(good) // 2])
        out[name] = d / name
    return out


def cases(f: dict[str, Path], run: Path, bad: dict[str, Path], scratch: Path) -> list[Case]:
    outs = iter(range(10**6))

    def train(*args: str) -> list[str]:
        """A short training run; the flags of the case come last and win."""
        out = ["--out", str(scratch / "runs" / str(next(outs)))]
        return ["train", "--max-steps", "2", *SMALL, *QUIET, *out, *args]

    def text(name: str, *more: str) -> list[str]:
        return train("--text", str(f[name]), *more)

    english = ["--text", str(f["english.txt"])]
    c = [
        Case("text file", "empty file", text("empty.txt"), 2),
        Case("text file", "only a byte-order mark", text("bom-only.txt"), 2),
        Case(
            "text file",
            "UTF-8 byte-order mark before the text",
            text("bom.txt"),
            0,
            "the mark is dropped",
        ),
        Case("text file", "binary data (all 256 byte values)", text("binary.bin"), 2),
        Case("text file", "a PNG image", text("image.png"), 2),
        Case("text file", "Latin-1 text read as UTF-8", text("latin1.txt"), 2),
        Case(
            "text file",
            "Latin-1 text with `--encoding latin-1`",
            text("latin1.txt", "--encoding", "latin-1"),
            0,
        ),
        Case(
            "text file",
            "mixed encodings (UTF-8, then Latin-1 bytes)",
            text("mixed.txt"),
            2,
            "names the byte offset",
        ),
        Case("text file", "UTF-16 text without `--encoding`", text("utf16.txt"), 2),
        Case(
            "text file",
            "UTF-16 text with `--encoding utf-16`",
            text("utf16.txt", "--encoding", "utf-16"),
            0,
        ),
        Case(
            "text file",
            "characters outside the BMP (emoji, 𝄞, 𠀀)",
            text("emoji.txt"),
            0,
            "one token per code point",
        ),
        Case("text file", "5 MiB on a single line, characters", text("huge-line.txt"), 0),
        Case(
            "text file",
            "5 MiB on a single line, words",
            text("huge-line.txt", "--level", "word"),
            0,
        ),
        Case(
            "text file",
            "5 MiB single word, word level",
            text("huge-word.txt", "--level", "word"),
            2,
        ),
        Case("text file", "one symbol repeated (`aaaa…`)", text("one-symbol.txt"), 2),
        Case("text file", "nothing but newlines", text("newlines.txt"), 2),
        Case(
            "text file",
            "only spaces and newlines, word level",
            text("spaces.txt", "--level", "word"),
            2,
        ),
        Case("text file", "two characters", text("tiny.txt"), 2),
        Case("text file", "a directory", text("a-directory"), 2),
        Case("text file", "a missing file", text("missing"), 2),
        Case("text file", "unknown encoding name", text("english.txt", "--encoding", "nope"), 2),
    ]
    sizes = [
        ("--hidden", "0"), ("--hidden", "-4"), ("--hidden", "10000000"),
        ("--embed", "1000000000000"), ("--layers", "0"), ("--layers", "1000000 --hidden 4096"),
        ("--batch-size", "0"),
        ("--batch-size", "1000000000"), ("--bptt", "-1"), ("--bptt", "1000000000"),
        ("--epochs", "0"), ("--max-steps", "0"), ("--threads", "0"), ("--threads", "100000"),
        ("--max-vocab", "1"), ("--min-count", "1000000"),
    ]  # fmt: skip
    for flag, value in sizes:
        c.append(Case("sizes", f"`{flag} {value}`", train(*english, flag, *value.split()), 2))
    numbers = [
        ("--lr", "0"), ("--lr", "-0.1"), ("--lr", "nan"), ("--lr", "inf"), ("--dropout", "1"),
        ("--dropout", "nan"), ("--clip", "nan"), ("--clip", "-1"), ("--momentum", "-1"),
        ("--init-range", "nan"), ("--seed", "-1"), ("--seed", str(2**64)),
        ("--eval-batch-size", "0"),
        ("--max-minutes", "-1"), ("--data-fraction", "0"), ("--hidden", "many"),
    ]  # fmt: skip
    for flag, value in numbers:
        c.append(Case("numbers", f"`{flag} {value}`", train(*english, flag, value), 2))
    out_file = scratch / "a-file"
    out_file.write_text("not a directory")
    # fmt: off
    c += [
        Case("numbers", "`--lr 1e30` (training blows up)",
             train(*english, "--lr", "1e30", "--optimizer", "sgd", "--clip", "0",
                   "--save-every", "1", "--max-steps", "20"),
             3, "stops; the checkpoints written are finite"),
        Case("settings", "`--seed -1 --variable-bptt`",
             train(*english, "--seed", "-1", "--variable-bptt"), 2),
        Case("settings", "`--device tpu`", train(*english, "--device", "tpu"), 2),
        Case("settings", "`--cell nope`", train(*english, "--cell", "nope"), 2),
        Case("settings", "`--corpus nope`", train("--corpus", "nope"), 2),
        Case("settings", "`--corpus ptb --text x.txt`", train("--corpus", "ptb", *english), 2),
        Case("settings", "`--out` is an existing file", train(*english, "--out", str(out_file)), 2),
        Case("settings", "`--out` already holds a run", train(*english, "--out", str(run)), 2),
        Case(
            "resume",
            "`--resume` of a directory that holds no run",
            ["train", "--resume", str(f["a-directory"])],
            2,
        ),
        Case(
            "resume",
            "`--resume` changing `--hidden`",
            ["train", "--resume", str(run), "--hidden", "32", *QUIET],
            2,
        ),
        Case(
            "resume",
            "`--resume` of a run whose last checkpoint is cut in half",
            ["train", "--resume", str(bad["last-cut"]), *QUIET],
            2,
        ),
        Case(
            "resume",
            "`--resume RUN/best.safetensors`, as that message says",
            ["train", "--resume", str(bad["last-cut"] / "best.safetensors"), *QUIET],
            0,
            "continues from the best checkpoint's step in the same directory",
        ),
        Case(
            "resume",
            "`--resume` of a run whose two checkpoints are both cut in half",
            ["train", "--resume", str(bad["both-cut"]), *QUIET],
            2,
        ),
    ]
    for name, what in [
        ("empty", "an empty file"),
        ("truncated", "a checkpoint cut in half"),
        ("random", "random bytes"),
        ("pickle", "a pickle (PyTorch `.pt`) renamed, which would create a file if unpickled"),
        ("foreign", "a safetensors file that is not an rnnlab checkpoint"),
        ("huge-config", "a config claiming `hidden_size` 10,000,000 beside small tensors"),
        ("vocab-mismatch", "a vocabulary one shorter than the model's"),
        ("best-cut", "a run whose best checkpoint is cut in half (its last one is whole)"),
    ]:
        c.append(Case("checkpoint", f"`eval` of {what}", ["eval", str(bad[name])], 2))
    c += [
        Case("sampling", "`--temperature 0` (greedy)",
             ["sample", str(run), "--temperature", "0", "--length", "20"], 0),
        Case("sampling", "`--temperature -1`", ["sample", str(run), "--temperature", "-1"], 2),
        Case("sampling", "`--top-p 1.5`", ["sample", str(run), "--top-p", "1.5"], 2),
        Case("sampling", "`--top-k 0`", ["sample", str(run), "--top-k", "0"], 2),
        Case("sampling", "`--length 0`", ["sample", str(run), "--length", "0"], 2),
        Case("sampling", "`--prime` with symbols the model never saw (😀Ω)",
             ["sample", str(run), "--prime", "😀Ω", "--length", "10"], 0, "they read as `<unk>`"),
        Case("sampling", "`eval --batch-size 0`", ["eval", str(run), "--batch-size", "0"], 2),
        Case("distributed", "`torchrun --nproc_per_node 2` with `--batch-size 3`",
             ["train", *english, "--batch-size", "3", "--bptt", "8", "--hidden", "16",
              "--max-steps", "2", "--device", "cpu", *QUIET, "--out", str(scratch / "ddp")],
             1, "each rank says it; then torchrun prints its own report of the failed ranks",
             torchrun=True),
    ]
    # fmt: on
    return c


def run_case(case: Case, cwd: Path) -> None:
    if case.torchrun:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
        proc = subprocess.run(
            [*cmd, "2", "-m", "rnnlab", *case.argv], capture_output=True, text=True, env=env,
            cwd=cwd, timeout=300,
        )  # fmt: skip
        ours = [line for line in proc.stderr.splitlines() if line.startswith("rnnlab: error:")]
        code, err = proc.returncode, ours[-1] if ours else proc.stderr.strip().splitlines()[-1]
        lines, tb = min(len(ours), 1), False  # every rank says it; torchrun adds its report
    else:
        stderr = io.StringIO()
        old = Path.cwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                code = main(case.argv)
        finally:
            os.chdir(old)
        text = stderr.getvalue()
        tb = "Traceback" in text
        errors = [line for line in text.splitlines() if line.startswith("rnnlab: error:")]
        lines = len(errors)
        err = errors[-1] if errors else ""
    ok = code == case.expect and not tb and (lines == 1 if code != 0 else lines == 0)
    case.result = {"code": code, "message": err.removeprefix("rnnlab: error: "), "ok": ok}


def markdown(all_cases: list[Case], seconds: float) -> str:
    head = [
        "# Bad and odd inputs",
        "",
        "What `rnnlab` answers to each input below, produced by running them: "
        "`python benchmarks/bad_inputs.py --torchrun` "
        f"({platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {seconds:.0f} s). Exit codes: 0 success, 1 an error of the "
        "system (disk, memory) or torchrun reporting a failed process, 2 bad input or settings, "
        "3 training diverged, 130 interrupted (Ctrl-C; the checkpoint is saved). Every error is "
        "one line on stderr, never a traceback (torchrun adds its own report). Paths are "
        "shortened to their file names.",
        "",
        "Crash safety (SIGKILL at any moment, disk full, permissions) is tested in "
        "`tests/training/test_crash.py`, `tests/runs/test_checkpoint.py` and `tests/cli/test_cli.py`; downloaded "
        "corpora whose sha256 differs are refused and deleted "
        "(`tests/data/test_corpora.py::test_checksum_mismatch_is_refused_and_removed`).",
        "",
    ]
    rows = []
    group = None
    for c in all_cases:
        if c.group != group:
            group = c.group
            rows += ["", f"## {group}", "", "| input | exit | what rnnlab says |", "|---|---|---|"]
        r = c.result
        if not r:
            continue
        said = r["message"] or ("works" + (f": {c.note}" if c.note else ""))
        if r["message"] and c.note:
            said += f" ({c.note})"
        mark = "" if r["ok"] else " **(unexpected)**"
        said = said.replace("|", "\\|")
        rows.append(f"| {c.what} | {r['code']}{mark} | {said} |")
    return "\n".join(head + rows[1:]) + "\n"


def shorten(message: str, roots: list[Path]) -> str:
    for root in roots:
        message = message.replace(str(root) + os.sep, "").replace(str(root), ".")
    return message


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent.parent / "docs/bad-inputs.md"))
    parser.add_argument("--torchrun", action="store_true", help="include torchrun launches")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rnnlab-bad-") as tmp:
        d = Path(tmp)
        (d / "files").mkdir()
        files = make_files(d / "files")
        run = d / "run"
        argv0 = ["train", "--text", str(files["english.txt"]), "--max-steps", "20", *SMALL, *QUIET]
        assert main([*argv0, "--out", str(run)]) == 0
        (d / "bad").mkdir()
        bad = make_checkpoints(d / "bad", run)
        all_cases = [c for c in cases(files, run, bad, d) if args.torchrun or not c.torchrun]
        for case in all_cases:
            run_case(case, d)
            case.result["message"] = shorten(case.result["message"], [d / "files", d / "bad", d])
            flag = "ok " if case.result["ok"] else "BAD"
            print(f"{flag} {case.result['code']:>3} {case.what}: {case.result['message']}")
        if (d / "bad" / "PWNED").exists():
            print("BAD: a pickle was executed")
            return 1
    text = markdown(all_cases, time.perf_counter() - started)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(c.result["ok"] for c in all_cases) else 1


if __name__ == "__main__":
    sys.exit(main_())
