"""Own data (issue 9): ``visbricks train TASK data=PATH`` from each format's folder, format
auto-detection, the Ultralytics data.yaml read and written as Ultralytics does, and
``data check`` finding every kind of bad box with its file (``--fix`` writes a cleaned copy).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visbricks.cli import main, run_training
from visbricks.config import load_config
from visbricks.data.check import check_dataset, fix_dataset
from visbricks.data.formats import convert, find_format, read_dataset, read_task_split
from visbricks.data.synth.shapes import SHAPE_CLASSES, write_detection
from visbricks.errors import ConfigError, DataError

TINY = [
    "epochs=1", "img_size=64", "batch_size=4", "train.max_batches=2", "model.pretrained=null",
    "workers=0", "train.plots=false", "train.tensorboard=false", "device=cpu",
]


def _bare(root: Path) -> Path:
    """A generated dataset without the files that name its format: detection must find it."""
    for name in ("data.yaml", "classes.txt", ".complete"):
        (root / name).unlink(missing_ok=True)
    return root


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("own")
    return {
        fmt: write_detection(base / fmt, fmt, n_train=8, n_val=4, width=64, height=64, seed=1)
        for fmt in ("voc", "coco", "yolo")
    }


def _train(task: str, data: Path, tmp_path: Path):
    cfg = load_config(task, [f"data={data}", f"project={tmp_path / 'runs'}", *TINY])
    trainer, metrics = run_training(cfg)
    assert (trainer.weights_dir / "best.safetensors").is_file()
    return trainer, metrics


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_train_detect_from_a_bare_folder(synth, tmp_path, fmt):
    root = _bare(shutil.copytree(synth[fmt], tmp_path / fmt))
    if fmt == "voc":
        assert sorted(p.name for p in (root / "ImageSets" / "Main").glob("*.txt")) == [
            "train.txt",
            "val.txt",
        ]
    assert find_format(root).name == fmt
    trainer, metrics = _train("detect", root, tmp_path)
    assert len(trainer.data.train) == 8 and len(trainer.data.val) == 4
    # VOC names classes by the objects found; COCO by its categories: the shapes either way
    assert set(trainer.data.classes) <= set(SHAPE_CLASSES) and trainer.data.classes
    assert any(k.startswith("val/") for k in metrics)


def test_train_detect_from_an_ultralytics_yaml_with_names_as_dict(synth, tmp_path):
    root = _bare(shutil.copytree(synth["yolo"], tmp_path / "yolo"))
    doc = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": {i: name for i, name in enumerate(SHAPE_CLASSES)},
    }
    (root / "coco8-like.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    trainer, _ = _train("detect", root / "coco8-like.yaml", tmp_path)
    assert trainer.data.classes == list(SHAPE_CLASSES)
    assert len(trainer.data.train) == 8 and len(trainer.data.val) == 4


def test_train_classify_from_an_imagefolder_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            (tmp_path / "photos" / split / c).mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.normal(colour, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(tmp_path / "photos" / split / c / f"{i}.jpg")
    assert find_format(tmp_path / "photos").name == "imagefolder"
    argv = ["train", "classify", f"data={tmp_path / 'photos'}", f"project={tmp_path / 'r'}"]
    assert main([*argv, *TINY]) == 0
    runs = list((tmp_path / "r").rglob("best.safetensors"))
    assert len(runs) == 1
    saved = yaml.safe_load((runs[0].parent / "best.yaml").read_text())
    assert "blue" in str(saved) and "red" in str(saved)


def test_data_on_a_shapes_preset_replaces_the_synthetic_source(tmp_path):
    cfg = load_config("detect-shapes", [f"data={tmp_path}"])
    assert cfg.data.root == str(tmp_path) and not cfg.data.synth and cfg.data.format == "auto"
    kept = load_config("detect-shapes", [f"data.root={tmp_path}", "data.synth.n_train=5"])
    assert kept.data.synth["n_train"] == 5 and kept.data.synth["kind"] == "shapes"
    assert not load_config("detect-shapes", ["data.synth=null"]).data.synth
    assert not load_config("detect-shapes", ["data.synth={}"]).data.synth


def test_reading_classes_never_generates_data(tmp_path):
    from visbricks.tasks import build_task

    out = tmp_path / "never"
    cfg = load_config("detect-shapes", [f"data.root={out}/data.yaml", "data.synth.n_train=8"])
    assert cfg.data.synth  # the preset's generator is still configured
    task = build_task(cfg)
    assert task.classes == list(SHAPE_CLASSES)
    assert not out.exists()


# ---- auto-detection ------------------------------------------------------------------------
def test_nothing_matches_one_error_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as e:
        find_format(tmp_path)
    message = str(e.value)
    assert str(tmp_path) in message and "\n" not in message
    for looked in ("Annotations/*.xml", "annotations/*.json", "labels/", "ImageFolder", "CSV"):
        assert looked in message


def test_format_key_in_a_yaml_overrides_the_guess(synth, tmp_path):
    root = shutil.copytree(synth["voc"], tmp_path / "voc")
    (root / "labels").mkdir()  # looks a bit like YOLO too
    (root / "images").mkdir(exist_ok=True)
    assert find_format(root / "data.yaml").name == "voc"
    (tmp_path / "bad.yaml").write_text("format: vocc\n")
    with pytest.raises(ConfigError, match="vocc"):
        find_format(tmp_path / "bad.yaml")


def test_a_folder_without_splits_is_held_out_deterministically(synth, tmp_path):
    root = _bare(shutil.copytree(synth["voc"], tmp_path / "voc"))
    shutil.rmtree(root / "ImageSets")
    train = read_task_split(root, "auto", "detection", "train")
    val = read_task_split(root, "auto", "detection", "val")
    files = {r.file for r in train.records}
    assert len(train) + len(val) == 12 and not files & {r.file for r in val.records}
    assert len(val) == round(0.2 * 12)
    again = read_task_split(root, "auto", "detection", "val")
    assert [r.file for r in again.records] == [r.file for r in val.records]


# ---- Ultralytics layout -------------------------------------------------------------------
def _ultralytics_root(tmp_path: Path) -> tuple[Path, dict[str, list[list[float]]]]:
    """The documented layout, written by hand: images/<split>/x.jpg + labels/<split>/x.txt."""
    root = tmp_path / "ul"
    truth = {}
    rng = np.random.default_rng(3)
    for split, n in (("train", 3), ("val", 2), ("extra", 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            name = f"{split}{i}"
            Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{name}.jpg"
            )
            cx, cy, w, h = 0.5, 0.5, 0.25, 0.5
            (root / "labels" / split / f"{name}.txt").write_text(f"{i % 2} {cx} {cy} {w} {h}\n")
            truth[f"images/{split}/{name}.jpg"] = [[30.0, 10.0, 50.0, 30.0]]
    return root, truth


@pytest.mark.parametrize("names", [["cat", "dog"], {0: "cat", 1: "dog"}, {"0": "cat", "1": "dog"}])
@pytest.mark.parametrize(
    "train",
    ["images/train", "train.txt", ["images/train", "images/extra"], ["train.txt", "images/extra"]],
)
def test_ultralytics_yaml_is_read_as_ultralytics_reads_it(tmp_path, names, train):
    root, truth = _ultralytics_root(tmp_path)
    # a txt list: "./" lines are relative to the list's folder (Ultralytics' rule)
    (root / "train.txt").write_text("./images/train/train0.jpg\n./images/train/train1.jpg\n"
                                    "./images/train/train2.jpg\n")
    doc = {"path": str(root), "train": train, "val": "images/val", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    ds = read_dataset(root / "data.yaml", split="train")
    assert ds.classes == ["cat", "dog"]
    expected = 3 + (1 if isinstance(train, list) else 0)
    assert len(ds) == expected
    for r in ds.records:
        np.testing.assert_allclose(r.boxes, truth[r.file], atol=1e-4)
    assert len(read_dataset(root / "data.yaml", split="val")) == 2
    assert find_format(root).name == "yolo"  # a folder with such a data.yaml


def test_ultralytics_nc_only_names_classes_like_ultralytics(tmp_path):
    root, _ = _ultralytics_root(tmp_path)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 2\n")
    assert read_dataset(root / "data.yaml").classes == ["class_0", "class_1"]


def test_convert_to_yolo_writes_a_data_yaml_ultralytics_accepts(synth, tmp_path):
    out = convert(synth["coco"] / "data.yaml", tmp_path / "y", to="yolo")
    doc = yaml.safe_load(out.read_text())
    # what Ultralytics' check_det_dataset needs: train and val, names as {int: str} (nc agreeing);
    # no 'path', so it takes the YAML's folder as the root, as we do
    assert {"train", "val", "names"} <= set(doc) and "path" not in doc
    assert doc["names"] == dict(enumerate(SHAPE_CLASSES)) and doc["nc"] == len(SHAPE_CLASSES)
    for split in ("train", "val"):
        images = sorted((out.parent / doc[split]).glob("*.png"))
        labels = out.parent / doc[split].replace("images", "labels")
        assert images and all((labels / f"{p.stem}.txt").is_file() for p in images)
        src = read_dataset(synth["coco"] / "data.yaml", split=split)
        back = read_dataset(out, split=split)
        assert [len(r.boxes) for r in back.records] == [len(r.boxes) for r in src.records]
        for a, b in zip(src.records, back.records):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    # the folder can move: nothing in it is absolute
    moved = shutil.move(str(out.parent), str(tmp_path / "moved"))
    assert len(read_dataset(Path(moved) / "data.yaml", split="val")) == 4


# ---- data check ---------------------------------------------------------------------------
def _voc_xml(filename: str, objects: list[tuple[str, tuple]], size=(64, 48)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height></size>{objs}</annotation>"
    )


@pytest.fixture
def bad_voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "classes.txt").write_text("cat\ndog\n")
    rng = np.random.default_rng(0)
    names = ["good", "zero_w", "zero_h", "negative", "outside", "dup", "tiny", "unknown",
             "unlabelled"]
    for n in names:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{n}.jpg"
        )
    (root / "JPEGImages" / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    box = (11, 11, 30, 30)
    xmls = {
        "good": [("cat", box)],
        "zero_w": [("cat", (20, 11, 20, 30))],  # xmin == xmax: 1 px after VOC's convention
        "zero_h": [("dog", (11, 25, 30, 25))],
        "negative": [("cat", (30, 11, 12, 30))],
        "outside": [("cat", (11, 11, 90, 30))],
        "dup": [("dog", box), ("dog", box), ("cat", box)],
        "tiny": [("cat", (11, 11, 11.5, 30))],  # 1.5 px wide once converted: tiny
        "unknown": [("zebra", box)],
        "missing": [("cat", box)],
        "broken": [("cat", box)],
    }
    for stem, objects in xmls.items():
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", objects))
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(xmls) + "\n")
    return root


def test_data_check_reports_every_kind_of_bad_box_with_its_file(bad_voc):
    report = check_dataset(bad_voc)

    def found(file: str, *words: str) -> bool:
        return any(
            f == file and all(w in r for w in words) for _, f, r in report.problems + report.notes
        )

    assert found("Annotations/zero_w.xml", "zero", "as written", "dropped")
    assert found("Annotations/zero_h.xml", "zero", "as written", "dropped")
    assert found("Annotations/negative.xml", "negative")
    assert found("Annotations/outside.xml", "outside the 64x48 image")
    assert found("JPEGImages/dup.jpg", "duplicate box")
    assert found("JPEGImages/tiny.jpg", "tiny box", "kept")
    assert found("Annotations/unknown.xml", "unknown class 'zebra'")
    assert found("Annotations/missing.xml", "missing.jpg")
    assert any("broken.jpg" in f + r for _, f, r in report.problems)  # unreadable image
    assert found("JPEGImages/unlabelled.jpg", "without annotations")
    assert not any("good" in f for _, f, _ in report.problems + report.notes)
    text = report.format()
    for _, file, reason in report.problems + report.notes:
        assert f"{file}: {reason}" in text
    # the tiny box is a note: reported and kept
    assert all("tiny" not in r for _, _, r in report.problems)


def test_zero_size_boxes_are_found_in_every_box_format(tmp_path):
    root = tmp_path / "y"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (50, 40)).save(root / "images" / "a.png")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.0 0.2\n0 0.5 0.5 0.2 0.2\n")
    (root / "classes.txt").write_text("thing\n")
    report = check_dataset(root)
    assert any(
        f == "labels/a.txt:1" and "zero" in r or (f.startswith("labels/a.txt") and "zero" in r)
        for _, f, r in report.problems
    ), report.problems


def test_fix_writes_a_cleaned_copy_and_never_touches_the_source(bad_voc, tmp_path):
    before = {p: p.read_bytes() for p in bad_voc.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="outside the dataset"):
        fix_dataset(bad_voc, bad_voc / "clean")
    _, written = fix_dataset(bad_voc, tmp_path / "clean")
    assert {p: p.read_bytes() for p in bad_voc.rglob("*") if p.is_file()} == before
    clean = check_dataset(written)
    assert not [p for p in clean.problems if "duplicate" in p[2] or "zero" in p[2]]
    ds = read_dataset(written, split="train")
    dup = next(r for r in ds.records if "dup" in r.file)
    assert len(dup.boxes) == 2  # the repeated dog box is gone, the cat on the same spot stays
    assert not any("broken" in r.file for r in ds.records)
    assert any("tiny" in r.file and len(r.boxes) == 1 for r in ds.records)
    assert main(["data", "check", str(bad_voc), "--fix", str(tmp_path / "clean2")]) == 0
    assert (tmp_path / "clean2" / "data.yaml").is_file()
