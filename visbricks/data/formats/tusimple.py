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
from ..io import image_size, safe_join
from ..lanes import LaneRecord, LaneSet
from ._common import ProblemLog, place_image
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


def _is_label_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        doc = json.loads(first)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in _KEYS)


def _label_files(path: Path) -> dict[str, list[Path]]:
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
        if _is_label_file(f):
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
            return path.suffix == ".json" and _is_label_file(path)
        return path.is_dir() and any(_is_label_file(f) for f in sorted(path.glob("*.json")))

    def splits(self, path: str | Path) -> list[str | None]:
        return list(_label_files(Path(path))) or [None]

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
        files = _label_files(path)
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
                lines = file.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise DataError(f"cannot read TuSimple labels {file}: {e}") from None
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{file.name}:{n}"
                rec = self._record(line, root, where, log)
                if rec is not None:
                    records.append(rec)
        return LaneSet(root, records, log.items)

    @staticmethod
    def _record(line: str, root: Path, where: str, log: ProblemLog) -> LaneRecord | None:
        try:
            doc = json.loads(line)
        except ValueError as e:
            log.add(where, f"not JSON: {e}")
            return None
        missing = [k for k in _KEYS if k not in doc]
        if missing:
            log.add(where, f"missing key(s) {', '.join(missing)}")
            return None
        hs = [float(h) for h in doc["h_samples"]]
        lanes = []
        for k, xs in enumerate(doc["lanes"]):
            if len(xs) != len(hs):
                log.add(where, f"lane {k} has {len(xs)} values for {len(hs)} h_samples")
                return None
            lanes.append([(float(x), y) for x, y in zip(xs, hs) if x >= 0])
        try:
            w, h = image_size(safe_join(root, doc["raw_file"]))
        except DataError as e:
            log.add(where, str(e))
            return None
        return LaneRecord(str(doc["raw_file"]), w, h, lanes, h_samples=hs)

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
