"""Load on the playground's API: ``rnnlab serve`` started on a run (its own process, a free
loopback port), then N requests fired at once, a mix of streamed and whole generations, scores
and (for a poem model) acrostic poems. Each request either succeeds (200) or is refused at once
(429/503); the report records the status counts and the latency (p50, p99, max) per kind and
over all, with the server's limits and the machine.

    python benchmarks/serve_load.py /work/bench/th/tang-hour --requests 50

writes ``benchmarks/results/serve_load/results.json``. The whole run is bounded: every request
has ``--timeout`` seconds, the server is stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_report  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "serve_load" / "results.json"
ZH_TEXT = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
EN_TEXT = "the quick brown fox jumps over the lazy dog. "


def start_server(run_dirs: list[str], args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """``rnnlab serve`` on a free port in a child process; its URL once it listens."""
    cmd = [sys.executable, "-m", "rnnlab", "serve", *run_dirs, "--port", "0",
           "--max-generations", str(args.max_generations), "--max-length", str(args.length)]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        found = re.search(r"at (http://\S+/)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit(f"serve_load: the server did not start (last output: {line.strip()!r})")


def requests_for(
    model: dict, n: int, length: int, heads: str = "春夏秋冬"
) -> list[tuple[str, str, dict]]:
    """``n`` (kind, path, body) cycling through the kinds the model supports."""
    name = model["name"]
    text = ZH_TEXT if model["poems"] else EN_TEXT
    kinds = [
        ("generate", "/api/generate", {"model": name, "length": length}),
        ("stream", "/api/generate", {"model": name, "length": length, "stream": True}),
        ("score", "/api/score", {"model": name, "text": text * 4}),
    ]
    if model["poems"]:
        kinds.append(("poem", "/api/poem", {"model": name, "acrostic": heads, "rhyme": True}))
    return [kinds[i % len(kinds)] for i in range(n)]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", help="runs to serve; the first is loaded")
    p.add_argument("--requests", type=int, default=50, help="requests fired at once")
    p.add_argument("--length", type=int, default=100, help="tokens per generation")
    p.add_argument("--max-generations", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch threads per model call (server default)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--acrostic", default="春夏秋冬", help="heads of the poem requests")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    proc, url = start_server(args.run_dirs, args)
    try:
        with httpx.Client(base_url=url, timeout=args.timeout) as client:
            listing = client.get("/api/models").json()
        model, limits = listing["models"][0], listing["limits"]
        plan = requests_for(model, args.requests, args.length, args.acrostic)

        # One client shared by all threads (httpx.Client is thread-safe), with a connection per
        # request, opened before the clock starts: building a client per request costs the
        # client process ~20 ms of GIL-bound setup each, which would be counted as server latency.
        shared = httpx.Client(
            base_url=url,
            timeout=args.timeout,
            limits=httpx.Limits(max_connections=len(plan), max_keepalive_connections=len(plan)),
        )

        def fire(item: tuple[str, str, dict]) -> dict:
            kind, path, body = item
            start = time.perf_counter()
            try:
                r = shared.post(path, json=body)
                status = r.status_code
                ok = status != 200 or kind != "stream" or "event: done" in r.text
            except httpx.HTTPError as e:
                status, ok = type(e).__name__, False
            return {"kind": kind, "status": status, "ok": ok,
                    "seconds": time.perf_counter() - start}  # fmt: skip

        with shared:
            shared.get("/api/models")  # a warm connection and a warm server
            wall = time.perf_counter()
            with ThreadPoolExecutor(len(plan)) as pool:
                results = list(pool.map(fire, plan))
            wall = time.perf_counter() - wall
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    report: dict = {"url": url, "model": model, "limits": limits, "requests": len(plan),
                    "length": args.length, "wall_seconds": wall, "kinds": {}}  # fmt: skip
    for kind in sorted({r["kind"] for r in results}) + ["all"]:
        rows = [r for r in results if kind in ("all", r["kind"])]
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
        done = [r["seconds"] for r in rows if r["status"] == 200]
        refused = [r["seconds"] for r in rows if r["status"] in (429, 503)]
        report["kinds"][kind] = {
            "count": len(rows),
            "status": counts,
            "incomplete_streams": sum(not r["ok"] for r in rows),
            "p50_s": percentile(done, 0.5),
            "p99_s": percentile(done, 0.99),
            "max_s": max(done, default=None),
            "refused_p99_s": percentile(refused, 0.99),
        }
    report["unexpected"] = [r for r in results if r["status"] not in (200, 429, 503)]
    report["machine"] = machine_info()
    write_report(args.out, report, ascii_only=False)
    every = report["kinds"]["all"]
    print(f"{len(plan)} requests in {wall:.1f}s: {every['status']}; p50 {every['p50_s']}, "
          f"p99 {every['p99_s']} s (successes)")  # fmt: skip
    return 1 if report["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
