"""Commands that use a trained model: ``eval``, ``sample``, ``poem``, ``score``; and ``corpora``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

from rnnlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from rnnlab.evaluation.adapt import AdaptationRequest
    from rnnlab.generation.repetition import Degeneration
    from rnnlab.generation.sampling import SamplingConfig

ENCODING_HELP = (
    "encoding of the text file (default: UTF-8, else the encoding the run recorded, else "
    "detected, with a one-line notice; a name given is honoured exactly)"
)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="exact perplexity (text) or NLL per time step (piano rolls) of a trained model",
    )
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["train", "valid", "test"], default="test")
    p.add_argument("--corpus")
    p.add_argument("--text")
    p.add_argument("--encoding", help=ENCODING_HELP)
    p.add_argument(
        "--batch-size",
        type=int,
        default=10,
        help="columns scored side by side (1 = every token sees its whole history; larger is "
        "faster on long texts, and the figure differs slightly at the column starts)",
    )
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; on a machine busy with other "
        "work, 1, or OMP_WAIT_POLICY=PASSIVE in the environment, can be many times faster)",
    )
    p.add_argument(
        "--allow-unk", action="store_true", help="evaluate even when many tokens are unknown"
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (one appears on stderr when the evaluation takes a few seconds)",
    )
    _add_adaptation(p)
    p.add_argument(
        "--tune-adaptation",
        action="store_true",
        help="search the cache and dynamic settings on the validation split (only the one "
        "named, with --cache or --dynamic) and write them to RUN/adaptation.json, which "
        "--cache/--dynamic then use",
    )
    p.add_argument(
        "--tune-tokens",
        type=int,
        metavar="N",
        help="tune on the first N tokens of the validation split only (default: all of it)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def _add_adaptation(p: argparse.ArgumentParser) -> None:
    """The flags of the neural cache and of dynamic evaluation (``eval`` and ``score``)."""
    g = p.add_argument_group(
        "adapting to the text (values not given: the run's tuned adaptation.json, else defaults)"
    )
    g.add_argument(
        "--cache",
        action="store_true",
        help="neural cache (Grave et al. 2017): mix in a pointer over recent hidden states",
    )
    g.add_argument("--cache-size", type=int, metavar="N", help="hidden states kept (default 500)")
    g.add_argument(
        "--cache-theta",
        type=float,
        metavar="X",
        help="sharpness of the pointer, exp(theta h_t.h_i) (default 0.3)",
    )
    g.add_argument(
        "--cache-lambda",
        type=float,
        metavar="L",
        help="weight of the cache in the mixture, 0..1 (default 0.1)",
    )
    g.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic evaluation (Krause et al. 2018): after scoring each window, learn from it",
    )
    g.add_argument(
        "--dynamic-method",
        choices=["rms", "sgd"],
        help="rms: Krause et al.'s update, normalised by gradient RMS from the training data "
        "(default); sgd: plain gradient steps (Mikolov)",
    )
    g.add_argument(
        "--dynamic-lr", type=float, metavar="LR", help="learning rate (default rms 1e-4, sgd 0.1)"
    )
    g.add_argument(
        "--dynamic-decay",
        type=float,
        metavar="D",
        help="pull toward the trained weights per step, 0..1 (default 0.02)",
    )
    g.add_argument(
        "--dynamic-stat-windows",
        type=int,
        metavar="N",
        help="rms: gradient statistics from the first N training windows; 0: the whole "
        "training split, as Krause et al. (slower; default 100)",
    )


def _adaptation_request(args: argparse.Namespace) -> AdaptationRequest:
    from rnnlab.evaluation.adapt import AdaptationRequest

    return AdaptationRequest(
        cache=args.cache,
        cache_size=args.cache_size,
        cache_theta=args.cache_theta,
        cache_lambda=args.cache_lambda,
        dynamic=args.dynamic,
        dynamic_method=args.dynamic_method,
        dynamic_lr=args.dynamic_lr,
        dynamic_decay=args.dynamic_decay,
        dynamic_stat_windows=args.dynamic_stat_windows,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnlab.evaluation.run import evaluate_run
    from rnnlab.runs.load import set_threads

    request = _adaptation_request(args)
    if args.tune_tokens is not None and not args.tune_adaptation:
        raise ConfigError("--tune-tokens is a setting of --tune-adaptation; add it to tune")
    set_threads(args.threads)
    if args.tune_adaptation:
        return _tune(args, request)
    e = evaluate_run(
        args.run_dir,
        args.split,
        corpus=args.corpus,
        text=args.text,
        encoding=args.encoding,
        batch_size=args.batch_size,
        bptt=args.bptt,
        device=args.device,
        allow_unk=args.allow_unk,
        progress=not args.no_progress,
        adaptation=request,
    )
    r = e.result
    if args.json:
        print(json.dumps(e.to_dict()))
    elif r.unit == "step":
        print(f"{e.corpus} {e.split}: NLL {r.loss:.4f} nats per time step ({r.tokens:,} steps)")
    else:
        from rnnlab.evaluation.tuning import describe

        bpc = f", {r.bpc:.4f} bits/char" if r.bpc is not None else ""
        adapted = f" with {describe(e.adaptation)}" if e.adaptation else ""
        print(
            f"{e.corpus} {e.split}: loss {r.loss:.4f}, "
            f"perplexity {r.perplexity:.2f}{bpc} ({r.tokens:,} tokens){adapted}"
        )
    return 0


def _tune(args: argparse.Namespace, request: AdaptationRequest) -> int:
    """``eval --tune-adaptation``: tune on the validation split, write the settings, print them."""
    from rnnlab.evaluation.adapt import DynamicSettings
    from rnnlab.evaluation.tuning import tune_run

    given = request.cache_given() + request.dynamic_given()
    if given:
        raise ConfigError(
            "--tune-adaptation chooses the settings itself; drop the explicit "
            "--cache-*/--dynamic-* values (give --cache or --dynamic alone to tune only that)"
        )
    if args.split != "test":
        raise ConfigError("--tune-adaptation always tunes on the validation split; drop --split")
    both = not request.active
    report = tune_run(
        args.run_dir,
        cache=request.cache or both,
        dynamic=request.dynamic or both,
        method=request.dynamic_method or "rms",
        corpus=args.corpus,
        text=args.text,
        encoding=args.encoding,
        batch_size=args.batch_size,
        bptt=args.bptt,
        device=args.device,
        tokens=args.tune_tokens,
        progress=not args.no_progress,
        stat_windows=request.dynamic_settings(DynamicSettings()).stat_windows,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print("\n".join(report.lines()))
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate text from a trained model")
    p.add_argument("run_dir")
    p.add_argument("--prime", default="", help="text the samples continue")
    p.add_argument("--length", type=int, default=300, help="tokens to generate (at most)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, help="draw from the K most likely tokens only")
    p.add_argument("--top-p", type=float, help="draw from the smallest set of mass >= P (nucleus)")
    p.add_argument("--beam", type=int, metavar="N", help="beam search with N beams (deterministic)")
    _add_repetition(p, "the text (prime included)")
    p.add_argument(
        "--length-penalty",
        type=float,
        default=1.0,
        help="beam score = log p / length**ALPHA (default 1: mean log-probability per token)",
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help=r"end a sample before this text (repeatable; \n is a newline)",
    )
    p.add_argument("--count", type=int, default=1, help="samples, drawn as one batch")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="CPU: split the --count rows into this many batches, one per core (faster at "
        "large counts; a seed gives the same text for the same --workers)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    _add_precision(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sample)


def _add_repetition(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        metavar="P",
        help=f"lower the logits of tokens already in {where} by a factor P >= 1 before each "
        "pick (CTRL; default 1 = off)",
    )
    p.add_argument(
        "--repetition-window",
        type=int,
        metavar="N",
        help="the penalty counts only the last N tokens (default: the whole text)",
    )


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=["float32", "bf16", "int8"],
        default="float32",
        help="decoding arithmetic: float32 gives the model's exact distributions; bf16 and int8 "
        "(CPU) are faster and approximate (see BENCHMARKS.md)",
    )


def _sampling_config(args: argparse.Namespace) -> SamplingConfig:
    """The decoding options ``sample`` and ``poem`` share."""
    from rnnlab.generation.sampling import SamplingConfig

    return SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        repetition_window=args.repetition_window,
    )


def cmd_sample(args: argparse.Namespace) -> int:
    from rnnlab.generation.fast_step import PRECISIONS
    from rnnlab.generation.sampling import find_degenerate_samples, generate
    from rnnlab.runs.load import load_text_model

    cfg = _sampling_config(args)
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be at least 1, got {args.beam}")
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]
    model, vocab, ckpt = load_text_model(args.run_dir, args.device, "sample")
    texts = generate(
        model,
        vocab,
        ckpt.meta["level"],
        prime=args.prime,
        length=args.length,
        cfg=cfg,
        count=args.count,
        seed=args.seed,
        stop=stops,
        beam=args.beam,
        length_penalty=args.length_penalty,
        dtype=PRECISIONS[args.precision],
        workers=args.workers,
    )
    if args.json:
        print(json.dumps([{"text": t} for t in texts], ensure_ascii=False))
    else:
        print("\n\n".join(texts))
    found = find_degenerate_samples(texts, args.prime, ckpt.meta["level"])
    note = _degenerate_note(found, cfg, args.beam)
    if note:
        print(note, file=sys.stderr)
    return 0


def _degenerate_note(
    found: list[Degeneration | None], cfg: SamplingConfig, beam: int | None
) -> str | None:
    """The one note ``rnnlab sample`` prints on stderr when its output collapsed, or None.

    ``found``: :func:`~rnnlab.generation.sampling.find_degenerate_samples` of the texts;
    ``cfg``: the SamplingConfig they were decoded with.
    """
    bad = [d for d in found if d is not None]
    if not bad:
        return None
    what = bad[0].describe()
    if len(found) == 1:
        head = f"the generated text is {what}."
    else:
        head = f"{len(bad)} of {len(found)} generated texts collapsed; the first is {what}."
    penalty = cfg.repetition_penalty
    stronger = (
        f"a stronger --repetition-penalty than {penalty:g}"
        if penalty > 1
        else "--repetition-penalty 2"
    )
    weak = "a weakly trained model's most likely token is often a space or a newline"
    if beam is not None:
        why = (
            f"Beam search keeps the most likely continuations, and {weak}, and the same again "
            "after it, so the best path loops."
        )
    elif cfg.temperature == 0 or cfg.top_k == 1:
        why = (
            f"Greedy decoding picks the most likely next token at every step, and {weak}, "
            "and the same again after it, so the argmax path loops."
        )
    else:
        why = (
            f"Sampling at temperature {cfg.temperature:g}, the model still gives this most of "
            "its probability: it has learned little yet."
        )
    if beam is not None or cfg.temperature == 0 or cfg.top_k == 1:
        fixes = f"sampling (--temperature 0.8, or --top-p 0.9), {stronger}, or training longer"
    elif cfg.temperature < 1:
        fixes = f"--temperature 1, {stronger}, or training longer"
    else:
        fixes = f"{stronger}, or training longer"
    return f"rnnlab: note: {head} {why} Try {fixes}."


def _add_poem(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "poem", help="classical Chinese quatrains (绝句) or regulated verse (律诗), form guaranteed"
    )
    p.add_argument(
        "run_dir", help="a character model trained on Chinese poems (--preset tang-quatrains)"
    )
    p.add_argument("--form", type=int, default=5, help="characters per line: 5 (五言) or 7 (七言)")
    p.add_argument("--lines", type=int, default=4, help="4 (绝句) or 8 (律诗)")
    p.add_argument(
        "--acrostic", metavar="HEADS", help="藏头诗: line k starts with the k-th character"
    )
    p.add_argument("--first-line", metavar="TEXT", help="the whole first line")
    p.add_argument("--start", metavar="TEXT", help="characters the poem starts with")
    p.add_argument(
        "--keywords",
        metavar="CHARS",
        help="characters the poem must contain, one per line, e.g. 月,霜 (commas, 、 or spaces "
        "between them); decoding places each in a line of its own",
    )
    p.add_argument(
        "--rhyme", action="store_true", help="lines 2, 4 (6, 8) rhyme (十三辙, modern readings)"
    )
    p.add_argument(
        "--tones",
        action="store_true",
        help="follow a standard 平仄 pattern (modern tones approximate Middle Chinese)",
    )
    p.add_argument(
        "--title",
        help="write for this title (a model trained with titles: --preset tang-hour); such a "
        "model draws its own title when none is given",
    )
    p.add_argument("--count", type=int, default=1, help="poems, decoded as one batch")
    p.add_argument(
        "--candidates",
        type=int,
        default=1,
        metavar="N",
        help="draw N poems for each one asked for and keep the one the model finds likeliest "
        "(mean log-probability per character)",
    )
    p.add_argument(
        "--beam",
        type=int,
        default=0,
        metavar="W",
        help="beam search of width W over the whole poem instead of sampling (same constraints)",
    )
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    _add_repetition(p, "the poem")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    _add_precision(p)
    p.add_argument("--json", action="store_true", help="a JSON list, one object per poem")
    p.set_defaults(func=cmd_poem)


def cmd_poem(args: argparse.Namespace) -> int:
    from rnnlab.data.tang import run_title_sep
    from rnnlab.generation.fast_step import PRECISIONS
    from rnnlab.generation.poetry import PoemSpec, generate_poems
    from rnnlab.runs.load import load_text_model

    spec = PoemSpec(
        chars=args.form,
        lines=args.lines,
        acrostic=args.acrostic,
        first_line=args.first_line,
        start=args.start,
        rhyme=args.rhyme,
        tones=args.tones,
        title=args.title,
        keywords=args.keywords,
    )
    cfg = _sampling_config(args)
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    model, vocab, ckpt = load_text_model(args.run_dir, args.device, "poem")
    if ckpt.meta.get("level", "char") != "char":
        raise ConfigError(
            f"{args.run_dir} is a {ckpt.meta.get('level')}-level model; rnnlab poem needs a "
            "character model trained on Chinese poems (--preset tang-quatrains)"
        )
    poems = generate_poems(
        model,
        vocab,
        spec,
        count=args.count,
        cfg=cfg,
        seed=args.seed,
        dtype=PRECISIONS[args.precision],
        title_sep=run_title_sep(ckpt),
        candidates=args.candidates,
        beam=args.beam,
    )
    if args.json:
        print(json.dumps([p.to_dict() for p in poems], ensure_ascii=False))
        return 0
    for i, poem in enumerate(poems):
        if i:
            print()
        if poem.title is not None:
            print(f"《{poem.title}》")
        print(poem.text)
        notes = ["form"]
        if poem.rhyme:
            notes.append(f"rhyme {poem.rhyme_group}")
        if poem.tones:
            notes.append(f"tones {poem.tone_pattern}")
        if poem.keywords:
            notes.append(f"keywords {poem.keywords}")
        if poem.score is not None:
            notes.append(f"perplexity {math.exp(-poem.score):.0f} per character")
        print(f"  ({', '.join(notes)})")
    return 0


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="per-token log-probabilities of a text under a trained model")
    p.add_argument("run_dir")
    p.add_argument("stdin", nargs="?", choices=["-"], help="read the text from standard input")
    p.add_argument("--text", help="a file to score ('-' for standard input)")
    p.add_argument("--encoding", help=ENCODING_HELP)
    p.add_argument("--device", default="cpu")
    _add_adaptation(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    from rnnlab.data.encodings import check_encoding
    from rnnlab.data.text_files import read_file_bytes
    from rnnlab.evaluation.run import score_run

    request = _adaptation_request(args)
    if args.text is None and args.stdin is None:
        raise ConfigError("give the text to score: --text FILE, or - to read standard input")
    if args.encoding is not None:
        check_encoding(args.encoding)
    if args.text in (None, "-"):
        source, raw = "standard input", sys.stdin.buffer.read()
    else:
        source, raw = args.text, read_file_bytes(args.text)
        if not raw:
            raise DataError(f"{source} is empty; give a file that contains text")
    scored = score_run(
        args.run_dir,
        raw,
        device=args.device,
        encoding=args.encoding,
        source=source,
        adaptation=request,
    )
    if args.json:
        print(json.dumps(scored.to_dict(), ensure_ascii=False))
        return 0
    for t, s in zip(scored.tokens, scored.scores, strict=True):
        shown = t if s.token == t else f"{t} ({s.token})"
        print(f"{s.logprob:10.4f}\t{json.dumps(shown, ensure_ascii=False)[1:-1]}")
    adapted = ""
    if scored.adaptation:
        from rnnlab.evaluation.tuning import describe

        adapted = f" with {describe(scored.adaptation)}"
    print(
        f"total log-probability {scored.total:.4f} nats over {len(scored.scores)} tokens; "
        f"perplexity {scored.perplexity:.2f}{adapted}"
    )
    return 0


def _add_corpora(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpora", help="list the named corpora and where each would come from")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_corpora)


def cmd_corpora(args: argparse.Namespace) -> int:
    from rnnlab.data.fetch import corpus_status, mirror_problem
    from rnnlab.data.registry import list_corpora

    problem = mirror_problem()
    if problem is not None:
        print(f"rnnlab: warning: {problem}; its corpora count as absent", file=sys.stderr)
    rows = [
        {"name": s.name, "level": s.level, "status": corpus_status(s), "description": s.description}
        for s in list_corpora("all")
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        for r in rows:
            print(f"{r['name']:<16} {r['level']:<9} {r['status']:<13} {r['description']}")
    return 0
