"""Anchor (default box) generation for single-shot detectors.

Anchors are laid out level by level, then row by row (y), then column by column (x), then the
k anchors of one cell. A head must flatten its predictions in exactly this (level, y, x, k) order.
Within one cell the k = len(sizes) * len(ratios) anchors are ordered size-major:
``for size in sizes: for ratio in ratios``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

# Multi-scale training or varied eval sizes would otherwise grow the cache without bound.
_CACHE_SIZE = 16


def _pair(value: int | float | Sequence[int | float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if len(value) != 2:
        raise ConfigError(f"{name} must be one number or (height, width), got {value!r}")
    return float(value[0]), float(value[1])


class AnchorGenerator(nn.Module):
    """Anchors of ``sizes[l]`` pixels (side of the equal-area square) and ``aspect_ratios[l]``
    (width / height) on every cell of feature level ``l``, centred at ``((j + 0.5) * stride)``.

    A ratio ``r`` turns size ``s`` into ``w = s * sqrt(r)``, ``h = s / sqrt(r)``, so every ratio of
    one size covers the same area. ``clip=True`` clips anchors to the image, as the original SSD
    does; RetinaNet-style detectors leave them unclipped.
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        clip: bool = False,
    ) -> None:
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ConfigError(
                f"anchor sizes have {len(sizes)} levels but aspect_ratios have "
                f"{len(aspect_ratios)}; give one list of each per feature level"
            )
        for level, (ss, rs) in enumerate(zip(sizes, aspect_ratios)):
            if not ss or any(s <= 0 for s in ss):
                raise ConfigError(f"anchor sizes of level {level} must be positive, got {ss!r}")
            if not rs or any(r <= 0 for r in rs):
                raise ConfigError(f"aspect_ratios of level {level} must be positive, got {rs!r}")
        self.sizes = [[float(s) for s in ss] for ss in sizes]
        self.aspect_ratios = [[float(r) for r in rs] for rs in aspect_ratios]
        self.clip = clip
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def num_anchors_per_location(self) -> list[int]:
        """k per level, the number of anchors centred on one feature-map cell."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def cell_anchors(self, level: int) -> torch.Tensor:
        """(k, 4) XYXY anchors of one cell centred at the origin, in the documented order."""
        sizes = torch.tensor(self.sizes[level], dtype=torch.float64)
        root_ratios = torch.tensor(self.aspect_ratios[level], dtype=torch.float64).sqrt()
        w = (sizes[:, None] * root_ratios[None, :]).reshape(-1)
        h = (sizes[:, None] / root_ratios[None, :]).reshape(-1)
        return torch.stack([-w / 2, -h / 2, w / 2, h / 2], dim=1)

    def level_shapes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (S, 2) widths and heights of every level's cell anchors and their (S,) levels,
        for a loss that works level by level (ATSS): an anchor's shape names its level. Clipped
        anchors lose their shape, and two levels with one shape cannot be told apart: both are
        refused here, so a config that cannot work fails when the model is built."""
        if self.clip:
            raise ConfigError(
                "a level-by-level assignment (loss.assigner: atss) needs unclipped anchors: "
                "set model.anchors.clip: false"
            )
        shapes, level_ids = [], []
        for level in range(self.num_levels):
            cell = self.cell_anchors(level)
            shapes.append(cell[:, 2:] - cell[:, :2])
            level_ids += [level] * len(cell)
        table, ids = torch.cat(shapes), torch.tensor(level_ids)  # float64, int64
        gap = (table[:, None] - table[None]).abs().amax(-1) / table.amax(-1)[:, None]
        shared = (gap < 1e-4) & (ids[:, None] != ids[None])
        if shared.any():
            a, b = (int(i) for i in shared.nonzero()[0])
            raise ConfigError(
                f"anchor levels {level_ids[a]} and {level_ids[b]} both have a "
                f"{table[a, 0]:.4g}x{table[a, 1]:.4g} anchor, so a level-by-level assignment "
                "(loss.assigner: atss) cannot tell their anchors apart; give each level its own "
                "model.anchors.sizes"
            )
        return table, ids

    def level_counts(self, anchors: torch.Tensor) -> list[int]:
        """How many of ``anchors`` (this generator's flat (A, 4) output) lie on each level,
        recovered from their shapes (:meth:`level_shapes`)."""
        # The head hands the same cached tensor every step; holding it keeps the identity exact.
        if getattr(self, "_levels_of", None) is anchors:
            return self._levels
        table, ids = self.level_shapes()
        wh = (anchors[:, 2:] - anchors[:, :2]).detach().to("cpu", torch.float64)
        error, nearest = ((wh[:, None] - table[None]).abs().amax(-1) / table.amax(-1)).min(1)
        levels = ids[nearest]
        if (error > 1e-4).any() or (levels.diff() < 0).any():
            raise ConfigError(
                "these anchors are not laid out by this generator's levels (level by level, "
                f"shapes {self.sizes} x {self.aspect_ratios})"
            )
        self._levels_of = anchors
        self._levels = torch.bincount(levels, minlength=self.num_levels).tolist()
        return self._levels

    def forward(
        self,
        image_size: tuple[int, int],
        feature_sizes: Sequence[tuple[int, int]],
        strides: Sequence[int | float | Sequence[int | float]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """(A, 4) XYXY pixel anchors for an image of ``image_size = (height, width)`` whose
        feature maps have ``feature_sizes[l] = (H_l, W_l)`` and ``strides[l]`` (one number or
        (stride_y, stride_x)). A = sum_l H_l * W_l * k_l."""
        if len(feature_sizes) != self.num_levels or len(strides) != self.num_levels:
            raise ConfigError(
                f"the anchor generator has {self.num_levels} levels but got "
                f"{len(feature_sizes)} feature maps and {len(strides)} strides; "
                "the anchor sizes/aspect_ratios lists must have one entry per neck output"
            )
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = (
            tuple(int(v) for v in image_size),
            tuple((int(h), int(w)) for h, w in feature_sizes),
            tuple(_pair(s, "stride") for s in strides),
            device,
            dtype,
        )
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        anchors = self._grid_anchors(key[0], key[1], key[2]).to(device=device, dtype=dtype)
        self._cache[key] = anchors
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return anchors

    def _grid_anchors(
        self,
        image_size: tuple[int, int],
        feature_sizes: tuple[tuple[int, int], ...],
        strides: tuple[tuple[float, float], ...],
    ) -> torch.Tensor:
        # Built in float64 so centres of large images stay exact before the final cast.
        per_level = []
        for level, ((fh, fw), (sy, sx)) in enumerate(zip(feature_sizes, strides)):
            cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * sy
            cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * sx
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
            per_level.append((centres + self.cell_anchors(level)[None]).reshape(-1, 4))
        anchors = torch.cat(per_level) if per_level else torch.zeros(0, 4, dtype=torch.float64)
        if self.clip:
            height, width = image_size
            anchors[:, 0::2] = anchors[:, 0::2].clamp(0, width)
            anchors[:, 1::2] = anchors[:, 1::2].clamp(0, height)
        return anchors

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, clip={self.clip}"


def default_ssd_sizes(
    img_size: int | Sequence[int], num_levels: int, smin: float = 0.1, smax: float = 0.9
) -> list[list[float]]:
    """SSD's anchor sizes in pixels for ``num_levels`` feature maps (Liu et al. 2016, eq. 4).

    Level k gets scale ``s_k = smin + (smax - smin) * k / (m - 1)`` and a second, intermediate
    scale ``sqrt(s_k * s_{k+1})`` (``s_m = 1``), both times the image side. Scales are relative to
    the shorter side of a ``(height, width)`` image so the largest anchor still fits in it.
    """
    if num_levels < 1:
        raise ConfigError(f"num_levels must be at least 1, got {num_levels}")
    if not 0 < smin <= smax:
        raise ConfigError(f"need 0 < smin <= smax, got smin={smin}, smax={smax}")
    side = min(_pair(img_size, "img_size"))
    if num_levels == 1:
        scales = [smin]
    else:
        scales = [smin + (smax - smin) * k / (num_levels - 1) for k in range(num_levels)]
    scales.append(1.0)
    return [
        [scales[k] * side, math.sqrt(scales[k] * scales[k + 1]) * side] for k in range(num_levels)
    ]


def anchors_from_config(anchors: Any, img_size: Sequence[int], num_levels: int) -> AnchorGenerator:
    """The generator of a ``model.anchors`` config section (``sizes`` or SSD's ``smin``/``smax``
    rule, ``aspect_ratios`` for all levels or per level, ``clip``) for a model predicting from
    ``num_levels`` feature maps; a level count that does not match is one ConfigError."""
    ratios = anchors.aspect_ratios
    if ratios and all(isinstance(r, (int, float)) for r in ratios):
        ratios = [ratios]  # one flat list: the same ratios on every level
    if len(ratios) == 1:
        ratios = list(ratios) * num_levels
    if len(ratios) != num_levels:
        raise ConfigError(
            f"model.anchors.aspect_ratios has {len(ratios)} lists but the model predicts "
            f"from {num_levels} feature maps; give one list for all levels or one per level"
        )
    if anchors.sizes is None:
        sizes = default_ssd_sizes(img_size, num_levels, anchors.smin, anchors.smax)
    else:
        sizes = [[s] if isinstance(s, (int, float)) else list(s) for s in anchors.sizes]
        if len(sizes) != num_levels:
            raise ConfigError(
                f"model.anchors.sizes has {len(sizes)} levels but the model predicts from "
                f"{num_levels} feature maps (the neck's outputs); give one list per level"
            )
    return AnchorGenerator(sizes, ratios, clip=anchors.clip)
