"""CULane: ``<image>.lines.txt`` beside each image and list files under ``list/``.

Each line of a ``.lines.txt`` is one lane, ``x1 y1 x2 y2 ...`` in pixels, lanes left to right.
``list/<split>.txt`` lists images (``/driver_xx/…/00000.jpg``, relative to the root);
``list/<split>_gt.txt`` adds the lane-segmentation PNG and four 0/1 flags: which of the four
slots (left-left, left, right, right-right) the lanes of the ``.lines.txt`` fill. A split read
from ``_gt.txt`` keeps the flags on each record; without them ``exist`` is None.

The writer writes the images, the ``.lines.txt`` (coordinates in Python's shortest exact
decimal form, so reading them back gives the same floats), ``list/<split>.txt`` and, when every
record's lanes fit the four slots, ``list/<split>_gt.txt`` with the flags and the 16-px-wide (at
1640 px; scaled to the image width) ``laneseg_label_w16`` PNGs the UFLD/SCNN loaders expect.
Lanes without points are dropped (CULane cannot hold them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from ...errors import DataError
from ...ops.lanes import assign_slots
from ...registry import DATASETS
from ..io import safe_join
from ..lanes import LaneRecord, LaneSet
from ._common import ProblemLog, listed_image, place_image, text_lines
from .base import DatasetFormat, is_yaml, read_yaml_mapping

SLOTS = 4
_SPLITS = ("train", "val", "test")


def lines_path(image: Path) -> Path:
    return image.with_suffix(".lines.txt")


def _root(path: Path) -> Path:
    if is_yaml(path):
        return path.parent / str(read_yaml_mapping(path).get("path", "."))
    return path


def _lists(root: Path) -> dict[str, Path]:
    """split → list file, preferring ``<split>_gt.txt`` (it has the flags)."""
    out: dict[str, Path] = {}
    folder = root / "list"
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob("*.txt")):
        stem = f.stem[:-3] if f.stem.endswith("_gt") else f.stem
        if stem not in _SPLITS:
            continue
        if stem not in out or f.stem.endswith("_gt"):
            out[stem] = f
    return out


def _num(v: float) -> str:
    return np.format_float_positional(float(v), trim="-")


def parse_lines(text: str) -> list[np.ndarray]:
    lanes = []
    for line in text.splitlines():
        vals = [float(v) for v in line.split()]
        if not vals:
            continue
        if len(vals) % 2:
            raise ValueError(f"odd number of coordinates ({len(vals)})")
        lanes.append(np.asarray(vals, float).reshape(-1, 2))
    return lanes


def format_lines(lanes: list[np.ndarray]) -> str:
    return "".join(" ".join(_num(v) for v in ln.ravel()) + " \n" for ln in lanes)


@DATASETS.register("culane")
class CULane(DatasetFormat):
    kind = "lanes"
    looks_for = "list/{train,val,test}[_gt].txt + <image>.lines.txt beside each image (CULane)"
    priority = 20
    writable = True

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if not path.is_dir():
            return False
        for f in _lists(path).values():
            try:  # the first line that decodes: a bad line is the reader's to report
                lines = text_lines(f, ProblemLog(), f.name)
            except DataError:
                continue
            if lines:
                return lines_path(path / lines[0][1].split()[0].lstrip("/")).is_file()
        return False

    def splits(self, path: str | Path) -> list[str | None]:
        return list(_lists(_root(Path(path)))) or [None]

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> LaneSet:
        root = _root(Path(path))
        lists = _lists(root)
        if not lists:
            raise DataError(f"{root}: no CULane list files (looked for {self.looks_for})")
        if split is not None and split not in lists:
            raise DataError(
                f"{root}: no CULane list for split {split!r} (found: {', '.join(lists)})"
            )
        log = ProblemLog(strict)
        records = []
        for name in [split] if split is not None else list(lists):
            list_file = lists[name]
            listed = f"list/{list_file.name}"  # as the user finds it under the root
            for n, line in text_lines(list_file, log, listed):
                rec = self.line_record(root, line.split(), f"{listed}:{n}", log)
                if rec is not None:
                    records.append(rec)
        return LaneSet(root, records, log.items, skipped=log.skipped)

    @staticmethod
    def line_record(root: Path, parts: list[str], where: str, log: ProblemLog) -> LaneRecord | None:
        file = parts[0].lstrip("/")
        found = listed_image(root, file, where, log)
        if found is None:
            return None
        image, w, h = found
        exist = None
        if len(parts) >= 2 + SLOTS:
            try:
                exist = [int(v) for v in parts[2 : 2 + SLOTS]]
            except ValueError:
                log.skip(where, f"existence flags are not integers: {parts[2:]}")
                return None
        lf = lines_path(image)
        try:
            lanes = parse_lines(lf.read_text(encoding="utf-8")) if lf.exists() else []
        except (OSError, ValueError) as e:  # ValueError: a bad number, or not UTF-8
            log.skip(str(lf), str(e))
            return None
        if exist is not None and sum(exist) != len(lanes):
            reason = f"{len(lanes)} lanes but {sum(exist)} existence flags set in {where}"
            log.skip(str(lf), reason)
            return None
        return LaneRecord(file, w, h, lanes, exist=exist)

    def write(
        self,
        records: LaneSet,
        out_dir: str | Path,
        split: str = "train",
        copy_images: bool = True,
        **options: Any,
    ) -> Path:
        out = Path(out_dir)
        (out / "list").mkdir(parents=True, exist_ok=True)
        flags = [_flags(rec) for rec in records.records]
        with_gt = all(f is not None for f in flags)
        plain, gt = [], []
        for rec, fl in zip(records.records, flags):
            src = safe_join(records.root, rec.file)
            dst = safe_join(out, rec.file)
            if src.resolve() != dst.resolve():
                place_image(src, dst, copy_images)
            lanes = rec.lanes if rec.exist is not None or fl is None else _by_slot(rec)
            lines_path(dst).write_text(format_lines(lanes), encoding="utf-8")
            plain.append(f"/{rec.file}")
            if with_gt:
                mask_rel = "laneseg_label_w16/" + str(Path(rec.file).with_suffix(".png"))
                _write_mask(safe_join(out, mask_rel), rec, lanes, fl)
                gt.append(f"/{rec.file} /{mask_rel} " + " ".join(str(v) for v in fl))
        (out / "list" / f"{split}.txt").write_text("".join(s + "\n" for s in plain))
        if with_gt:
            (out / "list" / f"{split}_gt.txt").write_text("".join(s + "\n" for s in gt))
        yaml_path = out / "data.yaml"
        doc = read_yaml_mapping(yaml_path) if yaml_path.exists() else {}
        if doc.get("format", "culane") != "culane":
            raise DataError(f"{yaml_path} describes a {doc['format']} dataset, not culane")
        doc.update({"format": "culane", "path": "."})
        yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return yaml_path


def _flags(rec: LaneRecord) -> list[int] | None:
    """The record's flags, or slots from lane positions when all its lanes fit in four."""
    if rec.exist is not None:
        return list(rec.exist)
    slots = assign_slots(rec.lanes, rec.width, rec.height, SLOTS)
    # Lanes without points (TuSimple's all -2 rows) have nothing to write and are dropped.
    if any(len(ln) == 1 for ln in rec.lanes):
        return None
    if sum(s is not None for s in slots) != sum(len(ln) >= 2 for ln in rec.lanes):
        return None
    return [int(s is not None) for s in slots]


def _by_slot(rec: LaneRecord) -> list[np.ndarray]:
    return [s for s in assign_slots(rec.lanes, rec.width, rec.height, SLOTS) if s is not None]


def _write_mask(path: Path, rec: LaneRecord, lanes: list[np.ndarray], flags: list[int]) -> None:
    mask = np.zeros((rec.height, rec.width), np.uint8)
    thickness = max(2, round(16 * rec.width / 1640))
    slots = [k for k, f in enumerate(flags) if f]
    for k, lane in zip(slots, lanes):
        pts = np.round(lane).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(mask, [pts], False, int(k + 1), thickness)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask)
