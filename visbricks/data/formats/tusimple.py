"""TuSimple lane JSON: one JSON object per line, ``{"lanes", "h_samples", "raw_file"}``.

``h_samples`` are the image rows every lane is sampled at; ``lanes`` holds, per lane, the x at
each of those rows (-2: no point there); ``raw_file`` is the image path relative to the root.
The benchmark's files: ``label_data_*.json`` (train), ``test_label.json`` (test); the writer
uses ``train.json``, ``val.json``, ``test.json`` and a ``data.yaml`` naming them.

Read into a :class:`~visbricks.data.lanes.LaneSet`: each lane is its valid (x, row) points, and
``h_samples`` is kept on the record, so writing it back is exact. Lanes from another format
(no ``h_samples``) are sampled at the union of their points' rows; a lane without a point on
one of those rows inside its extent gets one by linear interpolation (CULane lanes share rows,
so they convert exactly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ...errors import DataError
from ...registry import DATASETS
from ..io import safe_join
from ..lanes import LaneRecord, LaneSet
from ._common import ProblemLog, listed_image, place_image, text_lines
from .base import DatasetFormat, is_yaml, read_yaml_mapping

_KEYS = ("lanes", "h_samples", "raw_file")


def split_of(stem: str) -> str:
    """The split a TuSimple label file belongs to, by the benchmark's and our names."""
    if stem.startswith("label_data") or stem in ("train", "train_label"):
        return "train"
    if stem in ("test_label", "test", "test_baseline"):
        return "test"
    if stem in ("val", "val_label"):
        return "val"
    return stem


def _benchmark_name(path: Path) -> bool:
    """The benchmark's own label file names: such a file is TuSimple's whatever its first line
    holds, so a broken one is reported instead of silently left out."""
    return path.suffix == ".json" and (
        path.stem.startswith("label_data") or path.stem == "test_label"
    )


def _is_label_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        doc = json.loads(first)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in _KEYS)


def label_files(path: Path) -> dict[str, list[Path]]:
    """split → label files at ``path`` (a folder, a .json file, or our data YAML)."""
    if is_yaml(path):
        doc = read_yaml_mapping(path)
        root = path.parent / str(doc.get("path", "."))
        out: dict[str, list[Path]] = {}
        for split in ("train", "val", "test"):
            if doc.get(split):
                names = doc[split] if isinstance(doc[split], list) else [doc[split]]
                out[split] = [root / str(n) for n in names]
        return out
    if path.is_file():
        return {split_of(path.stem): [path]}
    out = {}
    for f in sorted(path.glob("*.json")):
        if _benchmark_name(f) or _is_label_file(f):
            out.setdefault(split_of(f.stem), []).append(f)
    return out


def _root(path: Path) -> Path:
    if is_yaml(path):
        return path.parent / str(read_yaml_mapping(path).get("path", "."))
    return path.parent if path.is_file() else path


def _num(v: float) -> Any:
    return int(v) if float(v).is_integer() else float(v)


def sample_rows(record: LaneRecord) -> np.ndarray:
    """The rows a record's lanes are written at: its own ``h_samples`` or all their rows."""
    if record.h_samples is not None:
        return np.asarray(record.h_samples, float)
    ys = [ln[:, 1] for ln in record.lanes if len(ln)]
    return np.unique(np.concatenate(ys)) if ys else np.zeros(0)


def lane_xs(lane: np.ndarray, rows: np.ndarray) -> list[Any]:
    """x of ``lane`` at each row: the point on that row if there is one (exact), else linear
    interpolation inside the lane's extent, else -2."""
    exact = {float(y): float(x) for x, y in lane}
    ys = lane[:, 1]
    order = np.argsort(ys, kind="stable")
    out = []
    for r in rows:
        if float(r) in exact:
            out.append(_num(exact[float(r)]))
        elif len(lane) >= 2 and ys.min() <= r <= ys.max():
            out.append(_num(round(float(np.interp(r, ys[order], lane[order, 0])), 3)))
        else:
            out.append(-2)
    return out


def _numbers(value: Any, what: str) -> list[float]:
    """``value`` as a list of floats; ValueError names ``what`` and the first bad entry."""
    if not isinstance(value, list):
        raise ValueError(f"{what} is {json.dumps(value)[:40]}, not a list of numbers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{what} holds {json.dumps(v)[:40]}, not a number")
    return [float(v) for v in value]


@DATASETS.register("tusimple")
class TuSimple(DatasetFormat):
    kind = "lanes"
    looks_for = "*.json files of {lanes, h_samples, raw_file} lines (TuSimple)"
    priority = 20
    writable = True

    @classmethod
    def sniff(cls, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix == ".json" and (_benchmark_name(path) or _is_label_file(path))
        return path.is_dir() and bool(label_files(path))

    def splits(self, path: str | Path) -> list[str | None]:
        return list(label_files(Path(path))) or [None]

    def read(
        self,
        path: str | Path,
        split: str | None = None,
        classes: list[str] | None = None,
        strict: bool = False,
    ) -> LaneSet:
        path = Path(path)
        if not path.exists():
            raise DataError(f"TuSimple dataset not found: {path}")
        files = label_files(path)
        if split is not None and split not in files:
            raise DataError(
                f"{path}: no TuSimple label file for split {split!r} "
                f"(found: {', '.join(files) or 'none'})"
            )
        chosen = files[split] if split is not None else [f for fs in files.values() for f in fs]
        root = _root(path)
        log = ProblemLog(strict)
        records = []
        for file in chosen:
            try:
                lines = text_lines(file, log, file.name)
            except DataError as e:
                raise DataError(f"cannot read TuSimple labels {file}: {e}") from None
            for n, line in lines:
                rec = self._record(line, root, f"{file.name}:{n}", log)
                if rec is not None:
                    records.append(rec)
        return LaneSet(root, records, log.items, skipped=log.skipped)

    @staticmethod
    def _record(line: str, root: Path, where: str, log: ProblemLog) -> LaneRecord | None:
        try:
            doc = json.loads(line)
        except ValueError as e:
            log.skip(where, f"not JSON: {e}")
            return None
        if not isinstance(doc, dict):
            log.skip(where, f"a JSON {type(doc).__name__} ({line.strip()[:40]}), not an object")
            return None
        missing = [k for k in _KEYS if k not in doc]
        if missing:
            log.skip(where, f"missing key(s) {', '.join(missing)}")
            return None
        try:
            hs = _numbers(doc["h_samples"], "h_samples")
            if not isinstance(doc["lanes"], list):
                raise ValueError(f"lanes is {json.dumps(doc['lanes'])[:40]}, not a list of lanes")
            lane_xs = [_numbers(xs, f"lane {k}") for k, xs in enumerate(doc["lanes"])]
            if not isinstance(doc["raw_file"], str):
                raise ValueError(f"raw_file is {json.dumps(doc['raw_file'])[:40]}, not a path")
        except ValueError as e:
            log.skip(where, str(e))
            return None
        lanes = []
        for k, xs in enumerate(lane_xs):
            if len(xs) != len(hs):
                log.skip(where, f"lane {k} has {len(xs)} values for {len(hs)} h_samples")
                return None
            # Negative x (the benchmark's -2) is "no point on this row"; NaN is kept, so a
            # corrupt value is reported and skipped rather than silently dropped.
            lanes.append([(x, y) for x, y in zip(xs, hs) if not x < 0])
        found = listed_image(root, doc["raw_file"], where, log, "image not found")
        if found is None:
            return None
        _, w, h = found
        return LaneRecord(doc["raw_file"], w, h, lanes, h_samples=hs)

    def write(
        self,
        records: LaneSet,
        out_dir: str | Path,
        split: str = "train",
        copy_images: bool = True,
        **options: Any,
    ) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lines = []
        for rec in records.records:
            rows = sample_rows(rec)
            lanes = [lane_xs(ln, rows) for ln in rec.lanes]
            lines.append(
                json.dumps(
                    {"lanes": lanes, "h_samples": [_num(r) for r in rows], "raw_file": rec.file}
                )
            )
            src = safe_join(records.root, rec.file)
            dst = safe_join(out, rec.file)
            if src.resolve() != dst.resolve():
                place_image(src, dst, copy_images)
        (out / f"{split}.json").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
        yaml_path = out / "data.yaml"
        doc = read_yaml_mapping(yaml_path) if yaml_path.exists() else {}
        if doc.get("format", "tusimple") != "tusimple":
            raise DataError(f"{yaml_path} describes a {doc['format']} dataset, not tusimple")
        doc.update({"format": "tusimple", "path": ".", split: f"{split}.json"})
        yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return yaml_path
