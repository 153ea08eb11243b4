"""Decoding: the fast stepper against model.forward, top-k/top-p sets, seeds, stops, and beam
search against brute-force enumeration on a model whose probabilities are known."""

import itertools
import math

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError
from rnnlab.generation.fast_step import (
    FastStepper,
    ForwardStepper,
    _double_rows,
    _gru_combine_int8,
    _lstm_update_int8,
    _QuantLinear,
    make_stepper,
)
from rnnlab.generation.sampling import (
    SamplingConfig,
    beam_search,
    draw_categorical,
    filter_logits,
    generate,
    make_generator,
    pick,
    sample_ids,
    sequence_logprob,
)
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel
from rnnlab.nn.cells import GRUCell, LSTMCell
from rnnlab.nn.recurrent import CELL_NAMES


class TableModel:
    """A bigram model with known probabilities: p(next | previous token) = table[previous].

    Same interface as LanguageModel: forward(tokens (T, B), state) -> (logits (T, B, V), state).
    """

    def __init__(self, table):
        self.table = torch.as_tensor(table, dtype=torch.float64)

    def __call__(self, tokens, state=None):
        return self.table[tokens].log(), state

    def eval(self):
        return self


def tiny_model(cell="lstm", vocab_size=11, layers=2, seed=0):
    torch.manual_seed(seed)
    config = LanguageModelConfig(
        vocab_size=vocab_size, cell=cell, embed_size=6, hidden_size=10, num_layers=layers
    )
    return LanguageModel(config).eval()


# ------------------------------------------------------------------------------ fast stepper


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("table", [True, False])
def test_fast_stepper_equals_model_forward(cell, table):
    model = tiny_model(cell)
    with torch.no_grad():  # non-zero biases everywhere, so a misplaced bias would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stepper = FastStepper(model, table_limit=1 << 30 if table else 0)
    assert (stepper.table is not None) == table
    tokens = torch.randint(0, 11, (9, 3))  # (T, B)
    expected, expected_state = model(tokens, model.init_state(3))
    state = stepper.init_state(3)
    got = []
    for t in range(tokens.size(0)):
        logits, state = stepper.step(tokens[t], state)
        got.append(logits)
    torch.testing.assert_close(torch.stack(got), expected, atol=1e-6, rtol=1e-5)
    model_state = stepper.to_model_state(state)
    if isinstance(expected_state, tuple):
        for a, b in zip(model_state, expected_state, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    else:
        torch.testing.assert_close(model_state, expected_state, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru-reset-before"])
def test_bfloat16_stepper_is_close_to_the_model(cell):
    model = tiny_model(cell, vocab_size=30)
    stepper = FastStepper(model, dtype=torch.bfloat16)
    assert stepper.w_out.dtype == torch.bfloat16
    tokens = torch.randint(0, 30, (60, 4))
    expected = torch.softmax(model(tokens)[0].double(), dim=-1)  # (T, B, V)
    state = stepper.init_state(4)
    for t in range(tokens.size(0)):
        logits, state = stepper.step(tokens[t], state)
        assert logits.dtype == torch.float32
        total_variation = 0.5 * (torch.softmax(logits.double(), -1) - expected[t]).abs().sum(-1)
        assert total_variation.max() < 0.02


INT8_CELLS = ["lstm", "lstm-fb1", "gru", "rnn", "rnn-relu"]


@pytest.mark.parametrize("cell", INT8_CELLS)
@pytest.mark.parametrize("table", [True, False])
def test_int8_stepper_is_close_to_the_model(cell, table):
    model = tiny_model(cell, vocab_size=30, layers=3)
    with torch.no_grad():  # non-zero biases everywhere, so a misplaced bias would show
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    stepper = FastStepper(model, table_limit=1 << 30 if table else 0, dtype=torch.qint8)
    assert stepper.int8 is not None and (stepper.table is not None) == table
    tokens = torch.randint(0, 30, (60, 4))
    with torch.no_grad():
        logits_model = model(tokens)[0].double()  # (T, B, V)
    expected = torch.softmax(logits_model, dim=-1)
    state = stepper.init_state(4)
    worst = 0.0
    for t in range(tokens.size(0)):
        logits, state = stepper.step(tokens[t], state)
        assert logits.dtype == torch.float32
        total_variation = 0.5 * (torch.softmax(logits.double(), -1) - expected[t]).abs().sum(-1)
        worst = max(worst, float(total_variation.max()))
        # quantization error, bounded: int8 weights and 7-bit activations
        assert (logits.double() - logits_model[t]).abs().max() < 0.05
    assert worst < 0.02
    assert worst > 0  # it really computed in int8, not in float32


def test_int8_stepper_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="gru-reset-before"):
        FastStepper(tiny_model("gru-reset-before"), dtype=torch.qint8)


def test_int8_sampling_keeps_the_api():
    model = tiny_model("lstm", vocab_size=30)
    stepper = make_stepper(model, dtype=torch.qint8)
    logits, state = stepper.start(torch.tensor([1, 2, 3]), 3)
    assert logits.shape == (3, 30)
    state = stepper.select(state, torch.tensor([2, 0]))
    logits, _ = stepper.step(torch.tensor([4, 5]), state)
    assert logits.shape == (2, 30) and torch.isfinite(logits).all()


def test_int8_pointwise_equals_the_cell_equations():
    """tanh(a) = 2 sigmoid(2a) - 1 with the tanh rows doubled: the cells' own update."""
    gen = torch.Generator().manual_seed(0)
    hidden, rows = 16, slice(32, 48)  # the candidate rows 2H:3H
    gates = 3 * torch.randn(5, 4 * hidden, generator=gen)  # (B, 4H), saturating values too
    c = 2 * torch.randn(5, hidden, generator=gen)
    h_ref, c_ref = LSTMCell.update(gates, c)
    h, c_new = _lstm_update_int8(_double_rows(gates.t(), rows).t().clone(), c)
    torch.testing.assert_close(c_new, c_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
    gi, gh = (3 * torch.randn(5, 3 * hidden, generator=gen) for _ in range(2))  # (B, 3H)
    h = torch.randn(5, hidden, generator=gen).tanh()
    expected = GRUCell.combine(gi, gh, h)
    got = _gru_combine_int8(*(_double_rows(t.t(), rows).t() for t in (gi, gh)), h)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_doubled_rows_quantize_to_the_same_integers():
    """Doubling rows of W doubles their int8 scale, not their integers: the product doubles."""
    gen = torch.Generator().manual_seed(1)
    weight, bias, x = torch.randn(12, 7, generator=gen), torch.randn(12), torch.randn(3, 7)
    rows = slice(4, 8)
    plain = _QuantLinear(weight, bias)(x)  # (3, 12)
    doubled = _QuantLinear(_double_rows(weight, rows), _double_rows(bias, rows))(x)
    factor = torch.ones(12)
    factor[rows] = 2
    torch.testing.assert_close(doubled, plain * factor, rtol=1e-6, atol=1e-6)


def test_int8_stepper_leaves_the_model_alone():
    model = tiny_model("lstm", vocab_size=30)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    FastStepper(model, dtype=torch.qint8)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_stepper_start_reads_the_context_once_and_repeats_it():
    model = tiny_model("gru")
    context = torch.tensor([1, 4, 2, 7])
    fast, slow = FastStepper(model), ForwardStepper(model)
    logits_f, state_f = fast.start(context, 5)
    logits_s, state_s = slow.start(context, 5)
    expected = model(context.view(-1, 1))[0][-1]  # (1, V)
    torch.testing.assert_close(logits_f, expected.expand(5, -1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits_s, expected.expand(5, -1), atol=1e-6, rtol=1e-5)
    nxt = torch.tensor([0, 1, 2, 3, 4])
    a, _ = fast.step(nxt, state_f)
    b, _ = slow.step(nxt, state_s)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # select reorders rows of the state
    c, _ = fast.step(nxt.flip(0), fast.select(state_f, torch.tensor([4, 3, 2, 1, 0])))
    torch.testing.assert_close(c, a.flip(0), atol=1e-6, rtol=1e-5)


def test_make_stepper_picks_the_fast_path_for_language_models():
    assert isinstance(make_stepper(tiny_model()), FastStepper)
    assert isinstance(make_stepper(tiny_model(), fast=False), ForwardStepper)
    assert isinstance(make_stepper(TableModel(torch.full((3, 3), 1 / 3))), ForwardStepper)


# ------------------------------------------------------------------------------ one pick


def test_top_k_keeps_exactly_the_k_largest():
    gen = torch.Generator().manual_seed(0)
    for k in (1, 3, 7, 20):
        logits = torch.randn(4, 20, generator=gen)
        kept = filter_logits(logits, SamplingConfig(top_k=k)).isfinite()
        expected = torch.zeros_like(kept)
        expected.scatter_(1, logits.argsort(dim=1, descending=True)[:, :k], True)
        assert torch.equal(kept, expected)


def test_top_p_keeps_the_smallest_set_reaching_p():
    gen = torch.Generator().manual_seed(1)
    for p in (0.05, 0.3, 0.5, 0.9, 0.99):
        logits = torch.randn(6, 15, generator=gen) * 2
        kept = filter_logits(logits, SamplingConfig(top_p=p)).isfinite()
        probs = torch.softmax(logits.double(), dim=1)
        for row in range(6):
            order = probs[row].argsort(descending=True).tolist()
            mass, want = 0.0, set()
            for i in order:  # add tokens, most likely first, until the mass reaches p
                want.add(i)
                mass += float(probs[row, i])
                if mass >= p:
                    break
            assert set(kept[row].nonzero().view(-1).tolist()) == want


def test_top_p_hand_example_and_temperature():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert filter_logits(logits, SamplingConfig(top_p=0.7)).isfinite().tolist() == [1, 1, 0, 0]
    assert filter_logits(logits, SamplingConfig(top_p=0.9)).isfinite().tolist() == [1, 1, 1, 0]
    scaled = filter_logits(logits, SamplingConfig(temperature=2.0))
    torch.testing.assert_close(scaled, logits / 2)


def test_pick_respects_allowed_and_greedy():
    logits = torch.tensor([[5.0, 1.0, 0.0, -1.0]] * 200)
    allowed = torch.tensor([False, True, True, False])
    gen = make_generator(0)
    drawn = pick(logits, SamplingConfig(), gen, allowed)
    assert set(drawn.tolist()) <= {1, 2} and len(set(drawn.tolist())) == 2
    assert pick(logits, SamplingConfig(temperature=0), allowed=allowed).eq(1).all()
    assert pick(logits, SamplingConfig(temperature=0)).eq(0).all()


def chi_square(drawn, probs):
    """Pearson's statistic of the draws against ``probs`` (V,); zero-probability tokens must
    never be drawn. Returns (statistic, degrees of freedom)."""
    counts = torch.bincount(drawn.view(-1), minlength=probs.numel()).double()
    expected = drawn.numel() * probs.double()
    support = expected > 0
    assert counts[~support].sum() == 0, "drew a token of probability 0"
    stat = ((counts - expected)[support] ** 2 / expected[support]).sum()
    return float(stat), int(support.sum()) - 1


def chi_square_bound(dof):
    """Far in the upper tail of the chi-square law (mean dof, sd sqrt(2 dof)): > 7 sd."""
    return dof + 7 * math.sqrt(2 * dof) + 10


def test_draw_categorical_matches_the_distribution():
    probs = torch.tensor([0.0, 0.3, 0.2, 0.15, 0.1, 0.0, 0.1, 0.08, 0.05, 0.019, 0.001, 0.0])
    logits = probs.log()  # -inf where p = 0: first, middle and last positions
    n = 200_000
    drawn = draw_categorical(logits.expand(n, -1), make_generator(0))  # (n,)
    assert drawn.shape == (n,) and drawn.dtype == torch.long
    stat, dof = chi_square(drawn, probs)
    assert stat < chi_square_bound(dof)
    # the test has power: a slightly different distribution is rejected by far
    wrong = torch.softmax(logits / 1.1, dim=0)
    assert chi_square(drawn, wrong)[0] > 10 * chi_square_bound(dof)


def test_pick_draws_from_the_filtered_distribution():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(20, generator=gen) * 2
    allowed = torch.ones(20, dtype=torch.bool)
    allowed[[0, 7]] = False
    n = 100_000
    for cfg in (
        SamplingConfig(temperature=0.7),
        SamplingConfig(temperature=1.3, top_k=6),
        SamplingConfig(top_p=0.8),
        SamplingConfig(temperature=0.5, top_k=12, top_p=0.95),
    ):
        masked = logits.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(filter_logits(masked, cfg).double(), dim=0)  # the target law
        drawn = pick(logits.expand(n, -1), cfg, make_generator(1), allowed)
        stat, dof = chi_square(drawn, probs)  # also: nothing outside top-k/top-p/allowed
        assert stat < chi_square_bound(dof), cfg


def test_draw_categorical_edge_rows():
    inf = float("-inf")
    logits = torch.tensor(
        [
            [0.0, inf, inf, inf],  # one token: first
            [inf, inf, inf, 5.0],  # one token: last
            [inf, -3.0, inf, inf],  # one token: middle
            [80.0, -80.0, inf, 0.0],  # p(1) underflows to 0 in float32
            [1e4, 1e4, inf, -1e4],  # a tie at a huge logit
        ]
    ).repeat(2000, 1)  # (10000, 4)
    drawn = draw_categorical(logits, make_generator(2)).view(2000, 5)
    assert drawn[:, 0].eq(0).all() and drawn[:, 1].eq(3).all() and drawn[:, 2].eq(1).all()
    assert drawn[:, 3].eq(0).all()
    assert set(drawn[:, 4].tolist()) == {0, 1}
    assert draw_categorical(torch.tensor([inf, 1.0])).shape == ()  # (V,) gives one id


def test_draw_categorical_is_reproducible_from_the_seed():
    logits = torch.randn(64, 30)
    a = draw_categorical(logits, make_generator(5))
    b = draw_categorical(logits, make_generator(5))
    c = draw_categorical(logits, make_generator(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_bad_sampling_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SamplingConfig(**kwargs)


# ------------------------------------------------------------------------------ generate


def char_vocab():
    return Vocab(["<unk>", "\n", *"abcdefgh "], level="char")


def test_same_seed_same_output_different_seed_different():
    model, vocab = tiny_model(vocab_size=11), char_vocab()
    a = generate(model, vocab, "char", prime="ab", length=40, count=3, seed=7)
    b = generate(model, vocab, "char", prime="ab", length=40, count=3, seed=7)
    c = generate(model, vocab, "char", prime="ab", length=40, count=3, seed=8)
    assert a == b and a != c
    assert len(a) == 3 and all(t.startswith("ab") and len(t) >= 42 for t in a)
    assert len(set(a)) == 3  # the rows of one batch are different samples


def test_greedy_equals_argmax_of_full_forward_passes():
    model, vocab = tiny_model("gru-reset-before", vocab_size=11), char_vocab()
    text = generate(model, vocab, "char", prime="fa", length=25, cfg=SamplingConfig(0))[0]
    ids = [vocab.stoi["\n"], *vocab.encode(list("fa"))]
    for _ in range(25):  # reference: re-run the whole sequence through model.forward each time
        logits, _ = model(torch.tensor(ids).view(-1, 1))
        ids.append(int(logits[-1, 0].argmax()))
    assert text == "".join(vocab.decode(ids[1:]))


def cycle_model(vocab, text):
    """Deterministic next character: each character of ``text`` is followed by the next one."""
    table = torch.full((len(vocab), len(vocab)), 1e-9)
    for a, b in zip(text, text[1:] + text[0], strict=True):
        table[vocab.stoi[a], vocab.stoi[b]] = 1.0
    return TableModel(table / table.sum(1, keepdim=True))


def test_stop_strings_and_max_length():
    vocab = char_vocab()
    model = cycle_model(vocab, "abcd\n")
    assert generate(model, vocab, "char", prime="a", length=30, stop=["d\n"], seed=0) == ["abc"]
    assert generate(model, vocab, "char", prime="a", length=30, stop=["c", "b"], seed=0) == ["a"]
    assert generate(model, vocab, "char", prime="a", length=3, seed=0) == ["abcd"]
    assert generate(model, vocab, "char", prime="a", length=2, stop=["\n"], seed=0) == ["abc"]
    # the prime is never cut, even if it contains a stop string
    assert generate(model, vocab, "char", prime="bc", length=9, stop=["c"], seed=0) == ["bcd\nab"]
    # beam search honours the same stops
    assert generate(model, vocab, "char", prime="a", length=30, stop=["\n"], beam=2) == ["abcd"]


def test_sample_ids_batched_rows_stop_independently():
    vocab = char_vocab()
    model = TableModel(torch.full((11, 11), 1 / 11))
    gen = make_generator(3)
    rows = sample_ids(
        ForwardStepper(model), [1], length=50, count=64, generator=gen, stop=lambda r: r[-1] == 1
    )
    assert len(rows) == 64
    for row in rows:
        assert (row[-1] == 1 and 1 not in row[:-1]) or (len(row) == 50 and 1 not in row)
    assert len({len(r) for r in rows}) > 5
    del vocab


def test_sharded_sampling_is_reproducible_and_draws_the_same_distribution():
    """workers > 1 splits the rows over threads: same seed and workers, same rows; every shard
    draws from the model (a bigram table: the first draws checked by chi-square), stops per
    row still hold, and torch's thread count is restored."""
    probs = torch.tensor([0.0, 0.4, 0.3, 0.2, 0.1])
    stepper = ForwardStepper(TableModel(probs.expand(5, 5)))
    before = torch.get_num_threads()

    def draw(workers, seed=1, count=3000, **kw):
        gen = make_generator(seed)
        return sample_ids(stepper, [1], length=3, count=count, generator=gen, workers=workers, **kw)

    rows = draw(2)
    assert torch.get_num_threads() == before
    assert len(rows) == 3000 and all(len(r) == 3 for r in rows)
    assert rows == draw(2) and rows != draw(3) and rows != draw(2, seed=2)
    for half in (rows[:1500], rows[1500:]):  # each shard's rows follow the model
        stat, dof = chi_square(torch.tensor([r[0] for r in half]), probs)
        assert stat < chi_square_bound(dof)
    assert rows[:1500] != rows[1500:]  # the shards are different streams
    stopped = draw(2, count=7, stop=lambda r: r[-1] == 4)  # 7 rows over 2 shards (4 + 3)
    assert len(stopped) == 7
    assert all(r[-1] == 4 or (len(r) == 3 and 4 not in r) for r in stopped)
    assert len(draw(16, count=3)) == 3  # more workers than rows: one row each
    with pytest.raises(ConfigError, match="workers"):
        draw(0)


def test_sharded_int8_generation_runs_through_generate():
    model, vocab = tiny_model(vocab_size=11), char_vocab()
    kw = dict(prime="ab", length=30, count=6, seed=4, dtype=torch.qint8, workers=2)
    a = generate(model, vocab, "char", **kw)
    assert a == generate(model, vocab, "char", **kw) and len(a) == 6
    assert all(t.startswith("ab") and len(t) == 32 and "<unk>" not in t for t in a)


# ------------------------------------------------------------------------------ beam search


def brute_force(table, context, length, end, alpha):
    """Every sequence of up to ``length`` tokens (ending at ``end`` or at the limit), scored."""
    logp = torch.as_tensor(table, dtype=torch.float64).log()
    out = []

    def walk(prev, seq, lp):
        for token in range(logp.size(1)):
            step = float(logp[prev, token])
            if step == -math.inf:
                continue
            s, total = seq + [token], lp + step
            if token == end or len(s) == length:
                out.append((s, total / len(s) ** alpha))
            else:
                walk(token, s, total)

    walk(context[-1], [], 0.0)
    return sorted(out, key=lambda x: -x[1])


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_equals_brute_force(alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    table = torch.rand(4, 4, generator=gen, dtype=torch.float64) ** 3
    table /= table.sum(1, keepdim=True)
    model, end, length = TableModel(table), 0, 4
    expected = brute_force(table, [1], length, end, alpha)
    hyps = beam_search(
        model, [1], beam=4**length, length=length, length_penalty=alpha, stop=lambda s: s[-1] == end
    )
    # every sequence, in score order (a bigram model ties permutations: compare as a mapping)
    assert len(hyps) == len(expected)
    assert [h.score for h in hyps] == pytest.approx([sc for _, sc in expected], abs=1e-9)
    truth = {tuple(s): sc for s, sc in expected}
    assert all(h.score == pytest.approx(truth[tuple(h.tokens)], abs=1e-9) for h in hyps)
    for h in hyps[:5]:
        assert h.logprob == pytest.approx(sequence_logprob(model, [1], h.tokens), abs=1e-9)
        assert h.finished == (h.tokens[-1] == end)


def test_beam_finds_what_greedy_misses():
    # from token 1: 2 is likelier than 3, but after 2 everything is flat while 3 -> END is sure
    table = torch.tensor(
        [
            [0.25, 0.25, 0.25, 0.25],  # 0 = END (not reached)
            [0.00, 0.00, 0.60, 0.40],  # 1 = context
            [0.34, 0.33, 0.33, 0.00],  # 2
            [1.00, 0.00, 0.00, 0.00],  # 3
        ],
        dtype=torch.float64,
    )
    model = TableModel(table)
    stop = lambda s: s[-1] == 0  # noqa: E731
    best = brute_force(table, [1], 2, 0, 0.0)[0][0]
    assert best == [3, 0]
    greedy = beam_search(model, [1], beam=1, length=2, length_penalty=0.0, stop=stop)[0]
    assert greedy.tokens != best
    found = beam_search(model, [1], beam=2, length=2, length_penalty=0.0, stop=stop)[0]
    assert found.tokens == best and found.logprob == pytest.approx(math.log(0.4))


def test_beam_search_on_a_language_model_agrees_with_its_probabilities():
    model = tiny_model("lstm", vocab_size=5, layers=1)
    hyps = beam_search(model, [1, 2], beam=3, length=6, length_penalty=1.0)
    assert len(hyps) == 3 and [h.score for h in hyps] == sorted(
        (h.score for h in hyps), reverse=True
    )
    for h in hyps:
        assert len(h.tokens) == 6 and not h.finished
        lp = sequence_logprob(model, [1, 2], h.tokens)
        assert h.logprob == pytest.approx(lp, abs=1e-5)
        assert h.score == pytest.approx(lp / 6, abs=1e-5)
    # exhaustive over 5**3 sequences: the beam's best is the true best
    best = max(
        itertools.product(range(5), repeat=3), key=lambda s: sequence_logprob(model, [1, 2], s)
    )
    assert beam_search(model, [1, 2], beam=125, length=3)[0].tokens == list(best)


def test_beam_settings_are_checked():
    model, vocab = tiny_model(vocab_size=11), char_vocab()
    with pytest.raises(ConfigError):
        generate(model, vocab, "char", length=5, beam=2, count=3)
    with pytest.raises(ConfigError):
        beam_search(model, [1], beam=0)
    with pytest.raises(ConfigError):
        beam_search(model, [1], beam=2, length_penalty=-1)


def test_character_samples_never_spell_out_unk():
    vocab = char_vocab()
    model = tiny_model(vocab_size=len(vocab))
    with torch.no_grad():
        model.decoder.bias[vocab.unk_id] = 50.0  # the model all but insists on <unk>
    texts = generate(model, vocab, "char", length=40, count=3, seed=0)
    assert all("<unk>" not in t and len(t) == 40 for t in texts)
