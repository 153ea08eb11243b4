"""The JSON API in-process: each endpoint's happy path, and every error path answering a 4xx
(or a 500 for a bug) with ``{"error": "one line"}`` and no traceback."""

from __future__ import annotations

import json
import math
import re

import pytest

from rnnlab.evaluation.text import evaluate
from rnnlab.generation.poetry import check_form
from rnnlab.generation.sampling import SamplingConfig, generate
from rnnlab.serve import app as app_module
from rnnlab.serve.server import bind, exposure_warning


def assert_error(response, status: int, *mentions: str) -> str:
    """The response is ``status`` with a one-line JSON error naming ``mentions``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert message and "\n" not in message and "Traceback" not in message
    for m in mentions:
        assert m in message, message
    return message


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        kind = re.search(r"^event: (.*)$", block, re.M).group(1)
        data = json.loads(re.search(r"^data: (.*)$", block, re.M).group(1))
        events.append((kind, data))
    return events


# ------------------------------------------------------------------------------ happy paths


def test_models_lists_each_run_with_its_facts(client):
    body = client.get("/api/models").json()
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"fox", "zh"}
    fox, zh = models["fox"], models["zh"]
    assert fox["corpus"] == "fox.txt" and fox["cell"] == "lstm" and fox["hidden"] == 16
    assert fox["last_hidden"] == 16
    assert fox["parameters"] > 0 and fox["test_perplexity"] > 1
    assert not fox["poems"] and zh["poems"]
    assert body["limits"]["max_generations"] >= 1


def test_generate_returns_generate_s_text_for_the_seed(client, registry):
    r = client.post(
        "/api/generate", json={"model": "fox", "prime": "the ", "length": 40, "seed": 7}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    m = registry["fox"]
    expected = generate(m.model, m.vocab, "char", prime="the ", length=40, seed=7)
    assert body["texts"] == expected and body["seed"] == 7


def test_generate_draws_a_seed_and_reports_it(client):
    body = client.post("/api/generate", json={"model": "fox", "length": 20, "count": 2}).json()
    again = {"model": "fox", "length": 20, "count": 2, "seed": body["seed"]}
    assert client.post("/api/generate", json=again).json()["texts"] == body["texts"]


def test_a_streamed_generation_joins_to_the_whole_one(client):
    req = {"model": "fox", "prime": "the q", "length": 30, "seed": 3, "temperature": 0.7}
    whole = client.post("/api/generate", json=req).json()["texts"][0]
    r = client.post("/api/generate", json=dict(req, stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == ("done", {"seed": 3, "tokens": 30})
    pieces = [d["text"] for k, d in events if k == "piece"]
    assert pieces[0] == "the q" and "".join(pieces) == whole


def test_an_acrostic_poem_meets_its_checklist(client):
    req = {"model": "zh", "acrostic": "明月春花", "rhyme": True, "seed": 1, "candidates": 2}
    r = client.post("/api/poem", json=req)
    assert r.status_code == 200, r.text
    (poem,) = r.json()["poems"]
    assert check_form(poem["text"], 5, 4, acrostic="明月春花")
    assert [line[0] for line in poem["lines"]] == list("明月春花")
    checks = {c["name"]: c for c in poem["checks"]}
    assert checks["form"]["ok"] and checks["acrostic"]["ok"] and checks["rhyme"]["ok"]
    assert checks["rhyme"]["asked"] and not checks["tones"]["asked"]
    assert poem["perplexity"] == pytest.approx(math.exp(-poem["score"]))


def test_the_checklist_is_computed_from_the_text(monkeypatch, client):
    """A poem that does not meet a constraint shows a cross, whatever was asked."""
    from rnnlab.generation.poetry import Poem

    def fake(*args, **kwargs):
        text = "明月明月明，\n月月月月月。\n春春春春春，\n花花花花花。"
        return [Poem(text=text, lines=text.split("\n"), form=True, rhyme=True, tones=True)]

    monkeypatch.setattr(app_module, "generate_poems", fake)
    req = {"model": "zh", "acrostic": "明月春秋", "rhyme": True, "tones": True, "seed": 1}
    checks = {
        c["name"]: c["ok"] for c in client.post("/api/poem", json=req).json()["poems"][0]["checks"]
    }
    assert checks == {"form": True, "acrostic": False, "rhyme": False, "tones": False}


def test_score_gives_each_token_and_evaluate_s_total(client, registry):
    text = "the lazy dog jumps."
    r = client.post("/api/score", json={"model": "fox", "text": text, "top": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "".join(t["text"] for t in body["tokens"]) == text and body["count"] == len(text)
    for t in body["tokens"]:
        assert t["surprisal"] == pytest.approx(-t["logprob"]) and 0 < t["p"] <= 1
        assert len(t["alternatives"]) == 3 and not t["unknown"]
    m = registry["fox"]
    import torch

    ids = torch.tensor([m.vocab.stoi["\n"], *m.vocab.encode(list(text))])
    result = evaluate(m.model, ids, batch_size=1)
    assert body["total_logprob"] == pytest.approx(-result.loss * result.tokens, rel=1e-5)
    assert body["perplexity"] == pytest.approx(result.perplexity, rel=1e-5)


def test_the_page_and_the_api_description_work_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and "rnnlab playground" in page.text
    for path in ("/", "/docs", "/static/app.js", "/static/style.css"):
        text = client.get(path).text
        assert client.get(path).status_code == 200
        assert "http://" not in text and "https://" not in text, path  # no CDN, no network
    spec = client.get("/openapi.json").json()
    assert {"/api/models", "/api/generate", "/api/poem", "/api/score"} <= set(spec["paths"])


# ------------------------------------------------------------------------------ error paths


@pytest.mark.parametrize(
    ("body", "status", "mention"),
    [
        ("{bad json", 400, "malformed JSON"),
        ("", 422, "JSON object"),
        ("[1, 2]", 422, "body"),
        ('{"model": "fox", "length": "5"}', 422, "length"),
        ('{"model": "fox", "temperature": "hot"}', 422, "temperature"),
        ('{"model": 3}', 422, "model"),
        ('{"model": "fox", "lenght": 5}', 422, "lenght: unknown field"),
        ('{"model": "fox", "temperature": -1}', 422, "temperature"),
        ('{"model": "fox", "top_p": 1.5}', 422, "top_p"),
        ('{"prime": "the"}', 422, "model"),
    ],
)
def test_malformed_generate_requests(client, body, status, mention):
    r = client.post("/api/generate", content=body, headers={"content-type": "application/json"})
    assert_error(r, status, mention)


def test_an_unknown_model_is_404_naming_the_served_ones(client):
    for path, extra in (("/api/generate", {}), ("/api/poem", {}), ("/api/score", {"text": "a"})):
        r = client.post(path, json={"model": "../../etc/passwd", **extra})
        assert_error(r, 404, "unknown model", "fox, zh")


def test_over_long_requests(client, make_app):
    from fastapi.testclient import TestClient

    big = json.dumps({"model": "fox", "text": "a" * 70_000})
    assert_error(client.post("/api/score", content=big), 413, "65,536 bytes")

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield b'{"model": "fox", "text": "'
        for _ in range(100):
            yield b"a" * 1000
        yield b'"}'

    assert_error(client.post("/api/score", content=chunks()), 413, "bytes")
    r = client.post("/api/generate", json={"model": "fox", "length": 10**6})
    assert_error(r, 422, "length", "limit")
    assert_error(client.post("/api/generate", json={"model": "fox", "count": 99}), 422, "count")
    r = client.post("/api/generate", json={"model": "fox", "prime": "a" * 3000})
    assert_error(r, 422, "prime")
    small = TestClient(make_app(max_score_tokens=10), raise_server_exceptions=False)
    assert_error(small.post("/api/score", json={"model": "fox", "text": "a" * 11}), 413, "tokens")


def test_characters_outside_the_vocabulary_are_named(client):
    r = client.post("/api/score", json={"model": "fox", "text": "the Ünïcode dog"})
    assert_error(r, 422, "'Ü'", "'ï'", "does not know")
    r = client.post("/api/generate", json={"model": "fox", "prime": "ZEBRA"})
    assert_error(r, 422, "prime", "'Z'")
    r = client.post("/api/poem", json={"model": "zh", "acrostic": "猫狗鸡鸭"})
    assert_error(r, 422, "猫")


def test_poem_refusals(client):
    r = client.post("/api/poem", json={"model": "zh", "acrostic": "明月"})
    assert "--" not in assert_error(r, 422, "acrostic", "lines")  # the API's words, not flags
    assert_error(client.post("/api/poem", json={"model": "zh", "form": 6}), 422, "form")
    assert_error(client.post("/api/poem", json={"model": "fox"}), 422, "Chinese poems")
    r = client.post("/api/poem", json={"model": "zh", "first_line": "床前", "start": "床"})
    assert_error(r, 422, "first line")
    assert_error(
        client.post("/api/poem", json={"model": "zh", "candidates": 999}), 422, "candidates"
    )


def test_other_refusals(client):
    r = client.post("/api/generate", json={"model": "fox", "stream": True, "count": 2})
    assert_error(r, 422, "count 1")
    assert_error(client.post("/api/score", json={"model": "fox", "text": ""}), 422, "text")
    assert_error(
        client.post("/api/score", json={"model": "fox", "text": "a", "top": 99}), 422, "top"
    )
    assert_error(client.get("/api/nothing"), 404, "/api/nothing")
    assert_error(client.get("/api/generate"), 405)


def test_full_slots_answer_503_at_once_and_free_again(make_app):
    from fastapi.testclient import TestClient

    app = make_app(max_generations=1, max_scores=1)
    c = TestClient(app, raise_server_exceptions=False)
    assert app.state.generations.try_take() and app.state.scores.try_take()
    r = c.post("/api/generate", json={"model": "fox", "length": 5})
    assert_error(r, 503, "busy")
    assert r.headers["retry-after"] == "1"
    assert_error(c.post("/api/poem", json={"model": "zh"}), 503, "busy")
    assert_error(c.post("/api/score", json={"model": "fox", "text": "a"}), 503, "busy")
    app.state.generations.give_back()
    app.state.scores.give_back()
    assert c.post("/api/generate", json={"model": "fox", "length": 5}).status_code == 200
    assert c.post("/api/score", json={"model": "fox", "text": "a"}).status_code == 200
    assert app.state.generations.used == 0 and app.state.scores.used == 0


def test_a_bug_is_a_one_line_500_and_frees_its_slot(monkeypatch, make_app):
    from fastapi.testclient import TestClient

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(app_module, "score_surprisal", broken)
    app = make_app()
    c = TestClient(app, raise_server_exceptions=False)
    assert_error(c.post("/api/score", json={"model": "fox", "text": "a"}), 500, "RuntimeError")
    assert app.state.scores.used == 0


def test_serving_elsewhere_than_loopback_warns_and_a_busy_port_is_one_line():
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    assert "anyone" in exposure_warning("0.0.0.0")
    from rnnlab.errors import ConfigError

    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_the_serve_command_refuses_bad_runs_in_one_line(run_cli, tmp_path, served_runs):
    code, _, err = run_cli("serve", tmp_path / "missing")
    assert code == 2 and err.startswith("rnnlab: error:") and err.count("\n") == 1
    assert "does not exist" in err
    code, _, err = run_cli("serve", served_runs["fox"], "--max-generations", 0)
    assert code == 2 and "--max-generations" in err
    code, _, err = run_cli("serve", served_runs["fox"], "--port", 70000)
    assert code == 2 and "--port" in err


def test_sampling_settings_the_library_refuses_are_422(client):
    # top_k 0 passes neither the schema nor SamplingConfig: one line either way
    assert_error(client.post("/api/generate", json={"model": "fox", "top_k": 0}), 422, "top_k")
    assert SamplingConfig(top_k=1).top_k == 1


def test_a_word_model_streams_words_and_scores_unknown_words_as_unk(word_run):
    from fastapi.testclient import TestClient

    from rnnlab.serve.app import create_app
    from rnnlab.serve.registry import load_registry

    client = TestClient(create_app(load_registry([word_run])), raise_server_exceptions=False)
    req = {"model": "words", "prime": "the quick", "length": 12, "seed": 4}
    whole = client.post("/api/generate", json=req).json()["texts"][0]
    events = sse_events(client.post("/api/generate", json=dict(req, stream=True)).text)
    assert "".join(d["text"] for k, d in events if k == "piece") == whole
    assert whole.startswith("the quick")
    body = client.post("/api/score", json={"model": "words", "text": "the zebra jumps"}).json()
    assert [t["text"] for t in body["tokens"]] == ["the", "zebra", "jumps", "<eos>"]
    assert [t["unknown"] for t in body["tokens"]] == [False, True, False, False]
    assert body["tokens"][1]["token"] == "<unk>"
