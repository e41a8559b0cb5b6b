"""The predictor role of a task: raw images in, records out, drawn; the run's batch drawings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class PredictorRole:
    def draw_batch(self, batch: dict, path: Path, outputs: dict | None = None) -> None:
        """samples.png (targets) or, with ``outputs``, predictions.png."""

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def postprocess(self, outputs: dict, meta: list[dict]) -> list[dict]:
        raise NotImplementedError

    def annotate(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        raise NotImplementedError

    def index_map(self, prediction: dict) -> tuple[str, np.ndarray] | None:
        """A per-pixel class map ``predict`` writes losslessly beside the drawing, as
        (sub-folder of its output, (H, W) integer array), or None (the default: no such map)."""
        return None
