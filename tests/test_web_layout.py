"""Screens that fit (issue 33), in headless Chromium at 1,280 and 1,920 px: the dashboard's key columns in view
without scrolling sideways, the recognizer listing each model once, with a stroke width control and bars that stay
put when the saliency is ticked, a committee's page showing its members. Screenshots go in the study folder."""

from __future__ import annotations

import io
import shutil
import warnings

import pandas as pd
import pytest
import yaml

from gridsearch.analysis.curves import learning_curves
from tests.conftest import cli, rows
from tests.test_web_api import web_study
from tests.test_webapp import SEVEN, browser, draw, page, server  # noqa: F401 (fixtures)

WIDTHS = (1280, 1920)


POOL = {
    "name": "pool",
    "dataset": {"train_size": 500, "val_size": 300, "test_size": 400},
    "params": {"epochs": 1, "batch_size": 50, "patience": 5},
    "grid": [{"architecture": ["mlp"], "lr": [0.05]}, {"architecture": ["convnet"], "channels": [4], "lr": [0.05]}],
    "seeds": [0, 1],
    "select": "val_accuracy",
}
"""A committee's pool of models, as the study's: one grid part per model, so that a param one architecture takes
(``channels``) is empty for the other's trials, and one they share (``lr``) has one value in every trial."""


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    """A copy of the web tests' study with a third sweep, ``digits_again``, that selects the same trial as
    ``digits`` (nothing trains: the trial is done), and ``POOL`` with its committee stored."""
    folder = tmp_path_factory.mktemp("layout-study")
    source = web_study(tmp_path_factory, data_dir)
    shutil.copy(source / "results.db", folder / "results.db")
    shutil.copytree(source / "runs", folder / "runs")
    again = yaml.safe_load((source / "digits.yaml").read_text()) | {"name": "digits_again"}
    (folder / "again.yaml").write_text(yaml.safe_dump(again, sort_keys=False))
    (folder / "pool.yaml").write_text(yaml.safe_dump(POOL, sort_keys=False))
    cli("run", "again.yaml", "pool.yaml", cwd=folder, data_dir=data_dir, check=True)
    cli("evaluate", "pool", "--ensemble", "2", cwd=folder, data_dir=data_dir, check=True)
    return folder


def in_view(page, selector: str, width: int) -> None:  # noqa: F811 (a page, not the fixture)
    """The element ``selector`` is laid out (not hidden) and within the viewport's width."""
    box = page.locator(selector).first.bounding_box()
    assert box and box["width"] > 0 and box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)


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
    assert page.locator("#sweeps th[data-count='failed']").is_hidden()  # no sweep has a failed trial: no column
    assert page.evaluate("(b => b.scrollWidth <= b.clientWidth)(document.querySelector('#sweeps').parentElement)")
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


@pytest.mark.parametrize("width", WIDTHS)
def test_a_committees_page_shows_its_members_not_empty_params(page, server, study, width):  # noqa: F811
    [(selected, committee)] = rows(
        study / "results.db",
        "SELECT s.selected_trial, e.name FROM sweeps s JOIN evaluations e ON e.trial_key = s.selected_trial "
        "WHERE s.name = 'pool' AND e.name LIKE 'ensemble/%'",
    )
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url + "/sweeps/pool")
    page.wait_for_selector("#committee tbody tr")
    members = page.locator("#committee tbody tr").evaluate_all("rows => rows.map(row => row.dataset.key)")
    assert members[0] == selected and len(members) == int(committee.removeprefix("ensemble/top")) == 2
    for row in page.locator("#committee tbody tr").all():
        assert "pool" in row.inner_text() and "%" in row.inner_text()  # its sweeps, its val accuracy
    in_view(page, "#committee", width)
    page.wait_for_selector("#test .test-result")
    assert "null" not in page.inner_text("main") and "channels=," not in page.inner_text("main")
    for title in ("key", "status", "val accuracy"):  # the scores before the params: in view without scrolling
        in_view(page, f"#trials th:text-is('{title}')", width)
    assert "The same in every trial" in page.inner_text("#trials-same")  # lr, one value: said once, not a column
    assert "lr" not in page.locator("#trials th").all_inner_texts()
    page.wait_for_function("(i => !i.hidden && i.complete && i.naturalWidth > 100)(document.getElementById('curves'))")
    page.wait_for_selector("#no-heatmap:text('no heatmap')")  # channels is empty for mlp: the figure says why not
    assert page.locator("#heatmap").is_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(study / f"committee-{width}.png"), full_page=True)


def test_learning_curves_keep_their_width_under_long_labels():
    """Labels of every param of a committee's pool (20 of them) wrap under the plots: matplotlib warns of no
    layout it could not apply, and each plot keeps over 40% of the figure's width."""
    label = " ".join(f"param_{i}=value_{i}" for i in range(20))
    epochs = pd.DataFrame(
        {"epoch": range(8), "train_loss": 0.1, "val_loss": 0.1, "train_accuracy": 0.9, "val_accuracy": 0.95}
    )
    for count in (1, 3, 10, 12):  # 12: small multiples
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            figure = learning_curves({f"{label} seed={seed}": epochs for seed in range(count)})
            figure.savefig(io.BytesIO(), format="png", dpi=80, bbox_inches="tight")
        plots = figure.axes[:2]
        assert all(axis.get_position().height > 0.15 for axis in figure.axes), count
        if count <= 10:
            assert all(axis.get_position().width > 0.4 for axis in plots), count
            legend = figure.legends[0].get_window_extent()
            assert legend.y1 <= min(axis.get_window_extent().y0 for axis in plots)  # under the plots, off them
