"""MNIST-style preprocessing of drawings, checked on real MNIST digits; PNG drawings read or refused."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from gridsearch.analysis.preprocessing import BadDrawing, mnist_style, png_ink
from gridsearch.training import data


@pytest.fixture(scope="module")
def digits(data_dir):
    """The first 300 official MNIST test digits, uint8 (300, 28, 28)."""
    return data.test_split(data_dir, 300).images[:, 0].numpy()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_real_mnist_digit_stays_nearly_the_same(digits):
    again = np.stack([mnist_style(digit) for digit in digits]).astype(int)
    difference = np.abs(again - digits).mean(axis=(1, 2))
    assert np.mean(difference == 0) > 0.8  # most come back pixel for pixel
    assert difference.max() < 1.0  # the rest moved by a pixel or were scaled from 254 to 255


def test_a_large_off_centre_drawing_of_a_digit_becomes_that_digit(digits):
    correlations = []
    for digit in digits[:100]:
        drawing = np.zeros((400, 300), dtype=np.uint8)
        drawing[30:254, 60:284] = np.asarray(Image.fromarray(digit).resize((224, 224), Image.Resampling.BILINEAR))
        result = mnist_style(drawing)
        assert result.dtype == np.uint8 and result.shape == (28, 28) and result.max() == 255
        assert np.abs(np.array(ndimage.center_of_mass(result.astype(float))) - 14).max() <= 0.5
        correlations.append(np.corrcoef(result.ravel(), digit.ravel())[0, 1])
    assert np.mean(correlations) > 0.9


def test_aspect_ratio_is_kept_in_a_20_pixel_box():
    bar = np.zeros((300, 300))
    bar[20:220, 100:140] = 1.0  # 200 tall, 40 wide: a "1"
    rows, columns = np.nonzero(mnist_style(bar))
    assert rows.max() - rows.min() + 1 == 20 and columns.max() - columns.min() + 1 == 4


def test_blank_drawings_are_refused():
    with pytest.raises(BadDrawing, match="empty"):
        mnist_style(np.zeros((280, 280)))


def test_png_ink_reads_dark_strokes_on_white_or_transparent():
    white = Image.new("RGB", (280, 280), "white")
    white.paste((0, 0, 0), (100, 50, 120, 250))
    clear = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    clear.paste((0, 0, 0, 255), (100, 50, 120, 250))
    for image in (white, clear):
        ink = png_ink(png(image))
        assert ink.shape == (280, 280) and ink[60, 110] == 255 and ink[10, 10] == 0


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def header_only(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a PNG"),
        (png(Image.new("RGB", (280, 280), "white")).replace(b"PNG", b"GIF", 1), "not a PNG"),
        (png(Image.new("L", (10, 280))), "10x280 pixels; expected 28 to 1024"),
        (header_only(5000, 5000), "5000x5000 pixels"),  # refused from its header, before decoding
        (header_only(280, 280), "cannot be read"),
        (
            png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (280, 280), dtype=np.uint8)))[:3000],
            "cannot be read",
        ),
    ],
)
def test_bad_pngs_are_refused_with_the_reason(content, message):
    with pytest.raises(BadDrawing, match=message):
        png_ink(content)
