"""What every format reader shares: the problem log and the one box-repair policy.

Keeping the policy here means VOC, COCO and YOLO treat a bad box identically, so ``data check``
reports the same dataset the same way whatever format it arrived in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..io import image_size, safe_join

# labelme writes these into its class lists for mask rendering; they are not object classes
# (a detection head adds its own background), so they never become class ids.
LABELME_MARKERS = ("_background_", "__ignore__")

# Out-of-image overshoot below this many pixels is float noise from a normalized round trip
# (YOLO), not an annotation mistake: it is clipped silently instead of being reported.
_CLIP_TOLERANCE_PX = 1e-2


class ProblemLog:
    """Collects ``(file, reason)`` for bad samples; ``strict`` turns the first into a DataError."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.items: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str, str]] = []  # (cause, file, reason): entries dropped

    def add(self, file: str | Path, reason: str) -> None:
        if self.strict:
            raise DataError(f"{file}: {reason}")
        self.items.append((str(file), reason))

    def skip(self, file: str | Path, reason: str, cause: str = "bad label(s)") -> None:
        """``add``, for a labelled entry the reader drops: ``skipped`` keeps its ``cause`` (a
        counted noun, "missing image(s)") so training can say how many were lost and why."""
        self.add(file, reason)
        self.skipped.append((cause, str(file), reason))


def text_lines(path: Path, log: ProblemLog, where: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line of a UTF-8 list or label file. A line that
    is not UTF-8 (a path in another encoding) is skipped into ``log`` as ``where:N`` instead of
    failing the whole file; an unreadable file is a DataError naming it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    out = []
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"not UTF-8 text ({e.reason} at byte {e.start}: {raw[:60]!r})"
            log.skip(f"{where}:{n}", reason, "non-UTF-8 line(s)")
            continue
        if line.strip():
            out.append((n, line))
    return out


def listed_image(
    root: Path, file: str, where: str, log: ProblemLog, missing: str = "listed image not found"
) -> tuple[Path, int, int] | None:
    """``(path, width, height)`` of the image a label line names (relative to ``root``), or
    None after logging why it is skipped: a path leaving ``root``, a missing file
    (``missing: file``), or a header that does not read. The lane list formats share it."""
    try:
        image = safe_join(root, file)
    except DataError as e:
        log.skip(where, str(e))
        return None
    if not image.is_file():
        log.skip(where, f"{missing}: {file}", "missing image(s)")
        return None
    try:
        w, h = image_size(image)
    except DataError as e:
        log.skip(where, str(e), "unreadable image(s)")
        return None
    return image, w, h


def drop_markers(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in LABELME_MARKERS]


def read_class_file(path: Path) -> list[str]:
    """One class name per line (classes.txt, labelme's class_names.txt); blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read class list {path}: {e}") from None
    return drop_markers(line.strip() for line in lines if line.strip())


def repair_boxes(
    corners: np.ndarray,
    width: int,
    height: int,
    file: str,
    log: ProblemLog,
    offset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn (N, 4) corners as written into repaired XYXY boxes; returns (boxes, keep mask).

    ``corners + offset`` is the XYXY box (VOC's 1-based corners: offset (-1, -1, 0, 0)).
    ``names`` says where each box is in ``file`` ("object 3", "line 7"); default "box i".
    Policy, in this order, each case logged against ``file`` with the corners as written:
    - non-finite coordinates: dropped;
    - zero width or height *as written* (x2 == x1 or y2 == y1, judged before the offset, so a
      VOC ``xmin == xmax`` is not mistaken for a 1-pixel box): dropped;
    - inverted (x2 < x1 or y2 < y1): the written corners are *swapped*, since tools that let
      a user drag from bottom-right to top-left store exactly this and the box itself is right
      (a VOC box written from pixel 31 back to pixel 10 still covers pixels 10..31);
    - outside the image: clipped to it;
    - zero area (after clipping): dropped, it cannot be matched or learned.
    """
    corners = np.array(corners, dtype=np.float64).reshape(-1, 4)
    shift = np.asarray(offset, dtype=np.float64)
    boxes = corners + shift
    keep = np.ones(len(boxes), dtype=bool)
    limits = np.array([width, height, width, height], dtype=np.float64)
    for i, (c, b) in enumerate(zip(corners, boxes)):
        where = f"{names[i] if names else f'box {i}'} {_fmt_box(c)}"
        if not np.isfinite(c).all():
            log.add(file, f"{where} has non-finite coordinates; dropped")
            keep[i] = False
            continue
        if c[2] == c[0] or c[3] == c[1]:
            log.add(file, f"{where} has zero area (zero width or height as written); dropped")
            keep[i] = False
            continue
        if c[2] < c[0] or c[3] < c[1]:
            log.add(file, f"{where} has negative width or height (inverted); corners swapped")
            for lo, hi in ((0, 2), (1, 3)):
                if b[hi] < b[lo]:
                    c[lo], c[hi] = c[hi], c[lo]
            b[:] = c + shift
        clipped = np.clip(b, 0, limits)
        if np.abs(clipped - b).max() > _CLIP_TOLERANCE_PX:
            log.add(
                file,
                f"{where} lies outside the {width}x{height} image; clipped to "
                f"{_fmt_box(clipped - shift)}",
            )
        b[:] = clipped
        if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
            log.add(file, f"{where} has zero area; dropped")
            keep[i] = False
    return boxes.astype(np.float32), keep


def _fmt_box(b: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


def unique_names(files: list[str]) -> list[str]:
    """Flat output file names for records: the base name when those are unique, else the
    relative path with ``/`` turned into ``__`` (so ``a/x.jpg`` and ``b/x.jpg`` both survive).

    Stems must be unique too, because VOC and YOLO name annotation files by stem.
    """
    bases = [Path(f).name for f in files]
    if len({Path(b).stem for b in bases}) == len(bases):
        return bases
    flat = [f.replace("/", "__") for f in files]
    seen: dict[str, int] = {}
    out = []
    for name in flat:
        stem, suffix = Path(name).stem, Path(name).suffix
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(name if n == 0 else f"{stem}_{n}{suffix}")
    return out


def place_image(src: Path, dst: Path, copy: bool) -> None:
    """Copy (or hard-link, when ``copy`` is False) an image into a dataset being written.

    Hard links rather than symlinks: a symlink resolves outside the dataset root, which
    ``safe_join`` rightly refuses when the written dataset is read back.
    """
    if not src.is_file():
        raise DataError(f"cannot write dataset: image {src} does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.samefile(src):
            return
        dst.unlink()
    if not copy:
        try:
            os.link(src, dst)
            return
        except OSError:  # another filesystem, or one without hard links: copy instead
            pass
    shutil.copy2(src, dst)
