"""What a network learned: filters, feature maps and a spatial transformer's output, each checked against an
independent computation on small in-process models with weights set by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import image as mpimg
from torch import nn

import architectures
from gridsearch.analysis import plots
from gridsearch.analysis.learned import (
    TRANSFORMED,
    Transformed,
    feature_maps,
    first_layer_filters,
    learned_blocks,
    transformed,
)
from gridsearch.analysis.webpage import Figure, Folder, Note
from gridsearch.training.data import Split


def build(name: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return architectures.get(name).build(**params).eval()


def digits(count: int) -> torch.Tensor:
    """uint8 images (count, 1, 28, 28): a bright off-centre block on noise, so a flip or a shift shows."""
    images = torch.randint(0, 60, (count, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    images[:, :, 4:14, 3:9] = 255
    return images


def bn_relu(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    return F.relu(F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps))


def test_the_first_layer_filters_are_the_first_convolutions_weights():
    lenet = build("lenet53", hidden=16)
    weights = torch.arange(32 * 9, dtype=torch.float32).view(32, 1, 3, 3) / 100
    with torch.no_grad():
        lenet.features[0].weight.copy_(weights)
    np.testing.assert_array_equal(first_layer_filters(lenet), weights[:, 0].numpy())
    stn = build("stn", hidden=16)  # the classifier's filters, not the localisation net's 7x7 ones
    np.testing.assert_array_equal(first_layer_filters(stn), stn.classifier.features[0].weight.detach()[:, 0].numpy())
    assert first_layer_filters(build("convnet", channels=4)).shape == (4, 3, 3)
    assert first_layer_filters(build("mlp")) is None and feature_maps(build("mlp"), digits(1)[0]) == []
    assert transformed(lenet, digits(2)) is None


def test_feature_maps_equal_conv_batch_norm_relu_computed_independently():
    lenet = build("lenet53", hidden=16)
    with torch.no_grad():  # known, non-trivial batch-norm statistics
        for norm in (lenet.features[1], lenet.features[4]):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.1, 0.1)
    digit = digits(1)[0]
    x = digit.float().div(255).view(1, 1, 28, 28)
    first = bn_relu(F.conv2d(x, lenet.features[0].weight, padding=2), lenet.features[1])
    second = bn_relu(F.conv2d(first, lenet.features[3].weight), lenet.features[4])
    maps = feature_maps(lenet, digit)
    assert [m.layer for m in maps] == [1, 2]
    assert maps[0].maps.shape == (32, 30, 30) and maps[1].maps.shape == (32, 28, 28)
    np.testing.assert_allclose(maps[0].maps, first[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(maps[1].maps, second[0].detach().numpy(), atol=1e-5)
    # A residual network's second convolution sits inside a block: only the stem's maps.
    assert [m.maps.shape for m in feature_maps(build("resnet_small", channels=4), digit)] == [(4, 28, 28)]


@pytest.mark.parametrize("name", ["stn", "tps_stn"])
def test_an_identity_transformer_returns_its_input_and_a_flip_flips_it(name):
    model = build(name, hidden=16)  # both start at the identity transform
    images = digits(TRANSFORMED)
    batch = transformed(model, images)
    assert isinstance(batch, Transformed) and batch.before.shape == batch.after.shape == (TRANSFORMED, 28, 28)
    np.testing.assert_array_equal(batch.before, images[:, 0].float().numpy() / 255)
    np.testing.assert_allclose(batch.after, batch.before, atol=1e-5)
    with torch.no_grad():  # x -> -x: the transformer samples each row mirrored
        if name == "stn":
            model.theta.bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        else:
            model.control.bias.view(-1, 2)[:, 0].neg_()
    np.testing.assert_allclose(transformed(model, images).after, batch.before[:, :, ::-1], atol=1e-5)
    # The classifier's feature maps are of the transformed digit.
    conv = model.classifier.features
    flipped = images[:1].float().div(255).flip(-1)
    expected = bn_relu(F.conv2d(flipped, conv[0].weight, padding=2), conv[1])[0].detach().numpy()
    np.testing.assert_allclose(feature_maps(model, images[0], layers=1)[0].maps, expected, atol=1e-5)


def test_the_blocks_draw_every_figure_and_say_when_there_are_no_convolutions(tmp_path):
    folder = Folder(tmp_path)
    test = Split(digits(TRANSFORMED), torch.arange(TRANSFORMED) % 10)
    blocks = learned_blocks(folder, "stn", build("stn", hidden=16), test)
    assert [b.src for b in blocks if isinstance(b, Figure)] == [
        "filters_stn.png",
        "feature_maps_stn_1.png",
        "feature_maps_stn_2.png",
        "transformer_stn.png",
    ]
    assert "transformed as the classifier sees it" in blocks[1].caption and "(a 0)" in blocks[1].caption
    for path in tmp_path.glob("*.png"):
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 50 and pixels[..., :3].std() > 0.02, path.name
    assert learned_blocks(folder, "mlp", build("mlp"), test) == [
        Note("No convolutions in this network: no filters or feature maps to show.")
    ]


def test_tiles_scale_each_image_on_its_own():
    figure = plots.tiles(np.stack([np.full((3, 3), -2.0), np.eye(3) * 5]), "t", signed=True, columns=2)
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (3, 7) and shown.mask[:, 3].all()  # a one-pixel gap (NaN, drawn white) between the tiles
    np.testing.assert_array_equal(shown[:, :3], -1.0)
    np.testing.assert_array_equal(shown[:, 4:], np.eye(3))


def test_the_displacement_of_a_spatial_transformer_is_measured_in_pixels():
    from gridsearch.analysis.learned import displacement

    torch.manual_seed(0)
    images = (torch.rand(30, 1, 28, 28) * 255).to(torch.uint8)
    stn = architectures.get("stn").build(hidden=16).eval()
    assert displacement(stn, images, bf16=False) == pytest.approx(0.0, abs=1e-5)  # it starts as the identity
    with torch.no_grad():  # sample 1 pixel to the right and 2 down: a translation of (2/28, 4/28) in [-1, 1]
        stn.theta.bias.copy_(torch.tensor([1.0, 0.0, 2 / 28, 0.0, 1.0, 4 / 28]))
    assert displacement(stn, images, bf16=False) == pytest.approx(5**0.5, rel=1e-5)
    tps = architectures.get("tps_stn").build(hidden=16).eval()
    assert displacement(tps, images, bf16=False) == pytest.approx(0.0, abs=1e-4)
    assert displacement(architectures.get("lenet53").build(hidden=16), images, bf16=False) is None
