"""Annotating images for ``predict`` output (PIL: fast, no figure machinery)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def draw_caption(image: np.ndarray, text: str) -> np.ndarray:
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((2, 2), text)
    draw.rectangle((0, 0, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((2, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    scores: Sequence[float] | None = None,
) -> np.ndarray:
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        color = PALETTE[int(labels[i]) % len(PALETTE)]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=2)
        text = class_names[int(labels[i])] + (f" {scores[i]:.2f}" if scores is not None else "")
        tb = draw.textbbox((x1, y1), text)
        top = max(0, y1 - (tb[3] - tb[1]) - 2)
        draw.rectangle((x1, top, x1 + tb[2] - tb[0] + 2, top + tb[3] - tb[1] + 2), fill=color)
        draw.text((x1 + 1, top), text, fill=(0, 0, 0))
    return np.asarray(im)
