"""Named training setups from the literature, each with its source.

A preset is data: a dict of sections (``data``, ``model``, ``optim``, ``train``) over the defaults
of :class:`rnnlab.config.run.RunConfig`, checked by the same classes as a config file when it is
applied (an unknown key is a one-line error naming the preset). A config file overrides the
preset and the flags given override both (:func:`rnnlab.config.resolve.resolve_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: str
    overrides: dict[str, dict[str, Any]]


def _zaremba(
    hidden: int,
    dropout: float,
    bptt: int,
    epochs: int,
    decay: float,
    start: int,
    clip: float,
    init: float,
) -> dict:
    """Zaremba et al.'s setup in rnnlab's units.

    Their code minimises the cross-entropy SUMMED over the ``bptt`` steps of a window (averaged
    over the batch) with learning rate 1 and clips that gradient's norm at ``clip``. rnnlab
    minimises the mean over all tokens, whose gradient is ``bptt`` times smaller; the same updates
    are learning rate ``bptt`` and clipping at ``clip / bptt`` (hence the PyTorch example's lr 20
    and clip 0.25 for the small model).
    """
    return {
        "data": {"corpus": "ptb", "level": "word"},
        "model": {
            "cell": "lstm",
            "num_layers": 2,
            "embed_size": hidden,
            "hidden_size": hidden,
            "dropout": dropout,
            "init_range": init,
        },
        "optim": {
            "optimizer": "sgd",
            "lr": float(bptt),
            "clip": clip / bptt,
            "schedule": "decay",
            "decay_start": start,
            "decay_factor": decay,
        },
        "train": {"bptt": bptt, "batch_size": 20, "epochs": epochs, "eval_batch_size": 10},
    }


def _ptb_budget(
    hidden: int,
    dropout: float,
    minutes: float,
    tie: bool = False,
    corpus: str = "ptb",
    locked: tuple[float, float, float] | None = None,
) -> dict:
    """PTB in a fixed wall-time budget on a CPU: an LSTM read out by an adaptive softmax, SGD
    with the PyTorch example's rate and clipping, the rate annealed to zero over the budget.

    Where the time goes on a CPU: with 2x200 units and the full 10,000-word softmax, the output
    layer is three quarters of the arithmetic per token (2*H*V against 2*4H*(I+H) per layer);
    the adaptive softmax (Grave et al. 2017; one head of the 2,000 most frequent words and a
    tail cluster projected to H/4) cuts it to about a fifth and more than doubles tokens/s
    (``benchmarks/bench_softmax.py``). A fixed budget is spent best by a schedule that ends at
    zero at the budget's end (``cosine``), not one that waits for the validation loss to stall.
    ``tie``: the adaptive head scores words by their embedding rows
    (:class:`~rnnlab.models.heads.TiedAdaptiveSoftmax`, Press & Wolf 2017): a fifth fewer parameters
    at 2x400 and the regulariser that pays in a long run, for about a tenth more arithmetic per
    token (its tail cluster is full width).
    ``locked``: the rates (input, between layers, output) of locked dropout in place of
    ``dropout`` (which must then be 0): one mask per sequence, drawn once per window instead of
    once per token, so the loop runs about 15% more tokens per second
    (``benchmarks/bench_dropout.py``) and the budget covers that many more updates.
    """
    model: dict[str, Any] = {
        "cell": "lstm",
        "num_layers": 2,
        "embed_size": hidden,
        "hidden_size": hidden,
        "dropout": dropout,
        "init_range": 0.1,
        "head": "adaptive",
        "tie_weights": tie,
    }
    if locked is not None:
        model["dropout_input"], model["dropout_hidden"], model["dropout_output"] = locked
    return {
        "data": {"corpus": corpus, "level": "word"},
        "model": model,
        "optim": {"optimizer": "sgd", "lr": 20.0, "clip": 0.25, "schedule": "cosine"},
        "train": {
            "bptt": 35,
            "batch_size": 20,
            "epochs": 200,
            "max_minutes": minutes,
            "eval_batch_size": 10,
            "log_every": 50,
        },
    }


def _quick() -> dict:
    """Characters in 3 minutes of a 2-core CPU: what trains best in that budget (measured in
    ``benchmarks/quick_start.py``, BENCHMARKS.md, with the tuning runs in
    ``benchmarks/results/quick_start/tuning/``). In 3 minutes the model is short of updates, not
    of capacity: one layer of 384 units in batches of 16 windows takes 2,200 steps over 3.5M
    characters and beats 512 units (fewer tokens), batches of 32 or 64 (fewer steps), dropout
    (0.2 cost 0.14 nats) and lower rates; the rate is annealed to zero at the budget's end."""
    return {
        "data": {"corpus": "tinyshakespeare", "level": "char"},
        "model": {
            "cell": "lstm",
            "num_layers": 1,
            "embed_size": 64,
            "hidden_size": 384,
            "dropout": 0.0,
        },
        "optim": {"optimizer": "adam", "lr": 4e-3, "clip": 1.0, "schedule": "cosine"},
        "train": {
            "bptt": 100,
            "batch_size": 16,
            "epochs": 50,
            "max_minutes": 3.0,
            "eval_batch_size": 32,
            "log_every": 50,
        },
    }


def _words() -> dict:
    """A word model for a text of the user's own: ptb-fast's recipe with PTB's vocabulary
    size, the rest of the words counted as ``<unk>``."""
    recipe = _ptb_budget(200, 0.2, 6.5)
    recipe["data"] = {"level": "word", "max_vocab": 10_000}
    return recipe


def _tang_hour() -> dict:
    """The Tang poems in 60 minutes of 2 CPU cores (issue 19; BENCHMARKS.md).

    What the PTB work taught, on characters: the vocabulary of 5,000 characters is
    WikiText-2-sized for a softmax, and the adaptive head (2,000 characters in its head, 94.8%
    of the training tokens) tied to the embedding doubles tokens/s against the full softmax at
    2x256; the cosine schedule spends a fixed budget. The size is what the budget affords:
    2x384 reads about 5,600 characters/s on 2 cores (about 6 epochs in the hour), 2x512 about
    3,500 (under 4). Titles are a prefix (``title:poem``) the model conditions on; the
    vocabulary and the scored tokens are those of ``tang-quatrains``, so their perplexities
    compare.
    """
    return {
        "data": {
            "corpus": "tang",
            "level": "char",
            "max_vocab": 5000,
            "corpus_options": {"script": "simplified", "titles": True},
        },
        "model": {
            "cell": "lstm",
            "num_layers": 2,
            "embed_size": 384,
            "hidden_size": 384,
            "dropout": 0.2,
            "tie_weights": True,
            "head": "adaptive",
        },
        "optim": {"optimizer": "adam", "lr": 3e-3, "clip": 1.0, "schedule": "cosine"},
        "train": {
            "bptt": 64,
            "batch_size": 64,
            "epochs": 100,
            "max_minutes": 60.0,
            "eval_batch_size": 32,
            "log_every": 50,
        },
    }


def _chung2014() -> dict:
    """Chung, Gulcehre, Cho & Bengio (2014), "Empirical Evaluation of Gated Recurrent Neural
    Networks on Sequence Modeling", polyphonic music (their Table 2), in rnnlab's terms.

    What the paper states: one recurrent layer of about 20k parameters (LSTM 36 units, GRU 46,
    tanh 100); RMSProp; weight noise of standard deviation 0.075; the gradient norm rescaled to
    1 when above 1; the learning rate picked on validation among log-uniform candidates; early
    stopping on validation. What it leaves open and rnnlab chooses: the frames feed the
    recurrent layer directly (``embed_size`` 0); RMSProp decay 0.9; batches of 8 pieces;
    pieces longer than 200 steps trained in windows of 200 with the state carried (JSB's longest
    piece has 160 frames, so JSB trains on whole pieces); learning rate 1e-3 (search others with
    ``rnnlab compare --lr``); stop after 20 epochs without a better validation NLL, at most 2,000 epochs (a bound
    early stopping always reached first in the full reproduction: the longest run stopped at 493).
    """
    return {
        "data": {"corpus": "jsb"},
        "model": {
            "cell": "lstm",
            "num_layers": 1,
            "embed_size": 0,
            "hidden_size": 36,
            "dropout": 0.0,
            "head": "sigmoid",
        },
        "optim": {
            "optimizer": "rmsprop",
            "lr": 1e-3,
            "clip": 1.0,
            "schedule": "constant",
            "weight_noise": 0.075,
        },
        "train": {
            "bptt": 200,
            "batch_size": 8,
            "eval_batch_size": 32,
            # a bound, not a budget: early stopping ends every run (the longest, MuseData's LSTM, 493)
            "epochs": 2000,
            "patience": 20,
            "log_every": 20,
        },
    }


def _awd(corpus: str, dropout_input: float, batch_size: int, epochs: int) -> dict:
    """AWD-LSTM (Merity, Keskar & Socher 2018, "Regularizing and Optimizing LSTM Language
    Models", section 5) for a GPU, in rnnlab's terms.

    What the paper states: a 3-layer LSTM of 1150 units, its last layer 400 wide so that the
    400-wide embedding can be tied to the decoder (24M parameters on PTB);
    locked dropout 0.4 on the word vectors (0.65 on WikiText-2, for its larger vocabulary), 0.3
    between layers, 0.4 on the last layer's output; embedding dropout 0.1; weight drop 0.5 on
    the hidden-to-hidden matrices; AR alpha 2, TAR beta 1; weight decay 1.2e-6; SGD at lr 30,
    gradient norm clipped at 0.25; NT-ASGD with n = 5 and one check per epoch; windows of
    variable length around 70 (rnnlab's ``variable_bptt``: 70 w.p. 0.95 else 35, then normal,
    the rate scaled by length / 70); batches of 40 (PTB) and 80 (WikiText-2); 500 and 750
    epochs. Evaluation here is the exact full pass with the state carried (theirs: windows of
    70, batch 10 for validation and 1 for test). The loss is the mean cross-entropy per token
    in both, so the rate and clipping carry over unchanged.
    """
    return {
        "data": {"corpus": corpus, "level": "word"},
        "model": {
            "cell": "lstm",
            "num_layers": 3,
            "embed_size": 400,
            "hidden_size": 1150,
            "last_hidden_size": 400,
            "tie_weights": True,
            "dropout": 0.0,
            "dropout_input": dropout_input,
            "dropout_hidden": 0.3,
            "dropout_output": 0.4,
            "dropout_embed": 0.1,
            "weight_drop": 0.5,
        },
        "optim": {
            "optimizer": "sgd",
            "lr": 30.0,
            "clip": 0.25,
            "weight_decay": 1.2e-6,
            "schedule": "constant",
            "ar": 2.0,
            "tar": 1.0,
            "asgd": "nt",
            "nonmono": 5,
        },
        "train": {
            "bptt": 70,
            "variable_bptt": True,
            "batch_size": batch_size,
            "eval_batch_size": 10,
            "epochs": epochs,
            "log_every": 50,
        },
    }


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "quick",
            "Tiny Shakespeare (shipped with rnnlab, offline) as characters: 1x384 LSTM, Adam "
            "4e-3 annealed to 0 over 3 minutes (cosine), clip 1, bptt 100, batch 16; also what "
            "a --text file trains with when no preset is named",
            "rnnlab's CPU recipe for the first five minutes (issue 15; BENCHMARKS.md)",
            _quick(),
        ),
        Preset(
            "words",
            "a --text file at word level (--level word): at most 10,000 words (rarer ones are "
            "<unk>), then ptb-fast's recipe: 2x200 LSTM, adaptive softmax, dropout 0.2, SGD lr "
            "20 annealed to 0 over 6.5 minutes (cosine), clip 0.25, bptt 35, batch 20",
            "ptb-fast (issue 8) with PTB's vocabulary size",
            _words(),
        ),
        Preset(
            "ptb-small",
            "PTB words, 2x200 LSTM, no dropout, bptt 20, 13 epochs, SGD lr 1 halved each epoch after epoch 4, clip 5, init ±0.1",
            "Zaremba, Sutskever & Vinyals 2014, 'Recurrent Neural Network Regularization', small config (test ppl 114.5)",
            _zaremba(200, 0.0, 20, 13, 0.5, 4, 5.0, 0.1),
        ),
        Preset(
            "ptb-medium",
            "PTB words, 2x650 LSTM, dropout 0.5, bptt 35, 39 epochs, SGD lr 1 divided by 1.2 each epoch after epoch 6, clip 5, init ±0.05",
            "Zaremba et al. 2014, medium config (test ppl 82.7)",
            _zaremba(650, 0.5, 35, 39, 1 / 1.2, 6, 5.0, 0.05),
        ),
        Preset(
            "ptb-large",
            "PTB words, 2x1500 LSTM, dropout 0.65, bptt 35, 55 epochs, SGD lr 1 divided by 1.15 each epoch after epoch 14, clip 10, init ±0.04",
            "Zaremba et al. 2014, large config (test ppl 78.4)",
            _zaremba(1500, 0.65, 35, 55, 1 / 1.15, 14, 10.0, 0.04),
        ),
        Preset(
            "ptb-fast",
            "PTB words in 6.5 minutes: 2x200 LSTM, adaptive softmax, dropout 0.2, SGD lr 20 "
            "annealed to 0 over the budget (cosine), clip 0.25, bptt 35, batch 20",
            "rnnlab's CPU recipe (issue 8); the PyTorch word-language-model example's rate and "
            "clipping, Grave et al. 2017's adaptive softmax",
            _ptb_budget(200, 0.2, 6.5),
        ),
        Preset(
            "ptb-hour",
            "PTB words in 60 minutes: 2x400 LSTM, adaptive softmax tied to the embedding, "
            "locked dropout 0.4 input / 0.3 between layers / 0.4 output, SGD lr 20 annealed to 0 "
            "over the budget (cosine), clip 0.25, bptt 35, batch 20",
            "rnnlab's CPU recipe (issue 8), as ptb-fast with a larger, tied, more regularised "
            "model; locked dropout from AWD-LSTM (issue 16: test 79.75 and 80.44 on two seeds, "
            "against 80.18 and 80.95 with per-token dropout 0.4 on the same day)",
            _ptb_budget(400, 0.0, 60.0, tie=True, locked=(0.4, 0.3, 0.4)),
        ),
        Preset(
            "wt2-hour",
            "WikiText-2 words in 60 minutes: ptb-hour's schedule (2x400 LSTM, adaptive softmax "
            "with cutoffs 2,000 and 10,000, SGD lr 20 annealed by cosine) with per-token dropout "
            "0.3 and the head untied, its tails "
            "projected to 100 and 25 (twice the tokens/s of the tied head at this vocabulary)",
            "rnnlab's CPU recipe (issue 16): ptb-hour on a corpus twice PTB's size with a "
            "vocabulary of 33,278; untied, the hour covers about 6 epochs (tied: 3.5, test "
            "121.0 against 112.8)",
            _ptb_budget(400, 0.3, 60.0, tie=False, corpus="wikitext2"),
        ),
        Preset(
            "awd-ptb",
            "AWD-LSTM on PTB words, for a GPU: 3-layer LSTM of 1150 units, the last 400 wide and "
            "tied to the 400-d embedding (24M parameters), locked dropout 0.4 input / 0.3 between "
            "layers / 0.4 output, embedding dropout 0.1, weight drop 0.5, AR 2, TAR 1, SGD lr 30 "
            "then NT-ASGD (n 5), clip 0.25, weight decay 1.2e-6, variable bptt ~70, batch 40, "
            "500 epochs",
            "Merity, Keskar & Socher 2018, 'Regularizing and Optimizing LSTM Language Models' "
            "(test ppl 58.8 before fine-tuning, 57.3 after)",
            _awd("ptb", 0.4, 40, 500),
        ),
        Preset(
            "awd-wt2",
            "AWD-LSTM on WikiText-2 words, for a GPU: awd-ptb with input dropout 0.65, batch 80, "
            "750 epochs",
            "Merity et al. 2018 (WikiText-2 test ppl 66.0 before fine-tuning, 65.8 after)",
            _awd("wikitext2", 0.65, 80, 750),
        ),
        Preset(
            "char-shakespeare",
            "Tiny Shakespeare characters, 2x512 LSTM, dropout 0.2, bptt 128, batch 64, Adam 2e-3 halved on plateau",
            "the char-rnn setup (Karpathy 2015) with nanoGPT's 90/10 split",
            {
                "data": {"corpus": "tinyshakespeare", "level": "char"},
                "model": {
                    "cell": "lstm",
                    "num_layers": 2,
                    "embed_size": 128,
                    "hidden_size": 512,
                    "dropout": 0.2,
                },
                "optim": {
                    "optimizer": "adam",
                    "lr": 2e-3,
                    "clip": 5.0,
                    "schedule": "plateau",
                    "plateau_factor": 0.5,
                },
                "train": {
                    "bptt": 128,
                    "batch_size": 64,
                    "epochs": 20,
                    "max_minutes": 30.0,
                    "eval_batch_size": 16,
                    "log_every": 20,
                },
            },
        ),
        Preset(
            "tang-quatrains",
            "complete Tang poems (simplified) as characters, 2x256 LSTM, tied 256-d embedding, "
            "dropout 0.2, vocabulary 5,000, bptt 64, batch 64, Adam 2e-3 halved on plateau, ~30 minutes",
            "char-rnn (Karpathy 2015) on chinese-poetry's 全唐诗, sized for 2 CPU cores; "
            "rnnlab poem decodes quatrains from it",
            {
                "data": {
                    "corpus": "tang",
                    "level": "char",
                    "max_vocab": 5000,
                    "corpus_options": {"script": "simplified"},
                },
                "model": {
                    "cell": "lstm",
                    "num_layers": 2,
                    "embed_size": 256,
                    "hidden_size": 256,
                    "dropout": 0.2,
                    "tie_weights": True,
                },
                "optim": {
                    "optimizer": "adam",
                    "lr": 2e-3,
                    "clip": 5.0,
                    "schedule": "plateau",
                    "plateau_factor": 0.5,
                },
                "train": {
                    "bptt": 64,
                    "batch_size": 64,
                    "epochs": 10,
                    "max_minutes": 28.0,
                    "eval_batch_size": 16,
                    "log_every": 50,
                },
            },
        ),
        Preset(
            "tang-hour",
            "complete Tang poems (simplified) as characters, each poem after its title and ':' "
            "(titles are context: evaluation scores the poem characters only), vocabulary 5,000 "
            "(<unk> for the rest, scored as one token), 2x384 LSTM, adaptive softmax tied to "
            "the 384-d embedding, dropout 0.2, Adam 3e-3 annealed to 0 over 60 minutes "
            "(cosine), clip 1, bptt 64, batch 64",
            "rnnlab's CPU recipe for the Tang poems (issue 19): ptb-hour's head and schedule "
            "on characters; rnnlab poem --title writes for a title",
            _tang_hour(),
        ),
        Preset(
            "music-chung2014",
            "piano rolls (default JSB Chorales; --corpus nottingham, musedata, pianomidi), one "
            "LSTM layer of 36 units (~21k parameters; GRU: --hidden 46, tanh: --cell rnn "
            "--hidden 100), 88 sigmoid outputs, RMSProp 1e-3, weight noise 0.075, gradient norm "
            "rescaled to 1, early stopping (patience 20 epochs)",
            "Chung, Gulcehre, Cho & Bengio 2014, Table 2 (test NLL per step on JSB: tanh 9.10, "
            "GRU 8.54, LSTM 8.67)",
            _chung2014(),
        ),
    ]
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
