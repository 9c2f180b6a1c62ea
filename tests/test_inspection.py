"""``inspect``: figures and tables about MNIST itself, checked against the raw arrays."""

import numpy as np
import pandas as pd
from matplotlib import image as mpimg

from gridsearch.cli import main
from gridsearch.training import data
from tests.conftest import cli, write_sweep


def test_inspect_writes_figures_and_tables_that_match_the_data(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "--out", "look", "--data-dir", str(data_dir)]) == 0
    folder = tmp_path / "look"
    assert capsys.readouterr().out == "inspection written to look/index.html\n"
    page = (folder / "index.html").read_text()
    for name in (
        "inspect_samples.png",
        "inspect_label_distribution.png",
        "inspect_mean_images.png",
        "inspect_pixel_histogram.png",
        "inspect_label_distribution.csv",
        "inspect_pixel_statistics.csv",
    ):
        assert f'"{name}"' in page and (folder / name).is_file()
    for png in folder.glob("*.png"):
        assert mpimg.imread(png)[..., :3].std() > 0.02, png.name

    train, val = data.training_splits(data_dir, 50000, 10000)
    test = data.test_split(data_dir)
    labels = pd.read_csv(folder / "inspect_label_distribution.csv")
    for name, split in (("train", train), ("val", val), ("test", test)):
        assert labels[name].tolist() == np.bincount(split.labels.numpy(), minlength=10).tolist()
    assert labels[["train", "val", "test"]].sum().tolist() == [50000, 10000, 10000]
    statistics = pd.read_csv(folder / "inspect_pixel_statistics.csv").set_index("split")
    assert statistics.loc["test", "mean"] == np.float64(test.images.numpy().mean())
    assert statistics.loc["val", "images"] == 10000


def test_report_on_a_100_image_split_says_in_one_line_which_digits_are_too_few(tmp_path, data_dir, in_process_training):
    """A sweep trained on 100 images (some digit has fewer than 10 of them): the report is written all the same,
    its data section saying why it has no sample images."""
    sweep = write_sweep(
        tmp_path,
        name="tiny",
        architecture="mlp",
        dataset={"train_size": 100, "val_size": 100, "test_size": 100},
        params={"epochs": 1, "batch_size": 50},
        grid={"lr": [0.05, 0.1]},
    )
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    counts = np.bincount(data.training_splits(data_dir, 100, 100)[0].labels.numpy(), minlength=10)
    short = [str(digit) for digit in range(10) if counts[digit] < 10]
    assert short  # what the test is about: the split has fewer than 10 images of some digit

    cli("report", "--out", "report", "--data-dir", str(data_dir), cwd=tmp_path, check=True)
    page = (tmp_path / "report" / "index.html").read_text()
    assert f"fewer than 10 images of digit {', '.join(short)} (100 images in all)" in page
    assert not (tmp_path / "report" / "inspect_samples.png").exists()
