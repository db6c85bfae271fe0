"""Find burned-in text in an RGB image without OCR (test support).

The renderers draw text with Pillow's default font at whole-pixel positions on a black panel /
footer, so a string drawn in a given colour has exactly the pixels of the same string drawn in
the same colour on black at the origin: :func:`find_text` looks for that exact pixel block.
A different string (e.g. "T12" instead of "T12?") gives a different block and is not found.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont


def text_block(text: str, size: int, colour: tuple[int, int, int]) -> NDArray[np.uint8]:
    """``text`` drawn in ``colour`` on black, cropped to its ink (rows, cols, 3)."""
    font = ImageFont.load_default(size=size)
    _left, _top, right, bottom = font.getbbox(text)
    canvas = Image.new("RGB", (int(right) + 4, int(bottom) + 4), (0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), text, fill=colour, font=font)
    a = np.asarray(canvas)
    ink = np.argwhere(a.max(axis=2) > 0)
    if ink.size == 0:
        raise ValueError(f"nothing drawn for {text!r}")
    (r0, c0), (r1, c1) = ink.min(axis=0), ink.max(axis=0) + 1
    return a[r0:r1, c0:c1]


def find_text(rgb: NDArray[np.uint8], text: str, size: int,
              colour: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Top-left (row, col) of every exact occurrence of ``text`` (drawn in ``colour`` at
    ``size``) in ``rgb``; the block must match pixel for pixel, background included."""
    block = text_block(text, size, colour)
    h, w = block.shape[:2]
    # anchor: the most inked pixel of the block; candidates are image pixels equal to it
    flat = int(block.max(axis=2).argmax())
    anchor = (flat // w, flat % w)
    hits = np.argwhere(np.all(rgb == block[anchor], axis=2))
    found = []
    for r, c in hits:
        top, left = int(r) - anchor[0], int(c) - anchor[1]
        if top < 0 or left < 0 or top + h > rgb.shape[0] or left + w > rgb.shape[1]:
            continue
        if np.array_equal(rgb[top:top + h, left:left + w], block):
            found.append((top, left))
    return found
