"""Dataset formats are plugins: one registered DatasetFormat class each, found by sniffing, and
everything (find_format, read_dataset, convert, data check, the data YAML) goes through them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visbricks.data.check import check_dataset
from visbricks.data.classification import ClassificationSet
from visbricks.data.formats import (
    DatasetFormat,
    DetectionFormat,
    convert,
    find_format,
    format_names,
    get_format,
    read_dataset,
)
from visbricks.data.records import DetectionSet, ImageRecord
from visbricks.data.synth.shapes import write_classification, write_detection
from visbricks.errors import ConfigError
from visbricks.registry import DATASETS

BUILT_IN = {"voc": "detection", "coco": "detection", "yolo": "detection",
            "imagefolder": "classification", "csv": "classification", "sequence": "sequence"}


def test_every_built_in_format_is_a_registered_plugin():
    for name, kind in BUILT_IN.items():
        fmt = get_format(name)
        assert isinstance(fmt, DatasetFormat) and fmt.kind == kind and fmt.looks_for
        assert name in format_names(kind)
    assert set(format_names("detection", writable=True)) >= {"voc", "coco", "yolo"}
    # sniffing order: specific layouts before the generic ImageFolder
    order = format_names()
    assert order.index("voc") < order.index("imagefolder") and order[-1] != "voc"
    with pytest.raises(ConfigError, match="did you mean 'yolo'"):
        get_format("yollo")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("plugins")
    out = {f: write_detection(base / f, f, n_train=4, n_val=2, width=48, height=48)
           for f in ("voc", "coco", "yolo")}
    out["shapes"] = write_classification(base / "cls", 7, 7, size=32)
    return out


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_each_format_recognises_its_own_folder(written, fmt):
    root = written[fmt]
    assert find_format(root).name == fmt  # through data.yaml's format key
    (root / "data.yaml").rename(root / "described.yaml")
    try:
        assert find_format(root, "detection").name == fmt  # by sniffing the folder itself
        assert get_format(fmt).sniff(root)
        others = [n for n in format_names("detection") if n != fmt and get_format(n).sniff(root)]
        assert all(format_names().index(o) > format_names().index(fmt) for o in others)
    finally:
        (root / "described.yaml").rename(root / "data.yaml")


def test_classification_formats_read_what_the_generator_wrote(written):
    root = written["shapes"]
    assert find_format(root).name == "imagefolder"
    folder = get_format("imagefolder")
    assert folder.splits(root) == ["train", "val"]
    train = folder.read(root, split="train")
    assert isinstance(train, ClassificationSet) and len(train) == 7
    pairs = zip(train.files, train.labels)
    assert all(Path(f).parts[0] == train.classes[lab[0]] for f, lab in pairs)
    multi = get_format("csv").read(root / "multilabel", split="val")
    assert multi.multilabel and len(multi) == 7
    assert find_format(root / "multilabel" / "train.csv").name == "csv"


def test_imagefolder_write_read_round_trip(written, tmp_path):
    fmt = get_format("imagefolder")
    src = fmt.read(written["shapes"], split="val")
    fmt.write(src, tmp_path / "copy", split="val")
    back = fmt.read(tmp_path / "copy", split="val")
    assert back.classes == [c for c in src.classes if (tmp_path / "copy/val" / c).is_dir()]
    assert sorted(back.files) == sorted(src.files)


class _JsonLines(DetectionFormat):
    """A toy box format: one ``boxes.jsonl`` line per image. Registered only in this test."""

    looks_for = "boxes.jsonl"
    priority = 5

    @classmethod
    def sniff(cls, path: Path) -> bool:
        return path.is_dir() and (path / "boxes.jsonl").is_file()

    def read_root(self, root, split, classes, strict):
        rows = [json.loads(line) for line in (root / "boxes.jsonl").read_text().splitlines()]
        names = classes or sorted({b["label"] for r in rows for b in r["boxes"]})
        records = [
            ImageRecord(
                file=r["file"], width=r["w"], height=r["h"],
                boxes=np.array([b["xyxy"] for b in r["boxes"]], np.float32).reshape(-1, 4),
                labels=np.array([names.index(b["label"]) for b in r["boxes"]], np.int64),
            )
            for r in rows
        ]
        return DetectionSet(root=root, classes=names, records=records)

    def write_split(self, ds, out, split, copy_images):
        raise NotImplementedError


@pytest.fixture
def jsonl_format():
    DATASETS.register("jsonl")(_JsonLines)
    yield
    DATASETS._items.pop("jsonl")


def test_a_new_format_is_one_class_and_one_registration(jsonl_format, tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    Image.new("RGB", (40, 30)).save(root / "a.png")
    Image.new("RGB", (40, 30)).save(root / "b.png")
    rows = [
        {"file": "a.png", "w": 40, "h": 30, "boxes": [{"label": "cup", "xyxy": [2, 3, 20, 25]}]},
        {"file": "b.png", "w": 40, "h": 30, "boxes": [{"label": "pen", "xyxy": [5, 5, 9, 29]},
                                                      {"label": "pen", "xyxy": [5, 5, 9, 29]}]},
    ]
    (root / "boxes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert find_format(root).name == "jsonl"
    ds = read_dataset(root)
    assert ds.classes == ["cup", "pen"] and len(ds) == 2
    # data check and convert dispatch through the registry: no edit anywhere else
    report = check_dataset(root)
    assert report.dataset_format == "jsonl"
    assert any(f == "b.png" and "duplicate box" in r for _, f, r in report.problems)
    out = convert(root, tmp_path / "as_coco", to="coco")
    back = read_dataset(out)
    np.testing.assert_allclose(back.records[0].boxes, [[2, 3, 20, 25]])
    # and a data YAML can name it
    (tmp_path / "d.yaml").write_text(f"format: jsonl\nroot: {root}\n")
    assert len(read_dataset(tmp_path / "d.yaml")) == 2


def test_formats_of_another_kind_are_not_offered(written):
    with pytest.raises(Exception, match="classification"):
        find_format(written["voc"] / "data.yaml", "classification")
