"""``lanes``: lane detection by row/column-anchor classification (UFLD-V2, docs/architecture.md §1).

Bricks: any backbone → the ``ufld`` head (:mod:`visbricks.models.heads.ufld`); targets and
decoding in :mod:`visbricks.ops.lanes`; loss :func:`visbricks.models.lane_losses.ufld_loss`;
metrics :class:`visbricks.metrics.lanes.LaneEvaluator` (TuSimple and CULane definitions, in the
original image's pixels). Images are resized to ``img_size`` without letterboxing (as UFLD does);
predicted points are scaled back to the original image. Data reading and drawing are the lane
roles (``tasks/roles/lanes.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config, section_kwargs
from ..errors import ConfigError
from ..metrics.lanes import LaneEvaluator
from ..models.lane_losses import ufld_loss
from ..ops.lanes import LaneAnchors, decode_lanes
from ..registry import TASKS
from .base import Task
from .roles.lanes import SEG_STRIDE, LaneData, LanePredictor

__all__ = ["SEG_STRIDE", "LanesTask"]


@TASKS.register("lanes")
class LanesTask(LaneData, LanePredictor, Task):
    name = "lanes"
    default_head = "ufld"
    head_outputs = ("loc_row", "loc_col", "exist_row", "exist_col")
    classes_from_data = False  # one class, "lane"
    metric = "val/culane_f1"
    metric_mode = "max"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.loss_kwargs = section_kwargs(ufld_loss, cfg.loss, "loss")  # checked once, here
        m = cfg.model
        col_lanes = m.col_lanes
        if col_lanes is not None:
            bad = [k for k in col_lanes if not 0 <= int(k) < m.lanes]
            if bad:
                raise ConfigError(f"model.col_lanes: slots {bad} outside 0..{m.lanes - 1}")
        self.anchors = LaneAnchors.make(
            m.row_anchors,
            m.col_anchors,
            m.row_cells,
            m.col_cells,
            m.lanes,
            row_range=m.row_range,
            col_range=m.col_range,
            col_lanes=col_lanes,
        )

    # ---- model and loss -----------------------------------------------------------------------
    def build_head(self, in_channels: list[int], strides: list[int]) -> nn.Module:
        m, a = self.cfg.model, self.anchors
        return self.make_head(
            in_channels,
            strides,
            input_size=self.img_size,
            num_lanes=a.num_lanes,
            num_rows=len(a.rows),
            num_cols=len(a.cols),
            row_cells=a.row_cells,
            col_cells=a.col_cells,
            aux_seg=m.aux_seg,
            dropout=m.dropout,
        )

    def loss(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        row, col, seg = batch["row_pos"], batch["col_pos"], batch.get("seg")
        return ufld_loss(outputs, row, col, seg, **self.loss_kwargs)

    def decode(self, outputs: dict, sizes: list[tuple[int, int]]) -> list[list[dict]]:
        """Lanes per image in original pixels (``sizes``: each image's (H, W))."""
        e = self.cfg.eval
        h, w = self.img_size
        decoded = decode_lanes(outputs, self.anchors, (h, w), e.min_rows, e.min_cols, e.window)
        for lanes, (oh, ow) in zip(decoded, sizes):
            for lane in lanes:
                lane["points"] = lane["points"] * (ow / w, oh / h)
        return decoded

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluator(self, dataset, split: str = "val") -> LaneEvaluator:
        e = self.cfg.eval
        return LaneEvaluator(
            prefix=split,
            pixel_thresh=e.tusimple_px,
            width=e.culane_width,
            scale_to_image=e.scale_to_image,
        )

    def eval_pairs(self, outputs: dict, batch: dict) -> tuple[list[dict], list[dict]]:
        decoded = self.decode(outputs, batch["size"])
        predictions = [{"lanes": [ln["points"] for ln in lanes]} for lanes in decoded]
        targets = [
            {"lanes": lanes, "size": size, "h_samples": hs}
            for lanes, size, hs in zip(batch["lanes"], batch["size"], batch["h_samples"])
        ]
        return predictions, targets
