"""The ``rnnlab`` command: thin subcommands that parse arguments and call the library.

Every user-facing failure is a :class:`rnnlab.errors.RnnlabError`; :func:`main` prints it as one
line on stderr and exits with its code (2 for bad input, 3 for a diverged run, 130 when
interrupted). Results go to stdout; progress bars and logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rnnlab.errors import CheckpointError, ConfigError, DataError, RnnlabError

log = logging.getLogger("rnnlab")

# flag -> (section of RunConfig, field)
TRAIN_FLAGS: dict[str, tuple[str, str]] = {
    "corpus": ("data", "corpus"),
    "text": ("data", "text"),
    "valid_text": ("data", "valid_text"),
    "test_text": ("data", "test_text"),
    "encoding": ("data", "encoding"),
    "level": ("data", "level"),
    "min_count": ("data", "min_count"),
    "max_vocab": ("data", "max_vocab"),
    "data_fraction": ("data", "data_fraction"),
    "cell": ("model", "cell"),
    "layers": ("model", "num_layers"),
    "hidden": ("model", "hidden_size"),
    "embed": ("model", "embed_size"),
    "dropout": ("model", "dropout"),
    "tie": ("model", "tie_weights"),
    "init_range": ("model", "init_range"),
    "impl": ("model", "impl"),
    "optimizer": ("optim", "optimizer"),
    "lr": ("optim", "lr"),
    "momentum": ("optim", "momentum"),
    "weight_decay": ("optim", "weight_decay"),
    "clip": ("optim", "clip"),
    "weight_noise": ("optim", "weight_noise"),
    "schedule": ("optim", "schedule"),
    "decay_start": ("optim", "decay_start"),
    "decay_factor": ("optim", "decay_factor"),
    "bptt": ("train", "bptt"),
    "variable_bptt": ("train", "variable_bptt"),
    "batch_size": ("train", "batch_size"),
    "eval_batch_size": ("train", "eval_batch_size"),
    "epochs": ("train", "epochs"),
    "max_steps": ("train", "max_steps"),
    "max_minutes": ("train", "max_minutes"),
    "patience": ("train", "patience"),
    "seed": ("train", "seed"),
    "save_every": ("train", "save_every"),
    "log_every": ("train", "log_every"),
    "device": ("train", "device"),
    "threads": ("train", "threads"),
}
# what may change when a run is resumed (extending it, moving it to another device)
RESUME_FLAGS = {
    "epochs",
    "max_steps",
    "max_minutes",
    "save_every",
    "log_every",
    "device",
    "patience",
    "threads",
}


def _add_data_args(
    p: argparse.ArgumentParser, *, encoding: str | None = None, min_count: int | None = None
) -> argparse._ArgumentGroup:
    """The "which text" options shared by train and compare (defaults None: take the preset's)."""
    src = p.add_argument_group("data")
    src.add_argument(
        "--corpus",
        help="a named corpus (rnnlab corpora lists them); a piano-roll corpus (jsb, nottingham, "
        "musedata, pianomidi) starts from the music-chung2014 preset",
    )
    src.add_argument(
        "--text", help="a local text file (split 90/5/5 unless --valid-text/--test-text)"
    )
    src.add_argument("--valid-text")
    src.add_argument("--test-text")
    src.add_argument(
        "--encoding", default=encoding, help="encoding of --text files (default utf-8)"
    )
    src.add_argument("--level", choices=["char", "word"])
    src.add_argument("--min-count", type=int, default=min_count)
    src.add_argument("--max-vocab", type=int)
    return src


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a language model or a piano-roll model (no arguments: the quick offline "
        "default)",
    )
    p.add_argument("--preset", help="a named setup (see README); flags override it")
    src = _add_data_args(p)
    src.add_argument(
        "--data-fraction", type=float, help="train on the first fraction of the training text"
    )
    src.add_argument(
        "--start-frame",
        action="store_const",
        const=True,
        help="piano rolls: an all-zero frame before every piece, so every frame is scored",
    )
    m = p.add_argument_group("model")
    m.add_argument("--cell", help="rnn, rnn-relu, gru, gru-reset-before, lstm, lstm-fb1")
    m.add_argument("--layers", type=int)
    m.add_argument("--hidden", type=int)
    m.add_argument("--embed", type=int, help="embedding width (piano rolls: 0 = frames direct)")
    m.add_argument("--dropout", type=float)
    m.add_argument(
        "--tie", action="store_const", const=True, help="tie decoder and embedding weights"
    )
    m.add_argument("--init-range", type=float, help="uniform init in ±X (Zaremba et al.)")
    m.add_argument("--impl", choices=["auto", "fused", "explicit"])
    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop"])
    o.add_argument("--lr", type=float)
    o.add_argument("--momentum", type=float)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--clip", type=float, help="gradient-norm clipping threshold (0: off)")
    o.add_argument(
        "--weight-noise",
        type=float,
        help="std of Gaussian noise on the weights during training (Graves 2011; 0: off)",
    )
    o.add_argument("--schedule", choices=["constant", "decay", "plateau"])
    o.add_argument("--decay-start", type=int)
    o.add_argument("--decay-factor", type=float)
    t = p.add_argument_group("loop")
    t.add_argument("--bptt", type=int, help="truncated-BPTT window (time steps)")
    t.add_argument("--variable-bptt", action="store_const", const=True)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--eval-batch-size", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--max-minutes", type=float)
    t.add_argument(
        "--patience", type=int, help="stop after N epochs without validation improvement"
    )
    t.add_argument("--seed", type=int)
    t.add_argument("--save-every", type=int, help="checkpoint every N steps (default: every epoch)")
    t.add_argument("--log-every", type=int)
    t.add_argument("--device", help="auto, cpu, cuda")
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", help="run directory (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-sample", action="store_true", help="do not print a sample at the end")
    p.add_argument("--json", action="store_true", help="print the final results as JSON")
    p.set_defaults(func=cmd_train)


def build_run_config(args: argparse.Namespace) -> Any:
    """Defaults, then the preset, then the flags given."""
    from rnnlab.corpora import is_pianoroll
    from rnnlab.presets import get_preset
    from rnnlab.train import RunConfig

    given = {k: v for k, v in vars(args).items() if k in TRAIN_FLAGS and v is not None}
    preset = args.preset
    if preset is None and "corpus" not in given and "text" not in given:
        preset = "quick"
    elif preset is None and "corpus" in given and is_pianoroll(given["corpus"]):
        preset = "music-chung2014"  # the paper's protocol, not the text defaults
    d: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "optim": {}, "train": {}}
    if preset is not None:
        for section, values in get_preset(preset).overrides.items():
            d[section].update(values)
    if "corpus" in given or "text" in given:  # a new source replaces the preset's
        for key in ("corpus", "text", "max_chars"):
            d["data"].pop(key, None)
    if getattr(args, "start_frame", None):
        d["data"]["corpus_options"] = {**d["data"].get("corpus_options", {}), "start_frame": True}
    for flag, value in given.items():
        section, name = TRAIN_FLAGS[flag]
        if flag in ("text", "valid_text", "test_text"):
            value = str(Path(value).absolute())  # the run is used later from other directories
        d[section][name] = value
    return RunConfig.from_dict({**d, "preset": preset})


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab import distributed
    from rnnlab.train import Trainer, load_run_config

    main_rank = distributed.env_rank() == 0  # under torchrun only rank 0 reports and writes
    if not main_rank:
        logging.getLogger("rnnlab").setLevel(logging.ERROR)
    if args.resume:
        run_dir = Path(args.resume)
        config = load_run_config(run_dir)
        given = {k for k, v in vars(args).items() if k in TRAIN_FLAGS and v is not None}
        given |= {"start_frame"} if args.start_frame else set()
        if args.preset or given - RESUME_FLAGS:
            bad = sorted(given - RESUME_FLAGS) + (["preset"] if args.preset else [])
            raise ConfigError(
                f"--resume continues a run with its saved settings; it cannot change "
                f"{', '.join('--' + b.replace('_', '-') for b in bad)} (allowed: "
                f"{', '.join('--' + f.replace('_', '-') for f in sorted(RESUME_FLAGS))})"
            )
        for flag in given:
            section, name = TRAIN_FLAGS[flag]
            setattr(getattr(config, section), name, getattr(args, flag))
        if given:
            type(config.train).__post_init__(config.train)
    else:
        config = build_run_config(args)
        name = config.preset or Path(config.data.describe()).stem
        run_dir = (
            Path(args.out)
            if args.out
            else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if main_rank and (run_dir / "run.json").exists():
            raise ConfigError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                "or pick another --out"
            )
    trainer = Trainer(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    if not trainer.is_main:
        trainer.fit()
        trainer.close()
        return 0
    data = trainer.data
    rolls = data.vocab is None
    what = (
        f"{data.name} (piano rolls), {len(data.train):,} train pieces "
        f"({sum(p.size(0) for p in data.train):,} frames)"
        if rolls
        else f"{data.name} ({data.level}), {len(data.train):,} train tokens, "
        f"vocabulary {len(data.vocab):,}"
    )
    print(
        f"rnnlab: run directory {run_dir}; {what}; "
        f"{config.model.cell} {config.model.num_layers}x{config.model.hidden_size}, "
        f"{trainer.model.num_parameters():,} parameters, device {trainer.device}",
        file=sys.stderr,
    )
    result = trainer.fit()
    trainer.close()
    summary = {
        "run_dir": str(run_dir),
        "valid": result.valid.to_dict() if result.valid else None,
        "test": result.test.to_dict() if result.test else None,
        "steps": result.progress.step,
        "epochs": result.progress.epoch,
        "wall_time": round(result.progress.elapsed, 2),
    }
    sample_text = None
    if not args.no_sample and not rolls:
        from rnnlab.sampling import SamplingConfig, generate

        length = 300 if data.level == "char" else 60
        sample_text = generate(
            trainer.model,
            data.vocab,
            data.level,
            length=length,
            cfg=SamplingConfig(temperature=0.8),
            seed=0,
        )[0]
    if args.json:
        summary["sample"] = sample_text
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    for split in ("valid", "test"):
        r = summary[split]
        if rolls:
            print(f"{split}: NLL {r['loss']:.4f} nats per time step ({r['steps']:,} steps)")
            continue
        bpc = f", {r['bpc']:.3f} bits/char" if "bpc" in r else ""
        print(
            f"{split}: loss {r['loss']:.4f}, perplexity {r['perplexity']:.2f}{bpc} "
            f"({r['tokens']:,} tokens)"
        )
    print(
        f"trained {summary['steps']} steps in {summary['wall_time']:.0f}s; checkpoints in {run_dir}"
    )
    if sample_text is not None:
        print("--- sample (temperature 0.8) ---")
        print(sample_text)
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="exact perplexity (text) or NLL per time step (piano rolls) of a trained model",
    )
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["train", "valid", "test"], default="test")
    p.add_argument("--corpus")
    p.add_argument("--text")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument(
        "--batch-size",
        type=int,
        default=10,
        help="columns (1 = every token sees its whole history)",
    )
    p.add_argument("--bptt", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-unk", action="store_true", help="evaluate even when many tokens are unknown"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


# more unknown tokens than this means the text is not what the model was trained on
UNK_LIMIT = 0.10


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnlab.corpora import is_pianoroll
    from rnnlab.dataset import DataConfig, load_data
    from rnnlab.evaluate import evaluate
    from rnnlab.rolls import RollData
    from rnnlab.train import load_model

    model, vocab, ckpt = load_model(args.run_dir, device=args.device)
    if vocab is None:
        return _eval_rolls(args, model, ckpt)
    if args.corpus and is_pianoroll(args.corpus):
        raise ConfigError(
            f"{args.run_dir} is a text model and {args.corpus} holds piano rolls; evaluate it on "
            "text (--text FILE or a text --corpus)"
        )
    if args.corpus or args.text:
        data_cfg = DataConfig(
            corpus=args.corpus, text=args.text, encoding=args.encoding, level=ckpt.meta["level"]
        )
        data = load_data(data_cfg, vocab=vocab)
    else:
        recorded = (ckpt.meta.get("run") or {}).get("data")
        if not isinstance(recorded, dict):
            raise CheckpointError(
                f"{args.run_dir} does not record its training data; "
                "pass --text FILE or --corpus NAME"
            )
        try:
            data = load_data(DataConfig.from_dict(recorded), vocab=vocab)
        except DataError as e:
            raise DataError(
                f"{e} (the run's own data); or evaluate other text with --text FILE "
                "or --corpus NAME"
            ) from None
    if isinstance(data, RollData):
        raise ConfigError(
            f"{args.run_dir} is a text model and {data.name} holds piano rolls; evaluate it on "
            "text (--text FILE or a text --corpus)"
        )
    ids = data.split(args.split)
    unk = float((ids == vocab.unk_id).float().mean()) if len(ids) else 0.0
    if unk > UNK_LIMIT and not args.allow_unk:
        raise DataError(
            f"{unk:.0%} of the {args.split} tokens are outside the model's vocabulary "
            "(it was trained on "
            f"{ckpt.meta.get('corpus')}); evaluate on matching text or pass --allow-unk"
        )
    result = evaluate(
        model, ids, batch_size=args.batch_size, bptt=args.bptt, level=ckpt.meta["level"]
    )
    out = dict(result.to_dict(), split=args.split, corpus=data.name)
    if args.json:
        print(json.dumps(out))
    else:
        bpc = f", {result.bpc:.4f} bits/char" if result.bpc is not None else ""
        print(
            f"{data.name} {args.split}: loss {result.loss:.4f}, "
            f"perplexity {result.perplexity:.2f}{bpc} ({result.tokens:,} tokens)"
        )
    return 0


def _eval_rolls(args: argparse.Namespace, model: Any, ckpt: Any) -> int:
    """``rnnlab eval`` of a piano-roll model: exact NLL per time step of a split."""
    from rnnlab.corpora import is_pianoroll
    from rnnlab.dataset import DataConfig, load_data
    from rnnlab.rolls import evaluate_rolls

    if args.text or (args.corpus and not is_pianoroll(args.corpus)):
        raise ConfigError(
            f"{args.run_dir} is a piano-roll model; evaluate it on a piano-roll --corpus "
            "(jsb, nottingham, musedata, pianomidi), not on text"
        )
    if args.corpus:
        data_cfg = DataConfig(corpus=args.corpus)
    else:
        recorded = (ckpt.meta.get("run") or {}).get("data")
        if not isinstance(recorded, dict):
            raise CheckpointError(
                f"{args.run_dir} does not record its training data; pass --corpus NAME"
            )
        data_cfg = DataConfig.from_dict(recorded)
    data = load_data(data_cfg)
    result = evaluate_rolls(model, data.split(args.split), batch_size=args.batch_size)
    out = dict(result.to_dict(), split=args.split, corpus=data.name)
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{data.name} {args.split}: NLL {result.loss:.4f} nats per time step "
            f"({result.tokens:,} steps)"
        )
    return 0


def _text_model(run_dir: str, device: str, command: str) -> tuple[Any, Any, Any]:
    """``load_model`` for the commands that need text (a vocabulary)."""
    from rnnlab.train import load_model

    model, vocab, ckpt = load_model(run_dir, device=device)
    if vocab is None:
        raise ConfigError(
            f"{run_dir} is a piano-roll model; rnnlab {command} works on text models "
            "(score piano rolls with rnnlab eval)"
        )
    return model, vocab, ckpt


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate text from a trained model")
    p.add_argument("run_dir")
    p.add_argument("--prime", default="", help="text the samples continue")
    p.add_argument("--length", type=int, default=300, help="tokens to generate (at most)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, help="draw from the K most likely tokens only")
    p.add_argument("--top-p", type=float, help="draw from the smallest set of mass >= P (nucleus)")
    p.add_argument("--beam", type=int, metavar="N", help="beam search with N beams (deterministic)")
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
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from rnnlab.sampling import SamplingConfig, generate

    cfg = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be at least 1, got {args.beam}")
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]
    model, vocab, ckpt = _text_model(args.run_dir, args.device, "sample")
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
    )
    if args.json:
        print(json.dumps([{"text": t} for t in texts], ensure_ascii=False))
    else:
        print("\n\n".join(texts))
    return 0


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
        "--rhyme", action="store_true", help="lines 2, 4 (6, 8) rhyme (十三辙, modern readings)"
    )
    p.add_argument(
        "--tones",
        action="store_true",
        help="follow a standard 平仄 pattern (modern tones approximate Middle Chinese)",
    )
    p.add_argument("--count", type=int, default=1, help="poems, decoded as one batch")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per poem")
    p.set_defaults(func=cmd_poem)


def cmd_poem(args: argparse.Namespace) -> int:
    from rnnlab.poetry import PoemSpec, generate_poems
    from rnnlab.sampling import SamplingConfig

    spec = PoemSpec(
        chars=args.form,
        lines=args.lines,
        acrostic=args.acrostic,
        first_line=args.first_line,
        start=args.start,
        rhyme=args.rhyme,
        tones=args.tones,
    )
    cfg = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1, got {args.count}")
    model, vocab, ckpt = _text_model(args.run_dir, args.device, "poem")
    if ckpt.meta.get("level", "char") != "char":
        raise ConfigError(
            f"{args.run_dir} is a {ckpt.meta.get('level')}-level model; rnnlab poem needs a "
            "character model trained on Chinese poems (--preset tang-quatrains)"
        )
    poems = generate_poems(model, vocab, spec, count=args.count, cfg=cfg, seed=args.seed)
    if args.json:
        print(json.dumps([p.to_dict() for p in poems], ensure_ascii=False))
        return 0
    for i, poem in enumerate(poems):
        if i:
            print()
        print(poem.text)
        notes = ["form"]
        if poem.rhyme:
            notes.append(f"rhyme {poem.rhyme_group}")
        if poem.tones:
            notes.append(f"tones {poem.tone_pattern}")
        print(f"  ({', '.join(notes)})")
    return 0


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="per-token log-probabilities of a text under a trained model")
    p.add_argument("run_dir")
    p.add_argument("stdin", nargs="?", choices=["-"], help="read the text from standard input")
    p.add_argument("--text", help="a file to score ('-' for standard input)")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    from rnnlab.corpora import read_text_file
    from rnnlab.evaluate import score_tokens
    from rnnlab.sampling import boundary_token
    from rnnlab.vocab import make_tokenizer

    if args.text is None and args.stdin is None:
        raise ConfigError("give the text to score: --text FILE, or - to read standard input")
    if args.text in (None, "-"):
        raw = sys.stdin.buffer.read()
        try:
            text = raw.decode(args.encoding).lstrip("\ufeff")
        except (UnicodeDecodeError, LookupError):
            raise DataError(
                f"standard input is not valid {args.encoding}; pass the right --encoding"
            ) from None
    else:
        text = read_text_file(args.text, encoding=args.encoding)
    model, vocab, ckpt = _text_model(args.run_dir, args.device, "score")
    level = ckpt.meta["level"]
    tokens = make_tokenizer(level).tokenize(text)
    scores = score_tokens(model, boundary_token(vocab, level), vocab.encode(tokens), vocab.itos)
    total = sum(s.logprob for s in scores)
    ppl = math.exp(-total / len(scores))
    if args.json:
        print(
            json.dumps(
                {
                    "tokens": [
                        {"token": t, "id_token": s.token, "logprob": s.logprob}
                        for t, s in zip(tokens, scores, strict=True)
                    ],
                    "total_logprob": total,
                    "count": len(scores),
                    "perplexity": ppl,
                },
                ensure_ascii=False,
            )
        )
        return 0
    for t, s in zip(tokens, scores, strict=True):
        shown = t if s.token == t else f"{t} ({s.token})"
        print(f"{s.logprob:10.4f}\t{json.dumps(shown, ensure_ascii=False)[1:-1]}")
    print(f"total log-probability {total:.4f} nats over {len(scores)} tokens; perplexity {ppl:.2f}")
    return 0


def _add_corpora(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpora", help="list the named corpora and where each would come from")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_corpora)


def cmd_corpora(args: argparse.Namespace) -> int:
    from rnnlab.corpora import corpus_status, list_corpora

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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``rnnlab: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rnnlab: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------------- compare
DEFAULT_COMPARE_STEPS = (
    1000  # the per-run budget when no --max-steps/--max-tokens/--max-minutes/--epochs
)


def _comma_list(kind: type, flag: str) -> Any:
    """An argparse type for comma-separated values, e.g. --bptt 5,20."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes comma-separated {kind.__name__}s, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{flag} needs at least one value")
        return values

    return parse


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train a grid: cells x data fractions x BPTT windows x learning rates x seeds, "
        "equal parameter counts",
        description="Each run trains with the same trainer as `rnnlab train` in OUT/runs/<run-id>; "
        "re-running the command finishes an interrupted grid (finished runs are kept). Writes "
        "OUT/results.csv, OUT/summary.md and PNG plots. Settings not given come from --preset "
        "(a piano-roll corpus implies music-chung2014), else from the defaults shown.",
    )
    p.add_argument(
        "--preset",
        help="take the model, optimizer and loop settings of a named setup (flags override it)",
    )
    src = _add_data_args(p, encoding="utf-8", min_count=1)
    src.add_argument(
        "--start-frame",
        action="store_true",
        help="piano rolls: an all-zero frame before every piece, so every frame is scored",
    )
    g = p.add_argument_group("grid")
    g.add_argument(
        "--cells",
        type=_comma_list(str, "--cells"),
        default=("rnn", "gru", "lstm"),
        help="comma list of rnn, rnn-relu, gru, gru-reset-before, lstm, lstm-fb1 "
        "(default rnn,gru,lstm)",
    )
    g.add_argument(
        "--params",
        type=int,
        help="parameter budget of the whole model (embedding + recurrent + decoder); each cell's "
        "hidden size is solved to land within 2%% of it",
    )
    g.add_argument(
        "--hidden",
        type=int,
        help="hidden size of every cell when no --params (default 128)",
    )
    g.add_argument(
        "--embed",
        help="embedding width, or 'hidden' for the same as the hidden size (default 64; piano "
        "rolls: 0, the frames feed the recurrent layer directly)",
    )
    g.add_argument("--layers", type=int, help="(default 1)")
    g.add_argument(
        "--tie", action="store_true", help="tie decoder and embedding (implies --embed hidden)"
    )
    g.add_argument("--dropout", type=float, help="(default 0)")
    g.add_argument(
        "--data-fractions",
        type=_comma_list(float, "--data-fractions"),
        default=(1.0,),
        help="fractions of the training text (or pieces), e.g. 0.1,0.3,1 (default 1)",
    )
    g.add_argument(
        "--bptt",
        type=_comma_list(int, "--bptt"),
        help="BPTT windows, e.g. 3,5,10,20,35 (default 35; piano rolls 200)",
    )
    g.add_argument(
        "--lr",
        type=_comma_list(float, "--lr"),
        help="learning rate, or a comma list to search: each cell keeps the rate with the best "
        "validation (default 2e-3; piano rolls 1e-3)",
    )
    g.add_argument("--seeds", type=int, default=1, help="seeds 1..N per grid point (default 1)")
    b = p.add_argument_group("budget per run")
    b.add_argument("--max-steps", type=int)
    b.add_argument(
        "--max-tokens", type=int, help="training tokens per run (steps = tokens / (batch x tau))"
    )
    b.add_argument("--max-minutes", type=float)
    b.add_argument(
        "--epochs",
        type=int,
        help=f"(default: until the budget ends; {DEFAULT_COMPARE_STEPS} steps without one)",
    )
    b.add_argument(
        "--patience", type=int, help="stop a run after N epochs without validation improvement"
    )
    o = p.add_argument_group("optimization (the same for every cell)")
    o.add_argument(
        "--optimizer", choices=["sgd", "adam", "adamw", "rmsprop"], help="(default adam)"
    )
    o.add_argument("--clip", type=float, help="(default 1)")
    o.add_argument("--weight-noise", type=float, help="std of weight noise (default 0)")
    o.add_argument(
        "--schedule", choices=["constant", "decay", "plateau"], help="(default constant)"
    )
    o.add_argument("--batch-size", type=int, help="(default 20; piano rolls 8 pieces)")
    o.add_argument("--eval-batch-size", type=int, help="(default 10)")
    r = p.add_argument_group("report")
    r.add_argument(
        "--eval-every", type=int, help="validate every N steps (default: 20 times per run)"
    )
    r.add_argument(
        "--eval-points", type=int, default=20, help="validations per run for the learning curves"
    )
    r.add_argument(
        "--target-ppl",
        type=float,
        help="perplexity (piano rolls: NLL per step) for 'time to target' (default: the worst "
        "final validation figure of the grid)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument(
        "--out", required=True, help="the grid directory (re-run with the same flags to resume)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result rows as JSON")
    p.set_defaults(func=cmd_compare)


# compare settings when neither a flag nor a preset gives them
COMPARE_DEFAULTS: dict[str, Any] = {
    "hidden": 128,
    "embed": "64",
    "layers": 1,
    "dropout": 0.0,
    "bptt": (35,),
    "lr": (2e-3,),
    "optimizer": "adam",
    "clip": 1.0,
    "weight_noise": 0.0,
    "schedule": "constant",
    "batch_size": 20,
    "eval_batch_size": 10,
    "epochs": None,
    "patience": None,
}


def compare_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The compare settings: the flags given, else the preset's (explicit, or music-chung2014
    for a piano-roll corpus), else :data:`COMPARE_DEFAULTS`; plus the corpus."""
    from rnnlab.corpora import is_pianoroll
    from rnnlab.presets import get_preset

    preset = args.preset
    if preset is None and args.corpus and is_pianoroll(args.corpus):
        preset = "music-chung2014"
    settings = dict(COMPARE_DEFAULTS, corpus=args.corpus)
    if preset is not None:
        o = get_preset(preset).overrides
        m, opt, t = o.get("model", {}), o.get("optim", {}), o.get("train", {})
        from_preset = {
            "hidden": m.get("hidden_size"),
            "embed": None if "embed_size" not in m else str(m["embed_size"]),
            "layers": m.get("num_layers"),
            "dropout": m.get("dropout"),
            "bptt": None if "bptt" not in t else (t["bptt"],),
            "lr": None if "lr" not in opt else (opt["lr"],),
            "optimizer": opt.get("optimizer"),
            "clip": opt.get("clip"),
            "weight_noise": opt.get("weight_noise"),
            "schedule": opt.get("schedule"),
            "batch_size": t.get("batch_size"),
            "eval_batch_size": t.get("eval_batch_size"),
            "epochs": t.get("epochs"),
            "patience": t.get("patience"),
        }
        settings.update({k: v for k, v in from_preset.items() if v is not None})
        if args.corpus is None and args.text is None:
            settings["corpus"] = o.get("data", {}).get("corpus")
    for key in COMPARE_DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    return settings


def build_grid_config(args: argparse.Namespace) -> Any:
    """The GridConfig that the compare flags (and a preset) describe."""
    from rnnlab.dataset import DataConfig
    from rnnlab.experiments import GridConfig
    from rnnlab.model import LanguageModelConfig
    from rnnlab.train import OptimConfig, TrainConfig

    c = compare_settings(args)
    follows = args.tie or c["embed"] == "hidden"
    if follows:
        embed = c["hidden"]
    else:
        try:
            embed = int(c["embed"])
        except ValueError:
            raise ConfigError(f"--embed takes a width or 'hidden', got {c['embed']!r}") from None
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    budgets = (args.max_steps, args.max_tokens, args.max_minutes, c["epochs"])
    max_steps = args.max_steps
    if all(v is None for v in budgets):
        max_steps = DEFAULT_COMPARE_STEPS
    lrs = tuple(c["lr"])
    return GridConfig(
        data=DataConfig(
            corpus=c["corpus"],
            text=args.text,
            valid_text=args.valid_text,
            test_text=args.test_text,
            encoding=args.encoding,
            level=args.level,
            min_count=args.min_count,
            max_vocab=args.max_vocab,
            corpus_options={"start_frame": True} if args.start_frame else None,
        ),
        model=LanguageModelConfig(
            embed_size=embed,
            hidden_size=c["hidden"],
            num_layers=c["layers"],
            dropout=c["dropout"],
            tie_weights=args.tie,
        ),
        optim=OptimConfig(
            optimizer=c["optimizer"],
            lr=lrs[0],
            clip=c["clip"],
            schedule=c["schedule"],
            weight_noise=c["weight_noise"],
        ),
        train=TrainConfig(
            batch_size=c["batch_size"],
            eval_batch_size=c["eval_batch_size"],
            epochs=c["epochs"] if c["epochs"] is not None else 1_000_000,
            max_steps=max_steps,
            max_minutes=args.max_minutes,
            patience=c["patience"],
            eval_every=args.eval_every,
            device=args.device,
            threads=args.threads,
        ),
        cells=args.cells,
        data_fractions=args.data_fractions,
        bptts=c["bptt"],
        seeds=tuple(range(1, args.seeds + 1)),
        lrs=lrs if len(lrs) > 1 else (),
        params=args.params,
        embed_follows_hidden=follows,
        max_tokens=args.max_tokens,
        eval_points=args.eval_points,
        target_ppl=args.target_ppl,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from rnnlab.experiments import load_grid_data, metric_for, run_grid, summarize

    grid = build_grid_config(args)
    data = load_grid_data(grid)
    if data.vocab is None:
        what = f"{data.name} (piano rolls), {len(data.train):,} train pieces"
    else:
        what = (
            f"{data.name} ({data.level}), {len(data.train):,} train tokens, "
            f"vocabulary {len(data.vocab):,}"
        )
    print(f"rnnlab: {what}; grid in {args.out}", file=sys.stderr)

    def on_run(i: int, n: int, run: Any, status: str) -> None:
        words = {
            "done": "finished earlier, kept",
            "resume": "resuming from its checkpoint",
            "start": "training",
        }
        size = f"hidden {run.size.hidden_size}, {run.size.parameters:,} parameters"
        print(f"rnnlab: [{i}/{n}] {run.run_id} ({size}): {words[status]}", file=sys.stderr)

    report = run_grid(grid, args.out, data=data, progress=not args.no_progress, on_run=on_run)
    metric = metric_for(data.level)
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(args.out),
                    f"target_{metric.key}": report.target_ppl,
                    "rows": report.rows,
                    "files": [str(f) for f in report.files],
                }
            )
        )
        return 0
    k = metric.key
    several = len(grid.learning_rates) > 1
    for s in summarize(report.rows, metric):
        extra = f", {s['diverged']} diverged" if s["diverged"] else ""
        rate = f"lr {s['lr']:<8g} " if several else ""
        print(
            f"{s['cell']:<16} fraction {s['data_fraction']:<5g} tau {s['bptt']:<4} {rate}"
            f"valid {k} {s[f'valid_{k}']}  test {k} {s[f'test_{k}']}  (n={s['n']}{extra})"
        )
    for note in report.notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(str(f) for f in report.files)}")
    return 0


# ---------------------------------------------------------------------------------- gradflow
def _add_gradflow(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradflow",
        help="how far gradients reach back in time (||dL_T/dh_t||) and gate statistics",
        description="Measures ||dL_T/dh_{T-d}|| for d = 0..K (loss at the last step only) for "
        "trained runs (RUN_DIR) or, without one, for freshly initialised cells; plus gate "
        "statistics on held-out text.",
    )
    p.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="trained runs (default: models at initialisation)",
    )
    p.add_argument(
        "--cell",
        type=_comma_list(str, "--cell"),
        help="cells at initialisation, comma list (default rnn,gru,lstm,lstm-fb1)",
    )
    p.add_argument("--steps", type=int, default=50, help="K: how many steps back (default 50)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"cell": ..., "norms": [...]} (a list if several)',
    )
    p.add_argument("--plot", help="write the plot (PNG, log scale) to this file")
    p.add_argument(
        "--with-init",
        action="store_true",
        help="with RUN_DIR: also a fresh model of the same config",
    )
    src = p.add_argument_group(
        "held-out text (default: the run's validation split; random tokens at init)"
    )
    src.add_argument("--corpus")
    src.add_argument("--text")
    src.add_argument("--level", choices=["char", "word"])
    src.add_argument("--encoding", default="utf-8")
    m = p.add_argument_group("models at initialisation")
    m.add_argument("--hidden", type=int, default=128)
    m.add_argument("--embed", type=int, default=64)
    m.add_argument("--layers", type=int, default=1)
    m.add_argument(
        "--vocab-size", type=int, default=64, help="vocabulary of the random tokens (no text given)"
    )
    x = p.add_argument_group("measurement")
    x.add_argument("--batch", type=int, default=32, help="sequences averaged over")
    x.add_argument("--warmup", type=int, default=20, help="tokens run before the measured window")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--no-gates", action="store_true", help="skip the gate statistics")
    x.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=cmd_gradflow)


def cmd_gradflow(args: argparse.Namespace) -> int:
    from rnnlab.dataset import DataConfig
    from rnnlab.diagnostics import gradflow_at_init, gradflow_of_run, plot_gradflow

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    data = None
    if args.corpus or args.text:
        data = DataConfig(
            corpus=args.corpus, text=args.text, level=args.level, encoding=args.encoding
        )
    common = {
        "steps": args.steps,
        "batch": args.batch,
        "warmup": args.warmup,
        "seed": args.seed,
        "gates": not args.no_gates,
    }
    if args.run_dirs:
        if args.cell:
            raise ConfigError(
                "--cell picks models at initialisation; a RUN_DIR brings its own cell "
                "(add --with-init)"
            )
        flows = []
        for run_dir in args.run_dirs:
            flows += gradflow_of_run(run_dir, data=data, with_init=args.with_init, **common)
    else:
        if args.with_init:
            raise ConfigError(
                "--with-init compares a RUN_DIR with its initialisation; give a RUN_DIR"
            )
        cells = args.cell or ("rnn", "gru", "lstm", "lstm-fb1")
        flows = gradflow_at_init(
            cells,
            data=data,
            vocab_size=args.vocab_size,
            hidden_size=args.hidden,
            embed_size=args.embed,
            num_layers=args.layers,
            **common,
        )
    if args.plot:
        plot_gradflow(flows, args.plot)
        print(f"rnnlab: wrote {args.plot}", file=sys.stderr)
    if args.json:
        out = [f.to_dict() for f in flows]
        print(json.dumps(out[0] if len(out) == 1 else out))
        return 0
    k = args.steps
    print(
        f"{'cell':<18} {'source':<24} {'|dL/dh_T|':>10} {f'|dL/dh_T-{k}|':>12} {'x per step':>10}"
    )
    for f in flows:
        src = "init" if f.source == "init" else Path(f.source).name
        print(f"{f.cell:<18} {src:<24} {f.norms[0]:>10.3g} {f.norms[-1]:>12.3g} {f.decay:>10.3f}")
    for f in flows:
        for layer, gates in enumerate(f.gates):
            for name, s in gates.items():
                src = "init" if f.source == "init" else Path(f.source).name
                print(
                    f"{f.cell} ({src}) layer {layer} {name} gate: mean {s['mean']:.3f}, "
                    f"saturated {s['saturated']:.1%} (>0.95 {s['above_0.95']:.1%}, "
                    f"<0.05 {s['below_0.05']:.1%})"
                )
    print(f"text: {flows[0].text}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnlab", description="Recurrent neural language models.")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress details to stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_train,
        _add_eval,
        _add_sample,
        _add_poem,
        _add_score,
        _add_corpora,
        _add_compare,
        _add_gradflow,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 success, 2 bad input, 3 diverged, 130 interrupted).

    Every failure is one line on stderr starting ``rnnlab: error:``, never a traceback (with
    ``--verbose`` an unexpected error also logs its traceback, for a bug report).
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "train"])
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="rnnlab: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except RnnlabError as e:
        print(f"rnnlab: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rnnlab: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # disk full, permissions, a file vanishing under us
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"rnnlab: error: {e.strerror or e}{where}; "
            "free disk space or fix permissions and retry",
            file=sys.stderr,
        )
        return 1
    except MemoryError:
        print(
            "rnnlab: error: out of memory; use a smaller model, --batch-size or --bptt",
            file=sys.stderr,
        )
        return 1
    except Exception as e:  # a bug: still one line, the traceback only with --verbose
        if args.verbose:
            log.info("unexpected error", exc_info=True)
        print(
            f"rnnlab: error: unexpected {type(e).__name__}: {_one_line(str(e))}; this is a bug in "
            "rnnlab, please report it with the output of --verbose",
            file=sys.stderr,
        )
        return 1


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
