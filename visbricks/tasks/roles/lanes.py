"""The data and predictor roles of the lanes task (UFLD-V2).

Data: TuSimple or CULane files (or the generated streets) read into
:class:`~visbricks.data.lanes.LaneDataset`, targets on the task's row/column anchors.
Predictor: a raw image resized to the input (no letterbox, as UFLD), lanes decoded and scaled
back to the original image, JSON records, drawings, and the description of the exported outputs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ...config import Config
from ...data.bundle import DataBundle
from ...data.draw import draw_lanes
from ...data.formats import format_names, get_format, read_task_split
from ...data.lanes import LaneDataset, LaneSet, collate_lanes, trainable
from ...data.normalize import denormalize, to_image
from ...engine.plots import save_image_grid
from ...errors import ConfigError, DataError
from ...ops.lanes import LaneAnchors, decode_lanes, smooth_lane
from .data import DataRole
from .predict import PredictorRole

SEG_STRIDE = 8  # the auxiliary segmentation target's stride


class LaneData(DataRole):
    cfg: Config
    anchors: LaneAnchors
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def generate(self, kind: str | None, root: Path, params: dict) -> None:
        if kind != "lanes":
            raise ConfigError(f"data.synth.kind for lanes must be 'lanes', got {kind!r}")
        from ...data.synth.lanes import write_lanes

        write_lanes(root, **params, progress=True)

    def find_classes(self) -> list[str]:
        return ["lane"]

    @property
    def classes(self) -> list[str]:
        return ["lane"]

    def read_split(self, split: str) -> LaneSet:
        """The ``split`` of data.root (format from data.format or auto-detected)."""
        root, d = self.data_root, self.cfg.data
        if d.format not in (None, "auto") and get_format(d.format).kind != "lanes":
            names = ", ".join(format_names("lanes"))
            raise ConfigError(f"data.format {d.format!r} is not a lane format ({names})")
        # The data layer's one path, as for boxes and masks: split files, or a seeded holdout
        # when the folder has no val split (a flat labelme folder).
        ds = read_task_split(root, d.format, "lanes", split, None, d.strict)
        # Images lost to missing files, bad label lines, non-finite points or labels for another
        # image size: warned and counted together, never silently (data.strict: an error).
        ds = trainable(ds, d.strict, f"labelled images of split {split!r} in {root}")
        if len(ds) == 0:
            raise DataError(f"{root}: split {split!r} has no images")
        return ds

    def datasets(self) -> DataBundle:
        d = self.cfg.data
        datasets = {}
        for part in ("train", "val"):
            datasets[part] = LaneDataset(
                self.read_split(getattr(d, part)),
                self.img_size,
                self.anchors,
                self.mean,
                self.std,
                aug=dict(d.aug) if part == "train" else None,
                seg_stride=SEG_STRIDE if self.cfg.model.aux_seg and part == "train" else None,
                seed=self.cfg.seed,
                extend_lanes=bool(d.extend_lanes),
                strict=bool(d.strict),
            )
        return DataBundle(datasets["train"], datasets["val"], self.classes, collate_lanes)


class LanePredictor(PredictorRole):
    cfg: Config
    anchors: LaneAnchors
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def decode(self, outputs: dict, sizes: list[tuple[int, int]]) -> list[list[dict]]:
        raise NotImplementedError

    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        n = min(16, len(batch["image"]))
        h, w = self.img_size
        images = [
            to_image(denormalize(x.float().cpu(), self.mean, self.std)) for x in batch["image"][:n]
        ]
        if outputs is None:  # the targets as the model sees them: after augmentation
            lanes = list(batch["input_lanes"][:n])
            titles = [f"{len(ln)} lanes" for ln in lanes]
        else:
            sliced = {k: v[:n] for k, v in outputs.items() if isinstance(v, torch.Tensor)}
            decoded = decode_lanes(
                sliced,
                self.anchors,
                (h, w),
                self.cfg.eval.min_rows,
                self.cfg.eval.min_cols,
                self.cfg.eval.window,
            )
            lanes = [[ln["points"] for ln in d] for d in decoded]
            titles = [f"{len(ln)} lanes (true {len(t)})" for ln, t in zip(lanes, batch["lanes"])]
        drawn = [draw_lanes(im, ln, width=2, radius=1) for im, ln in zip(images, lanes)]
        save_image_grid(drawn, path, titles=titles)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        h, w = self.img_size
        resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        t = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std, {"size": image.shape[:2]}

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        decoded = self.decode(outputs, [m["size"] for m in meta])
        out = []
        for lanes in decoded:
            items = []
            for ln in lanes:
                pts = ln["points"]
                if self.cfg.eval.smooth:
                    pts = smooth_lane(pts, num=max(len(pts), 20))
                items.append(
                    {
                        "slot": ln["slot"],
                        "score": round(ln["score"], 4),
                        "points": np.round(pts, 2).tolist(),
                    }
                )
            out.append({"lanes": items})
        return out

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        lanes = [np.asarray(ln["points"], float) for ln in prediction["lanes"]]
        slots = [ln["slot"] for ln in prediction["lanes"]]
        width = max(2, image.shape[1] // 200)
        return draw_lanes(image, lanes, labels=slots, width=width, radius=width)

    def decode_info(self) -> dict:
        """What the exported outputs mean (written beside an ONNX/pt2 export)."""
        a, e = self.anchors, self.cfg.eval
        h, w = self.img_size
        return {
            "kind": "lanes (UFLD-V2 row/column anchors)",
            "loc_row": "(batch, row_cells, R, L) cell logits along each row anchor",
            "loc_col": "(batch, col_cells, C, L) cell logits along each column anchor",
            "exist_row": "(batch, 2, R, L) existence logits; index 1 = the lane crosses",
            "exist_col": "(batch, 2, C, L)",
            "row_anchors_y": [r * h for r in a.rows],
            "col_anchors_x": [c * w for c in a.cols],
            "row_cells": a.row_cells,
            "col_cells": a.col_cells,
            "col_lanes": list(a.col_lanes),
            "decode": (
                "per anchor and lane: k = argmax over cells; u = sum over j in [k-window, "
                "k+window] (clamped) of softmax(logits[j]) * j; row lanes x = (u + 0.5) * W / "
                "row_cells at y = the anchor's row, column lanes y = (u + 0.5) * H / col_cells; "
                "keep anchors whose exist softmax[1] > 0.5; keep a row lane with more than "
                "min_rows * R such anchors (column lanes: min_cols * C); scale points by the "
                "original size / input size"
            ),
            "window": e.window,
            "min_rows": e.min_rows,
            "min_cols": e.min_cols,
        }
