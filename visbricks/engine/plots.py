"""Training plots rewritten every epoch: loss curves, metric curves, image grids with targets.

Figures are ``matplotlib.figure.Figure`` objects saved through their own Agg canvas: importing
visbricks never selects a matplotlib backend for the user's process (a notebook keeps its
inline backend) and no pyplot figure state is shared between epochs or threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..data.draw import draw_boxes, image_grid
from ..files import atomic_write

if TYPE_CHECKING:  # imported where a figure is drawn: `predict`, `export`, `bench` draw none,
    from matplotlib.figure import Figure  # and matplotlib is ~0.4 s of every command's start


def _save(fig: Figure, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def _finite(value: object) -> bool:
    """A number that can be plotted (not missing, not NaN/inf, not text like the amp column)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_history(rows: Sequence[Mapping[str, float]], plots_dir: str | Path) -> None:
    """loss.png: every ``train/*`` and ``val/loss*`` column; metrics.png: every other ``val/*``."""
    if not rows:
        return
    from matplotlib.figure import Figure

    plots_dir = Path(plots_dir)
    epochs = [r["epoch"] for r in rows]
    keys = list(dict.fromkeys(k for r in rows for k in r if "/" in k))  # every epoch's keys
    loss_keys = [k for k in keys if k.startswith("train/") or k.startswith("val/loss")]
    metric_keys = [k for k in keys if k.startswith("val/") and k not in loss_keys]
    for name, group in (("loss.png", loss_keys), ("metrics.png", metric_keys)):
        if not group:
            continue
        n = len(group)
        cols = min(n, 4)
        rows_n = math.ceil(n / cols)
        fig = Figure(figsize=(4 * cols, 3 * rows_n))
        axes = fig.subplots(rows_n, cols, squeeze=False)
        for ax, key in zip(axes.flat, group):
            # Only the epochs that have the value (validation may run every N epochs): a line
            # through sparse points instead of isolated markers between NaN gaps.
            points = [(e, r[key]) for e, r in zip(epochs, rows) if _finite(r.get(key))]
            xs = [e for e, _ in points]
            ys = [v for _, v in points]
            ax.plot(xs, ys, marker="o", ms=3)
            ax.set_title(key)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.tight_layout()
        _save(fig, plots_dir / name)


def save_image_grid(
    images: Sequence[np.ndarray],
    path: str | Path,
    titles: Sequence[str] | None = None,
    boxes: Sequence[np.ndarray] | None = None,
    box_labels: Sequence[Sequence[str]] | None = None,
    box_colors: Sequence[Sequence[int]] | None = None,
    max_images: int = 16,
) -> None:
    """A grid of HWC uint8 images written to ``path``, optionally with a title each and XYXY
    boxes (palette colour ``box_colors[i][j]``, caption ``box_labels[i][j]``); drawn by
    :mod:`visbricks.data.draw`."""
    tiles = []
    for i, image in enumerate(list(images)[:max_images]):
        if boxes is not None and len(np.asarray(boxes[i]).reshape(-1, 4)):
            image = draw_boxes(
                image,
                np.asarray(boxes[i]).reshape(-1, 4),
                box_colors[i] if box_colors is not None else None,
                texts=box_labels[i] if box_labels is not None else None,
                width=1,
            )
        tiles.append(image)
    grid = image_grid(tiles, titles=list(titles)[: len(tiles)] if titles is not None else None)
    fmt = (Path(path).suffix[1:] or "png").upper().replace("JPG", "JPEG")
    atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format=fmt))
