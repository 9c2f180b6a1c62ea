"""One evaluation path: a trial's test evaluation, its robustness suite's ``clean`` row, its committee of one and
the recognizer compute its predictions the same way (``training.predict``: the trial's own precision, the same
batches and scaling), so the same weights give the same errors everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gridsearch.analysis.trained_models import bf16, load_model
from gridsearch.store.storage import Storage
from gridsearch.training import data, predict
from gridsearch.web.recognizer import recognize
from tests.conftest import cli, rows, write_sweep

TEST_SIZE = 150
EVALUATIONS = (
    "SELECT e.name, e.samples, e.errors, e.loss, e.predictions FROM evaluations e "
    "JOIN sweeps s ON s.selected_trial = e.trial_key WHERE s.name = 'small' AND e.name IN (?, ?, ?) ORDER BY e.name"
)


def test_a_bf16_trials_test_robustness_clean_committee_of_one_and_recognizer_agree(tmp_path, data_dir):
    sweep = write_sweep(
        tmp_path,
        dataset={"train_size": 300, "val_size": 200, "test_size": TEST_SIZE},
        params={"epochs": 1, "batch_size": 50, "hidden": 8, "amp": "bf16", "channels_last": True},
        grid={"lr": [0.02, 0.08]},
    )
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    where = ["--db", str(tmp_path / "results.db"), "--data-dir", str(data_dir)]
    suite = ["--suite", "robustness", "--test-size", str(TEST_SIZE), "--usps", str(tmp_path / "no-usps")]
    cli("evaluate", "small", *suite, *where, cwd=tmp_path, check=True)
    cli("evaluate", "small", "--ensemble", "1", *where, cwd=tmp_path, check=True)

    found = {
        name: rest
        for name, *rest in rows(tmp_path / "results.db", EVALUATIONS, "test", "robustness/clean", "ensemble/top1")
    }
    assert set(found) == {"test", "robustness/clean", "ensemble/top1"}
    samples, errors, loss, predictions = found["test"]
    assert samples == TEST_SIZE and 0 < errors < TEST_SIZE
    for name in ("robustness/clean", "ensemble/top1"):
        assert found[name][0] == samples and found[name][1] == errors, name
        assert json.loads(found[name][3]) == json.loads(predictions), name
    assert found["robustness/clean"][2] == loss  # the very same logits: the same loss, to the last bit

    storage = Storage(str(tmp_path / "results.db"), readonly=True)
    trial = storage.trial(storage.sweep("small").selected_trial or "")
    assert trial is not None and bf16(trial)
    model = load_model(trial, tmp_path / "runs")
    test = data.test_split(data_dir, TEST_SIZE)
    in_fp32 = predict.logits(model, test.images, bf16=False).argmax(1)
    in_bf16 = predict.logits(model, test.images, bf16=True).argmax(1)
    assert in_bf16.tolist() == json.loads(predictions)
    answers = [recognize(model, image[0].numpy(), bf16(trial)).digit for image in test.images[:40]]
    assert answers == json.loads(predictions)[:40]  # one drawing at a time, the same answers
    # what the suite computed before (float32 on bf16 weights) is another computation: its logits differ
    assert not torch.equal(predict.logits(model, test.images, False), predict.logits(model, test.images, True))
    assert np.mean(in_fp32.numpy() == in_bf16.numpy()) > 0.9


def test_bf16_is_emulated_only_on_a_cpu_that_onednn_cannot_run_it_on():
    assert not predict.bf16_emulated(torch.device("cuda"))  # a device type: no GPU needed
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert not predict.bf16_emulated(torch.device("cpu"))
    elif flags and not any(flag.startswith("avx512") for flag in flags):
        assert predict.bf16_emulated(torch.device("cpu"))  # an AVX2-only CPU: the reference convolution
