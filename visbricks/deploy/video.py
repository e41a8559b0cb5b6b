"""Video in and out for ``predict``: frames as RGB uint8, like every image in visbricks.

OpenCV (``opencv-python-headless``) does the decoding and encoding; its BGR order stays inside
this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a core dependency, but keep the hint
        raise DataError("video input needs OpenCV: pip install opencv-python-headless") from e
    return cv2


def video_fps(path: str | Path) -> float:
    """Frames per second stored in the file (25 when the container does not say)."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return fps if fps and fps > 0 else 25.0


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Every frame of a video as RGB uint8 (H, W, 3), in order."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"cannot open video {path} (unknown codec or not a video)")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class VideoWriter:
    """Writes RGB uint8 frames of one size to an MP4 (``mp4v``) file; use as a context manager.

    The size is taken from the first frame; a later frame of another size is an error rather
    than a silently corrupt file.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        cv2 = _cv2()
        height, width = frame.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise DataError(f"cannot write video {self.path}")
            self._size = (width, height)
        elif (width, height) != self._size:
            raise DataError(
                f"{self.path}: frame {self.frames} is {width}x{height}, "
                f"the video is {self._size[0]}x{self._size[1]}"
            )
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
