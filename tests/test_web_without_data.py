"""The web app on a database whose dataset files are absent (a fresh clone serving docs/study): the pages that show
test images say so in a line and show what needs none, rather than fail."""

from __future__ import annotations

import pytest

from gridsearch.store.storage import Storage
from gridsearch.web.app import create_app
from tests.conftest import ROOT

DOCS = ROOT / "docs" / "study"


@pytest.mark.skipif(not (DOCS / "results.db").exists(), reason="docs/study is published by study/publish.py")
def test_learned_and_augmentation_pages_without_dataset_files(tmp_path, in_process_training):
    storage = Storage(str(DOCS / "results.db"), readonly=True)
    client = create_app(storage, DOCS / "runs", tmp_path).test_client()
    key = storage.selected_trial("stn_cpu")
    page = client.get(f"/trials/{key}/learned", headers={"Accept": "text/html"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="no-test-images"' in text
    assert f"its files are not in {tmp_path}" in text and f"/trials/{key}/filters.png" in text
    assert "what the spatial transformer" in text and "/transformer.png" not in text
    assert client.get(f"/trials/{key}/filters.png").status_code == 200  # needs no image
    maps = client.get(f"/trials/{key}/maps.png?layer=1")
    assert maps.status_code == 503 and maps.get_json()["error"].startswith("no MNIST test images to show")
    augment = client.get("/augment", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'id="no-test-images"' in augment and 'id="augmented"' not in augment
    assert client.get("/augment.png").status_code == 503
