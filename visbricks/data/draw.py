"""Drawing on images, once for every task: boxes, masks, lanes, captions, depth colours, grids.

One palette (:data:`PALETTE`, indexed by class id) serves ``predict`` output, ``samples.png`` and
``predictions.png`` alike, so a class has the same colour everywhere. Boxes and masks are drawn
by ``torchvision.utils.draw_bounding_boxes`` / ``draw_segmentation_masks``; lanes, captions and
grid titles by PIL. Every function takes and returns an RGB
uint8 HWC numpy image (a CHW uint8 tensor is accepted too) and never touches matplotlib's
backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..errors import DataError

# Sasha Trubetskoy's 20 distinct colours (the first ten are the old predict palette).
PALETTE: list[tuple[int, int, int]] = [
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
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
]


def color(index: int) -> tuple[int, int, int]:
    """The palette colour of class (or lane, or instance) ``index``."""
    return PALETTE[int(index) % len(PALETTE)]


def _chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3):
            return t if t.dtype == torch.uint8 else (t.float().clamp(0, 1) * 255).byte()
        image = t.numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DataError(f"expected an RGB uint8 HWC image, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _hwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(1, 2, 0).numpy())


def draw_boxes(
    image: np.ndarray | torch.Tensor,
    boxes: np.ndarray | torch.Tensor,
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
    texts: Sequence[str] | None = None,
    width: int = 2,
) -> np.ndarray:
    """XYXY pixel ``boxes`` on ``image``, coloured by class, captioned with the class name (and
    score), or with ``texts`` when given."""
    canvas = _chw(image)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    if len(b) == 0:
        return _hwc(canvas)
    labels = [0] * len(b) if labels is None else [int(c) for c in labels]
    if texts is None and class_names is not None:
        texts = [
            class_names[c] + (f" {float(scores[i]):.2f}" if scores is not None else "")
            for i, c in enumerate(labels)
        ]
    out = draw_bounding_boxes(
        canvas,
        b,
        labels=list(texts) if texts is not None else None,
        colors=[color(c) for c in labels],
        width=width,
        label_colors="black",
        fill_labels=texts is not None,
    )
    return _hwc(out)


def draw_masks(
    image: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    labels: Sequence[int] | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Boolean ``masks`` (N, H, W) over ``image``, mask ``i`` in the colour of ``labels[i]``
    (default: its index)."""
    canvas = _chw(image)
    m = torch.as_tensor(np.asarray(masks)).bool()
    if m.ndim == 2:
        m = m[None]
    if len(m) == 0:
        return _hwc(canvas)
    labels = list(range(len(m))) if labels is None else [int(c) for c in labels]
    out = draw_segmentation_masks(canvas, m, alpha=alpha, colors=[color(c) for c in labels])
    return _hwc(out)


def overlay_mask(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    ignore_index: int = 255,
    background: int | None = 0,
) -> np.ndarray:
    """A class-id label map (H, W) over ``image``: each class in its palette colour; pixels of
    ``ignore_index`` (and of ``background``, unless None) are left as they are."""
    ids = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    present = [int(c) for c in np.unique(ids) if c != ignore_index and c != background]
    if not present:
        return _hwc(_chw(image))
    return draw_masks(image, np.stack([ids == c for c in present]), present, alpha)


def draw_lanes(
    image: np.ndarray | torch.Tensor,
    lanes: Sequence[np.ndarray],
    labels: Sequence[int] | None = None,
    width: int = 3,
    radius: int = 2,
) -> np.ndarray:
    """Each lane, an (K, 2) array of x, y pixel points in order, as a polyline in its palette
    colour (``labels[i]``, default its index) with a dot of ``radius`` on every point.

    Drawn with PIL: torchvision's ``draw_keypoints`` paints the connecting lines white.
    """
    im = Image.fromarray(_hwc(_chw(image)))
    draw = ImageDraw.Draw(im)
    for i, lane in enumerate(lanes):
        pts = [(float(x), float(y)) for x, y in np.asarray(lane, dtype=np.float64).reshape(-1, 2)]
        c = color(labels[i] if labels is not None else i)
        if len(pts) > 1:
            draw.line(pts, fill=c, width=width)
        if radius > 0:
            for x, y in pts:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=c)
    return np.asarray(im).copy()


def draw_caption(image: np.ndarray | torch.Tensor, text: str) -> np.ndarray:
    """``text`` in white on a black band at the top left of ``image``."""
    im = Image.fromarray(_hwc(_chw(image)))
    draw = ImageDraw.Draw(im)
    box = draw.multiline_textbbox((2, 2), text)
    draw.rectangle((0, 0, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.multiline_text((2, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def colorize_depth(disparity: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Disparity (H, W) → magma RGB uint8 (near = bright), scaled to ``vmax`` (default: its
    95th percentile, as Monodepth2 shows it, so a few very near pixels do not wash it out).
    Zero or invalid disparity (no ground truth) shows black."""
    import matplotlib  # the colormap only: no figure, no backend

    disparity = np.nan_to_num(np.asarray(disparity, dtype=np.float64), posinf=0.0)
    if vmax is None:
        valid = disparity[disparity > 0]
        vmax = float(np.percentile(valid, 95)) if valid.size else 1.0
    rgba = matplotlib.colormaps["magma"](np.clip(disparity / max(vmax, 1e-12), 0, 1))
    rgb = (rgba[..., :3] * 255 + 0.5).astype(np.uint8)
    rgb[disparity <= 0] = 0
    return rgb


def image_grid(
    images: Sequence[np.ndarray | torch.Tensor],
    titles: Sequence[str] | None = None,
    cols: int = 4,
    pad: int = 4,
    max_images: int = 16,
) -> np.ndarray:
    """Images (any sizes) tiled ``cols`` per row on a white canvas, each with its title above.

    Returns one RGB uint8 image (write it with ``data.io.write_image``).
    """
    tiles = [_hwc(_chw(im)) for im in list(images)[:max_images]]
    if not tiles:
        raise DataError("image_grid needs at least one image")
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = 0
    if titles is not None:
        for t in list(titles)[: len(tiles)]:
            b = measure.multiline_textbbox((0, 0), str(t))
            text_h = max(text_h, b[3] - b[1] + 4)
    cell_w = max(t.shape[1] for t in tiles) + pad
    cell_h = max(t.shape[0] for t in tiles) + pad + text_h
    canvas = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        x = pad + (i % cols) * cell_w
        y = pad + (i // cols) * cell_h
        if titles is not None:
            draw.multiline_text((x, y), str(titles[i]), fill=(0, 0, 0))
        canvas.paste(Image.fromarray(tile), (x, y + text_h))
    return np.asarray(canvas)


__all__ = [
    "PALETTE",
    "color",
    "colorize_depth",
    "draw_boxes",
    "draw_caption",
    "draw_lanes",
    "draw_masks",
    "image_grid",
    "overlay_mask",
]
