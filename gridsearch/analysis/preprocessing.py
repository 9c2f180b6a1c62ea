"""Digits from elsewhere (a drawing in the recognizer, USPS, scikit-learn's digits) made into 28x28
MNIST digits, the way MNIST's own were made.

LeCun, Cortes and Burges describe it: the NIST digits were "size normalized to fit in a 20x20 pixel
box while preserving their aspect ratio", which anti-aliasing turned into grey levels, and then
"centered in a 28x28 image by computing the center of mass of the pixels, and translating the image
so as to position this point at the center of the 28x28 field" (MNIST's centres of mass sit at
(14.0, 14.0) +- 0.3 pixels in array coordinates: whole-pixel translations to pixel (14, 14), half a
pixel below and right of the frame's middle).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

SIZE = 28
BOX = 20
CENTER = 14.0
MIN_SIDE, MAX_SIDE = 28, 1024
"""Accepted width and height of a drawing, in pixels."""
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
"""What Pillow raises on truncated, corrupt or oversized image data."""


class BadDrawing(ValueError):
    """A drawing that cannot be used: not a PNG, damaged, too small or too large, or without ink."""


def png_ink(png: bytes) -> np.ndarray:
    """The ink of a PNG drawing (dark strokes on a light or transparent background) as a 2-D uint8
    array: 255 minus its grey level once laid over white. :class:`BadDrawing` if it is not a usable PNG."""
    try:
        image = Image.open(io.BytesIO(png), formats=["PNG"])
    except UnidentifiedImageError:
        raise BadDrawing("the image is not a PNG") from None
    except UNREADABLE as exc:
        raise BadDrawing(f"the PNG cannot be read ({exc})") from None
    width, height = image.size  # from the header: a wrong size is refused before any pixel is decoded
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise BadDrawing(f"the drawing is {width}x{height} pixels; expected {MIN_SIDE} to {MAX_SIDE} pixels a side")
    try:
        white = Image.new("RGBA", image.size, "white")
        grey = Image.alpha_composite(white, image.convert("RGBA")).convert("L")
    except UNREADABLE as exc:
        raise BadDrawing(f"the PNG cannot be read ({exc})") from None
    return 255 - np.asarray(grey)


def mnist_style(ink: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """A 2-D ink image (0 = background, larger = more ink, any size and scale) as MNIST's uint8
    ``(28, 28)``: cropped to the ink (the pixels above ``threshold`` times the brightest), scaled (aspect
    ratio kept) so its longer side is 20 pixels, brightest pixel at 255, and moved by whole pixels to put
    its centre of mass at (14, 14). :class:`BadDrawing` if there is no ink."""
    ink = np.clip(np.asarray(ink, dtype=np.float32), 0, None)
    if ink.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {ink.shape}")
    rows = np.flatnonzero(ink.max(1) > threshold * ink.max())
    columns = np.flatnonzero(ink.max(0) > threshold * ink.max())
    if len(rows) == 0:
        raise BadDrawing("the drawing is empty (no ink)")
    crop = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    scale = BOX / max(crop.shape)
    height, width = (max(1, round(side * scale)) for side in crop.shape)
    # Pillow's bilinear filter widens with the scale when shrinking (anti-aliasing, like MNIST's grey
    # edges) and never overshoots, unlike Lanczos; scipy.ndimage.zoom would alias thick strokes.
    digit = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))
    digit = digit / digit.max()
    center_row, center_column = ndimage.center_of_mass(digit)
    top, left = round(CENTER - center_row), round(CENTER - center_column)
    # Paste into a margin wide enough for any shift, then cut the 28x28 field out of it.
    padded = np.zeros((SIZE + 2 * BOX, SIZE + 2 * BOX), dtype=np.float32)
    padded[BOX + top : BOX + top + height, BOX + left : BOX + left + width] = digit
    return np.rint(padded[BOX : BOX + SIZE, BOX : BOX + SIZE] * 255).astype(np.uint8)


def at_size(digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An MNIST-style uint8 digit made into the ``size`` (height, width) images a model of another digit dataset
    trained on: cropped to its ink and scaled (aspect kept) to fill that frame, centred, as USPS's and
    scikit-learn's digits are; as it is if it has that size already."""
    if digit.shape == tuple(size):
        return digit
    rows, columns = np.flatnonzero(digit.max(1)), np.flatnonzero(digit.max(0))
    crop = digit[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1] if len(rows) else digit
    scale = min(size[0] / crop.shape[0], size[1] / crop.shape[1])
    height, width = (max(1, round(side * scale)) for side in crop.shape)
    scaled = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))
    framed = np.zeros(size, np.uint8)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    framed[top : top + height, left : left + width] = scaled
    return framed
