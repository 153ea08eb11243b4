"""The model a config names: :func:`build_model` picks the class from the output head."""

from __future__ import annotations

from rnnlab.models.config import LanguageModelConfig
from rnnlab.models.pianoroll import PianoRollModel
from rnnlab.models.text import AdaptiveLanguageModel, LanguageModel

SequenceModel = LanguageModel | AdaptiveLanguageModel | PianoRollModel


def build_model(config: LanguageModelConfig) -> SequenceModel:
    """The model that ``config.head`` names: softmax -> LanguageModel, adaptive ->
    AdaptiveLanguageModel, sigmoid -> PianoRollModel."""
    if config.head == "sigmoid":
        return PianoRollModel(config)
    if config.head == "adaptive":
        return AdaptiveLanguageModel(config)
    return LanguageModel(config)
