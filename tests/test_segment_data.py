"""Mask formats (read, write, convert losslessly), data check, and mask-aware augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from conftest import shared_data
from visbricks.data.formats import find_format, get_format
from visbricks.data.formats.masks import read_mask, voc_palette, write_mask
from visbricks.data.io import write_image
from visbricks.data.segmentation import (
    SegmentationDataset,
    build_segmentation_transforms,
    check_masks,
)
from visbricks.data.transforms import SemanticMask
from visbricks.errors import ConfigError

CLASSES = ["background", "red", "green"]


def _mask_folder(root: Path, n: int = 3, size: tuple[int, int] = (20, 30)) -> Path:
    """images/<split>/ + masks/<split>/ with random blocks of 3 classes and some ignore."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            mask = np.zeros(size, np.uint8)
            mask[2:9, 3:12] = 1
            mask[10:18, 14 + i : 25] = 2
            mask[0, :] = 255
            image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            write_image(root / "images" / split / f"{split}{i}.jpg", image)
            write_mask(root / "masks" / split / f"{split}{i}.png", mask)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def _masks_of(ds) -> dict[str, np.ndarray]:
    return {Path(r.file).stem: read_mask(ds.mask_path(r))[0] for r in ds.records}


def test_folder_is_auto_detected_and_read(tmp_path):
    root = _mask_folder(tmp_path / "d")
    fmt = find_format(root, "segmentation")
    assert fmt.name == "label_masks"
    assert fmt.splits(root) == ["train", "val"]
    ds = fmt.read(root, split="val")
    assert ds.classes == CLASSES and len(ds.records) == 3
    assert all(r.mask_file.startswith("masks/val/") for r in ds.records)


def test_unnamed_classes_are_numbered_from_the_masks_and_said(tmp_path):
    root = _mask_folder(tmp_path / "d")
    (root / "classes.txt").unlink()
    fmt = find_format(root, "segmentation")
    with pytest.warns(UserWarning, match=r"3 classes named class_0..class_2 .*255 ignored"):
        ds = fmt.read(root, split="train")
    assert ds.classes == ["class_0", "class_1", "class_2"]
    # A given list wins and nothing is counted.
    assert fmt.read(root, split="val", classes=CLASSES).classes == CLASSES


def test_convert_between_mask_formats_is_lossless(tmp_path):
    src = get_format("label_masks").read(_mask_folder(tmp_path / "d"), split="train")
    original = _masks_of(src)
    voc = get_format("voc_masks")
    voc.write(src, tmp_path / "voc", split="train")
    back = voc.read(tmp_path / "voc", split="train")
    assert back.classes == CLASSES
    for stem, m in _masks_of(back).items():
        np.testing.assert_array_equal(m, original[stem])
    # voc → label masks → COCO RLE (one annotation per class) → semantic again
    label = get_format("label_masks")
    yaml_path = label.write(back, tmp_path / "lab", split="train")
    coco = get_format("coco_masks")
    coco_yaml = coco.write(label.read(yaml_path, split="train"), tmp_path / "coco", split="train")
    again = coco.read(coco_yaml, split="train")
    assert again.classes == CLASSES
    for stem, m in _masks_of(again).items():
        np.testing.assert_array_equal(m, original[stem])


def test_labelme_voc_palette_pngs_round_trip(tmp_path):
    root = shared_data("labelme/semantic_segmentation/data_dataset_voc")
    fmt = find_format(root, "segmentation")
    assert fmt.name == "voc_masks"
    ds = fmt.read(root)
    assert ds.classes[0] == "_background_" and len(ds.records) == 3
    before = {}
    for r in ds.records:
        mask, palette = read_mask(ds.root / r.mask_file)
        before[Path(r.file).stem] = (mask, palette)
        assert 255 in mask or mask.max() < len(ds.classes)  # the ignore border where drawn
    fmt.write(ds, tmp_path / "out", split="train")
    again = fmt.read(tmp_path / "out", split="train")
    assert again.classes == ds.classes
    for r in again.records:
        mask, palette = read_mask(again.root / r.mask_file)
        ref_mask, ref_palette = before[Path(r.file).stem]
        np.testing.assert_array_equal(mask, ref_mask)
        assert palette == ref_palette  # the palette is kept for writing
    # data convert through the other two mask formats and back: still identical.
    from visbricks.data.formats import convert

    convert(root, tmp_path / "lab", to="label_masks")
    convert(tmp_path / "lab", tmp_path / "coco", to="coco_masks")
    convert(tmp_path / "coco" / "data.yaml", tmp_path / "voc", to="voc_masks")
    final = fmt.read(tmp_path / "voc", split="train")
    assert final.classes == ds.classes
    for stem, m in _masks_of(final).items():
        np.testing.assert_array_equal(m, before[stem][0])
    # The npy labelme wrote beside the PNGs agrees (its -1 is the PNG's 255 ignore).
    for stem, (mask, _) in before.items():
        npy = np.load(root / "SegmentationClassNpy" / f"{stem}.npy")
        np.testing.assert_array_equal(np.where(npy < 0, 255, npy), mask)


def test_voc_palette_matches_the_standard_colours():
    p = voc_palette()
    assert p[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert p[15 * 3 : 15 * 3 + 3] == [192, 128, 128]  # person


def test_coco_overlaps_and_crowds_become_ignore(tmp_path):
    image = np.zeros((20, 20, 3), np.uint8)
    write_image(tmp_path / "images" / "a.png", image)

    def square(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 10, 10),
             "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": square(5, 5, 15, 15),
             "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": square(2, 0, 4, 2),
             "iscrowd": 0},  # same class over class 1: no conflict
            {"id": 4, "image_id": 1, "category_id": 1, "segmentation": square(16, 16, 19, 19),
             "iscrowd": 1},
        ],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    (tmp_path / "seg.yaml").write_text(
        "format: coco_masks\ntrain: {annotations: ann.json, images: images}\n"
    )
    ds = get_format("coco_masks").read(tmp_path / "seg.yaml", split="train")
    assert ds.classes == ["background", "cat", "dog"]
    mask = read_mask(ds.mask_path(ds.records[0]))[0]
    assert mask[2, 2] == 1 and mask[12, 12] == 2 and mask[0, 19] == 0
    assert mask[7, 7] == 255  # cat and dog overlap: ambiguous
    assert mask[1, 3] == 1
    assert mask[17, 17] == 255  # crowd region


def test_data_check_reports_bad_masks(tmp_path):
    root = _mask_folder(tmp_path / "d")
    write_image(root / "images" / "train" / "orphan.jpg", np.zeros((20, 30, 3), np.uint8))
    write_mask(root / "masks" / "train" / "train1.png", np.zeros((10, 10), np.uint8))
    bad = np.zeros((20, 30), np.uint8)
    bad[0, 0] = 7
    write_mask(root / "masks" / "train" / "train2.png", bad)
    ds = get_format("label_masks").read(root, split="train")
    problems = dict(check_masks(ds))
    assert any("orphan.jpg" in f and "no mask" in why for f, why in problems.items())
    assert "10×10" in problems["masks/train/train1.png"]
    assert "[7]" in problems["masks/train/train2.png"]
    # The mask of the wrong size is skipped when read (counted among the problems above), so
    # training never gets it, and never sees a label outside the classes.
    assert "masks/train/train1.png" not in {r.mask_file for r in ds.records}
    data = SegmentationDataset(ds, build_segmentation_transforms(20, False, mean=None, std=None))
    labels = torch.cat([data[i]["semantic"].flatten() for i in range(len(data))])
    assert set(labels.unique().tolist()) <= {0, 1, 2, 255}


def test_yaml_errors_name_the_key(tmp_path):
    (tmp_path / "seg.yaml").write_text("format: label_masks\nclases: [a]\n")
    with pytest.raises(ConfigError, match="clases"):
        get_format("label_masks").read(tmp_path / "seg.yaml")
    with pytest.raises(ConfigError, match="cat_max_ratios"):
        build_segmentation_transforms(32, True, {"cat_max_ratios": 0.5})


def _palette_image(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    return colours[mask]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    height=st.integers(24, 60),
    width=st.integers(24, 60),
    out=st.integers(16, 48),
    crop=st.booleans(),
)
def test_geometric_augmentation_keeps_mask_on_its_pixels(seed, height, width, out, crop):
    """A mask drawn from the image's own colours: after any geometric transform, every labelled
    pixel whose neighbourhood is one class still has its class's colour."""
    rng = np.random.default_rng(seed)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for c in (1, 2, 3):  # blocks of 6+ px so a resized mask keeps uniform interiors
        y, x = rng.integers(0, height - 6), rng.integers(0, width - 6)
        mask[y : y + rng.integers(6, 14), x : x + rng.integers(6, 14)] = c
    image = _palette_image(mask, colours)
    torch.manual_seed(seed)
    aug = {"scale_jitter": [0.6, 1.6], "crop": crop, "hflip": 0.5, "vflip": 0.5,
           "cat_max_ratio": 0.9, "photometric": 0.0}  # fmt: skip
    t = build_segmentation_transforms(out, True, aug, normalize=False)
    sample = t(
        {
            "image": tv_tensors.Image(torch.from_numpy(image.transpose(2, 0, 1).copy())),
            "semantic": SemanticMask(torch.from_numpy(mask)),
        }
    )
    img = sample["image"].permute(1, 2, 0).numpy()
    m = sample["semantic"].numpy()
    assert img.shape[:2] == m.shape == (out, out)
    labelled = m != 255
    # Pixels whose 5x5 neighbourhood has a single class: interpolation cannot blend there.
    # (Not at the border: what lies beyond a crop is unknown, so the border never counts.)
    padded = np.pad(m, 2, constant_values=254)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
    uniform = (windows == m[..., None, None]).all(axis=(2, 3)) & labelled
    diff = np.abs(img.astype(int) - colours[np.where(labelled, m, 0)].astype(int)).max(-1)
    # Antialiased downscaling blends a few percent across the 5x5 window at most; a mask off by
    # even one pixel would put another class's colour (255 away) under it.
    assert (diff[uniform] <= 32).all()
    # Padding of the image (fill 0) only ever lies under ignore or background-coloured mask.
    assert set(np.unique(m)) <= {0, 1, 2, 3, 255}


def test_eval_letterbox_pads_mask_with_ignore():
    t = build_segmentation_transforms(32, False, normalize=False)
    sample = t(
        {
            "image": tv_tensors.Image(torch.zeros(3, 16, 32, dtype=torch.uint8)),
            "semantic": SemanticMask(torch.ones(16, 32, dtype=torch.uint8)),
        }
    )
    m = sample["semantic"]
    assert m.shape == (32, 32)
    assert (m[:8] == 255).all() and (m[8:24] == 1).all() and (m[24:] == 255).all()


def test_cat_max_ratio_crop_avoids_single_class_crops():
    from visbricks.data.segmentation import CatMaxRatioCrop

    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[40:, 40:] = 1  # one object in a corner
    image = tv_tensors.Image(torch.zeros(3, 64, 64, dtype=torch.uint8))

    def hits(ratio: float) -> int:
        crop = CatMaxRatioCrop((16, 16), cat_max_ratio=ratio)
        torch.manual_seed(0)
        n = 0
        for _ in range(60):
            out = crop({"semantic": SemanticMask(mask), "image": image})["semantic"]
            n += int((out == 1).float().mean() > 0.25)
        return n

    free, capped = hits(1.0), hits(0.75)
    # Unconstrained, ~1/6 of 16px crops show the object over a quarter of their pixels; capped
    # (10 tries per crop, as mmseg), most do.
    assert free < 20 and capped > 2 * free and capped >= 30


def test_data_check_command_lists_mask_problems(tmp_path, capsys):
    from visbricks.cli import main

    root = _mask_folder(tmp_path / "d")
    write_mask(root / "masks" / "val" / "val0.png", np.zeros((5, 5), np.uint8))
    main(["data", "check", str(root)])
    out = capsys.readouterr().out
    assert "label_masks" in out and "[val] masks/val/val0.png: mask is 5×5" in out
    assert "background" in out
