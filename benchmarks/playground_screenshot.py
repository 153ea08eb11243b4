"""The playground in a real headless Chromium: write an acrostic quatrain on the Poem tab and
save a screenshot (``docs/playground.png``), and the page helpers the browser test drives.

    python benchmarks/playground_screenshot.py /work/bench/th/tang-hour \\
        --acrostic 春夏秋冬 --seed 3 --out docs/playground.png

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``; a CJK font
such as ``fonts-wqy-zenhei`` for readable Chinese) and selenium (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def browser_problem() -> str | None:
    """Why no headless browser can be had here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no Chromium here (Debian: apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver here (Debian: apt-get install chromium-driver)"
    return None


def open_browser(width: int = 1180, height: int = 900) -> Any:
    """A headless Chromium driven by the local chromedriver (never downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = next(shutil.which(n) for n in CHROMIUM if shutil.which(n))
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def _wait(driver: Any, condition: Any, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def pick_model(driver: Any, url: str, model: str, tab: str) -> None:
    """Open the page on ``tab`` with ``model`` chosen in the picker."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url + "#" + tab)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    driver.find_element(By.CSS_SELECTOR, f".tab[data-tab={tab}]").click()


def write_poem(
    driver: Any, url: str, model: str, heads: str, *, seed: int | None = None,
    rhyme: bool = True, candidates: int = 4,
) -> list[dict[str, Any]]:  # fmt: skip
    """Write an acrostic poem on the Poem tab; returns the poem's lines as the page shows them
    and its checklist: ``[{"lines": [...], "checks": {name: ok}}]``."""
    from selenium.webdriver.common.by import By

    pick_model(driver, url, model, "poem")
    driver.find_element(By.ID, "acrostic").send_keys(heads)
    if rhyme and not driver.find_element(By.ID, "rhyme").is_selected():
        driver.find_element(By.ID, "rhyme").click()
    for field, value in (("candidates", candidates), ("poem-seed", seed)):
        box = driver.find_element(By.ID, field)
        box.clear()
        if value is not None:
            box.send_keys(str(value))
    driver.find_element(By.ID, "write-poem").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#poem-out .poem-card"))
    cards = []
    for card in driver.find_elements(By.CSS_SELECTOR, "#poem-out .poem-card"):
        lines = [row.text for row in card.find_elements(By.CSS_SELECTOR, ".poem-line")]
        checks = {
            li.get_attribute("data-check"): li.get_attribute("data-ok") == "true"
            for li in card.find_elements(By.CSS_SELECTOR, ".checks li")
        }
        cards.append({"lines": lines, "checks": checks})
    return cards


def score_text(driver: Any, url: str, model: str, text: str) -> list[dict[str, str]]:
    """Score ``text`` on the Score tab; each token as the page shows it: its text, background
    colour and surprisal."""
    from selenium.webdriver.common.by import By

    pick_model(driver, url, model, "score")
    box = driver.find_element(By.ID, "score-text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "score").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#score-out .tok"))
    return [
        {
            "text": span.get_attribute("textContent"),
            "background": span.value_of_css_property("background-color"),
            "surprisal": span.get_attribute("data-surprisal"),
        }
        for span in driver.find_elements(By.CSS_SELECTOR, "#score-out .tok")
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", help="runs to serve; the first writes the poem")
    p.add_argument("--acrostic", default="春夏秋冬")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    args = p.parse_args(argv)
    problem = browser_problem()
    if problem:
        print(f"playground_screenshot: {problem}", file=sys.stderr)
        return 2
    from rnnlab.serve.app import create_app
    from rnnlab.serve.registry import load_registry
    from rnnlab.serve.server import serve_in_thread

    models = load_registry(args.run_dirs)
    name = next(iter(models))
    with serve_in_thread(create_app(models)) as url:
        driver = open_browser()
        try:
            cards = write_poem(driver, url, name, args.acrostic, seed=args.seed)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    for card in cards:
        print("\n".join(card["lines"]), card["checks"])
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
