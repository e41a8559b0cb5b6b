"""Training plots rewritten every epoch: loss curves, metric curves, image grids with targets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: these machines (and CI) have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .checkpoint import atomic_write  # noqa: E402


def _save(fig, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def plot_history(rows: Sequence[Mapping[str, float]], plots_dir: str | Path) -> None:
    """loss.png: every ``train/*`` and ``val/loss*`` column; metrics.png: every other ``val/*``."""
    if not rows:
        return
    plots_dir = Path(plots_dir)
    epochs = [r["epoch"] for r in rows]
    keys = [k for k in rows[-1] if "/" in k]
    loss_keys = [k for k in keys if k.startswith("train/") or k.startswith("val/loss")]
    metric_keys = [k for k in keys if k.startswith("val/") and k not in loss_keys]
    for name, group in (("loss.png", loss_keys), ("metrics.png", metric_keys)):
        if not group:
            continue
        n = len(group)
        cols = min(n, 4)
        fig, axes = plt.subplots(
            math.ceil(n / cols), cols, figsize=(4 * cols, 3 * math.ceil(n / cols)), squeeze=False
        )
        for ax, key in zip(axes.flat, group):
            ys = [r.get(key, float("nan")) for r in rows]
            ax.plot(epochs, ys, marker="o", ms=3)
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
    """A grid of HWC uint8 images, optionally with a title each and XYXY boxes with labels."""
    n = min(len(images), max_images)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        if boxes is not None:
            for j, (x1, y1, x2, y2) in enumerate(np.asarray(boxes[i]).reshape(-1, 4)):
                color = cmap(box_colors[i][j] % 10) if box_colors is not None else "lime"
                ax.add_patch(
                    plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=1.2)
                )
                if box_labels is not None:
                    ax.text(
                        x1,
                        y1,
                        box_labels[i][j],
                        fontsize=6,
                        color="white",
                        bbox={"facecolor": color, "alpha": 0.7, "pad": 1, "lw": 0},
                    )
    fig.tight_layout()
    _save(fig, path)
