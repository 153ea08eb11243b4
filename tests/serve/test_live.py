"""The playground on a real uvicorn server on a loopback port (in a thread), over httpx: a client
that leaves a streamed generation frees its slot, a full server answers 429/503 at once, and
50 concurrent requests each succeed or are refused, none hangs or crashes."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from rnnlab.serve.server import serve_in_thread


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_client_leaving_a_stream_cancels_it_and_frees_its_slot(make_app):
    app = make_app(max_generations=1, max_length=10**6)
    slots = app.state.generations
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        req = {"model": "fox", "length": 10**6, "stream": True, "seed": 0}  # minutes of work
        with client.stream("POST", "/api/generate", json=req) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            pieces = 0
            for line in lines:
                pieces += line.startswith("event: piece")
                if pieces == 20:
                    break
            assert slots.used == 1
            busy = client.post("/api/generate", json={"model": "fox", "length": 5})
            assert busy.status_code == 503 and "busy" in busy.json()["error"]
        # the response is closed: the generation stops at its next token and frees the slot
        assert wait_until(lambda: slots.used == 0), "the slot was not freed"
        ok = client.post("/api/generate", json={"model": "fox", "length": 5})
        assert ok.status_code == 200, ok.text


def test_too_many_requests_in_flight_get_429_at_once(make_app):
    app = make_app(max_requests=1, max_length=10**6)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        req = {"model": "fox", "length": 10**6, "stream": True}
        with client.stream("POST", "/api/generate", json=req) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection
            assert next(lines).startswith("event: piece")
            start = time.monotonic()
            refused = client.get("/api/models")
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "too many requests" in refused.json()["error"]
            assert time.monotonic() - start < 5
        assert wait_until(lambda: client.get("/api/models").status_code == 200)


def test_fifty_concurrent_requests_each_succeed_or_are_refused(make_app):
    app = make_app(max_generations=2, max_scores=2, max_requests=30)
    bodies = [
        ("/api/generate", {"model": "fox", "length": 40, "seed": 1}),
        ("/api/generate", {"model": "fox", "length": 40, "stream": True}),
        ("/api/score", {"model": "fox", "text": "the quick brown fox " * 5}),
        ("/api/poem", {"model": "zh", "acrostic": "明月春花", "seed": 2}),
        ("/api/generate", {"model": "nope"}),  # a refusal must not disturb the others
    ]
    with serve_in_thread(app) as url:

        def one(i: int) -> tuple[int, str]:
            path, body = bodies[i % len(bodies)]
            with httpx.Client(base_url=url, timeout=60) as client:
                r = client.post(path, json=body)
                return r.status_code, r.text

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(50)))
        statuses = [s for s, _ in results]
        for i, (status, text) in enumerate(results):
            path, body = bodies[i % len(bodies)]
            if body["model"] == "nope":
                assert status in (404, 429), text
            else:
                assert status in (200, 429, 503), text
            if status != 200:
                assert set(json.loads(text)) == {"error"}
        assert statuses.count(200) >= 1
        assert wait_until(lambda: app.state.generations.used == 0 and app.state.scores.used == 0)
        with httpx.Client(base_url=url, timeout=60) as client:  # still serving afterwards
            assert (
                client.post("/api/score", json={"model": "fox", "text": "the"}).status_code == 200
            )


def test_the_load_benchmark_runs(served_runs, tmp_path):
    """``benchmarks/serve_load.py`` starts ``rnnlab serve`` in a child process, fires its mix
    and writes a report of status counts and latencies."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "results.json"
    args = [str(served_runs["zh"]), "--requests", "8", "--length", "10", "--acrostic", "明月春花"]
    assert bench.main([*args, "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    every = report["kinds"]["all"]
    assert every["count"] == 8 and set(report["kinds"]) == {
        "generate",
        "stream",
        "score",
        "poem",
        "all",
    }
    assert sum(every["status"].values()) == 8 and set(every["status"]) <= {"200", "429", "503"}
    assert every["status"].get("200", 0) >= 1 and every["p50_s"] > 0
