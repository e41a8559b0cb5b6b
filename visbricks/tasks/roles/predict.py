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
