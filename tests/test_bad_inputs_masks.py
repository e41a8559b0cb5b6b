"""Broken segmentation data through the real command line (issue 25, item 5): COCO masks (a
polygon of two points, an RLE of another size, an image entry without width/height), the
rasterised masks' cache (never inside the dataset, never stale), label values outside the
classes, masks of another size than their image (EXIF rotation included) and a one-image set
without a val split. Each is a one-line error naming the file, or a warned, counted skip; the
user's dataset is never written to (``digest`` before and after).

Everything runs in-process (``visbricks.cli.main``); the two commands that train use a tiny
config (1 epoch, 32 px, two steps).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, digest, run_cli
from visbricks.data.formats import get_format
from visbricks.data.formats.masks import read_mask, write_mask

TINY = (
    "epochs=1",
    "batch_size=2",
    "workers=0",
    "train.max_batches=2",
    "train.plots=false",
    "train.tensorboard=false",
    "img_size=32",
    "model.backbone=mobilenet_v3_small",
    "model.pretrained=null",
)
H, W = 24, 32
SQUARE = [[2, 2, 12, 2, 12, 12, 2, 12]]  # 10x10 px at (2, 2)


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch) -> Path:
    """The rasterised COCO masks go under $XDG_CACHE_HOME; each test looks at its own."""
    cache = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _coco(root: Path, n: int = 4, split_rule: bool = False) -> Path:
    """``images/`` (n noise PNGs, 32x24), ``ann.json`` (one 10x10 square per image, annotation
    id = image id), ``seg.yaml`` (coco_masks) and ``det.yaml`` (the same file as boxes)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        images.append({"id": i, "file_name": f"{i}.png", "width": W, "height": H})
        annotations.append(
            {"id": i, "image_id": i, "category_id": 1, "segmentation": SQUARE, "iscrowd": 0,
             "bbox": [2, 2, 10, 10], "area": 100}
        )  # fmt: skip
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "ann.json").write_text(json.dumps(doc))
    rule = "split: {val_fraction: 0.25, seed: 0}\n" if split_rule else ""
    (root / "seg.yaml").write_text(
        f"format: coco_masks\ntrain: {{annotations: ann.json, images: images}}\n{rule}"
    )
    (root / "det.yaml").write_text("format: coco\nimages: images\ntrain: ann.json\n")
    return root


def _edit(root: Path, change) -> None:
    doc = json.loads((root / "ann.json").read_text())
    change(doc)
    (root / "ann.json").write_text(json.dumps(doc))


def _masks(root: Path) -> dict[int, np.ndarray]:
    ds = get_format("coco_masks").read(root / "seg.yaml", split="train")
    return {r.image_id: read_mask(ds.mask_path(r))[0] for r in ds.records}


BAD_MASKS = {
    # pycocotools would read these 4 numbers as a box; mmdet drops such polygons
    "two-point polygon": ({"segmentation": [[1, 1, 5, 5]]}, "polygon 0 has 2 point(s)"),
    "RLE of another size": (
        {"segmentation": {"size": [10, 10], "counts": [0, 100]}},
        "RLE size [10, 10] (height, width) is not the image's [24, 32]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MASKS))
def test_coco_bad_mask_is_a_counted_skip_naming_file_and_annotation(tmp_path, capsys, case):
    change, reason = BAD_MASKS[case]
    root = _coco(tmp_path / "coco")
    _edit(root, lambda doc: doc["annotations"][0].update(change))
    before = digest(root)

    # Semantic masks: the annotation is skipped (its bbox, whose pixels are unknown, ignored).
    code, text = run_cli(capsys, "data", "check", root / "seg.yaml")
    assert code == 0 and "1 problem:" in text and "Traceback" not in text, text
    assert f"images/1.png: ann.json annotation 1: {reason}" in text and "skipped" in text, text
    assert_one_line_error(
        capsys, "data", "check", root / "seg.yaml", "--strict", names=("ann.json", "annotation 1")
    )
    masks = _masks(root)
    assert (masks[1][2:12, 2:12] == 255).all() and (masks[1] != 255).sum() == H * W - 100
    assert (masks[2][2:12, 2:12] == 1).all()  # the good annotations are drawn as before

    # Boxes: the mask is dropped, the box kept; converting no longer tracebacks.
    code, text = run_cli(capsys, "data", "check", root / "det.yaml")
    assert code == 0 and f"1.png: ann.json annotation 1: {reason}" in text, text
    assert "; mask dropped, box kept" in text, text
    assert "train            4       4" in text  # every box kept
    assert_one_line_error(
        capsys, "data", "check", root / "det.yaml", "--strict", names=("ann.json", "annotation 1")
    )
    code, text = run_cli(
        capsys, "data", "convert", root / "det.yaml", "--to", "voc", "--out", tmp_path / "voc"
    )
    assert code == 0, text
    assert len(list((tmp_path / "voc" / "Annotations").glob("*.xml"))) == 4
    assert digest(root) == before


def test_coco_image_without_width_height_is_measured(tmp_path, capsys):
    root = _coco(tmp_path / "coco")
    _edit(root, lambda doc: [doc["images"][2].pop(k) for k in ("width", "height")])
    before = digest(root)
    for spec in ("seg.yaml", "det.yaml"):
        code, text = run_cli(capsys, "data", "check", root / spec)
        assert code == 0 and "no problems found" in text, text
    assert _masks(root)[3].shape == (H, W)  # the image's own size, read from its header
    assert digest(root) == before


def test_train_and_eval_on_coco_masks_write_nothing_into_the_dataset(
    tmp_path, capsys, _cache_home
):
    root = _coco(tmp_path / "coco", split_rule=True)
    _edit(root, lambda doc: doc["annotations"][0].update(BAD_MASKS["two-point polygon"][0]))
    before = digest(root)
    with pytest.warns(UserWarning, match=r"1 problem\(s\) reading the train split.*annotation 1"):
        code, text = run_cli(
            capsys, "train", "segment", f"data={root / 'seg.yaml'}", f"project={tmp_path}", *TINY
        )
    assert code == 0, text
    with pytest.warns(UserWarning, match="annotation 1"):  # eval reads the data as trained
        code, text = run_cli(capsys, "eval", tmp_path / "segment" / "segment")
    assert code == 0 and "mIoU" in text, text
    assert digest(root) == before  # no "<json>_masks/" beside the JSON any more
    assert len(list(_cache_home.glob("visbricks/coco_masks/*/*.png"))) == 4


def test_coco_mask_cache_follows_the_json(tmp_path, capsys, _cache_home):
    root = _coco(tmp_path / "coco")
    code, text = run_cli(capsys, "data", "check", root / "seg.yaml")
    assert code == 0 and "thing                      400" in text, text  # 4 squares of 100 px
    stat = os.stat(root / "ann.json")
    # Twice as wide, with the old mtime put back: a cache keyed by time would serve stale masks.
    wide = [[2, 2, 22, 2, 22, 12, 2, 12]]
    _edit(root, lambda doc: [a.update(segmentation=wide) for a in doc["annotations"]])
    os.utime(root / "ann.json", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = digest(root)
    code, text = run_cli(capsys, "data", "check", root / "seg.yaml")
    assert code == 0 and "thing                      800" in text, text
    assert (_masks(root)[1][2:12, 2:22] == 1).all()
    assert digest(root) == before
    assert len(list(_cache_home.glob("visbricks/coco_masks/*"))) == 2  # one per JSON content


def test_coco_mask_cache_folders_unused_for_30_days_are_deleted(tmp_path, capsys, _cache_home):
    root = _coco(tmp_path / "coco")
    caches = _cache_home / "visbricks" / "coco_masks"
    day = 86400
    old, recent = caches / ("a" * 24), caches / ("b" * 24)
    mine = caches / "my-notes"  # not a key: never the cache's to delete
    for folder, age in ((old, 31 * day), (recent, 29 * day), (mine, 400 * day)):
        (folder / "1-8x8.png").parent.mkdir(parents=True)
        (folder / "1-8x8.png").write_bytes(b"png")
        os.utime(folder, (time.time() - age, time.time() - age))
    code, text = run_cli(capsys, "data", "check", root / "seg.yaml")
    assert code == 0, text
    assert not old.exists() and recent.exists() and mine.exists()
    used = [f for f in caches.iterdir() if f not in (recent, mine)]
    assert len(used) == 1 and time.time() - used[0].stat().st_mtime < day  # this run's, kept


# ---- label PNGs --------------------------------------------------------------------------------
def _exif_jpeg(path: Path, pixels: np.ndarray, orientation: int) -> None:
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes(), quality=95)


def _label_masks(root: Path, n: int = 5) -> Path:
    """``images/`` + ``masks/`` (label PNGs, 32x24) of two named classes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((H, W), np.uint8)
        mask[4:12, 4:20] = 1
        write_mask(root / "masks" / f"{i}.png", mask)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
    (root / "classes.txt").write_text("background\nthing\n")
    return root


def test_stray_labels_and_mismatched_masks_are_warned_and_counted(tmp_path, capsys):
    root = _label_masks(tmp_path / "masks", n=6)
    for i in (0, 1):  # values that are neither a class nor the ignore index
        mask = read_mask(root / "masks" / f"{i}.png")[0]
        mask[0, :5], mask[1, :3] = 7, 9
        write_mask(root / "masks" / f"{i}.png", mask)
    write_mask(root / "masks" / "2.png", np.zeros((12, 16), np.uint8))  # half the size
    # Stored 32x24, shown 24x32: the mask was drawn on the stored pixels.
    (root / "images" / "3.png").unlink()
    _exif_jpeg(root / "images" / "3.jpg", np.zeros((H, W, 3), np.uint8), 6)
    before = digest(root)

    code, text = run_cli(capsys, "data", "check", root)
    assert code == 0, text
    assert "masks/0.png: values [7, 9] outside the 2 classes" in text, text
    assert "masks/2.png: mask is 16×12 but its image images/2.png is 32×24; skipped" in text
    assert "masks/3.png: mask is 32×24 but its image images/3.jpg is 24×32" in text
    assert "EXIF orientation 6" in text
    assert_one_line_error(
        capsys, "data", "check", root, "--strict", names=("masks/2.png", "16×12")
    )

    with pytest.warns(UserWarning) as caught:
        code, text = run_cli(
            capsys, "train", "segment", f"data={root}", f"project={tmp_path}", *TINY
        )
    assert code == 0, text
    said = " ".join(str(w.message) for w in caught)
    assert "2 problem(s) reading the train split" in said and "masks/2.png" in said, said
    # Once, with the counts: the two masks (train holds both: the val image is 4.png).
    assert "2 of 3 masks hold label values [7, 9] (16 pixels)" in said and "masks/0.png" in said
    assert digest(root) == before

    assert_one_line_error(
        capsys, "train", "segment", f"data={root}", f"project={tmp_path / 'strict'}",
        "data.strict=true", *TINY, names=("masks/2.png", "16×12"),
    )  # fmt: skip
    assert not (tmp_path / "strict").exists()


def test_stray_labels_are_an_error_when_strict(tmp_path, capsys):
    root = _label_masks(tmp_path / "masks")
    mask = read_mask(root / "masks" / "0.png")[0]
    mask[0, 0] = 7
    write_mask(root / "masks" / "0.png", mask)
    assert_one_line_error(
        capsys, "train", "segment", f"data={root}", f"project={tmp_path / 'runs'}",
        "data.strict=true", *TINY, names=("masks/0.png", "[7]", "data.strict"),
    )  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_every_mask_of_the_wrong_size_is_one_error_naming_a_file(tmp_path, capsys):
    root = _label_masks(tmp_path / "masks")
    for i in range(5):
        write_mask(root / "masks" / f"{i}.png", np.zeros((12, 16), np.uint8))
    before = digest(root)
    with pytest.warns(UserWarning, match="5 problem"):
        assert_one_line_error(
            capsys, "train", "segment", f"data={root}", f"project={tmp_path / 'runs'}", *TINY,
            names=("no usable images with masks", "masks/0.png", "16×12"),
        )  # fmt: skip
    assert digest(root) == before and not (tmp_path / "runs").exists()


def test_one_image_without_a_val_split_is_refused(tmp_path, capsys):
    root = _label_masks(tmp_path / "one", n=1)
    before = digest(root)
    assert_one_line_error(
        capsys, "train", "segment", f"data={root}", f"project={tmp_path / 'runs'}", *TINY,
        names=(str(root), "no val split", "1 image"),
    )  # fmt: skip
    assert digest(root) == before and not (tmp_path / "runs").exists()
