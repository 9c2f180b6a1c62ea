"""Screens that fit (issue 33): the layout of a running ``gridsearch serve`` in headless Chromium at 1,280 and 1,920
px. Per width, the dashboard's table against its box and where "best so far" and "selected trial" end, and for
``--sweep`` (a committee sweep such as the study's ``study_committee``) the trials table, where "val accuracy" ends,
the learning curves' PNG size, the committee table and whether the page prints ``null``. Screenshots go in
``--out``; one JSON object per page and width.

    python -m gridsearch serve --db docs/study/results.db --port 8733 &
    python benchmarks/screens.py --url http://127.0.0.1:8733 --sweep study_committee --out /tmp/screens

Chromium is Debian's (``--chromium``, default /usr/bin/chromium), driven by Playwright. An older checkout's server
is measured the same way (the script reads only the pages).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BOX = """(selector) => { const e = document.querySelector(selector); if (!e || !e.offsetParent) return null;
  const r = e.getBoundingClientRect(); return {left: Math.round(r.x), right: Math.round(r.right)}; }"""
HEADER_RIGHT = """(title) => { const h = [...document.querySelectorAll("th")].find(
  (h) => h.textContent.trim() === title && h.offsetParent);
  return h ? Math.round(h.getBoundingClientRect().right) : null; }"""
PAGE_WIDTH = "document.documentElement.scrollWidth"


def dashboard(page, url: str, width: int, out: Path) -> dict[str, object]:
    page.goto(url + "/")
    page.wait_for_selector("#sweeps tbody tr")
    page.wait_for_timeout(1500)
    found = {
        "page": "dashboard",
        "width": width,
        "table": page.evaluate(BOX, "#sweeps"),
        "box_width": page.evaluate("document.querySelector('#sweeps').parentElement.clientWidth"),
        "best_so_far_right": page.evaluate(HEADER_RIGHT, "best so far"),
        "selected_trial_right": page.evaluate(HEADER_RIGHT, "selected trial"),
        "page_width": page.evaluate(PAGE_WIDTH),
    }
    page.screenshot(path=str(out / f"dashboard-{width}.png"), full_page=True)
    return found


def sweep_page(page, url: str, sweep: str, width: int, out: Path) -> dict[str, object]:
    page.goto(f"{url}/sweeps/{sweep}")
    page.wait_for_selector("#trials tbody tr")
    page.wait_for_function(
        "(i => !i.hidden && i.complete && i.naturalWidth > 0)(document.getElementById('curves'))", timeout=120_000
    )
    page.wait_for_timeout(4000)  # the analysis and the other figures
    found = {
        "page": sweep,
        "width": width,
        "trials_table": page.evaluate(BOX, "#trials"),
        "val_accuracy_right": page.evaluate(HEADER_RIGHT, "val accuracy"),
        "curves_png": page.evaluate("(i => [i.naturalWidth, i.naturalHeight])(document.getElementById('curves'))"),
        "committee_table": page.evaluate(BOX, "#committee"),
        "null_printed": "null" in page.inner_text("main"),
        "page_width": page.evaluate(PAGE_WIDTH),
    }
    page.screenshot(path=str(out / f"{sweep}-{width}.png"), full_page=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8733")
    parser.add_argument("--sweep", default="study_committee")
    parser.add_argument("--out", type=Path, default=Path("screens"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        for width in (1280, 1920):
            page = browser.new_page(viewport={"width": width, "height": 900})
            print(json.dumps(dashboard(page, args.url, width, args.out)))
            print(json.dumps(sweep_page(page, args.url, args.sweep, width, args.out)))
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
