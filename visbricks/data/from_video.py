"""``visbricks data from-video``: a video file → the monocular sequence layout depth trains on.

What it writes (the layout of :mod:`visbricks.data.sequence`, one sequence named after the file)::

    <out>/<stem>/images/000000.png    the kept frames, renumbered 0, 1, 2, ... (RGB, lossless)
    <out>/<stem>/calib.yaml           width, height, K (pixels, for the stored resolution)
    <out>/<stem>/frames.txt           "<frame number> <frame index in the video>" per kept frame
    <out>/splits/train.txt, val.txt   "<stem> <frame number>"; val is the last ~10 % of targets

Kept frames are renumbered consecutively because the loader's neighbours are frame number ± 1:
after dropping, the neighbours of a kept frame are the kept frames beside it.

**Static and duplicate frames.** Monodepth2 trains on KITTI with the static frames removed
(Zhou et al.'s preprocessing: frames whose mean optical flow is under ~1 pixel), because a frame
the camera did not move between gives the photometric loss nothing to learn depth from (any
depth explains it) and teaches the pose net that motion is zero. Here a frame is dropped when the
mean absolute difference of its grey image to the *last kept* frame, both resized to
``COMPARE_WIDTH`` pixels wide, is below ``STATIC_DIFF`` grey levels (of 255). Comparing with the
last kept frame, not the previous one, keeps a slow creep once it adds up to real motion.
The threshold was measured (``COMPARE_WIDTH`` = 160):

* noise floor — a frame and its duplicate after the ``mp4v`` codec: 0.26 (320x96 synthetic
  street) to 0.36 (96x64); a real street frame (``depth-pair``) against its JPEG at quality 75:
  0.47; against itself plus Gaussian sensor noise of sigma 3: 0.52;
* motion — that real frame shifted by one full-resolution pixel: 2.37 (two pixels: 4.61);
  consecutive synthetic street frames (``data synth driving``): 7.1 at least, 12 typically.

1.0 sits twice above the noise floors and under the one-pixel shift, Zhou et al.'s "static"
scale. Frames whose difference is exactly 0 (bit-identical after decoding: frame-rate
conversion and encoder repeats) are counted apart as exact duplicates.

**Intrinsics.** ``intrinsics=(fx, fy, cx, cy)`` are *fractions* of the width (fx, cx) and height
(fy, cy), the normalised convention of Monodepth2 and its KITTI K (0.58, 1.92, 0.5, 0.5), so one
calibration serves every resolution of a camera; ``fov`` is the horizontal field of view in
degrees, giving fx = fy = (W / 2) / tan(fov / 2) pixels (square pixels). In both, K in pixels is
the fraction times W or H, so the principal point 0.5 is cx = W / 2 (Monodepth2's convention;
half a pixel off the exact centre (W - 1) / 2). With neither, ``DEFAULT_FOV`` is used (and the
command says so).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import DataError
from .io import write_image

COMPARE_WIDTH = 160  # frames are compared as grey images this wide (noise averages out)
STATIC_DIFF = 1.0  # mean |grey difference| (of 255) below which a frame is static; measured above
# KITTI's horizontal field of view, 2 atan(0.5 / 0.58): the K Monodepth2 assumes for images
# without their own, and the one `data synth driving` renders with.
DEFAULT_FOV = round(2 * math.degrees(math.atan(0.5 / 0.58)), 1)  # 81.5
VAL_FRACTION = 0.1  # share of the target frames held out, at the end of the video
MIN_FRAMES = 5  # one train target, one gap frame, one val target, and their two outer neighbours


@dataclass
class FromVideoReport:
    """What :func:`video_to_sequence` read, dropped and wrote (``format()`` is what the command
    prints)."""

    video: Path
    out: Path
    sequence: str
    size: tuple[int, int]  # (width, height)
    fps: float
    frames_read: int
    every: int
    sampled: int  # frames left after --every
    kept: list[int] = field(default_factory=list)  # video frame index of each kept frame
    dropped_static: int = 0  # below the threshold, exact duplicates included
    exact_duplicates: int = 0
    threshold: float = STATIC_DIFF
    K: np.ndarray | None = None
    intrinsics_from: str = ""
    train_targets: int = 0
    val_targets: int = 0

    def format(self) -> str:
        w, h = self.size
        every = f"; {self.sampled} taken (--every {self.every})" if self.every > 1 else ""
        K = self.K
        lines = [
            f"read {self.frames_read} frames of {self.video} ({w}x{h}, {self.fps:g} fps){every}",
            f"dropped {self.dropped_static} static or duplicate frames ({self.exact_duplicates} "
            f"exact duplicates): mean |grey difference| to the last kept frame below "
            f"{self.threshold:g} of 255",
            f"intrinsics: {self.intrinsics_from}: fx {K[0, 0]:.1f}, fy {K[1, 1]:.1f}, "
            f"cx {K[0, 2]:.1f}, cy {K[1, 2]:.1f} px",
            f"kept {len(self.kept)} frames: {self.train_targets} train and {self.val_targets} val "
            f"target frames (val: the end of the video)",
            f"sequence written to {self.out}",
        ]
        return "\n".join(lines)


def parse_intrinsics(text: str) -> tuple[float, float, float, float]:
    """``"fx,fy,cx,cy"`` (fractions of width/height) → four floats, checked."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise DataError(
            f"--intrinsics {text!r}: expected four numbers fx,fy,cx,cy (fractions of the width "
            "and height, e.g. 0.58,1.92,0.5,0.5)"
        )
    check_intrinsics(values)
    return values  # type: ignore[return-value]


def check_intrinsics(values: tuple[float, ...]) -> None:
    shown = ",".join(f"{v:g}" for v in values)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise DataError(f"--intrinsics {shown}: expected four finite numbers fx,fy,cx,cy")
    fx, fy, cx, cy = values
    if not (0 < cx < 1 and 0 < cy < 1):
        # Pixel values are the likely mistake: say how to convert them.
        raise DataError(
            f"--intrinsics {shown}: cx and cy must be fractions of the width and height "
            "(0 < c < 1); divide pixels by the image width (fx, cx) and height (fy, cy)"
        )
    if fx <= 0 or fy <= 0:
        raise DataError(f"--intrinsics {shown}: fx and fy must be positive")


def intrinsics_matrix(
    width: int,
    height: int,
    fov: float | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
) -> tuple[np.ndarray, str]:
    """K (3x3, pixels) for a ``width`` x ``height`` frame and a line saying where it came from:
    ``intrinsics`` (fractions), else ``fov`` (horizontal, degrees), else ``DEFAULT_FOV``."""
    if fov is not None and intrinsics is not None:
        raise DataError("give --fov or --intrinsics, not both")
    if intrinsics is not None:
        check_intrinsics(tuple(intrinsics))
        fx, fy, cx, cy = intrinsics
        # The same products as `data synth driving`'s K, so equal fractions give an equal K.
        fx_px, fy_px, cx_px, cy_px = fx * width, fy * height, cx * width, cy * height
        source = f"--intrinsics {fx:g},{fy:g},{cx:g},{cy:g} (fractions of width, height)"
    else:
        if fov is None:
            fov = DEFAULT_FOV
            source = (
                f"no --fov or --intrinsics: default horizontal field of view {fov:g} deg "
                "(KITTI's, as Monodepth2 assumes)"
            )
        else:
            source = f"horizontal field of view {fov:g} deg (--fov)"
        if not (math.isfinite(fov) and 0 < fov < 180):
            raise DataError(f"--fov {fov:g}: the horizontal field of view must be in (0, 180) deg")
        fx_px = fy_px = 0.5 * width / math.tan(math.radians(fov) / 2)  # square pixels
        cx_px, cy_px = 0.5 * width, 0.5 * height
    K = np.array(
        [[fx_px, 0.0, cx_px], [0.0, fy_px, cy_px], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )
    return K, source


def _grey_small(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    height = max(1, round(grey.shape[0] * COMPARE_WIDTH / grey.shape[1]))
    # INTER_AREA averages blocks of pixels: sensor and codec noise shrink, motion does not.
    return cv2.resize(grey, (COMPARE_WIDTH, height), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey difference (0..255) of two RGB frames at ``COMPARE_WIDTH`` wide."""
    return float(np.abs(_grey_small(a) - _grey_small(b)).mean())


def _open(video: Path) -> cv2.VideoCapture:
    # FFmpeg's own log lines ("moov atom not found") would precede our one-line error that
    # names the file; quiet unless the user set a level. Read when FFmpeg is first used.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise DataError(f"cannot read video {video} (not a video, or an unknown codec)")
    return capture


def _frames(capture: cv2.VideoCapture, every: int) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(index in the video, RGB uint8 frame)`` for every frame; the frame is None for those
    that ``every`` skips (grabbed, not converted)."""
    index = 0
    while True:
        if index % every:
            if not capture.grab():
                return
            yield index, None
        else:
            ok, frame = capture.read()
            if not ok:
                return
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1


def _sequence_name(video: Path) -> str:
    # Split files hold "<sequence> <frame>" separated by whitespace, and the name is a folder.
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", video.stem).strip("._")
    return name or "video"


def _check_out(video: Path, out: Path) -> None:
    if out.resolve() == video.resolve():
        raise DataError(f"--out {out} is the input video itself; choose a new folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: exists and is a file; give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"--out {out}: folder exists and is not empty; give a new folder")


def _split_lines(name: str, frames: int) -> tuple[list[str], list[str]]:
    """Targets 1..frames-2 (0 and the last serve only as neighbours); the last ~VAL_FRACTION
    for val, one target left out between, so no frame is a target in both splits."""
    targets = list(range(1, frames - 1))
    n_val = max(1, round(VAL_FRACTION * len(targets)))
    train, val = targets[: -n_val - 1], targets[-n_val:]
    return [f"{name} {t}\n" for t in train], [f"{name} {t}\n" for t in val]


def video_to_sequence(
    video: str | Path,
    out: str | Path,
    every: int = 1,
    fov: float | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    threshold: float = STATIC_DIFF,
) -> FromVideoReport:
    """Write ``video``'s moving frames as a sequence dataset at ``out`` (a new or empty folder).

    Every ``every``-th frame is considered; of those, frames closer than ``threshold`` to the
    last kept one are dropped (module docstring). All-or-nothing: the dataset is built in a
    temporary folder beside ``out`` and renamed into place, so a failure leaves no half dataset.
    """
    video, out = Path(video).expanduser(), Path(out).expanduser()
    if not video.is_file():
        raise DataError(f"video not found: {video}")
    if not (isinstance(every, int) and every >= 1):
        raise DataError(f"--every {every}: expected a whole number of frames >= 1")
    _check_out(video, out)
    intrinsics_matrix(2, 2, fov, intrinsics)  # bad --fov / --intrinsics fail before decoding
    name = _sequence_name(video)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        report = _write(video, tmp, name, every, fov, intrinsics, threshold)
        if out.is_dir():
            out.rmdir()  # empty (checked): the rename takes its place
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.out = out
    return report


def _write(
    video: Path,
    tmp: Path,
    name: str,
    every: int,
    fov: float | None,
    intrinsics: tuple[float, float, float, float] | None,
    threshold: float,
) -> FromVideoReport:
    capture = _open(video)
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    report = FromVideoReport(video, tmp, name, (0, 0), fps, 0, every, 0, threshold=threshold)
    images = tmp / name / "images"
    last_small = last_frame = None
    try:
        for index, frame in _frames(capture, every):
            report.frames_read += 1
            if frame is None:
                continue
            report.sampled += 1
            height, width = frame.shape[:2]
            if report.sampled == 1:
                report.size = (width, height)
            elif (width, height) != report.size:
                raise DataError(
                    f"{video}: frame {index} is {width}x{height}, the first was "
                    f"{report.size[0]}x{report.size[1]}"
                )
            small = _grey_small(frame)
            if last_small is not None and np.abs(small - last_small).mean() < threshold:
                report.dropped_static += 1
                report.exact_duplicates += bool(np.array_equal(frame, last_frame))
                continue
            write_image(images / f"{len(report.kept):06d}.png", frame)
            report.kept.append(index)
            last_small, last_frame = small, frame
    finally:
        capture.release()
    if report.sampled == 0:
        raise DataError(f"cannot read video {video}: no frame could be decoded")
    if len(report.kept) < MIN_FRAMES:
        raise DataError(
            f"{video}: {len(report.kept)} frames left after dropping {report.dropped_static} "
            f"static or duplicate frames (of {report.sampled}); need at least {MIN_FRAMES} "
            f"(lower --every, or use a video in which the camera moves)"
        )
    width, height = report.size
    K, report.intrinsics_from = intrinsics_matrix(width, height, fov, intrinsics)
    report.K = K
    calib = {
        "width": width,
        "height": height,
        "K": K.tolist(),
        "source": str(video),
        "intrinsics": report.intrinsics_from,
    }
    # K on three rows, like `data synth driving` writes it.
    text = yaml.safe_dump(calib, sort_keys=False, default_flow_style=None)
    (tmp / name / "calib.yaml").write_text(text, encoding="utf-8")
    frames = "".join(f"{k} {i}\n" for k, i in enumerate(report.kept))
    (tmp / name / "frames.txt").write_text(
        f"# <frame number> <frame index in {video.name}>\n{frames}", encoding="utf-8"
    )
    train, val = _split_lines(name, len(report.kept))
    (tmp / "splits").mkdir()
    (tmp / "splits" / "train.txt").write_text("".join(train), encoding="utf-8")
    (tmp / "splits" / "val.txt").write_text("".join(val), encoding="utf-8")
    report.train_targets, report.val_targets = len(train), len(val)
    return report
