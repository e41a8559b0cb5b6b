"""VOC / COCO / YOLO readers and writers, the data YAML, and conversion between them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visbricks.data.formats import (
    convert,
    dataset_splits,
    load_data_yaml,
    read_coco,
    read_dataset,
    read_split,
    read_voc,
    read_yolo,
    write_dataset,
)
from visbricks.data.records import DetectionSet, ImageRecord
from visbricks.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ["cat", "dog", "bird"]
SIZES = [(64, 48), (80, 60), (50, 70), (40, 40)]  # (width, height); the last image is empty


def needs_data(sub: str) -> Path:
    path = DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture
def small_set(tmp_path: Path) -> DetectionSet:
    """Random boxes on generated images: 3 classes, some difficult, some crowd, one empty."""
    rng = np.random.default_rng(0)
    root = tmp_path / "src"
    records = []
    for i, (w, h) in enumerate(SIZES):
        file = f"pics/img_{i}.png"
        (root / "pics").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / file)
        n = 0 if i == len(SIZES) - 1 else 3
        xy = rng.uniform(0, [w / 2, h / 2], size=(n, 2))
        wh = rng.uniform(2, [w / 2, h / 2], size=(n, 2))
        segmentations: list = [None] * n
        if n:  # one axis-aligned polygon mask, so its raster is known without pycocotools
            segmentations[0] = [[3.0, 2.0, 7.0, 2.0, 7.0, 5.0, 3.0, 5.0]]
        records.append(
            ImageRecord(
                file=file,
                width=w,
                height=h,
                boxes=np.concatenate([xy, xy + wh], axis=1),
                labels=rng.integers(0, 3, n),
                difficult=np.arange(n) == 1,
                iscrowd=np.arange(n) == 2,
                segmentations=segmentations,
                image_id=10 * (i + 1),
            )
        )
    return DetectionSet(root=root, classes=list(CLASSES), records=records)


def by_name(ds: DetectionSet) -> dict[str, ImageRecord]:
    return {Path(r.file).name: r for r in ds.records}


def assert_same(
    expected: DetectionSet, got: DetectionSet, *, difficult: bool, iscrowd: bool
) -> None:
    assert got.classes == expected.classes
    assert got.problems == []
    want, have = by_name(expected), by_name(got)
    assert sorted(have) == sorted(want)
    for name, r in want.items():
        g = have[name]
        assert (g.width, g.height) == (r.width, r.height)
        np.testing.assert_allclose(g.boxes, r.boxes, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(g.labels, r.labels)
        if difficult:
            np.testing.assert_array_equal(g.difficult, r.difficult)
        if iscrowd:
            np.testing.assert_array_equal(g.iscrowd, r.iscrowd)
        # the pixels made it into the written dataset
        a = np.asarray(Image.open(got.root / g.file))
        np.testing.assert_array_equal(a, np.asarray(Image.open(expected.root / r.file)))


def test_round_trip_coco_voc_yolo_coco(small_set: DetectionSet, tmp_path: Path) -> None:
    coco = read_dataset(write_dataset(small_set, tmp_path / "coco", "coco"))
    assert_same(small_set, coco, difficult=True, iscrowd=True)
    # COCO keeps ids and masks verbatim
    assert sorted(r.image_id for r in coco.records) == [10, 20, 30, 40]
    first = by_name(coco)["img_0.png"]
    assert first.segmentations == by_name(small_set)["img_0.png"].segmentations

    voc = read_dataset(write_dataset(coco, tmp_path / "voc", "voc"))
    assert_same(small_set, voc, difficult=True, iscrowd=False)
    # the polygon became a VOC instance PNG: object 1 covers exactly x 3..6, y 2..4
    instance = np.asarray(Image.open(tmp_path / "voc" / "SegmentationObject" / "img_0.png"))
    expected = np.zeros((48, 64), dtype=np.uint8)
    expected[2:5, 3:7] = 1
    np.testing.assert_array_equal(instance, expected)
    semantic = np.asarray(Image.open(tmp_path / "voc" / "SegmentationClass" / "img_0.png"))
    assert set(np.unique(semantic)) == {0, int(small_set.records[0].labels[0]) + 1}
    assert by_name(voc)["img_0.png"].mask_file == "SegmentationClass/img_0.png"

    yolo = read_dataset(write_dataset(voc, tmp_path / "yolo", "yolo"))
    assert_same(small_set, yolo, difficult=False, iscrowd=False)
    # YOLO has no field for difficult or crowd: both come back False
    assert not any(r.difficult.any() or r.iscrowd.any() for r in yolo.records)
    assert (tmp_path / "yolo" / "labels" / "train" / "img_3.txt").read_text() == ""

    final = read_dataset(write_dataset(yolo, tmp_path / "coco2", "coco"))
    assert_same(small_set, final, difficult=False, iscrowd=False)


def test_coco_sparse_category_ids_and_written_ids(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "a.jpg")
    data = {
        "images": [{"id": 5, "file_name": "a.jpg", "width": 20, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 90, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
        "categories": [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    ds = read_coco(tmp_path / "ann.json")
    assert ds.classes == ["car", "zebra"]  # ascending category id
    np.testing.assert_array_equal(ds.records[0].labels, [1, 0])
    np.testing.assert_array_equal(ds.records[0].boxes, [[1, 2, 4, 6], [0, 0, 5, 5]])
    np.testing.assert_array_equal(ds.records[0].iscrowd, [False, True])

    write_dataset(ds, tmp_path / "out", "coco")
    written = json.loads((tmp_path / "out/annotations/instances_train.json").read_text())
    assert written["categories"] == [
        {"id": 1, "name": "car", "supercategory": ""},
        {"id": 2, "name": "zebra", "supercategory": ""},
    ]
    assert [a["category_id"] for a in written["annotations"]] == [2, 1]
    assert [a["bbox"] for a in written["annotations"]] == [[1, 2, 3, 4], [0, 0, 5, 5]]
    assert written["images"][0]["id"] == 5


def test_coco_crowd_rle_kept_verbatim_and_voids_voc_masks(tmp_path: Path) -> None:
    Image.new("RGB", (4, 3)).save(tmp_path / "a.png")
    # column-major uncompressed RLE of a 3x4 image: 4 off, 5 on (x=1 rows 1-2, x=2 all), 3 off
    rle = {"size": [3, 4], "counts": [4, 5, 3]}
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 3}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": rle}
        ],  # no bbox: it is the mask's extent
        "categories": [{"id": 1, "name": "people"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    ds = read_coco(tmp_path / "ann.json")
    record = ds.records[0]
    assert record.segmentations == [rle] and record.iscrowd.tolist() == [True]
    np.testing.assert_array_equal(record.boxes, [[1, 0, 3, 3]])

    write_dataset(ds, tmp_path / "voc", "voc")
    objects = np.asarray(Image.open(tmp_path / "voc/SegmentationObject/a.png"))
    expected = np.zeros((3, 4), dtype=np.uint8)
    expected[1:, 1] = expected[:, 2] = 255  # crowd regions are VOC's "void"
    np.testing.assert_array_equal(objects, expected)

    write_dataset(ds, tmp_path / "coco", "coco")
    ann = json.loads((tmp_path / "coco/annotations/instances_train.json").read_text())
    assert ann["annotations"][0]["segmentation"] == rle
    assert ann["annotations"][0]["area"] == 5.0


def voc_xml(filename: str, objects: list[tuple[str, tuple, bool]], size=(64, 48)) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(d)}</difficult><bndbox>"
        f"<xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>"
        "</bndbox></object>"
        for name, b, d in objects
    )
    w, h = size
    return (
        f"<annotation><filename>{filename}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_voc_one_based_corners_exact_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (64, 48)).save(root / "JPEGImages" / "a.jpg")
    objects = [("dog", (1, 1, 10, 20), True), ("cat", (5.25, 6.5, 64, 48), False)]
    (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", objects))
    ds = read_voc(root, classes=["cat", "dog"])
    np.testing.assert_array_equal(ds.records[0].boxes, [[0, 0, 10, 20], [4.25, 5.5, 64, 48]])
    np.testing.assert_array_equal(ds.records[0].labels, [1, 0])
    np.testing.assert_array_equal(ds.records[0].difficult, [True, False])

    write_dataset(ds, tmp_path / "out", "voc")
    text = (tmp_path / "out" / "Annotations" / "a.xml").read_text()
    for tag, value in [("xmin", "1"), ("ymax", "20"), ("xmin", "5.25"), ("ymin", "6.5")]:
        assert f"<{tag}>{value}</{tag}>" in text
    again = read_voc(tmp_path / "out")
    assert again.classes == ["cat", "dog"]  # from the written classes.txt, order kept
    np.testing.assert_array_equal(again.records[0].boxes, ds.records[0].boxes)


def test_yolo_reads_polygons_missing_labels_and_ultralytics_yaml(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (100, 50)).save(tmp_path / "images" / split / "a.jpg")
    Image.new("RGB", (100, 50)).save(tmp_path / "images" / "train" / "unlabelled.jpg")
    (tmp_path / "labels/train/a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.2 0.3 0.2 0.2 0.6\n")
    (tmp_path / "labels/val/a.txt").write_text("")
    (tmp_path / "u.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames: {0: person, 1: car}\n"
    )
    spec = load_data_yaml(tmp_path / "u.yaml")
    assert spec.format == "yolo" and spec.classes == ["person", "car"]
    train = read_split(spec, "train")
    assert [r.file for r in train.records] == ["images/train/a.jpg", "images/train/unlabelled.jpg"]
    a, empty = train.records
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [10, 10, 30, 30]], atol=1e-4)
    np.testing.assert_array_equal(a.labels, [1, 0])
    assert a.segmentations[0] is None
    np.testing.assert_allclose(a.segmentations[1][0], [10, 10, 30, 10, 20, 30], atol=1e-4)
    assert len(empty.boxes) == 0
    assert len(read_split(spec, "val").records[0].boxes) == 0


def test_read_yolo_without_class_names_says_where_to_put_them(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="classes.txt"):
        read_yolo(tmp_path)


def test_write_merges_splits_and_convert_keeps_them(small_set: DetectionSet, tmp_path: Path):
    train = DetectionSet(small_set.root, small_set.classes, small_set.records[:3])
    val = DetectionSet(small_set.root, small_set.classes, small_set.records[3:])
    write_dataset(train, tmp_path / "voc", "voc", split="train")
    yaml_path = write_dataset(val, tmp_path / "voc", "voc", split="val", copy_images=False)
    doc = yaml.safe_load(yaml_path.read_text())
    assert doc == {
        "format": "voc",
        "root": ".",
        "classes": CLASSES,
        "train": "ImageSets/Main/train.txt",
        "val": "ImageSets/Main/val.txt",
    }
    linked = tmp_path / "voc" / "JPEGImages" / "img_3.png"
    assert linked.samefile(small_set.root / small_set.records[3].file)  # linked, not copied
    assert dataset_splits(tmp_path / "voc") == ["train", "val"]  # via its data.yaml

    out = convert(tmp_path / "voc", tmp_path / "yolo", to="yolo")
    spec = load_data_yaml(out)
    assert spec.split_names() == ["train", "val"]
    assert len(read_split(spec, "train")) == 3 and len(read_split(spec, "val")) == 1
    # the raw VOC root (no data.yaml) gives the same splits from ImageSets/Main
    (tmp_path / "voc" / "data.yaml").unlink()
    assert dataset_splits(tmp_path / "voc") == ["train", "val"]
    assert len(read_dataset(tmp_path / "voc", split="val")) == 1


def test_write_refuses_mixing_classes_or_overwriting_another_split(
    small_set: DetectionSet, tmp_path: Path
) -> None:
    write_dataset(small_set, tmp_path / "out", "voc", split="train")
    other = DetectionSet(small_set.root, ["x", "y", "z"], small_set.records)
    with pytest.raises(DataError, match="data.yaml"):
        write_dataset(other, tmp_path / "out", "voc", split="val")
    with pytest.raises(DataError, match="img_0"):
        write_dataset(small_set, tmp_path / "out", "voc", split="val")
    with pytest.raises(ConfigError, match="did you mean 'yolo'"):
        write_dataset(small_set, tmp_path / "x", "yolov8")


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("format: voc\nclases: [a]\n")
    with pytest.raises(ConfigError, match=r"'clases'.*did you mean 'classes'"):
        load_data_yaml(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("format: voc\nsplit: {val_lsat: 3}\n")
    with pytest.raises(ConfigError, match=r"'val_lsat'.*did you mean 'val_last'"):
        load_data_yaml(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("format: cooc\ntrain: a.json\n")
    with pytest.raises(ConfigError, match=r"'cooc'.*did you mean 'coco'"):
        load_data_yaml(tmp_path / "data.yaml")


def test_missing_paths_are_named(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "Annotations")):
        read_voc(tmp_path)
    (tmp_path / "data.yaml").write_text("format: voc\nroot: nowhere\n")
    with pytest.raises(ConfigError, match="nowhere"):
        load_data_yaml(tmp_path / "data.yaml")
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "images" / "train")):
        read_yolo(tmp_path, image_dirs=["images/train"], classes=["a"])
    with pytest.raises(DataError, match="missing.json"):
        read_coco(tmp_path / "missing.json")


# ---- real, human-made data (skipped when /work/shared/data is absent) ----


def test_raccoon_voc_from_labelimg() -> None:
    root = needs_data("raccoon")
    ds = read_dataset(root)
    assert ds.classes == ["raccoon"]
    assert len(ds) == 200
    assert sum(len(r.boxes) for r in ds.records) == 217
    assert ds.problems == []
    first = next(r for r in ds.records if r.file == "images/raccoon-1.jpg")
    # raccoon-1.xml: 650x417, xmin 81 ymin 88 xmax 522 ymax 408 (1-based)
    assert (first.width, first.height) == (650, 417)
    np.testing.assert_array_equal(first.boxes, [[80, 87, 522, 408]])


def test_raccoon_data_yaml_val_last_and_fraction(tmp_path: Path) -> None:
    root = needs_data("raccoon")
    rel = os.path.relpath(root, tmp_path)  # relative: resolved against the YAML's folder
    head = f"format: voc\nroot: {rel}\nimages: images\nannotations: annotations\n"
    (tmp_path / "last.yaml").write_text(head + "classes: [raccoon]\nsplit: {val_last: 40}\n")
    spec = load_data_yaml(tmp_path / "last.yaml")
    train, val = read_split(spec, "train"), read_split(spec, "val")
    assert (len(train), len(val)) == (160, 40)
    names = sorted(p.name for p in (root / "images").iterdir())
    assert [Path(r.file).name for r in val.records] == names[-40:]

    (tmp_path / "frac.yaml").write_text(head + "split: {val_fraction: 0.2, seed: 0}\n")
    spec = load_data_yaml(tmp_path / "frac.yaml")
    train, val = read_split(spec, "train"), read_split(spec, "val")
    assert (len(train), len(val)) == (160, 40)
    files = {r.file for r in train.records}
    assert files.isdisjoint(r.file for r in val.records)
    assert len(files | {r.file for r in val.records}) == 200
    assert [r.file for r in read_split(spec, "val").records] == [r.file for r in val.records]


def test_labelme_voc_and_coco_class_lists() -> None:
    labelme = needs_data("labelme")
    names = (labelme / "bbox_detection/data_dataset_voc/class_names.txt").read_text().split("\n")
    expected = [n for n in names if n and n != "_background_"]
    voc = read_dataset(labelme / "bbox_detection/data_dataset_voc")
    assert voc.classes == expected and len(expected) == 20
    assert len(voc) == 3 and voc.problems == []
    coco = read_dataset(labelme / "instance_segmentation/data_dataset_coco/annotations.json")
    assert coco.classes == expected
    assert len(coco) == 3 and coco.problems == []
    assert sum(len(r.boxes) for r in coco.records) == 12
    assert all(s is not None for r in coco.records for s in r.segmentations)
    person = expected.index("person")
    assert any(person in r.labels for r in voc.records)


def test_labelme_voc_float_corners_round_trip_exactly(tmp_path: Path) -> None:
    src = needs_data("labelme") / "bbox_detection/data_dataset_voc"
    ds = read_dataset(src)
    again = read_dataset(write_dataset(ds, tmp_path, "voc", copy_images=False))
    for a, b in zip(sorted(ds.records, key=lambda r: r.file), again.records):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_voc_masks_from_labelme_coco_match_labelmes_own_voc_pngs(tmp_path: Path) -> None:
    """labelme exported the same polygons as COCO and as VOC PNGs: rasterizing the COCO ones
    must reproduce its SegmentationClass PNGs (class id + 1, 0 background) up to edge pixels."""
    src = needs_data("labelme") / "instance_segmentation"
    convert(src / "data_dataset_coco/annotations.json", tmp_path, to="voc", copy_images=False)
    pngs = sorted((src / "data_dataset_voc/SegmentationClass").glob("*.png"))
    assert len(pngs) == 3
    for theirs_png in pngs:
        theirs = np.asarray(Image.open(theirs_png))
        ours = np.asarray(Image.open(tmp_path / "SegmentationClass" / theirs_png.name))
        valid = theirs != 255  # labelme's own void/ignore pixels
        assert (ours[valid] == theirs[valid]).mean() > 0.99
        for c in set(np.unique(theirs[valid])) - {0}:
            a, b = (ours == c) & valid, (theirs == c) & valid
            assert (a & b).sum() / (a | b).sum() > 0.9, (theirs_png.name, c)
