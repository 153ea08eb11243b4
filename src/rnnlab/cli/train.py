"""``rnnlab train`` and ``rnnlab config``: a config file, a preset and flags, resolved into one
RunConfig by :func:`rnnlab.config.resolve.resolve_config` (``--resume`` by
:func:`~rnnlab.config.resolve.resume_config`); the run directory from :mod:`rnnlab.runs.directory`,
the training and its summary from :mod:`rnnlab.training.trainer`. This module parses and prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rnnlab.config.config_file import parse_toml, to_toml
from rnnlab.config.resolve import resolve_config, resume_config
from rnnlab.config.run import ASGD_MODES, OPTIMIZERS, SCHEDULES, RunConfig
from rnnlab.errors import ConfigError
from rnnlab.nn.registry import cell_help

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
    "last_hidden": ("model", "last_hidden_size"),
    "embed": ("model", "embed_size"),
    "dropout": ("model", "dropout"),
    "tie": ("model", "tie_weights"),
    "init_range": ("model", "init_range"),
    "impl": ("model", "impl"),
    "head": ("model", "head"),
    "cutoffs": ("model", "cutoffs"),
    "div_value": ("model", "div_value"),
    "dropout_input": ("model", "dropout_input"),
    "dropout_hidden": ("model", "dropout_hidden"),
    "dropout_output": ("model", "dropout_output"),
    "dropout_embed": ("model", "dropout_embed"),
    "weight_drop": ("model", "weight_drop"),
    "optimizer": ("optim", "optimizer"),
    "lr": ("optim", "lr"),
    "momentum": ("optim", "momentum"),
    "weight_decay": ("optim", "weight_decay"),
    "clip": ("optim", "clip"),
    "weight_noise": ("optim", "weight_noise"),
    "ar": ("optim", "ar"),
    "tar": ("optim", "tar"),
    "asgd": ("optim", "asgd"),
    "nonmono": ("optim", "nonmono"),
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
        "--encoding",
        default=encoding,
        help=f"encoding of --text files (default {encoding})"
        if encoding
        else "encoding of the text files (default auto: UTF-8, else detected with a one-line "
        "notice; a name given is honoured exactly, and the run records the one it used)",
    )
    src.add_argument("--level", choices=["char", "word"])
    src.add_argument("--min-count", type=int, default=min_count)
    src.add_argument("--max-vocab", type=int)
    return src


DEFAULTS_NOTE = (
    "Defaults shown are the quick preset's: rnnlab train with no source, and a --text file, "
    "start from it; (word: X) is the words preset's value, which a --text file with --level "
    "word starts from. A --preset, a --config file or --init-from replace them, and a named "
    "--corpus without a preset starts from the built-in defaults (music corpora from "
    "music-chung2014). rnnlab config ARGS prints every setting a command would train with."
)


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Append each run flag's default to its help: the value in the config ``rnnlab train``
    resolves with no arguments (the quick preset), and the words preset's where it differs."""
    char = resolve_config().to_dict()
    word = resolve_config(overrides={"data": {"text": "x", "level": "word"}}).to_dict()

    def show(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value)) or "none"
        return str(value)

    for action in p._actions:
        where = TRAIN_FLAGS.get(action.dest)
        if where is None or action.dest in ("text", "valid_text", "test_text"):
            continue
        if action.help and "default" in action.help:
            continue  # the help says it in words already
        section, name = where
        default = show(char[section][name])
        if action.dest == "corpus":
            default += ", shipped with rnnlab"
        other = show(word[section][name])
        if other != show(char[section][name]) and action.dest != "corpus":
            default += f"; word: {other}"
        action.help = f"{action.help + ' ' if action.help else ''}(default: {default})".replace(
            "%", "%%"
        )


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a language model or a piano-roll model (no arguments: the quick offline "
        "default)",
        description="Train a model (no arguments: a character LSTM on Tiny Shakespeare, shipped "
        "with rnnlab, for 3 minutes). " + DEFAULTS_NOTE,
    )
    _add_run_args(p)
    _show_defaults(p)
    p.add_argument("--out", help="run directory (default runs/<name>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run exactly where it stopped (RUN_DIR/best.safetensors: from its best "
        "checkpoint, when the last one is damaged)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-sample", action="store_true", help="do not print a sample at the end")
    p.add_argument("--json", action="store_true", help="print the final results as JSON")
    p.set_defaults(func=cmd_train)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="print the config that rnnlab train would run with these arguments (TOML; feed "
        "it back with rnnlab train --config FILE)",
        description="Resolves the preset, the config file and the flags exactly as rnnlab train "
        "does and prints the result without training: TOML by default, or JSON (the run.json "
        "format) with --json. " + DEFAULTS_NOTE,
    )
    _add_run_args(p)
    _show_defaults(p)
    p.add_argument("--json", action="store_true", help="print JSON (as run.json) instead of TOML")
    p.set_defaults(func=cmd_config)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The options that define a run: --preset, --config and the data, model, optimization and
    loop flags (shared by train and config)."""
    p.add_argument("--preset", help="a named setup (see README); flags override it")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a config file (TOML: [data] [model] [optim] [train], optional preset = NAME) or "
        "a run's run.json; it overrides the preset and flags override it",
    )
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
    src.add_argument(
        "--poet",
        metavar="NAME",
        help="--corpus tang: only this author's poems (e.g. 李白; either script), in the "
        "corpus's own train/valid/test split",
    )
    f = p.add_argument_group("fine-tuning")
    f.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from a trained run's weights, vocabulary and architecture (its best "
        "checkpoint, or the .safetensors file given) with a fresh optimizer; its optimizer "
        "and loop settings are the defaults that a preset, --config and flags override",
    )
    new_tokens = f.add_mutually_exclusive_group()
    new_tokens.add_argument(
        "--unk",
        dest="new_tokens",
        action="store_const",
        const="unk",
        help="--init-from: training tokens the source vocabulary lacks become <unk> "
        "(default: refuse them, listing them)",
    )
    new_tokens.add_argument(
        "--grow-vocab",
        dest="new_tokens",
        action="store_const",
        const="grow",
        help="--init-from: append the training tokens the source vocabulary lacks (new rows "
        "start from the mean embedding and output row and a low output bias)",
    )
    m = p.add_argument_group("model")
    m.add_argument("--cell", help=f"recurrent cell: {cell_help()}")
    m.add_argument("--layers", type=int)
    m.add_argument("--hidden", type=int)
    m.add_argument(
        "--last-hidden",
        type=int,
        metavar="N",
        help="the last layer's width, if not --hidden's (AWD-LSTM: 400 under 1150, to tie a "
        "400-wide embedding); 0: --hidden",
    )
    m.add_argument("--embed", type=int, help="embedding width (piano rolls: 0 = frames direct)")
    m.add_argument("--dropout", type=float)
    m.add_argument(
        "--tie",
        action=argparse.BooleanOptionalAction,
        help="tie decoder and embedding weights (--no-tie: untie a preset's)",
    )
    m.add_argument("--init-range", type=float, help="uniform init in ±X (Zaremba et al.)")
    m.add_argument(
        "--impl",
        choices=["auto", "fused", "explicit", "cpu"],
        help="recurrent layer path: auto, torch's fused kernel, rnnlab's explicit loop, or "
        "cpu (rnnlab's window kernel for the GRU/RNN on CPU; see rnnlab.nn.fused_cpu)",
    )
    m.add_argument(
        "--head",
        choices=["softmax", "adaptive"],
        help="text output layer: the full softmax or the adaptive softmax of Grave "
        "et al. 2017, faster for large word vocabularies (piano rolls always use sigmoid units)",
    )
    m.add_argument(
        "--cutoffs",
        type=_cutoffs,
        metavar="C1,C2,...",
        help="adaptive softmax: split the frequency-ordered vocabulary at these ids, e.g. "
        "2000,10000 (default: 2000, 10000, 50000 as the vocabulary allows; V // 4 under 4000)",
    )
    m.add_argument(
        "--div-value",
        type=float,
        metavar="X",
        help="adaptive softmax: tail cluster i projects to hidden / X^i dimensions (default 4)",
    )
    a = p.add_argument_group("AWD-LSTM regularisers (Merity et al. 2018; text models, 0: off)")
    a.add_argument(
        "--dropout-input",
        type=float,
        metavar="P",
        help="locked dropout on the embeddings: one mask per sequence, the same at every step",
    )
    a.add_argument(
        "--dropout-hidden",
        type=float,
        metavar="P",
        help="locked dropout between layers (the stack then runs one layer at a time)",
    )
    a.add_argument(
        "--dropout-output",
        type=float,
        metavar="P",
        help="locked dropout on the last layer's output",
    )
    a.add_argument(
        "--dropout-embed",
        type=float,
        metavar="P",
        help="embedding dropout: whole words (rows of the embedding) dropped, the rest rescaled",
    )
    a.add_argument(
        "--weight-drop",
        type=float,
        metavar="P",
        help="DropConnect on the hidden-to-hidden weights, one mask per window (fused kernel kept)",
    )
    a.add_argument(
        "--ar", type=float, metavar="ALPHA", help="activation regularisation: ALPHA * mean(h^2)"
    )
    a.add_argument(
        "--tar",
        type=float,
        metavar="BETA",
        help="temporal activation regularisation: BETA * mean((h_t - h_{t-1})^2)",
    )
    a.add_argument(
        "--asgd",
        choices=list(ASGD_MODES),
        help="averaged SGD: nt = NT-ASGD (switch to averaging when validation stalls), "
        "finetune = average from the start and stop when it stalls (with --init-from)",
    )
    a.add_argument(
        "--nonmono",
        type=int,
        metavar="N",
        help="NT-ASGD's trigger: validation worse than the best before the last N checks "
        "(default 5)",
    )
    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=list(OPTIMIZERS))
    o.add_argument("--lr", type=float)
    o.add_argument("--momentum", type=float)
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--clip", type=float, help="gradient-norm clipping threshold (0: off)")
    o.add_argument(
        "--weight-noise",
        type=float,
        help="std of Gaussian noise on the weights during training (Graves 2011; 0: off)",
    )
    o.add_argument("--schedule", choices=list(SCHEDULES))
    o.add_argument("--decay-start", type=int)
    o.add_argument("--decay-factor", type=float)
    t = p.add_argument_group("loop")
    t.add_argument("--bptt", type=int, help="truncated-BPTT window (time steps)")
    t.add_argument(
        "--variable-bptt",
        action=argparse.BooleanOptionalAction,
        help="draw each window's length around --bptt (AWD-LSTM; --no-variable-bptt: off)",
    )
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


def _cutoffs(text: str) -> tuple[int, ...]:
    """``--cutoffs 2000,10000`` -> (2000, 10000); the config checks the values."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 2000,10000, got {text!r}"
        ) from None


def build_run_config(args: argparse.Namespace) -> RunConfig:
    """The config file (--config), the preset and the flags given, resolved into one config
    (with ``--init-from``, over the source run's settings and with its architecture)."""
    config = resolve_config(args.preset, flag_overrides(args), file=args.config)
    if config.train.init_from is None:
        return config
    from rnnlab.training.init_from import resolve_fine_tuning

    return resolve_fine_tuning(args.preset, flag_overrides(args), file=args.config)


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The run-config flags given, as ``{section: {field: value}}`` (text paths made absolute:
    the run is used later from other directories)."""
    out: dict[str, dict[str, Any]] = {}
    for flag, (section, name) in TRAIN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag in ("text", "valid_text", "test_text"):
            value = str(Path(value).absolute())
        out.setdefault(section, {})[name] = value
    options = {}  # merged into the corpus options below them
    if getattr(args, "start_frame", None):
        options["start_frame"] = True
    if getattr(args, "poet", None) is not None:
        options["poet"] = args.poet
    if options:
        out.setdefault("data", {})["corpus_options"] = options
    if getattr(args, "init_from", None) is not None:  # a whole new table: nothing kept below
        out.setdefault("train", {})["init_from"] = {
            "run": str(Path(args.init_from).absolute()),
            "checkpoint": None,
            "step": None,
            "sha256": None,
            "new_tokens": args.new_tokens or "refuse",
        }
    elif getattr(args, "new_tokens", None) is not None:  # the policy of a config file's source
        out.setdefault("train", {})["init_from"] = {"new_tokens": args.new_tokens}
    return out


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config (TOML, or JSON as run.json) without training."""
    config = build_run_config(args)
    if args.json:
        print(json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
        return 0
    text = to_toml(config)
    if resolve_config(file=parse_toml(text)) != config:  # what `train --config` would read
        raise ConfigError(
            "TOML cannot write this config (TOML has no null: a field left out keeps the "
            "preset's value); print it with --json and give that file to --config"
        )
    print(text, end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the run the arguments describe (or continue ``--resume``) and print its results."""
    from rnnlab.runs.checkpoint import LAST, resume_point
    from rnnlab.training import distributed
    from rnnlab.training.trainer import Trainer

    main_rank = distributed.env_rank() == 0  # under torchrun only rank 0 reports and writes
    if not main_rank:
        logging.getLogger("rnnlab").setLevel(logging.ERROR)
    config, run_dir = _config_and_run_dir(args, check_out=main_rank)
    resume_from = resume_point(args.resume)[1] if args.resume else LAST
    trainer = Trainer(
        config,
        run_dir,
        resume=bool(args.resume),
        resume_from=resume_from,
        progress=not args.no_progress,
    )
    if not trainer.is_main:
        trainer.fit()
        trainer.close()
        return 0
    print(f"rnnlab: run directory {run_dir}; {_describe_run(trainer)}", file=sys.stderr)
    result = trainer.fit()
    trainer.close()
    summary = result.summary()
    sample = None if args.no_sample else _final_sample(trainer)
    if args.json:
        print(json.dumps({**summary, "sample": sample}, ensure_ascii=False))
    else:
        _print_results(summary, sample, rolls=trainer.data.vocab is None)
    return 0


def _config_and_run_dir(args: argparse.Namespace, *, check_out: bool) -> tuple[RunConfig, Path]:
    """The run's config and directory: the saved run's (``--resume``), or a new one's (an
    ``--out`` holding a run refused when ``check_out``)."""
    from rnnlab.runs.checkpoint import resume_point
    from rnnlab.runs.directory import check_new_run_dir, new_run_dir
    from rnnlab.runs.load import load_run_config

    if args.resume:
        if args.init_from:
            raise ConfigError(
                "--init-from starts a new run from another run's weights and --resume "
                "continues a run where it stopped; give one of them"
            )
        run_dir = resume_point(args.resume)[0]
        config = resume_config(
            load_run_config(run_dir),
            flag_overrides(args),
            _flags_given(args),
            preset=args.preset,
            file=args.config,
        )
        return config, run_dir
    config = build_run_config(args)
    run_dir = new_run_dir(config, args.out)
    if check_out:
        check_new_run_dir(run_dir)
    return config, run_dir


def _flags_given(args: argparse.Namespace) -> set[str]:
    """The names of the run-config flags given on the command line."""
    given = {k for k, v in vars(args).items() if k in TRAIN_FLAGS and v is not None}
    given |= {"start_frame"} if args.start_frame else set()
    given |= {"poet"} if args.poet is not None else set()
    return given | {"unk": {"unk"}, "grow": {"grow_vocab"}}.get(args.new_tokens, set())


def _describe_run(trainer: Any) -> str:
    """The start line after the run directory: the data, the model, its size, the device."""
    data, model = trainer.data, trainer.model_config
    if data.vocab is None:
        what = (
            f"{data.name} (piano rolls), {len(data.train):,} train pieces "
            f"({sum(p.size(0) for p in data.train):,} frames)"
        )
    else:
        what = (
            f"{data.name} ({data.level}), {len(data.train):,} train tokens, "
            f"vocabulary {len(data.vocab):,}"
        )
    head = (
        f", adaptive softmax (cutoffs {','.join(map(str, model.cutoffs))})"
        if model.head == "adaptive"
        else ""
    )
    init = trainer.config.train.init_from
    start = (
        f"; fine-tuned from {Path(init['run']) / init['checkpoint']} (step {init['step']})"
        if init is not None
        else ""
    )
    return (
        f"{what}; {trainer.config.model.cell} {trainer.config.model.stack_text()}{head}, "
        f"{trainer.model.num_parameters():,} parameters, device {trainer.device}{start}"
    )


def _final_sample(trainer: Any) -> str | None:
    """A sample of the trained text model at temperature 0.8 (None for piano rolls)."""
    from rnnlab.generation.sampling import SamplingConfig, generate

    data = trainer.data
    if data.vocab is None:
        return None
    return generate(
        trainer.model,
        data.vocab,
        data.level,
        length=300 if data.level == "char" else 60,
        cfg=SamplingConfig(temperature=0.8),
        seed=0,
    )[0]


def _print_results(summary: dict[str, Any], sample: str | None, *, rolls: bool) -> None:
    """The scores, the steps and time, and the sample, as text."""
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
        f"trained {summary['steps']} steps in {summary['wall_time']:.0f}s; "
        f"checkpoints in {summary['run_dir']}"
    )
    if sample is not None:
        print("--- sample (temperature 0.8) ---")
        print(sample)
