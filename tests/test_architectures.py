"""Every registered architecture builds, runs forwards and backwards, and has its expected size."""

import ast
import inspect
import subprocess
import sys

import pytest
import torch
from torch import nn

import architectures
from architectures.stn import STN
from architectures.tps_stn import TPSSTN
from tests.conftest import ROOT, built_in_architectures

PARAMETER_COUNTS = {
    "lenet53": 271_530,
    "lenet53_augmented": 271_530,
    "stn": 276_268,
    "tps_stn": 281_656,
    "mlp": 109_386,
    "mlp_wide": 567_434,
    "convnet": 29_066,
    "vgg_small": 147_162,
    "resnet_small": 77_754,
}
"""Default-size parameter counts; the first four are the seed study's reported figures."""


def test_every_architecture_has_an_expected_count() -> None:
    assert built_in_architectures() == set(PARAMETER_COUNTS)


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_count(name: str) -> None:
    model = architectures.get(name).build()
    assert architectures.count_parameters(model) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_sweep_params_are_annotated_with_defaults(name: str) -> None:
    for param in architectures.get(name).params().values():
        assert param.annotation is not param.empty, param.name
        assert param.default is not param.empty, param.name


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    arch = architectures.get(name)
    model = arch.build(**arch.defaults())
    logits = model(torch.rand(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 32, 32), (1, 12, 20)], ids=["usps", "rgb32", "12x20"])
def test_every_architecture_fits_the_datasets_shape_and_classes(name: str, shape: tuple) -> None:
    """The engine passes a dataset's image shape and classes to the builder (``DATA_PARAMS``); each built-in
    takes them, and its defaults are MNIST's (so its MNIST build, and its trials' keys, are the ones before)."""
    arch = architectures.get(name)
    assert arch.data_params((1, 28, 28), 10) == {"image_shape": (1, 28, 28), "classes": 10}
    assert {p.name: p.default for p in arch.signature if p.name in architectures.DATA_PARAMS} == {
        "image_shape": (1, 28, 28),
        "classes": 10,
    }
    model = arch.build(**arch.data_params(shape, 4))
    logits = model(torch.rand(2, *shape))
    assert logits.shape == (2, 4)
    torch.nn.functional.cross_entropy(logits, torch.arange(2)).backward()


@pytest.mark.parametrize("name", ["lenet53", "stn", "tps_stn"])
def test_images_too_small_for_lenet_are_refused(name: str) -> None:
    arch = architectures.get(name)
    with pytest.raises(ValueError, match="images of 8x8 pixels are too small for LeNet-5-3"):
        arch.build(**arch.data_params((1, 8, 8), 10))


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (STN(), (1, 28, 28)),
        (TPSSTN(), (1, 28, 28)),
        (TPSSTN(tps_bounded=True), (1, 28, 28)),
        (TPSSTN(tps_grid=4, tps_span=0.5), (1, 28, 28)),
        (STN(image_shape=(1, 16, 16)), (1, 16, 16)),
        (TPSSTN(image_shape=(3, 32, 32), classes=4), (3, 32, 32)),
    ],
    ids=["stn", "tps", "tps-bounded", "tps-4x4", "stn-16x16", "tps-3x32x32"],
)
def test_transformers_start_at_the_identity(model: torch.nn.Module, shape: tuple) -> None:
    images = torch.rand(3, *shape)
    for mode in (True, False):
        model.train(mode)
        torch.testing.assert_close(model.transform(images), images, rtol=0, atol=1e-5)


def test_tps_grid_size_sets_the_head() -> None:
    assert TPSSTN(tps_grid=4).control.out_features == 32


@pytest.mark.parametrize("kwargs", [{"tps_grid": 1}, {"tps_span": 0.0}, {"tps_span": 1.0, "tps_bounded": True}])
def test_tps_rejects_bad_params(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TPSSTN(**kwargs)


def test_augmented_lenet_switches_on_augmentation() -> None:
    assert architectures.get("lenet53_augmented").training_params == {architectures.AUGMENTATION}
    assert architectures.get("stn").training_params == {architectures.AUGMENTATION, architectures.TRANSFORMER}
    assert architectures.get("lenet53").training_params == frozenset()


def test_unknown_extras_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown training_params \\['augmentations'\\]"):
        architectures.register("typo", nn.Identity, "a typo", training_params={"augmentations"})
    assert "typo" not in architectures.REGISTRY


def test_the_architectures_import_nothing_from_gridsearch() -> None:
    """gridsearch imports them, so they may not import it back (no cycle): only torch, the standard library
    and each other."""
    for path in sorted((ROOT / "architectures").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert all(module.split(".")[0] != "gridsearch" for module in modules), (path.name, modules)


def test_the_registry_is_read_from_the_sources_without_torch() -> None:
    """Each entry's name, extras and builder signature are read from its module's source, so a sweep is
    checked without importing torch; the builder, imported to build, has the signature its source declares."""
    code = "import sys, architectures; print(sorted(architectures.REGISTRY), 'torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert result.stdout.strip() == f"{sorted(PARAMETER_COUNTS)} False", result.stderr
    for name in PARAMETER_COUNTS:
        entry = architectures.get(name)
        declared = [architectures.describe(p) for p in entry.signature]
        assert declared == [
            architectures.describe(p) for p in architectures.keyword_params(inspect.signature(entry.build))
        ]
