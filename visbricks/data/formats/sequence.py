"""Monocular image sequences with intrinsics (KITTI-like; see :mod:`visbricks.data.sequence`)."""

from __future__ import annotations

from pathlib import Path

from ...registry import DATASETS
from ..sequence import read_split
from .base import SPLITS, DatasetFormat


@DATASETS.register("sequence")
class Sequences(DatasetFormat):
    """``read`` gives the ``(sequence, frame number)`` pairs of ``splits/<split>.txt``."""

    kind = "sequence"
    looks_for = "<sequence>/images/ + <sequence>/calib.yaml folders with splits/<split>.txt"
    priority = 60

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return (
            path.is_dir()
            and (path / "splits").is_dir()
            and any(p.is_file() for p in path.glob("*/calib.yaml"))
        )

    def splits(self, path: str | Path) -> list[str | None]:
        path = Path(path)
        return [s for s in SPLITS if (path / "splits" / f"{s}.txt").is_file()] or [None]

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> list[tuple[str, int]]:
        return read_split(Path(path) / "splits" / f"{split or 'train'}.txt")
