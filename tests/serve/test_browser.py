"""The playground in a real headless Chromium (selenium): an acrostic quatrain written on the
Poem tab has its form in the DOM and a checklist of ticks, a scored text is coloured token by
token, and a screenshot is saved. Skips with the reason where no browser or driver can be had.

``RNNLAB_PLAYGROUND_SHOT=path`` also writes the screenshot there (``docs/playground.png`` of a
real model comes from ``benchmarks/playground_screenshot.py``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from rnnlab.serve.server import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]


def _helpers():
    spec = importlib.util.spec_from_file_location(
        "playground_screenshot", ROOT / "benchmarks" / "playground_screenshot.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


page = _helpers()


@pytest.fixture
def browser():
    problem = page.browser_problem()
    if problem:
        pytest.skip(problem)
    try:
        driver = page.open_browser()
    except Exception as e:  # a driver that cannot start here (sandbox, version mismatch)
        pytest.skip(f"headless Chromium did not start: {type(e).__name__}: {str(e)[:200]}")
    yield driver
    driver.quit()


def test_the_page_writes_an_acrostic_and_colours_a_scored_text(browser, make_app, tmp_path):
    with serve_in_thread(make_app()) as url:
        (card,) = page.write_poem(browser, url, "zh", "明月春花", seed=5, candidates=2)
        lines = card["lines"]
        assert len(lines) == 4
        for k, (line, head) in enumerate(zip(lines, "明月春花", strict=True)):
            assert line[0] == head and len(line) == 6, lines
            assert line[-1] == ("，" if k % 2 == 0 else "。")
        assert card["checks"]["form"] and card["checks"]["acrostic"] and card["checks"]["rhyme"]
        shot = tmp_path / "playground.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        if os.environ.get("RNNLAB_PLAYGROUND_SHOT"):
            shutil.copy(shot, os.environ["RNNLAB_PLAYGROUND_SHOT"])

        text = "the lazy fox."
        tokens = page.score_text(browser, url, "fox", text)
        assert "".join(t["text"] for t in tokens) == text
        colours = {t["background"] for t in tokens}
        assert all(c.startswith("rgb") and c != "rgba(0, 0, 0, 0)" for c in colours)
        assert len(colours) > 1  # surprisal differs from token to token, and so does colour
        assert browser.find_element("id", "strip").is_displayed()
        summary = browser.find_element("id", "score-summary").text
        assert "PERPLEXITY" in summary.upper()
