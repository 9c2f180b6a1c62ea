"""Screens that fit (issue 33), in headless Chromium at 1,280 and 1,920 px: the dashboard's key columns in view
without scrolling sideways, the recognizer listing each model once, with a stroke width control and bars that stay
put when the saliency is ticked. Screenshots go in the study folder."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.conftest import cli
from tests.test_web_api import web_study
from tests.test_webapp import SEVEN, browser, draw, page, server  # noqa: F401 (fixtures)

WIDTHS = (1280, 1920)


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    """A copy of the web tests' study with a third sweep, ``digits_again``, that selects the same trial as
    ``digits`` (nothing trains: the trial is done)."""
    folder = tmp_path_factory.mktemp("layout-study")
    source = web_study(tmp_path_factory, data_dir)
    shutil.copy(source / "results.db", folder / "results.db")
    shutil.copytree(source / "runs", folder / "runs")
    again = yaml.safe_load((source / "digits.yaml").read_text()) | {"name": "digits_again"}
    (folder / "again.yaml").write_text(yaml.safe_dump(again, sort_keys=False))
    cli("run", "again.yaml", cwd=folder, data_dir=data_dir, check=True)
    return folder


@pytest.mark.parametrize("width", WIDTHS)
def test_the_dashboards_key_columns_are_in_view_without_scrolling(page, server, study, width):  # noqa: F811
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url + "/")
    page.wait_for_selector('tr[data-sweep="digits"] a.key')
    for title in ("best so far", "selected trial"):
        box = page.locator(f"#sweeps th:text-is('{title}')").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (title, box)
    cell = page.locator('tr[data-sweep="digits"] a.key').bounding_box()
    assert cell and cell["x"] + cell["width"] <= width
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # the page itself never scrolls sideways
    page.screenshot(path=str(study / f"sweeps-{width}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_recognizer_lists_each_model_once_and_its_bars_stay_put(page, server, study, width):  # noqa: F811
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url + "/recognizer")
    page.wait_for_function("document.getElementById('model').value !== ''")
    models = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert len(models) == len(set(models)), models  # digits and digits_again select the same trial
    assert page.get_attribute("#stroke", "value") == "22"
    page.fill("#stroke", "30")
    assert page.inner_text("#stroke-width") == "30"
    assert draw(page, SEVEN) == "7"
    before = page.locator("#bars").bounding_box()
    page.check("#show-saliency")
    page.wait_for_function("document.getElementById('seen-caption').textContent.startsWith('Red')")
    after = page.locator("#bars").bounding_box()
    assert before == after, (before, after)
    for selector in (".controls", ".recognizer"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] + box["width"] <= width
    page.screenshot(path=str(study / f"recognizer-{width}.png"), full_page=True)
