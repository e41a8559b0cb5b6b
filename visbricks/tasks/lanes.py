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
from ..errors import ConfigError, DataError
from ..metrics.lanes import LaneEvaluator
from ..models.lane_losses import ufld_loss
from ..ops.lanes import LaneAnchors, decode_lanes, labelled_row_range
from ..registry import TASKS
from .base import Task
from .roles.lanes import SEG_STRIDE, LaneData, LanePredictor

__all__ = ["SEG_STRIDE", "LanesTask"]

# model.row_anchors: auto — how many rows (lanes.yaml's default count; model.row_range=auto keeps
# a count of your own) and which percentile of the lanes' tops starts them (ignores strays).
AUTO_ROWS = 18
AUTO_TOP_PERCENTILE = 2.0


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
        self._anchors: LaneAnchors | None = None
        if "auto" not in (m.row_anchors, m.row_range):
            self._anchors = self._make_anchors()  # settings errors surface at build_task
        # else: the rows come from the train split's labels, read when first needed (building
        # the data or the model), so constructing the task reads no data.

    @property
    def anchors(self) -> LaneAnchors:
        if self._anchors is None:
            self._resolve_auto_rows()
            self._anchors = self._make_anchors()
        return self._anchors

    def _make_anchors(self) -> LaneAnchors:
        m = self.cfg.model
        return LaneAnchors.make(
            m.row_anchors,
            m.col_anchors,
            m.row_cells,
            m.col_cells,
            m.lanes,
            row_range=m.row_range,
            col_range=m.col_range,
            col_lanes=m.col_lanes,
        )

    def _resolve_auto_rows(self) -> None:
        """``model.row_anchors: auto`` (or ``row_range: auto``): the row band from the train
        split's labels (:func:`~visbricks.ops.lanes.labelled_row_range`), written into the config
        as numbers, so config.yaml and the checkpoint rebuild these anchors in eval, predict and
        export without reading the data again."""
        m, d = self.cfg.model, self.cfg.data
        key = "model.row_anchors" if m.row_anchors == "auto" else "model.row_range"
        try:
            train = self.read_split(d.train)
        except (ConfigError, DataError) as e:
            raise DataError(
                f"{key}=auto reads the labels of split {d.train!r}: {e} (a generated "
                "dataset exists after build_data(); or give model.row_range=[top, bottom])"
            ) from None
        span = labelled_row_range(
            ((rec.lanes, rec.height) for rec in train.records),
            AUTO_TOP_PERCENTILE,
            to_bottom=bool(d.extend_lanes),
        )
        if span is None:
            raise DataError(f"{key}=auto: split {d.train!r} has no lane with 2 points")
        count = AUTO_ROWS if m.row_anchors == "auto" else int(m.row_anchors)
        lanes = sum(len(ln) >= 2 for rec in train.records for ln in rec.lanes)
        p = AUTO_TOP_PERCENTILE
        bottom = "the image bottom" if d.extend_lanes else f"percentile {100 - p:g} of their ends"
        print(
            f"{key}=auto: {count} rows from {span[0]:g} to {span[1]:g} of the height "
            f"(percentile {p:g} of the tops of {lanes} labelled lanes in split {d.train!r}, to "
            f"{bottom})",
            flush=True,
        )
        # Item assignment: Config reads keys as attributes but does not write them.
        m["row_anchors"], m["row_range"] = count, [span[0], span[1]]

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
