"""The JSON bodies of the API, as strict pydantic models: unknown fields and wrong types are
refused (422, one line), and FastAPI's OpenAPI description (``/openapi.json``) is built from
them. Limits that depend on the server (:class:`rnnlab.serve.limits.Limits`) are checked by the
routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SamplingFields(_Strict):
    """How each next token is drawn (as ``rnnlab sample``)."""

    temperature: float = Field(1.0, ge=0, le=10, description="0 is greedy decoding")
    top_k: int | None = Field(None, ge=1, description="draw from the k likeliest tokens only")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus: smallest set of mass p")
    repetition_penalty: float = Field(1.0, ge=1, le=10, description="CTRL penalty, 1 is off")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="same seed, same text; none: the server draws one"
    )


class GenerateRequest(SamplingFields):
    """``POST /api/generate``: continue ``prime`` with ``model``."""

    model: str = Field(description="a name from GET /api/models")
    prime: str = Field("", description="the text the sample continues")
    length: int = Field(200, ge=1, description="tokens to draw, at most")
    count: int = Field(1, ge=1, description="samples (a streamed request draws one)")
    stream: bool = Field(
        False, description="server-sent events: one `piece` event per token, then `done`"
    )


class PoemRequest(SamplingFields):
    """``POST /api/poem``: a quatrain (绝句) or regulated verse (律诗) as ``rnnlab poem``."""

    model: str
    form: Literal[5, 7] = Field(5, description="characters per line")
    lines: Literal[4, 8] = Field(4, description="4 (绝句) or 8 (律诗)")
    acrostic: str | None = Field(None, description="藏头诗: one head character per line")
    first_line: str | None = None
    start: str | None = Field(None, description="characters the poem starts with")
    keywords: str | None = Field(None, description="characters it must hold, e.g. 月,霜")
    rhyme: bool = False
    tones: bool = False
    title: str | None = Field(None, description="for a model trained with titles")
    count: int = Field(1, ge=1)
    candidates: int = Field(1, ge=1, description="draw N, keep the likeliest")
    temperature: float = Field(0.8, ge=0, le=10, description="0 is greedy decoding")


class ScoreRequest(_Strict):
    """``POST /api/score``: each token's log-probability under ``model``."""

    model: str
    text: str = Field(min_length=1)
    top: int = Field(5, ge=0, description="alternatives shown per token")
