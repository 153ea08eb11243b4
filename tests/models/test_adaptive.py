"""The adaptive-softmax head (Grave et al. 2017): the distribution, the targets path, the
config, training through the Trainer, checkpoints and the command line.

References: the full log-probabilities of torch's AdaptiveLogSoftmaxWithLoss (normalised, the
gather of the targets), F.cross_entropy for the softmax head, ``sum(p.numel())`` for sizes.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from rnnlab.cli import main
from rnnlab.config.run import OptimConfig, RunConfig, TrainConfig
from rnnlab.data.dataset import DataConfig
from rnnlab.errors import ConfigError
from rnnlab.evaluation.text import IGNORE, evaluate
from rnnlab.generation.fast_step import ForwardStepper, make_stepper
from rnnlab.generation.sampling import SamplingConfig, generate
from rnnlab.models.build import build_model
from rnnlab.models.config import LanguageModelConfig, default_cutoffs
from rnnlab.models.text import AdaptiveLanguageModel, LanguageModel
from rnnlab.runs import checkpoint as ck
from rnnlab.runs.load import load_model
from rnnlab.training.trainer import Trainer

V = 13


def adaptive(**kw) -> AdaptiveLanguageModel:
    torch.manual_seed(0)
    cfg = dict(
        vocab_size=V, embed_size=8, hidden_size=16, num_layers=2, head="adaptive", cutoffs=(3, 7)
    )
    cfg.update(kw)
    return AdaptiveLanguageModel(LanguageModelConfig(**cfg))


# ------------------------------------------------------------------------------ the distribution
@pytest.mark.parametrize("cutoffs,div", [((3, 7), 2.0), ((4,), 4.0), ((1, 2, 12), 2.0)])
def test_full_log_probs_normalise(cutoffs, div):
    model = adaptive(cutoffs=cutoffs, div_value=div).eval()
    tokens = torch.randint(0, V, (9, 3))
    logp, state = model(tokens)
    assert logp.shape == (9, 3, V)
    torch.testing.assert_close(torch.logsumexp(logp, -1), torch.zeros(9, 3), atol=1e-5, rtol=0)
    # the state carries like the softmax model's: two halves equal the whole
    first, s = model(tokens[:4])
    second, _ = model(tokens[4:], s)
    torch.testing.assert_close(torch.cat([first, second]), logp)


TIED = dict(tie_weights=True, embed_size=16)  # the tied head: word vectors are the embedding's


@pytest.mark.parametrize("kw", [dict(), TIED, dict(TIED, cutoffs=(1, 2, 12))])
def test_targets_path_is_the_gathered_log_probability(kw):
    model = adaptive(**kw).eval()
    tokens, targets = torch.randint(0, V, (2, 9, 4))
    targets[-1, :2] = IGNORE  # padding is not scored
    logp, _ = model(tokens)
    nll, _ = model(tokens, targets=targets)
    assert nll.shape == (9, 4)
    ref = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    ref[targets == IGNORE] = 0.0
    torch.testing.assert_close(nll, ref)


@pytest.mark.parametrize("kw", [dict(), TIED])
def test_targets_path_gradient_equals_the_full_distributions(kw):
    """Training on the fast path minimises the true NLL: same loss, same gradients."""
    model = adaptive(**kw).eval()
    tokens, targets = torch.randint(0, V, (2, 6, 3))
    nll, _ = model(tokens, targets=targets)
    nll.mean().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logp, _ = model(tokens)
    F.nll_loss(logp.reshape(-1, V), targets.reshape(-1)).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, msg=n)


def test_tied_head_is_the_formula_on_the_embedding_rows():
    """p(w|h) = s[w] for head words, s[c_i + ...] * softmax(E_i h + b_i)[w - c_i] in cluster
    i, with s the softmax over [E[:c_1] h + b, u h + a], written out directly."""
    model = adaptive(**TIED, cutoffs=(3, 7)).eval()
    dec = model.decoder
    with torch.no_grad():
        for p in (dec.bias, dec.cluster_bias):
            p.uniform_(-1, 1)
    e, b = model.embedding.weight, dec.bias
    h = torch.randn(5, 16)
    s = torch.softmax(
        torch.cat([h @ e[:3].T + b[:3], h @ dec.cluster_weight.T + dec.cluster_bias], 1), 1
    )
    t1 = torch.softmax(h @ e[3:7].T + b[3:7], 1)
    t2 = torch.softmax(h @ e[7:].T + b[7:], 1)
    ref = torch.cat([s[:, :3], s[:, 3:4] * t1, s[:, 4:5] * t2], 1)  # (5, V)
    torch.testing.assert_close(model.readout(h).exp(), ref)
    assert dec.weight is model.embedding.weight  # one tensor: tied, not copied
    assert not any(n.startswith("decoder.tail") for n, _ in model.named_parameters())


def test_tied_head_checkpoint_stores_the_embedding_once(tmp_path):
    model = adaptive(**TIED).eval()
    path = tmp_path / "tied.safetensors"
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    ck.save_checkpoint(path, ck.Checkpoint(meta={}, tensors=tensors))
    back = ck.load_checkpoint(path).group("model")
    fresh = adaptive(**TIED)
    fresh.load_state_dict(back)
    assert fresh.decoder.weight is fresh.embedding.weight
    tokens = torch.randint(0, V, (4, 2))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(tokens)[0], model(tokens)[0])


def test_softmax_targets_path_equals_cross_entropy():
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=V, embed_size=8, hidden_size=8)).eval()
    tokens, targets = torch.randint(0, V, (2, 7, 3))
    logits, _ = model(tokens)
    nll, _ = model(tokens, targets=targets)
    flat = logits.reshape(-1, V)
    ref = F.cross_entropy(flat, targets.reshape(-1), reduction="none").view(7, 3)
    torch.testing.assert_close(nll, ref)
    torch.testing.assert_close(nll.mean(), F.cross_entropy(flat, targets.reshape(-1)))
    targets[0] = IGNORE
    nll, _ = model(tokens, targets=targets)
    assert (nll[0] == 0).all()
    torch.testing.assert_close(nll[1:], ref[1:])


def test_exact_evaluation_matches_the_full_distribution():
    """evaluate() scores through the targets path; the reference reads the full log-probs."""
    model = adaptive(dropout=0.3)
    ids = torch.randint(0, V, (200,))
    result = evaluate(model, ids, batch_size=1, bptt=17)
    assert model.training  # evaluate restores the mode
    model.eval()
    with torch.no_grad():
        logp, _ = model(ids[:-1].view(-1, 1))
    ref = -logp[:, 0].gather(1, ids[1:].view(-1, 1)).mean().item()
    assert result.tokens == 199
    assert result.loss == pytest.approx(ref, rel=1e-6)


def test_sampling_steps_through_forward():
    model = adaptive().eval()
    assert isinstance(make_stepper(model), ForwardStepper)
    softmax = LanguageModel(LanguageModelConfig(vocab_size=V, embed_size=8, hidden_size=8))
    assert not isinstance(make_stepper(softmax), ForwardStepper)
    with pytest.raises(ConfigError, match="softmax head"):
        make_stepper(model, dtype=torch.qint8)


# ------------------------------------------------------------------------------ the config
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(cutoffs=(2, 5, 9), div_value=2.0, cell="gru", num_layers=1),
        dict(cutoffs=(1,), div_value=1.0, embed_size=5),
        dict(cutoffs=(), vocab_size=50),  # the default rule
        dict(cutoffs=(), vocab_size=33278, hidden_size=4, embed_size=2, num_layers=1),
        TIED,
        dict(TIED, cutoffs=(2, 5, 9), cell="gru"),
    ],
)
def test_parameter_count_formula(kw):
    with torch.device("meta"):  # the count needs no memory
        model = adaptive(**kw)
    assert model.config.num_parameters() == sum(p.numel() for p in model.parameters())


def test_default_cutoffs():
    assert default_cutoffs(33278, 256) == (2000, 10000)  # WikiText-2: Grave et al.'s choice
    assert default_cutoffs(10000, 256) == (2000,)  # PTB
    assert default_cutoffs(267735, 256) == (2000, 10000, 50000)  # WikiText-103
    assert default_cutoffs(267735, 8) == (2000,)  # 8 / 4^2 = 0: one cluster
    assert default_cutoffs(3, 8) == (1,) and default_cutoffs(65, 8) == (16,)
    for v in (3, 4, 5, 13, 100, 3999, 4000, 20000):
        cfg = LanguageModelConfig(vocab_size=v, embed_size=4, hidden_size=8, head="adaptive")
        assert cfg.cutoffs == default_cutoffs(v, 8)  # resolved once the vocabulary is known
        assert all(1 <= c <= v - 1 for c in cfg.cutoffs)
    assert LanguageModelConfig(head="adaptive").cutoffs == ()  # unbound: left to the data


def test_config_round_trips_through_json():
    cfg = LanguageModelConfig(vocab_size=40, head="adaptive", cutoffs=(5, 20), div_value=2.0)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-native: a checkpoint's meta compares equal
    back = LanguageModelConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg and back.cutoffs == (5, 20)
    run = RunConfig(model=LanguageModelConfig(head="adaptive", cutoffs=(5, 20)))
    again = RunConfig.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.model.cutoffs == (5, 20)


@pytest.mark.parametrize(
    "kw,mention",
    [
        (dict(cutoffs=(5, 3)), "strictly increasing"),
        (dict(cutoffs=(3, 3)), "strictly increasing"),
        (dict(cutoffs=(0, 3)), "strictly increasing"),
        (dict(cutoffs=(3, 13)), "1..12"),
        (dict(cutoffs=("3",)), "integers"),
        (dict(cutoffs="3,7"), "list of integers"),
        (dict(vocab_size=2, cutoffs=()), "3 or more"),
        (dict(tie_weights=True, embed_size=16, div_value=2.0), "does not apply"),
        (dict(tie_weights=True), "embed size == hidden size"),
        (dict(div_value=0.5), "div-value"),
        (dict(cutoffs=(3, 7), hidden_size=3), "width"),
        (dict(head="softmax"), "--head adaptive"),  # cutoffs without the adaptive head
        (dict(head="softmax", cutoffs=(), div_value=2.0), "--head adaptive"),
        (dict(embed_size=0), "--embed"),
    ],
)
def test_bad_configs_are_one_line_errors(kw, mention):
    cfg = dict(vocab_size=V, embed_size=8, hidden_size=16, head="adaptive", cutoffs=(3, 7))
    cfg.update(kw)
    with pytest.raises(ConfigError, match=mention) as e:
        LanguageModelConfig(**cfg)
    assert "\n" not in str(e.value)


def test_build_model_picks_the_head():
    cfg = LanguageModelConfig(vocab_size=V, embed_size=8, hidden_size=8, head="adaptive")
    assert isinstance(build_model(cfg), AdaptiveLanguageModel)
    with pytest.raises(ConfigError, match="build_model"):
        LanguageModel(cfg)


# ------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def text_file(tmp_path_factory, make_fox_file):
    return make_fox_file(tmp_path_factory.mktemp("adaptive"))


def run_config(text_file, **train) -> RunConfig:
    t = dict(bptt=8, batch_size=4, eval_batch_size=2, epochs=1, log_every=5, seed=7, threads=1)
    t.update(train)
    return RunConfig(
        data=DataConfig(text=str(text_file), level="word"),
        model=LanguageModelConfig(
            embed_size=16, hidden_size=24, num_layers=1, head="adaptive", cutoffs=(4, 10)
        ),
        optim=OptimConfig(optimizer="adam", lr=0.01, clip=1.0, schedule="constant"),
        train=TrainConfig(**t),
    )


@pytest.fixture(scope="module")
def trained(text_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "adaptive"
    trainer = Trainer(run_config(text_file, epochs=2), run)
    return trainer, trainer.fit(), run


def test_training_reduces_the_loss(trained):
    trainer, result, _ = trained
    assert isinstance(trainer.model, AdaptiveLanguageModel)
    rows = [r for r in result.history if r["kind"] == "train"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.5
    assert result.valid.perplexity < 10  # a uniform guess over the 18 words would be 18


def test_checkpoint_round_trip(trained, fox_text):
    trainer, _, run = trained
    model, vocab, ckpt = load_model(run / "last.safetensors")
    assert isinstance(model, AdaptiveLanguageModel)
    assert model.config == trainer.model_config and model.config.cutoffs == (4, 10)
    assert ckpt.meta["model"]["head"] == "adaptive"
    assert any(k.startswith("model.decoder.tail.") for k in ckpt.tensors)
    tokens = torch.randint(0, len(vocab), (6, 2))
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[0], trainer.model(tokens)[0])
    text = generate(model, vocab, "word", length=8, cfg=SamplingConfig(temperature=0.8), seed=0)
    assert set(text[0].split()) <= set(fox_text().split()) | {"<unk>", "<eos>"}


def test_resumed_run_ends_with_identical_weights(text_file, tmp_path):
    """run.json and the checkpoint carry the head and its cutoffs: a resumed run is exact."""
    full, part = tmp_path / "full", tmp_path / "part"
    Trainer(run_config(text_file), full).fit()
    Trainer(run_config(text_file, max_steps=9), part).fit()
    saved = RunConfig.from_dict(json.loads((part / "run.json").read_text()))
    assert saved.model.head == "adaptive" and saved.model.cutoffs == (4, 10)
    saved.train.max_steps = None  # what `rnnlab train --resume --max-steps N` changes
    Trainer(saved, part, resume=True).fit()
    a, b = (ck.load_checkpoint(r / "last.safetensors").group("model") for r in (full, part))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------ command line
def test_cli_train_eval_sample(text_file, tmp_path, run_cli, fox_text):
    out = tmp_path / "run"
    args = ["--hidden", 16, "--embed", 8, "--layers", 1, "--bptt", 8, "--batch-size", 4]
    code, _, err = run_cli(
        "train", "--text", text_file, "--level", "word", "--head", "adaptive",
        "--cutoffs", "4,10", "--div-value", 2, "--max-steps", 20, *args,
        "--no-progress", "--no-sample", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "adaptive softmax (cutoffs 4,10)" in err
    model, vocab, ckpt = load_model(out)
    assert model.config.div_value == 2.0 and model.config.cutoffs == (4, 10)

    code, res, _ = run_cli("eval", out, "--json", "--batch-size", 1)
    r = json.loads(res)
    assert code == 0 and r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    from rnnlab.data.dataset import load_data

    data = load_data(DataConfig.from_dict(ckpt.meta["run"]["data"]), vocab=vocab)
    ref = evaluate(model, data.split("test"), batch_size=1)
    assert r["loss"] == pytest.approx(ref.loss, rel=1e-6)

    code, one, _ = run_cli("sample", out, "--length", 10, "--seed", 3)
    code2, two, _ = run_cli("sample", out, "--length", 10, "--seed", 3)
    assert code == code2 == 0 and one == two
    assert set(one.split()) <= set(fox_text().split()) | {"<unk>"}
    code, beam, _ = run_cli("sample", out, "--length", 5, "--beam", 2)
    assert code == 0 and beam.strip()


@pytest.mark.parametrize(
    "args,mention",
    [
        (["--cutoffs", "4,x"], "--cutoffs"),
        (["--head", "adaptive", "--cutoffs", "4,100"], "cutoffs must lie in"),
        (["--head", "softmax", "--cutoffs", "4"], "--head adaptive"),  # words preset: adaptive
        (["--head", "adaptive", "--tie", "--embed", "16", "--div-value", "2"], "does not apply"),
    ],
)
def test_cli_refuses_bad_adaptive_settings(text_file, tmp_path, run_cli, args, mention):
    code, _, err = run_cli(
        "train", "--text", text_file, "--level", "word", "--hidden", 16, "--bptt", 8,
        "--batch-size", 4, "--max-steps", 1, "--no-progress", "--no-sample",
        "--out", tmp_path / "bad", *args,
    )  # fmt: skip
    assert code != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("rnnlab: error:") and mention in lines[-1], err


# ------------------------------------------------------------------------------ DDP
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)
def test_two_processes_train_the_adaptive_head_like_one(text_file, tmp_path):
    """Under DDP a window whose targets miss a tail cluster leaves its weights without a
    gradient; the wrapper must allow that, and the run must equal one process."""
    common = [
        "train", "--text", text_file, "--level", "word", "--head", "adaptive", "--cutoffs",
        "4,16", "--hidden", 16, "--embed", 8, "--layers", 1, "--bptt", 4, "--batch-size", 4,
        "--max-steps", 12, "--optimizer", "adam", "--lr", "0.01", "--log-every", 1,
        "--schedule", "plateau", "--dropout", 0,  # the words preset anneals over minutes
        "--device", "cpu", "--threads", 1, "--no-progress", "--no-sample",
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([str(a) for a in [*common, "--out", one]]) == 0
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "rnnlab", *map(str, common), "--out", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = (ck.load_checkpoint(r / "last.safetensors").group("model") for r in (one, two))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
