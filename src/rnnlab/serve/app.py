"""The playground's web app: the page, and the JSON API it calls.

Routes (``create_app``):

* ``GET /`` the page (``static/index.html``, ``app.js``, ``style.css``: no CDN, works offline);
  ``GET /docs`` a local page listing the API from ``GET /openapi.json`` (FastAPI's own Swagger
  page loads its script from a CDN, so it is switched off);
* ``GET /api/models`` the served runs and the server's limits;
* ``POST /api/generate`` a sample, whole or streamed as server-sent events;
* ``POST /api/poem`` Chinese poems with the checklist of constraints each one meets;
* ``POST /api/score`` each token's log-probability, surprisal and likeliest alternatives.

Errors are ``{"error": "one line"}`` with a 4xx status (400 malformed JSON, 404 unknown model or
path, 413 too large, 422 invalid request, 429/503 too busy); a bug is a 500 with one line, its
traceback only in the server's log. Model calls run in worker threads (never on the event loop),
each with :attr:`Limits.threads` torch threads, and each holds one of a fixed number of slots
taken without waiting. A streamed generation runs in a thread that owns its slot and stops at
the next token once the client is gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from rnnlab.data.vocab import boundary_token, make_tokenizer
from rnnlab.errors import RnnlabError
from rnnlab.evaluation.text import score_surprisal
from rnnlab.generation.poetry import PoemSpec, generate_poems
from rnnlab.generation.sampling import SamplingConfig, generate, prime_tokens, stream_sample
from rnnlab.serve.checks import poem_checklist
from rnnlab.serve.limits import Limits, Slots
from rnnlab.serve.registry import ServedModel
from rnnlab.serve.schemas import GenerateRequest, PoemRequest, SamplingFields, ScoreRequest

log = logging.getLogger("rnnlab.serve")
STATIC = Path(__file__).resolve().parent / "static"
T = TypeVar("T")


class ApiError(Exception):
    """A refusal: ``status`` and a one-line ``message`` (``headers`` e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": message}`` (one line) with ``status``."""
    return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- request guard


class RequestGuard:
    """ASGI middleware in front of the API: more than ``max_requests`` API requests in flight
    get 429 at once; a body over ``max_body_bytes`` gets 413 (read up to the limit, never
    more), whatever its Content-Length says."""

    def __init__(self, app: Callable[..., Awaitable[None]], limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.in_flight = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limits.max_requests:
            busy = error_response(
                429,
                f"too many requests at once (this server takes {self.limits.max_requests}); "
                "retry in a moment",
                {"Retry-After": "1"},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = self.limits.max_body_bytes
        too_large = error_response(
            413, f"the request body is over this server's limit of {limit:,} bytes"
        )
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await too_large(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await too_large(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the client's disconnect, when it comes

        await self.app(scope, replay, send)


# ----------------------------------------------------------------------------- the app


def create_app(models: dict[str, ServedModel], limits: Limits | None = None) -> FastAPI:
    """The playground app serving ``models`` (by name) within ``limits``."""
    limits = limits or Limits()
    app = FastAPI(
        title="rnnlab playground",
        summary="Generate text, write Chinese poems and score text with trained rnnlab runs.",
        version="1",
        docs_url=None,  # the Swagger page loads its script from a CDN: /docs is our own page
        redoc_url=None,
    )
    generations = Slots(limits.max_generations)
    scores = Slots(limits.max_scores)
    app.state.models, app.state.limits = models, limits
    app.state.generations, app.state.scores = generations, scores

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RnnlabError)
    async def _rnnlab_error(request: Request, exc: RnnlabError) -> JSONResponse:
        return error_response(422, api_words(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            message = f"no such page: {request.url.path}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return error_response(
            500, f"internal error ({type(exc).__name__}); the server log has the details"
        )

    def served(name: str) -> ServedModel:
        if name not in models:
            raise ApiError(404, f"unknown model {name!r}; this server serves {', '.join(models)}")
        return models[name]

    def check(value: int, limit: int, what: str, status: int = 422) -> None:
        if value > limit:
            raise ApiError(status, f"{what} {value:,} is over this server's limit of {limit:,}")

    def take(slots: Slots, what: str) -> None:
        if not slots.try_take():
            raise ApiError(
                503,
                f"the server is busy with {slots.size} {what} at once; retry in a moment",
                {"Retry-After": "1"},
            )

    async def in_thread(slots: Slots, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread holding a slot already taken; the slot goes back when
        ``fn`` returns (a client leaving meanwhile does not cut a whole-response call short:
        its size limits bound it)."""

        def call() -> T:
            try:
                torch.set_num_threads(limits.threads)
                return fn()
            finally:
                slots.give_back()

        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)

    # ------------------------------------------------------------------------- the page

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    # ------------------------------------------------------------------------- the API

    @app.get("/api/models")
    async def list_models() -> dict[str, Any]:
        """The served models (name, corpus, cell, size, test perplexity) and the limits."""
        return {"models": [m.info for m in models.values()], "limits": asdict(limits)}

    @app.post("/api/generate", response_model=None)
    async def generate_text(req: GenerateRequest) -> dict[str, Any] | StreamingResponse:
        """A sample continuing ``prime``: ``{"texts": [...], "seed": s}``, or with ``stream``
        server-sent events: ``piece`` ({"text"}) per token, then ``done`` ({"seed", "tokens"})
        or ``error`` ({"error"})."""
        m = served(req.model)
        check(req.length, limits.max_length, "length")
        check(req.count, limits.max_count, "count")
        check(len(req.prime), limits.max_prime_chars, "prime length (characters)")
        if req.stream and req.count != 1:
            raise ApiError(422, "a streamed generation draws one sample; set count 1")
        refuse_unknown(m, prime_tokens(req.prime, m.level), "prime")
        cfg, seed = sampling(req)
        kw = dict(prime=req.prime, length=req.length, cfg=cfg, seed=seed)
        take(generations, "generations")
        if req.stream:
            return stream_response(m, kw, seed)
        texts = await in_thread(
            generations, partial(generate, m.model, m.vocab, m.level, count=req.count, **kw)
        )
        return {"model": m.name, "texts": texts, "seed": seed}

    def stream_response(m: ServedModel, kw: dict[str, Any], seed: int) -> StreamingResponse:
        """Start the generation in its own thread (which owns the slot taken) and stream its
        pieces; the thread stops at the next token once the response stops reading."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: the server stopped
                cancel.set()

        def work() -> None:
            try:
                torch.set_num_threads(limits.threads)
                pieces = stream_sample(m.model, m.vocab, m.level, **kw)
                count = -1  # the first piece is the prime
                try:
                    for piece in pieces:
                        if cancel.is_set():
                            return
                        count += 1
                        put(("piece", piece))
                finally:
                    pieces.close()
                put(("done", {"seed": seed, "tokens": count}))
            except RnnlabError as e:
                put(("error", {"error": _one_line(str(e))}))
            except Exception as e:
                log.error("unexpected error in a streamed generation", exc_info=e)
                put(("error", {"error": f"internal error ({type(e).__name__})"}))
            finally:
                generations.give_back()

        threading.Thread(target=work, name="rnnlab-stream", daemon=True).start()

        async def events() -> AsyncIterator[str]:
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "piece":
                        value = {"text": value}
                    yield f"event: {kind}\ndata: {json.dumps(value, ensure_ascii=False)}\n\n"
                    if kind != "piece":
                        return
            finally:
                cancel.set()  # the client left (or the stream ended): stop at the next token

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post("/api/poem")
    async def write_poem(req: PoemRequest) -> dict[str, Any]:
        """Poems as ``rnnlab poem`` writes them, each with the checklist of the constraints its
        text meets (computed from the text)."""
        m = served(req.model)
        if not m.poems:
            raise ApiError(
                422,
                f"model {m.name!r} is not a character model of Chinese poems; choose one "
                "trained on them (e.g. --preset tang-quatrains)",
            )
        check(req.count, limits.max_count, "count")
        check(req.candidates, limits.max_candidates, "candidates")
        for field in ("acrostic", "first_line", "start", "keywords", "title"):
            value = getattr(req, field)
            if value is not None:
                check(len(value), limits.max_prime_chars, f"{field} length (characters)")
        spec = PoemSpec(
            chars=req.form,
            lines=req.lines,
            acrostic=req.acrostic or None,
            first_line=req.first_line or None,
            start=req.start or None,
            rhyme=req.rhyme,
            tones=req.tones,
            title=req.title or None,
            keywords=req.keywords or None,
        )
        cfg, seed = sampling(req)
        call = partial(
            generate_poems,
            m.model,
            m.vocab,
            spec,
            count=req.count,
            cfg=cfg,
            seed=seed,
            title_sep=m.title_sep,
            candidates=req.candidates,
        )
        take(generations, "generations")
        poems = await in_thread(generations, call)
        return {
            "model": m.name,
            "seed": seed,
            "poems": [
                {
                    "title": p.title,
                    "text": p.text,
                    "lines": p.lines,
                    "score": p.score,
                    "perplexity": None if p.score is None else math.exp(-p.score),
                    "checks": poem_checklist(p.text, req),
                }
                for p in poems
            ],
        }

    @app.post("/api/score")
    async def score_text(req: ScoreRequest) -> dict[str, Any]:
        """Each token's log-probability given all before it, its surprisal (-log p, nats), its
        probability and the model's likeliest alternatives; the total and the perplexity."""
        m = served(req.model)
        check(req.top, limits.max_top, "top")
        tokens = make_tokenizer(m.level).tokenize(req.text)
        if not tokens:
            raise ApiError(422, "the text has no tokens to score")
        check(len(tokens), limits.max_score_tokens, "text length (tokens)", status=413)
        refuse_unknown(m, tokens, "text")
        ids = m.vocab.encode(tokens)
        call = partial(
            score_surprisal,
            m.model,
            boundary_token(m.vocab, m.level),
            ids,
            m.vocab.itos,
            top=req.top,
        )
        take(scores, "scores")
        scored = await in_thread(scores, call)
        total = sum(s.logprob for s in scored)
        unk = m.vocab.unk_id
        return {
            "model": m.name,
            "tokens": [
                dict(s.to_dict(), text=t, unknown=i == unk)
                for t, s, i in zip(tokens, scored, ids, strict=True)
            ],
            "count": len(scored),
            "total_logprob": total,
            "perplexity": math.exp(-total / len(scored)),
        }

    def refuse_unknown(m: ServedModel, tokens: list[str], what: str) -> None:
        """A character model refuses characters outside its vocabulary (a word model reads
        unknown words as ``<unk>``, as it was trained to)."""
        if m.level != "char":
            return
        unknown = m.unknown(tokens)
        if unknown:
            shown = " ".join(repr(t) for t in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            raise ApiError(
                422,
                f"the {what} has {len(unknown)} character(s) model {m.name!r} does not know: "
                f"{shown}; remove or replace them",
            )

    def sampling(req: SamplingFields) -> tuple[SamplingConfig, int]:
        cfg = SamplingConfig(
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            repetition_penalty=req.repetition_penalty,
        )
        return cfg, secrets.randbelow(2**31) if req.seed is None else req.seed

    app.add_middleware(RequestGuard, limits=limits)
    return app


def api_words(message: str) -> str:
    """A library message in the API's words: the command-line flags it names (``--first-line``)
    become the request's fields (``first_line``)."""
    return re.sub(r"--([a-z][a-z-]*[a-z])", lambda m: m.group(1).replace("-", "_"), message)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON; otherwise 422 naming the first bad field."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        where = (detail.get("ctx") or {}).get("error", "")
        return error_response(400, f"malformed JSON{': ' + where if where else ''}")
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "missing" and not loc:
        return error_response(422, "the request needs a JSON object body")
    field = ".".join(loc) or "body"
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return error_response(422, f"{field}: {message}{more}")
