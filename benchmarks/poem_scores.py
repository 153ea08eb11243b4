"""Real and generated quatrains under a Tang model (issue 19): what titles are worth, and how
likely the model finds real poems, the CS224d notes' quatrain and its own poems by each decoding.

Three parts, written to ``benchmarks/results/poem_scores.json`` (the markdown tables and the
twenty example poems are printed too):

* **Titles used** (a run trained with titles): the exact per-character perplexity of every poem of
  the run's test split given its own title, and given the title of another test poem (a seeded
  derangement of the titles); titles are read, not scored: as the run's evaluation reads the
  split (``title_mask`` + ``evaluate``, one stream at the run's evaluation batch size), and from a
  fresh state per poem (``score_poems``).
* **Scores**: for each set, the model's mean log-probability per character (punctuation included,
  :func:`rnnlab.generation.poem_score.score_poems`), its perplexity ``exp(-mean)``, and the share
  of poems the checkers find in form (5x4, ，。，。), rhyming and on a tone pattern. Sets: ``count``
  real five-character quatrains of the test split (seeded; for a titled run only those whose
  titles the model can read), the notes' quatrain, and ``count`` poems each from plain sampling
  (``rnnlab poem``'s default, temperature 0.8), the best of ``--candidates`` samples and a beam of
  ``--beam``. A titled model writes every poem for the title of one of the real quatrains, and the
  real ones and the notes' quatrain are scored given those titles (the notes' quatrain: one score
  per title). A second block asks for rhyme and tones too (met by every poem).
* **Examples**: twenty poems by the best of ``--candidates``: five plain, five for real titles,
  five for keywords (when ``PoemSpec`` has a ``keywords`` field) and five acrostics, each with the
  constraints it meets.

    python benchmarks/poem_scores.py runs/tang-hour --count 100 --candidates 16 --beam 8 \\
        --out benchmarks/results/poem_scores.json
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
    TangRun,
    derangement,
    held_out_poems,
    is_five_quatrain,
    load_tang_run,
    poem_record,
    readable_title,
    rescore,
    summarize,
    write_poems,
)

from rnnlab.data.dataset import title_mask  # noqa: E402
from rnnlab.data.tang import TITLE_SEP  # noqa: E402
from rnnlab.data.vocab import encode_text, make_tokenizer  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.evaluation.text import evaluate  # noqa: E402
from rnnlab.generation.poem_score import (  # noqa: E402
    count_unknown,
    poem_lines,
    poem_text,
    score_poems,
)
from rnnlab.generation.poetry import (  # noqa: E402
    PoemSpec,
    match_tone_pattern,
    shared_rhyme_group,
    split_lines,
)

RESULTS = Path(__file__).resolve().parent / "results"
# the quatrain of the CS224d notes' RNN poetry example, as printed there
NOTES_QUATRAIN = "两宴书长，一与家天斜。出寒看阶帆，竺却参雴飞。"
ACROSTICS = ("春夏秋冬", "风花雪月", "山高水长", "明月清风", "江南春色")
KEYWORDS = ("月,霜", "春,风", "山,水", "秋,雨", "江,舟")  # one character per keyword


def titles_used(run: TangRun, poems: list[HeldOut], seed: int) -> dict[str, Any]:
    """Test perplexity per poem character given the true titles and given deranged ones: as the
    run's evaluation reads the split (one stream, state carried from poem to poem) and from a
    fresh state per poem (the poem's end, after its last mark, not scored)."""
    if not run.titled:
        return {"skipped": "the run was trained without titles"}
    tokenizer, vocab = make_tokenizer("char"), run.vocab
    perm = derangement(len(poems), seed)
    out: dict[str, Any] = {"poems": len(poems), "seed": seed}
    for name, order in (("true_titles", range(len(poems))), ("other_titles", perm)):
        text = "".join(
            f"{poems[j].title}{TITLE_SEP}{p.text}\n" for p, j in zip(poems, order, strict=True)
        )
        ids = encode_text(text, tokenizer, vocab)
        mask = title_mask(ids, vocab.stoi["\n"], vocab.stoi[TITLE_SEP])
        start = time.perf_counter()
        result = evaluate(
            run.model,
            ids,
            batch_size=run.config.train.eval_batch_size,
            bptt=100,
            level="char",
            unscored=mask,
        )
        out[name] = {
            "loss": result.loss,
            "perplexity": result.perplexity,
            "scored_tokens": result.tokens,
            "seconds": round(time.perf_counter() - start, 1),
        }
    # the same from a fresh state per poem (score_poems: no earlier poem read), token-weighted
    texts = [p.text for p in poems]
    lengths = [len(poem_text(t)) for t in texts]
    for name, order in (("true_titles", range(len(poems))), ("other_titles", perm)):
        start = time.perf_counter()
        scores = score_poems(
            run.model, vocab, texts, [poems[j].title for j in order], run.title_sep
        )
        loss = -sum(s * n for s, n in zip(scores, lengths, strict=True)) / sum(lengths)
        out[f"{name}_fresh_state"] = {
            "loss": loss,
            "perplexity": math.exp(loss),
            "scored_tokens": sum(lengths),
            "seconds": round(time.perf_counter() - start, 1),
        }
    out["relative_change_fresh_state"] = (
        out["other_titles_fresh_state"]["perplexity"] / out["true_titles_fresh_state"]["perplexity"]
        - 1
    )
    out["same_title_text"] = sum(
        poems[j].title == p.title for p, j in zip(poems, perm, strict=True)
    )
    out["relative_change"] = (
        out["other_titles"]["perplexity"] / out["true_titles"]["perplexity"] - 1
    )
    out["eval_batch_size"] = run.config.train.eval_batch_size
    return out


def notes_form(run: TangRun) -> dict[str, Any]:
    """The notes' quatrain as the checkers see it."""
    lines = poem_lines(NOTES_QUATRAIN)
    return {
        "text": NOTES_QUATRAIN,
        "line_lengths": [len(line) for line in split_lines(NOTES_QUATRAIN)],
        "form_5x4": is_five_quatrain(HeldOut(-1, None, "", NOTES_QUATRAIN)),
        "rhyme_group": shared_rhyme_group(lines),
        "tone_pattern": match_tone_pattern(lines),
        "unknown_to_model": sorted({ch for ch in NOTES_QUATRAIN if ch not in run.vocab.stoi}),
    }


def scored_set(
    run: TangRun, texts: list[str], titles: list[str | None]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score given poems (given their titles for a titled run): summary and records."""
    given = titles if run.titled else None
    scores = score_poems(run.model, run.vocab, texts, given, run.title_sep)
    records = [poem_record(t, h, s) for t, h, s in zip(texts, titles, scores, strict=True)]
    summary = summarize(records)
    summary["unknown"] = count_unknown(run.vocab, texts, given)
    return summary, records


def generated_set(
    run: TangRun, titles: list[str | None], decoding: Decoding, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    start = time.perf_counter()
    poems = write_poems(run, titles, decoding, seed)
    seconds = time.perf_counter() - start
    records = [poem_record(p.text, p.title, float(p.score or 0.0)) for p in poems]
    summary = summarize(records)
    summary.update(
        decoding=decoding.name(),
        settings=decoding.to_dict(),
        seconds=round(seconds, 1),
        rescored_max_gap=rescore(run, poems),
    )
    if decoding.rhyme or decoding.tones:
        summary["constraints_met"] = sum(
            p.form and (p.rhyme or not decoding.rhyme) and (p.tones or not decoding.tones)
            for p in poems
        ) / len(poems)
    return summary, records


def examples(
    run: TangRun, titles: list[str], candidates: int, seed: int
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Twenty poems by the best of ``candidates``: plain, real titles, keywords, acrostics."""
    best = Decoding(candidates=candidates)
    jobs: list[tuple[str, str | None, Decoding]] = [("plain", None, best)] * 5
    skipped: dict[str, str] = {}
    if run.titled:
        jobs += [("title", t, best) for t in titles[:5]]
    else:
        skipped["title"] = "the run was trained without titles"
    if "keywords" in {f.name for f in dataclasses.fields(PoemSpec)}:  # "月,霜": one char each
        for kw in KEYWORDS:
            jobs.append(("keywords", None, dataclasses.replace(best, extra={"keywords": kw})))
    else:
        skipped["keywords"] = "PoemSpec has no keywords field in this version"
    jobs += [
        ("acrostic", None, dataclasses.replace(best, extra={"acrostic": a})) for a in ACROSTICS
    ]
    out = []
    for i, (kind, title, decoding) in enumerate(jobs):
        try:
            (poem,) = write_poems(run, [title], decoding, seed + i)
        except (RnnlabError, TypeError) as exc:
            skipped[f"{kind} {decoding.extra}"] = str(exc)
            continue
        out.append(
            {
                "kind": kind,
                "asked": {k: v for k, v in decoding.extra.items()}
                | ({"title": title} if title else {}),
                "title": poem.title,
                "text": poem.text,
                "satisfies": poem.satisfies,
                "keywords_found": getattr(poem, "keywords", None),
                "rhyme_group": poem.rhyme_group,
                "tone_pattern": poem.tone_pattern,
                "score": poem.score,
                "perplexity": math.exp(-float(poem.score or 0.0)),
                "settings": decoding.to_dict(),
                "seed": seed + i,
            }
        )
    return out, skipped


SET_NAMES = {
    "real": "real held-out quatrains",
    "notes": "the CS224d notes' quatrain",
    "sampled": "plain sampling (T 0.8)",
    "candidates": "best of N samples",
    "beam": "beam search",
}


def markdown(report: dict[str, Any]) -> str:
    """The tables and example poems of a report, as markdown."""
    out = [f"## Poem scores: {report['run']}", ""]
    used = report["titles_used"]
    if "skipped" not in used:
        t, o = used["true_titles"], used["other_titles"]
        tf, of = used["true_titles_fresh_state"], used["other_titles_fresh_state"]
        out += [
            f"Titles used ({used['poems']} test poems, titles read not scored): perplexity per "
            f"character {t['perplexity']:.2f} with their own titles, {o['perplexity']:.2f} with "
            f"another poem's title ({used['relative_change']:+.2%}); from a fresh state per "
            f"poem {tf['perplexity']:.2f} and {of['perplexity']:.2f} "
            f"({used['relative_change_fresh_state']:+.2%}).",
            "",
        ]
    n = report["notes_quatrain"]
    out += [
        f"The notes' quatrain {n['text']}: line lengths {n['line_lengths']}, 5x4 form "
        f"{n['form_5x4']}, rhyme {n['rhyme_group']}, tones {n['tone_pattern']}, characters the "
        f"model lacks: {''.join(n['unknown_to_model']) or 'none'}.",
        "",
    ]
    for block, head in (("sets", "free"), ("constrained", "--rhyme --tones")):
        out += [
            f"| set ({head}) | poems | mean log-prob | median | perplexity | form | rhyme | "
            "tones | distinct chars |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in report[block].items():
            label = s.get("decoding", SET_NAMES.get(name, name))
            out.append(
                f"| {label} | {s['poems']} | {s['mean_score']:.3f} | {s['median_score']:.3f} | "
                f"{s['perplexity']:.1f} | {s['form']:.0%} | {s['rhyme']:.0%} | {s['tones']:.0%} "
                f"| {s['distinct_char_share']:.2f} |"
            )
        out.append("")
    out += ["### Examples", ""]
    for i, ex in enumerate(report["examples"], 1):
        asked = ", ".join(f"{k} {v}" for k, v in ex["asked"].items()) or "nothing"
        head = f"**{i}. {ex['kind']}** (asked: {asked})"
        if ex["title"]:
            head += f" 《{ex['title']}》"
        out.append(head + "  ")
        out += [line + "  " for line in ex["text"].split("\n")]
        meets = ", ".join(ex["satisfies"])
        out += [f"*meets: {meets}; perplexity {ex['perplexity']:.1f}*", ""]
    for what, why in report["examples_skipped"].items():
        out.append(f"- skipped {what}: {why}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a Tang run directory (tang-hour, tang-quatrains, ...)")
    ap.add_argument("--count", type=int, default=100, help="poems per set")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "poem_scores.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    run = load_tang_run(args.run)
    held = held_out_poems(run)
    quatrains = [p for p in held if is_five_quatrain(p)]
    eligible = [p for p in quatrains if not run.titled or readable_title(run, p.title)]
    if not eligible:
        raise SystemExit("the test split has no five-character quatrain to score")
    picked = random.Random(args.seed).sample(eligible, min(args.count, len(eligible)))
    titles: list[str | None] = [p.title if run.titled else None for p in picked]
    # the examples' real titles: the first five picked, or more held-out ones when count < 5
    more = [p for p in eligible if p not in picked]
    example_titles = [p.title for p in picked[:5] + more[: max(0, 5 - len(picked))]]

    report: dict[str, Any] = {
        "benchmark": "poem_scores",
        "run": str(args.run),
        "preset": run.config.preset,
        "titled": run.titled,
        "machine": machine_info(),
        "settings": {
            "count": args.count,
            "candidates": args.candidates,
            "beam": args.beam,
            "temperature": Decoding().temperature,
            "seed": args.seed,
        },
        "vocabulary": len(run.vocab),
        "held_out": {
            "test_poems": len(held),
            "five_char_quatrains": len(quatrains),
            "eligible": len(eligible),
            "picked": [p.index for p in picked],
        },
        "titles_used": titles_used(run, held, args.seed),
        "notes_quatrain": notes_form(run),
    }
    sets: dict[str, Any] = {}
    poems: dict[str, Any] = {}
    sets["real"], poems["real"] = scored_set(run, [p.text for p in picked], titles)
    notes_titles = titles if run.titled else [None]
    sets["notes"], poems["notes"] = scored_set(
        run, [NOTES_QUATRAIN] * len(notes_titles), notes_titles
    )
    decodings = {
        "sampled": Decoding(),
        "candidates": Decoding(candidates=args.candidates),
        "beam": Decoding(beam=args.beam),
    }
    for name, decoding in decodings.items():
        sets[name], poems[name] = generated_set(run, titles, decoding, args.seed)
        print(name, {k: sets[name][k] for k in ("mean_score", "perplexity")}, flush=True)
    constrained: dict[str, Any] = {}
    for name, decoding in decodings.items():
        strict = dataclasses.replace(decoding, rhyme=True, tones=True)
        constrained[name], poems[f"{name}_rhyme_tones"] = generated_set(
            run, titles, strict, args.seed
        )
    report["sets"], report["constrained"] = sets, constrained
    report["examples"], report["examples_skipped"] = examples(
        run, example_titles, args.candidates, args.seed
    )
    report["poems"] = poems
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_report(args.out, report, ascii_only=False)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
