"""UFLD-V2 head (Qin et al., "Ultra Fast Deep Lane Detection with Hybrid Anchor Driven Ordinal
Classification", TPAMI 2022): lanes as classification over row and column anchors.

The stride-32 map is reduced by a 1x1 conv to a few channels, flattened (so every output sees
the whole image: the global context that lets lanes be followed through occlusions) and fed to
an MLP whose outputs are reshaped into four tensors:

* ``loc_row`` (B, row_cells, R, L): which cell along each of the R row anchors lane L crosses;
* ``loc_col`` (B, col_cells, C, L): the same along the C column anchors;
* ``exist_row`` (B, 2, R, L) and ``exist_col`` (B, 2, C, L): does lane L cross that anchor.

With ``aux_seg`` an auxiliary segmentation branch (stride-8, -16 and -32 features, upsampled to
stride 8 and fused) predicts the lane slot of each stride-8 cell (``seg``, L + 1 classes) during
training only: it regularises the backbone and is absent from ``eval()`` outputs, so predict and
export never see it. Because of the flatten, the head is built for one input size (another
size is average-pooled to that grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...registry import HEADS
from ..blocks import block_spec


def feature_size(size: int, stride: int) -> int:
    """Side of a stride-``stride`` map of a ``size`` input (each stride-2 step rounds up)."""
    for _ in range(int(round(math.log2(stride)))):
        size = (size + 1) // 2
    return size


@HEADS.register("ufld")
class UFLDHead(nn.Module):
    outputs = ("loc_row", "loc_col", "exist_row", "exist_col")
    output_stride = None  # per row/column anchor

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        input_size: Sequence[int] = (128, 320),
        num_lanes: int = 4,
        num_rows: int = 18,
        num_cols: int = 41,
        row_cells: int = 100,
        col_cells: int = 100,
        channels: int = 8,
        hidden: int = 2048,
        layer_norm: bool = True,
        dropout: float = 0.0,
        aux_seg: bool = False,
        aux_channels: int = 64,
        block: str = "conv",
        block_args: dict | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        sizes = dict(
            num_lanes=num_lanes,
            num_rows=num_rows,
            num_cols=num_cols,
            row_cells=row_cells,
            col_cells=col_cells,
            channels=channels,
            hidden=hidden,
        )
        bad = [f"{k}={v}" for k, v in sizes.items() if int(v) < 1]
        if bad:
            raise ConfigError(f"ufld head sizes must be positive: {', '.join(bad)}")
        self.num_lanes, self.num_rows, self.num_cols = num_lanes, num_rows, num_cols
        self.row_cells, self.col_cells = row_cells, col_cells
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(strides[-1])
        fh, fw = (feature_size(s, self.stride) for s in self.input_size)
        self.feature_hw = (fh, fw)
        # UFLD-V2's "pool": a plain 1x1 conv to a few channels (no norm, no activation).
        self.pool = block_spec(
            block, block_args, attention, kernel_size=1, norm="none", activation="none"
        )(int(in_channels[-1]), channels)
        flat = channels * fh * fw
        self.dims = (
            row_cells * num_rows * num_lanes,
            col_cells * num_cols * num_lanes,
            2 * num_rows * num_lanes,
            2 * num_cols * num_lanes,
        )
        self.mlp = nn.Sequential(
            nn.LayerNorm(flat) if layer_norm else nn.Identity(),
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, sum(self.dims)),
        )
        self.aux = None
        if aux_seg:
            levels = [i for i, s in enumerate(strides) if int(s) in (8, 16, 32)]
            if not levels:
                raise ConfigError("ufld head aux_seg needs stride-8/16/32 features")
            make = block_spec(block, block_args, attention)
            self.aux_levels = levels
            self.aux = nn.ModuleList(make(int(in_channels[i]), aux_channels) for i in levels)
            self.aux_fuse = nn.Sequential(
                make(aux_channels * len(levels), aux_channels),
                nn.Conv2d(aux_channels, num_lanes + 1, 1),
            )

    def forward(self, features: list[torch.Tensor], image_size=None) -> dict[str, torch.Tensor]:
        x = self.pool(features[-1])
        if tuple(x.shape[-2:]) != self.feature_hw:
            # Another input size (a receptive-field probe, a mis-sized image): average the map
            # to the grid the MLP was built for rather than fail. Tasks always resize to
            # img_size, so training, eval and predict never take this path.
            x = F.adaptive_avg_pool2d(x, self.feature_hw)
        out = self.mlp(x.flatten(1))
        b, L = out.shape[0], self.num_lanes
        loc_row, loc_col, ex_row, ex_col = out.split(self.dims, 1)
        result = {
            "loc_row": loc_row.view(b, self.row_cells, self.num_rows, L),
            "loc_col": loc_col.view(b, self.col_cells, self.num_cols, L),
            "exist_row": ex_row.view(b, 2, self.num_rows, L),
            "exist_col": ex_col.view(b, 2, self.num_cols, L),
        }
        if self.aux is not None and self.training:
            maps = [conv(features[i]) for conv, i in zip(self.aux, self.aux_levels)]
            size = maps[0].shape[-2:]
            maps = [maps[0]] + [
                F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]
            ]
            result["seg"] = self.aux_fuse(torch.cat(maps, 1))
        return result
