"""A blind reading sheet (issue 19): can a reader tell a Tang model's quatrains from real ones?

Forty five-character quatrains (五言绝句), numbered 1-40 in a seeded shuffle: twenty real poems of
the run's held-out test split (never trained on) and twenty written by the run's model. Every
poem stands under a title: a real one under its own; a generated one under the title it was
written for, that of another held-out quatrain (none of the twenty real ones shown). All forty
have the same form: real poems are picked among those the form checker accepts (four lines of
five Chinese characters, ，。，。, no line repeated), which every generated poem meets.

Writes ``OUT/sheet.md`` (the poems, and a grid to mark R or G) and ``OUT/key.json`` (number ->
real with its test-split line and corpus index, or generated with the title's source, the
decoding settings, the seed and the model's score; the machine it ran on). The decoding is the
best one ``poem_scores.py`` measured: the best of 16 samples at temperature 0.8 by default,
``--beam W`` for a beam instead.

    python benchmarks/poem_sheet.py runs/tang-hour --out benchmarks/results/poem_sheet/
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_report  # noqa: E402
from _poems import (  # noqa: E402
    Decoding,
    HeldOut,
    held_out_poems,
    in_form,
    load_tang_run,
    readable_title,
    write_poems,
)

from rnnlab.atomic import write_atomic  # noqa: E402
from rnnlab.generation.poem_score import score_poems  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "poem_sheet"
EACH = 20  # real poems, and generated ones


def sheet_markdown(entries: list[dict[str, Any]], run_name: str, decoding: str) -> str:
    """The reading sheet: instructions, the numbered poems, an answer grid."""
    out = [
        "# Real or generated? A blind reading sheet",
        "",
        f"Forty five-character quatrains (五言绝句). {EACH} are Tang poems held out from the "
        f"training of a character-level LSTM (the test split of the Tang corpus); {EACH} were "
        f"written by that model ({run_name}, {decoding}) for the title they stand under, the "
        "title of another held-out poem. Read each and mark it R (real) or G (generated); the "
        "key is `key.json` beside this file.",
        "",
    ]
    for entry in entries:
        out.append(f"## {entry['number']}. 《{entry['title']}》")
        out.append("")
        out += [line + "  " for line in entry["lines"]]
        out.append("")
    out += ["## Answers", "", "| no. | R or G | no. | R or G |", "|---|---|---|---|"]
    half = len(entries) // 2
    for k in range(half):
        out.append(f"| {k + 1} | | {k + 1 + half} | |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a Tang run directory (a titled one writes for the titles)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--beam", type=int, default=0, help="a beam of width W instead of samples")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    run = load_tang_run(args.run)
    decoding = (
        Decoding(beam=args.beam)
        if args.beam
        else Decoding(candidates=args.candidates, temperature=args.temperature)
    )
    if args.beam and not run.titled and args.beam < EACH:
        raise SystemExit(
            f"a model without titles gives at most {args.beam} distinct poems by a beam of "
            f"{args.beam}; use --beam {EACH} or more, or samples"
        )
    held = [p for p in held_out_poems(run) if in_form(p)]
    rng = random.Random(args.seed)
    if len(held) < 2 * EACH:
        raise SystemExit(
            f"the test split has {len(held)} five-character quatrains in form; the sheet needs "
            f"{2 * EACH}"
        )
    real = rng.sample(held, EACH)
    shown = {p.index for p in real}
    others = [
        p for p in held if p.index not in shown and (not run.titled or readable_title(run, p.title))
    ]
    if len(others) < EACH:
        raise SystemExit(f"only {len(others)} other quatrains have titles the model can read")
    sources: list[HeldOut] = rng.sample(others, EACH)
    titles = [p.title for p in sources]
    poems = write_poems(run, list(titles) if run.titled else [None] * EACH, decoding, args.seed)
    real_titles = [p.title for p in real] if run.titled else None
    real_scores = score_poems(
        run.model, run.vocab, [p.text for p in real], real_titles, run.title_sep
    )

    entries: list[dict[str, Any]] = []
    for p, score in zip(real, real_scores, strict=True):
        entries.append(
            {
                "kind": "real",
                "title": p.title,
                "lines": p.lines().split("\n"),
                "test_index": p.index,
                "corpus_index": p.corpus_index,
                "score": score,
            }
        )
    for i, (poem, source) in enumerate(zip(poems, sources, strict=True)):
        entries.append(
            {
                "kind": "generated",
                "title": source.title,
                "lines": poem.text.split("\n"),
                "title_from": {"test_index": source.index, "corpus_index": source.corpus_index},
                "written_for_title": run.titled,
                "settings": decoding.to_dict(),
                "seed": args.seed + i,
                "score": poem.score,
            }
        )
    rng.shuffle(entries)
    for number, entry in enumerate(entries, 1):
        entry["number"] = number
    name = run.path.name
    sheet = sheet_markdown(entries, name, decoding.name())
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "sheet.md", sheet.encode("utf-8"))
    print(f"wrote {args.out / 'sheet.md'}")
    key = {
        "benchmark": "poem_sheet",
        "run": str(args.run),
        "preset": run.config.preset,
        "titled": run.titled,
        "machine": machine_info(),
        "seed": args.seed,
        "decoding": decoding.name(),
        "settings": decoding.to_dict(),
        "counts": {"real": EACH, "generated": EACH},
        "seconds": round(time.perf_counter() - start, 1),
        "poems": {
            str(e["number"]): {
                **{k: v for k, v in e.items() if k not in ("number", "lines")},
                "text": "".join(e["lines"]),
            }
            for e in entries
        },
    }
    write_report(args.out / "key.json", key, ascii_only=False)
    return key


if __name__ == "__main__":
    main()
