"""``stream_sample``: the pieces it yields join to exactly what ``generate`` returns (same seed,
same options), at character and word level, and closing it early stops the decoding."""

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.generation.sampling import SamplingConfig, generate, stream_sample
from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.text import LanguageModel

CHAR_VOCAB = Vocab(["<unk>", "\n", " ", *"abcdefghijklmnopqrstuvwxyz."], level="char")
WORD_VOCAB = Vocab(["<unk>", "<eos>", "the", "fox", "dog", "jumps", "over", "lazy"], level="word")


def model(vocab: Vocab, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    config = LanguageModelConfig(vocab_size=len(vocab), embed_size=8, hidden_size=16, num_layers=1)
    return LanguageModel(config)


@pytest.mark.parametrize(
    "cfg",
    [
        SamplingConfig(),
        SamplingConfig(temperature=0.7, top_k=5),
        SamplingConfig(top_p=0.8, repetition_penalty=1.5),
        SamplingConfig(temperature=0),
    ],
)
@pytest.mark.parametrize(("vocab", "prime"), [(CHAR_VOCAB, "the q"), (WORD_VOCAB, "the fox")])
def test_the_pieces_join_to_generate_s_text(vocab, prime, cfg):
    m = model(vocab)
    level = vocab.level
    whole = generate(m, vocab, level, prime=prime, length=40, cfg=cfg, seed=3)[0]
    pieces = list(stream_sample(m, vocab, level, prime=prime, length=40, cfg=cfg, seed=3))
    assert "".join(pieces) == whole
    assert pieces[0] == prime and len(pieces) == 41  # the prime, then one piece per token


def test_closing_the_stream_stops_decoding():
    stream = stream_sample(model(CHAR_VOCAB), CHAR_VOCAB, "char", length=10_000, seed=0)
    got = [next(stream) for _ in range(5)]
    stream.close()
    assert len(got) == 5
    with pytest.raises(StopIteration):
        next(stream)
