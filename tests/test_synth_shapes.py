"""The embedded shapes dataset: geometry agrees with pixels, datasets on disk are complete,
balanced, deterministic and published atomically."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from visbricks.data.formats import read_dataset
from visbricks.data.io import read_image
from visbricks.data.synth import shapes
from visbricks.data.synth.shapes import (
    COMPLETE_MARKER,
    SHAPE_CLASSES,
    render_classification_scene,
    render_scene,
    write_classification,
    write_detection,
)
from visbricks.errors import ConfigError, DataError

C = len(SHAPE_CLASSES)


def _scenes(n: int, width: int = 96, height: int = 80, **kw):
    for seed in range(n):
        yield render_scene(np.random.default_rng(seed), width, height, (2, 6), **kw)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------
# render_scene


def test_same_seed_same_scene_and_different_seed_different_scene():
    a_img, a_obj = render_scene(np.random.default_rng(3), 96, 80, (1, 5))
    b_img, b_obj = render_scene(np.random.default_rng(3), 96, 80, (1, 5))
    c_img, _ = render_scene(np.random.default_rng(4), 96, 80, (1, 5))
    assert a_img.shape == (80, 96, 3) and a_img.dtype == np.uint8
    assert a_img.tobytes() == b_img.tobytes()
    assert [o.label for o in a_obj] == [o.label for o in b_obj]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a_obj, b_obj))
    assert not np.array_equal(a_img, c_img)


def test_boxes_are_tight_boxes_of_the_visible_masks():
    n_objects = 0
    for _, objects in _scenes(30):
        for o in objects:
            assert o.mask.shape == (80, 96) and o.mask.dtype == bool
            assert o.box.dtype == np.float32 and o.box.shape == (4,)
            # Independent computation: pycocotools' box of the RLE, xywh → XYXY.
            x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(o.mask, np.uint8)))
            np.testing.assert_array_equal(o.box, [x, y, x + w, y + h])
            n_objects += 1
    assert n_objects > 60


def test_masks_are_disjoint_and_occlusion_respects_min_visible():
    occluded = 0
    for min_visible in (0.6, 0.9):
        for _, objects in _scenes(40, min_visible=min_visible):
            stack = np.stack([o.mask for o in objects])
            assert stack.sum(0).max() <= 1, "two objects claim the same pixel"
            for o in objects:
                assert o.mask.sum() >= min_visible * o.area
                occluded += o.mask.sum() < o.area
            # Nothing lies on top of the last-drawn shape.
            assert objects[-1].mask.sum() == objects[-1].area
    assert occluded > 5, "no scene had any occlusion: the threshold was never exercised"


def test_shapes_stand_out_from_what_surrounds_them():
    # The mask is what a model must see: its interior must differ clearly from the ring of
    # pixels just outside it, or the labels describe something invisible.
    for seed in range(60):
        image, (obj,) = render_scene(np.random.default_rng(seed), 96, 80, 1)
        inside = ndimage.binary_erosion(obj.mask, iterations=2)
        ring = ndimage.binary_dilation(obj.mask, iterations=3) & ~obj.mask
        if inside.sum() < 5:
            continue
        diff = image[inside].mean(0) - image[ring].astype(float).mean(0)
        assert np.linalg.norm(diff) > 40, f"seed {seed}: shape blends into its background"


def test_render_scene_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="size_range"):
        render_scene(rng, 64, 64, 2, size_range=(0.5, 0.2))
    with pytest.raises(ConfigError, match="n_objects"):
        render_scene(rng, 64, 64, (3, 1))
    with pytest.raises(ConfigError, match="min_visible"):
        render_scene(rng, 64, 64, 2, min_visible=0.0)


# ---------------------------------------------------------------------------------------------
# Classification scenes: is the task learnable, and is it the intended task?


def _radial_signature(mask: np.ndarray) -> np.ndarray:
    """Rotation- and scale-invariant shape descriptor: how the area and the outline are spread
    over distance from the centroid (normalised by the farthest pixel)."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    r = np.hypot(xs - cx, ys - cy)
    outline = mask & ~ndimage.binary_erosion(mask)
    by, bx = np.nonzero(outline)
    area_hist, _ = np.histogram(r / r.max(), bins=8, range=(0, 1))
    edge_hist, _ = np.histogram(np.hypot(bx - cx, by - cy) / r.max(), bins=8, range=(0, 1))
    return np.concatenate([area_hist / area_hist.sum(), edge_hist / edge_hist.sum()])


def _pairwise_separation(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distance between the means of every pair of classes, in units of its standard error."""
    means = [features[labels == c].mean(0) for c in range(C)]
    var = [features[labels == c].var(0).sum() / (labels == c).sum() for c in range(C)]
    return np.array(
        [
            np.linalg.norm(means[a] - means[b]) / np.sqrt(var[a] + var[b])
            for a in range(C)
            for b in range(a + 1, C)
        ]
    )


def test_classes_differ_by_shape_alone():
    # Per-class mean shape signatures must differ for every pair of classes, far beyond what the
    # same statistic gives with shuffled labels: that is what "learnable" needs, and it cannot
    # hold by accident.
    features, labels = [], []
    for label in range(C):
        for seed in range(30):
            _, objects = render_classification_scene(
                np.random.default_rng([seed, label]), label, 64
            )
            features.append(_radial_signature(objects[0].mask))
            labels.append(label)
    features, labels = np.array(features), np.array(labels)
    shuffled = np.random.default_rng(0).permutation(labels)
    # Labels that carry no information give separations around 1 (2 at most here); the closest
    # real pair (star vs ellipse) is about 6.
    assert _pairwise_separation(features, labels).min() > 4.0
    assert _pairwise_separation(features, shuffled).max() < 2.5


def test_dominant_shape_spans_the_intended_range():
    size = 64
    spans = []
    for seed in range(60):
        label = seed % C
        _, objects = render_classification_scene(np.random.default_rng(seed), label, size, 0)
        (dominant,) = objects
        assert dominant.label == label
        x1, y1, x2, y2 = dominant.box
        spans.append(max(x2 - x1, y2 - y1) / size)
    # Rasterising at pixel centres moves the extent by at most a pixel each side.
    assert min(spans) >= 0.35 - 2 / size and max(spans) <= 0.75 + 2 / size
    assert max(spans) - min(spans) > 0.25, "sizes do not vary"


def test_distractors_are_small_other_classes_that_barely_touch_the_dominant_shape():
    seen = 0
    for seed in range(60):
        label = seed % C
        _, objects = render_classification_scene(np.random.default_rng(seed), label, 64)
        dominant, *distractors = objects
        assert dominant.label == label
        assert dominant.mask.sum() >= 0.9 * dominant.area
        for d in distractors:
            assert d.label != label
            assert d.area < dominant.area / 2
        seen += len(distractors)
    assert seen > 30


# ---------------------------------------------------------------------------------------------
# write_classification


@pytest.fixture(scope="module")
def cls_dir(tmp_path_factory) -> Path:
    return write_classification(tmp_path_factory.mktemp("cls") / "shapes", 2 * 6 * C, 2 * C)


def test_classification_layout_and_balance(cls_dir: Path):
    assert (cls_dir / "classes.txt").read_text().split() == list(SHAPE_CLASSES)
    for split, per_class in (("train", 12), ("val", 2)):
        assert sorted(p.name for p in (cls_dir / split).iterdir()) == sorted(SHAPE_CLASSES)
        for name in SHAPE_CLASSES:
            files = sorted((cls_dir / split / name).glob("*.png"))
            assert len(files) == per_class, (split, name)
            assert read_image(files[0]).shape == (64, 64, 3)
    assert not list(cls_dir.parent.glob("*.tmp-*")), "the staging folder was left behind"


def test_multilabel_csvs_parse_and_point_at_real_images(cls_dir: Path):
    root = cls_dir / "multilabel"
    listed, label_counts = [], []
    for split, n in (("train", 12 * C), ("val", 2 * C)):
        with open(root / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["filename", "labels"]
        assert len(rows) == n
        for row in rows:
            labels = row["labels"].split(" ")
            assert labels and set(labels) <= set(SHAPE_CLASSES), row
            assert len(set(labels)) == len(labels)
            assert read_image(root / row["filename"]).shape == (64, 64, 3)
            listed.append(row["filename"])
            label_counts.append(len(labels))
    assert len(set(listed)) == len(listed)
    assert sorted(listed) == sorted(f"images/{p.name}" for p in (root / "images").iterdir())
    assert max(label_counts) >= 3 and min(label_counts) == 1


def test_classification_dataset_is_deterministic(tmp_path: Path, cls_dir: Path):
    again = write_classification(tmp_path / "again", 2 * 6 * C, 2 * C)
    assert _tree(again) == _tree(cls_dir)
    other = write_classification(tmp_path / "other", 2 * 6 * C, 2 * C, seed=1)
    first = _tree(cls_dir)
    differing = [k for k, v in _tree(other).items() if k.endswith(".png") and first[k] != v]
    assert len(differing) == 2 * (12 + 2) * C


# ---------------------------------------------------------------------------------------------
# Atomic, idempotent generation


def test_complete_folder_is_reused_not_regenerated(tmp_path: Path, monkeypatch):
    out = write_classification(tmp_path / "d", C, C)
    (out / "sentinel").write_text("kept")

    def fail(*_args, **_kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(shapes, "write_image", fail)
    assert write_classification(tmp_path / "d", C, C) == out
    assert (out / "sentinel").read_text() == "kept"


def test_different_parameters_are_an_error_naming_the_folder(tmp_path: Path):
    out = write_classification(tmp_path / "d", C, C)
    with pytest.raises(DataError, match=r"d holds .*seed=0 \(wanted 5\)"):
        write_classification(out, C, C, seed=5)
    with pytest.raises(DataError, match=re.escape(str(out))):
        write_classification(out, C, 0)


def test_leftover_staging_folder_is_not_taken_for_data(tmp_path: Path):
    leftover = tmp_path / "d.tmp-999999"
    (leftover / "data" / "train").mkdir(parents=True)
    (leftover / "data" / COMPLETE_MARKER).write_text("{}")
    out = write_classification(tmp_path / "d", C, C)
    assert (out / COMPLETE_MARKER).is_file()
    assert len(list((out / "train").rglob("*.png"))) == C


def test_incomplete_folder_is_refused_and_left_alone(tmp_path: Path):
    half = tmp_path / "d"
    (half / "train" / "circle").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{re.escape(str(half))}.*no {re.escape(COMPLETE_MARKER)}"):
        write_classification(half, C, C)
    assert (half / "train" / "circle").is_dir()


def test_empty_folder_is_filled(tmp_path: Path):
    (tmp_path / "d").mkdir()
    out = write_classification(tmp_path / "d", C, 0)
    assert (out / COMPLETE_MARKER).is_file()


def test_interrupted_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch):
    calls = 0
    real = shapes.write_image

    def flaky(path, image):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("disk full")
        real(path, image)

    monkeypatch.setattr(shapes, "write_image", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_classification(tmp_path / "d", C, C)
    assert list(tmp_path.iterdir()) == []


def test_bad_counts_are_rejected_before_writing(tmp_path: Path):
    with pytest.raises(ConfigError, match="n_train"):
        write_classification(tmp_path / "d", -1)
    with pytest.raises(ConfigError, match="size"):
        write_classification(tmp_path / "d", C, C, size=16)
    assert not (tmp_path / "d").exists()


def test_staging_name_uses_this_process(tmp_path: Path, monkeypatch):
    seen = []
    real = shapes.write_image

    def spy(path, image):
        seen.append(Path(path))
        real(path, image)

    monkeypatch.setattr(shapes, "write_image", spy)
    write_classification(tmp_path / "d", C, 0)
    assert seen and all(p.is_relative_to(tmp_path / f"d.tmp-{os.getpid()}") for p in seen)


# ---------------------------------------------------------------------------------------------
# write_detection: through the real format writers, read back through the real readers


@pytest.fixture(scope="module")
def det_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("det")
    return {
        fmt: write_detection(root / fmt, fmt, n_train=6, n_val=3, width=96, height=64)
        for fmt in ("coco", "voc", "yolo")
    }


def test_detection_coco_round_trip_matches_masks_and_mask_pngs(det_dirs: dict[str, Path]):
    out = det_dirs["coco"]
    n_objects = 0
    for split, n in (("train", 6), ("val", 3)):
        ds = read_dataset(out / "data.yaml", split=split)
        assert ds.classes == list(SHAPE_CLASSES) and not ds.problems
        assert len(ds) == n
        for record in ds.records:
            assert read_image(ds.root / record.file).shape == (64, 96, 3)
            stem = Path(record.file).stem
            semantic = read_image(out / "masks" / split / f"{stem}.png")[..., 0]
            instance = read_image(out / "instances" / split / f"{stem}.png")[..., 0]
            claimed = np.zeros((64, 96), dtype=int)
            assert len(record.boxes) >= 1
            for j, (box, label, rle) in enumerate(
                zip(record.boxes, record.labels, record.segmentations)
            ):
                mask = mask_utils.decode(rle).astype(bool)
                x, y, w, h = mask_utils.toBbox(rle)
                np.testing.assert_allclose(box, [x, y, x + w, y + h])
                assert (semantic[mask] == label + 1).all()
                assert (instance[mask] == j + 1).all()
                claimed += mask
                n_objects += 1
            assert claimed.max() == 1
            # Background in the PNGs is exactly what no object claims.
            assert ((semantic == 0) == (claimed == 0)).all()
            assert ((instance == 0) == (claimed == 0)).all()
    assert n_objects >= 9


def test_every_format_holds_the_same_scenes(det_dirs: dict[str, Path]):
    sets = {fmt: read_dataset(d / "data.yaml", split="train") for fmt, d in det_dirs.items()}
    by_name = {fmt: {Path(r.file).name: r for r in ds.records} for fmt, ds in sets.items()}
    assert by_name["coco"].keys() == by_name["voc"].keys() == by_name["yolo"].keys()
    for name, ref in by_name["coco"].items():
        for fmt in ("voc", "yolo"):
            other = by_name[fmt][name]
            np.testing.assert_array_equal(other.labels, ref.labels)
            # YOLO stores normalised centres with finite decimals; VOC integer corners are exact.
            np.testing.assert_allclose(other.boxes, ref.boxes, atol=1e-3 if fmt == "yolo" else 0)
            a = (sets[fmt].root / other.file).read_bytes()
            assert a == (sets["coco"].root / ref.file).read_bytes(), f"{fmt}: {name} differs"


def test_detection_rejects_unknown_format_before_rendering(tmp_path: Path):
    with pytest.raises(ConfigError, match="'cocoo'"):
        write_detection(tmp_path / "d", "cocoo")
    with pytest.raises(ConfigError, match="objects"):
        write_detection(tmp_path / "d", "coco", objects=(0, 2))
    assert list(tmp_path.iterdir()) == []


def test_detection_folder_is_reused_and_parameters_checked(det_dirs: dict[str, Path]):
    out = det_dirs["yolo"]
    assert write_detection(out, "yolo", n_train=6, n_val=3, width=96, height=64) == out
    with pytest.raises(DataError, match=r"format='yolo' \(wanted 'coco'\)"):
        write_detection(out, "coco", n_train=6, n_val=3, width=96, height=64)
