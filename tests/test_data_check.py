"""``data check``: every bad sample is reported with its file and reason; strict mode raises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visbricks.data.check import check_dataset
from visbricks.data.formats import read_dataset
from visbricks.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def xml(filename: str, objects: list[tuple[str, tuple]], size: tuple[int, int] = (64, 48)) -> str:
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height></size>{objs}</annotation>"
    )


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A VOC dataset with one of each problem; returns its data YAML."""
    root = tmp_path / "ds"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    for name in ("good", "outside", "zero", "inverted", "unknown", "resized"):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{name}.png")
    (root / "JPEGImages" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.jpg")  # exists, but outside the root
    box = (11, 11, 30, 30)
    annotations = {
        "good": xml("good.png", [("cat", box), ("dog", box)]),
        "corrupt": xml("corrupt.jpg", [("cat", box)]),
        "missing": xml("missing.jpg", [("cat", box)]),
        "outside": xml("outside.png", [("cat", (11, 11, 100, 30))]),
        "zero": xml("zero.png", [("cat", (11, 11, 11, 30)), ("dog", box)]),  # xmin == xmax
        "inverted": xml("inverted.png", [("dog", (31, 31, 10, 10))]),
        "unknown": xml("unknown.png", [("zebra", box), ("cat", box)]),
        "escape": xml("../../outside.jpg", [("cat", box)]),
        "twice": xml("good.png", [("cat", box)]),  # a second annotation of good.png
        "resized": xml("resized.png", [("cat", box)], size=(640, 480)),
    }
    for stem, text in annotations.items():
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    (root / "data.yaml").write_text("format: voc\nclasses: [cat, dog]\n")
    return root / "data.yaml"


def test_every_problem_is_reported_with_its_file(broken: Path) -> None:
    report = check_dataset(broken)
    problems = [(split, file, reason) for split, file, reason in report.problems]
    assert {split for split, _, _ in problems} == {"train"}

    def reported(file: str, *words: str) -> bool:
        return any(f == file and all(w in r for w in words) for _, f, r in problems)

    assert reported("JPEGImages/corrupt.jpg", "unreadable image")
    assert reported("Annotations/missing.xml", "missing.jpg", "not found")
    assert reported("Annotations/outside.xml", "outside the 64x48 image", "clipped")
    assert reported("Annotations/zero.xml", "zero area", "dropped")
    assert reported("Annotations/inverted.xml", "inverted", "swapped")
    assert reported("Annotations/unknown.xml", "unknown class 'zebra'", "dropped")
    assert reported("Annotations/escape.xml", "../../outside.jpg", "escapes the dataset root")
    # good.xml and twice.xml both annotate good.png: the one read second is the duplicate
    assert reported("Annotations/twice.xml", "duplicate", "good.png")
    assert reported("JPEGImages/resized.png", "640x480", "64x48")
    assert len(problems) == 9

    text = report.format()
    for _, file, reason in problems:
        assert f"{file}: {reason}" in text

    # what survived: the repaired boxes, and counts that follow from them
    ds = read_dataset(broken)
    boxes = {Path(r.file).stem: r.boxes.tolist() for r in ds.records}
    assert boxes["outside"] == [[10, 10, 64, 30]]
    assert boxes["inverted"] == [[9, 9, 31, 31]]  # (31,31,10,10) 1-based: swapped corners
    assert boxes["zero"] == [[10, 10, 30, 30]]
    train = report.splits["train"]
    assert train.images == 7  # good, corrupt, outside, zero, inverted, unknown, resized
    assert train.boxes_per_class == {"cat": 5, "dog": 3}
    assert train.images_per_class == {"cat": 5, "dog": 3}
    assert not report.ok


def test_strict_raises_at_the_first_problem_naming_the_file(broken: Path) -> None:
    with pytest.raises(DataError, match="escape.xml"):  # first in sorted annotation order
        check_dataset(broken, strict=True)
    # a problem only decoding can find also stops a strict check, naming the image
    root = broken.parent
    for stem in ("escape", "missing", "outside", "zero", "inverted", "unknown", "twice"):
        (root / "Annotations" / f"{stem}.xml").unlink()
    # (a wrong <size> is found when reading, before decoding: give resized its real size)
    fixed = xml("resized.png", [("cat", (11, 11, 30, 30))])
    (root / "Annotations" / "resized.xml").write_text(fixed)
    with pytest.raises(DataError, match="corrupt.jpg"):
        check_dataset(broken, strict=True)


def test_mean_std_and_counts_match_an_independent_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    arrays = []
    for i, (h, w) in enumerate([(20, 30), (24, 16), (10, 10)]):
        a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        a[..., 0] //= 2  # channels with different statistics
        arrays.append(a)
        Image.fromarray(a).save(tmp_path / "images" / "train" / f"{i}.png")
    (tmp_path / "labels/train/0.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.4 0.4\n")
    (tmp_path / "labels/train/1.txt").write_text("1 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    (tmp_path / "classes.txt").write_text("a\nb\n")

    report = check_dataset(tmp_path)
    assert report.ok and report.stats_images == 3
    pixels = np.concatenate([a.reshape(-1, 3) for a in arrays]) / 255.0
    np.testing.assert_allclose(report.mean, pixels.mean(0), atol=1e-9)
    np.testing.assert_allclose(report.std, pixels.std(0), atol=1e-9)
    train = report.splits["train"]
    assert (train.images, train.boxes, train.empty_images) == (3, 4, 1)
    assert train.boxes_per_class == {"a": 1, "b": 3}
    assert train.images_per_class == {"a": 1, "b": 2}
    assert "no problems found" in report.format()

    sampled = check_dataset(tmp_path, stats_images=2)
    assert sampled.stats_images == 2


def test_yolo_and_coco_problems_name_their_files(tmp_path: Path) -> None:
    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(yolo / "images/train/a.png")
    Image.new("RGB", (10, 10)).save(yolo / "images/train/a.jpg")  # same label file as a.png
    (yolo / "labels/train/a.txt").write_text("5 0.5 0.5 0.1 0.1\n0 0.5 0.5\n0 40 40 10 10\n")
    (yolo / "classes.txt").write_text("a\n")
    problems = check_dataset(yolo).problems
    assert (
        "train",
        "labels/train/a.txt:1",
        "unknown class id 5 (the class list has 1); dropped",
    ) in problems
    assert any(
        f == "labels/train/a.txt:2" and "expected 'class cx cy w h'" in r for _, f, r in problems
    )
    assert any(f == "labels/train/a.txt:3" and "not normalized" in r for _, f, r in problems)
    assert any(f == "images/train/a.png" and "duplicate" in r for _, f, r in problems)

    coco = tmp_path / "coco"
    coco.mkdir()
    Image.new("RGB", (10, 10)).save(coco / "a.png")
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 10, "height": 10},
            {"id": 1, "file_name": "a.png", "width": 10, "height": 10},
            {"id": 2, "file_name": "../../b.png", "width": 10, "height": 10},
        ],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},
            {"id": 8, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]},
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    (coco / "ann.json").write_text(json.dumps(data))
    problems = check_dataset(coco / "ann.json").problems
    assert any(f == "a.png" and "duplicate image entry" in r for _, f, r in problems)
    assert any(f == "../../b.png" and "escapes" in r for _, f, r in problems)
    assert any(f == "a.png" and "annotation 7: unknown class" in r for _, f, r in problems)
    assert any(f == "ann.json" and "unknown image_id 3" in r for _, f, r in problems)


def test_same_image_in_two_splits_is_reported(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    Image.new("RGB", (64, 48)).save(tmp_path / "JPEGImages" / "a.png")
    (tmp_path / "Annotations" / "a.xml").write_text(xml("a.png", [("cat", (1, 1, 5, 5))]))
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\n")
    (tmp_path / "ImageSets/Main/val.txt").write_text("a\n")
    report = check_dataset(tmp_path)
    assert report.problems == [("val", "JPEGImages/a.png", "duplicate: also in split 'train'")]


def test_raccoon_checks_clean() -> None:
    root = DATA / "raccoon"
    if not root.exists():
        pytest.skip(f"real data not available: {root} is absent")
    report = check_dataset(root, stats_images=20)
    assert report.ok, report.format()
    assert report.splits["all"].images == 200 and report.splits["all"].boxes == 217
    assert report.stats_images == 20
    assert all(0.2 < m < 0.7 for m in report.mean) and all(0.1 < s < 0.4 for s in report.std)
